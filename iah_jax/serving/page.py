"""The result page (results.html) and the saliency sheet (a PNG for papers) of a search.

The page is self-contained: every image is an inline PNG (data: URI), the style is inline, no
script and no external resource, so it opens anywhere, offline. It shows the query with its
predicted labels (p_j >= 0.2), then one row per result group: per predicted category (IAH section
IV) with ``--by-category``, else the semantic ranking. Each result is a thumbnail whose
non-salient part is darkened, beside its grey saliency map as in IAH Fig. 5 (`saliency.saliency_map`
of the result's proposals and their probabilities P_ij for the row's category; in the semantic
ranking the category is, of the query's predicted ones, the one the result most likely holds).
With ``reduce="sum"`` a map is divided by its maximum to be shown; "max" maps are shown as they
are (a probability: a dim map means a weak region).
"""

from __future__ import annotations

import base64
import html
import io
import os

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from iah_jax.serving import preprocess
from iah_jax.serving import saliency
from iah_jax.serving.errors import ServingError

THUMBNAIL_SIDE = 144  # longer side of a thumbnail, pixels
_DARKEST = 0.25  # brightness of the least salient pixels in an overlay


def thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
  """uint8 [h, w, 3] with max(h, w) = side, aspect kept (bicubic, up or down)."""
  height, width = image.shape[:2]
  scale = side / max(height, width)
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def placeholder(text: str, side: int = THUMBNAIL_SIDE) -> np.ndarray:
  """A grey tile with a short message, standing in for an image that cannot be read."""
  tile = Image.new("RGB", (side, side), (200, 200, 200))
  ImageDraw.Draw(tile).text((6, side // 2 - 6), text[:22], fill=(60, 60, 60))
  return np.asarray(tile)


def display_map(boxes, probs, height: int, width: int, reduce: str) -> np.ndarray:
  """float32 [height, width] in [0, 1]: the saliency map as shown (module docstring)."""
  values = np.asarray(saliency.saliency_map(boxes, probs, height, width, reduce=reduce))
  if reduce == "sum" and values.max() > 0:
    values = values / values.max()
  return np.clip(values, 0.0, 1.0)


def overlay(image: np.ndarray, salient: np.ndarray) -> np.ndarray:
  """The image darkened where the map is low: uint8 [h, w, 3]."""
  brightness = _DARKEST + (1.0 - _DARKEST) * salient[..., None]
  return np.clip(image.astype(np.float32) * brightness, 0, 255).astype(np.uint8)


def grey(salient: np.ndarray) -> np.ndarray:
  return np.repeat((salient[..., None] * 255).round().astype(np.uint8), 3, axis=-1)


def png_data_uri(image: np.ndarray) -> str:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class Visuals:
  """Thumbnails and saliency maps of the query and every result shown, made once each.

  Reads the result images from their paths and re-encodes them with their indexed proposals to
  get their per-proposal probabilities P (the index keeps codes, not P)."""

  def __init__(self, result, searcher, reduce: str = "max"):
    if reduce not in saliency.REDUCTIONS:
      raise ServingError(f"saliency reduce must be one of {saliency.REDUCTIONS}, got {reduce!r}")
    self.reduce = reduce
    self._maps = {}
    encoder, index = searcher.encoder, searcher.index
    self.has_saliency = "proposal_label_probs" in encoder.outputs
    query_boxes = result.query_outputs["proposals"][0]
    self.items = {
        "query": {
            "thumbnail": thumbnail(result.query_image),
            "proposals": query_boxes,
            "P": (
                encoder.encode([result.query_image], proposals=query_boxes[None])[
                    "proposal_label_probs"
                ][0]
                if self.has_saliency
                else None
            ),
        }
    }
    group_ids = [ids for _, ids in (result.groups or {}).values()]
    shown = list(dict.fromkeys(int(i) for ids in [result.ids, *group_ids] for i in ids))
    readable, images = [], []
    for image_id in shown:
      try:
        image = preprocess.read_photo(index.paths[image_id])
      except ServingError as err:
        self.items[image_id] = {"thumbnail": placeholder("image not readable"), "problem": str(err)}
        continue
      readable.append(image_id)
      images.append(image)
      self.items[image_id] = {"thumbnail": thumbnail(image), "problem": None}
    if self.has_saliency and readable:
      boxes = np.stack([index.proposals(image_id) for image_id in readable])
      probs = encoder.encode(images, proposals=boxes)["proposal_label_probs"]
      for image_id, image_boxes, image_probs in zip(readable, boxes, probs):
        self.items[image_id].update(proposals=image_boxes, P=image_probs)

  def thumbnail(self, key) -> np.ndarray:
    return self.items[key]["thumbnail"]

  def problem(self, key) -> str | None:
    return self.items[key].get("problem")

  def saliency(self, key, category: int | None) -> np.ndarray | None:
    """float32 [h, w] map of `category` at the thumbnail's size, or None when there is none."""
    item = self.items[key]
    if category is None or item.get("P") is None:
      return None
    if (key, category) not in self._maps:
      height, width = item["thumbnail"].shape[:2]
      self._maps[key, category] = display_map(
          item["proposals"], item["P"][:, category], height, width, self.reduce
      )
    return self._maps[key, category]


# ----------------------------------------------------------------------------- rows


def rows(result) -> list[dict]:
  """The page's rows: {"title", "subtitle", "category", "results": [(id, caption, category)]}:
  the groups, or (no grouping, or no group for this query) the semantic ranking."""
  names = result.class_names
  query_probs = result.query_label_probs
  if result.groups:
    return [
        {
            "title": f"{names[j]}: query p = {query_probs[j]:.2f}",
            "subtitle": f"table of {result.table_sizes[j]} images (p_j >= {result.threshold:g}), "
            f"{len(ids)} shown",
            "category": int(j),
            "results": [
                (
                    int(image_id),
                    f"#{rank + 1} d={_distance(result, distance)} "
                    f"p={result.db_label_probs[int(image_id), j]:.2f}",
                    int(j),
                )
                for rank, (distance, image_id) in enumerate(zip(distances, ids))
            ],
        }
        for j, (distances, ids) in result.groups.items()
    ]
  distance_name = "weighted Hamming" if result.ranking == "weighted" else "Hamming"
  return [
      {
          "title": f"Semantic ranking ({distance_name} distance)",
          "subtitle": f"top {len(result.ids)} of {len(result.paths)} images",
          "category": None,
          "results": [
              (
                  int(image_id),
                  f"#{rank + 1} d={_distance(result, distance)}",
                  result.flat_saliency_category(int(image_id)),
              )
              for rank, (distance, image_id) in enumerate(zip(result.distances, result.ids))
          ],
      }
  ]


def _distance(result, distance) -> str:
  return f"{distance:.2f}" if result.ranking == "weighted" else str(int(distance))


# ----------------------------------------------------------------------------- HTML

_STYLE = """
body { font-family: sans-serif; margin: 16px; color: #222; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 8px; } h2 { font-size: 16px; margin: 18px 0 2px; }
.sub { color: #666; font-size: 12px; margin: 0 0 6px; }
.query { display: flex; gap: 18px; align-items: flex-start; }
.labels ul { margin: 4px 0; padding-left: 18px; }
.note { background: #fff4d6; border: 1px solid #e8c66a; padding: 6px 10px; font-size: 13px; }
.row { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; background: #fff; border: 1px solid #ddd; padding: 4px; }
figure .pair { display: flex; gap: 3px; }
figcaption { font-size: 11px; max-width: 300px; overflow-wrap: anywhere; }
footer { margin-top: 24px; color: #666; font-size: 12px; }
"""


def _img(image: np.ndarray, css_class: str, alt: str, element_id: str = "") -> str:
  id_attr = f' id="{element_id}"' if element_id else ""
  return (
      f'<img{id_attr} class="{css_class}" src="{png_data_uri(image)}" alt="{html.escape(alt)}" '
      f'width="{image.shape[1]}" height="{image.shape[0]}">'
  )


def _figure(
    visuals: Visuals, key, caption: str, category, title: str, css_class: str, image_id: str = ""
) -> str:
  image = visuals.thumbnail(key)
  salient = visuals.saliency(key, category)
  parts = []
  if salient is None:
    parts.append(_img(image, "thumb", title, image_id))
  else:
    parts.append(_img(overlay(image, salient), "thumb", title, image_id))
    parts.append(_img(grey(salient), "saliency", f"saliency map of {title}"))
  problem = visuals.problem(key)
  detail = f"<br><i>{html.escape(problem)}</i>" if problem else ""
  return (
      f'<figure class="{css_class}" data-id="{html.escape(str(key))}" title="{html.escape(title)}">'
      f'<div class="pair">{"".join(parts)}</div>'
      f"<figcaption>{html.escape(caption)}<br>{html.escape(os.path.basename(title))}{detail}"
      "</figcaption></figure>"
  )


def render_html(result, visuals: Visuals, footer: str = "") -> str:
  names = result.class_names
  predicted = result.predicted_categories()
  query_probs = result.query_label_probs
  if query_probs is None:
    labels = "<p>(this method predicts no labels)</p>"
  elif predicted:
    labels = (
        "<ul>"
        + "".join(
            f"<li>{html.escape(names[j])}: <b>{query_probs[j]:.2f}</b></li>" for j in predicted
        )
        + "</ul>"
    )
  else:
    top = int(np.argmax(query_probs))
    labels = (
        f"<p>none with p &gt;= {result.threshold:g} (most probable: "
        f"{html.escape(names[top])}, {query_probs[top]:.2f})</p>"
    )
  query_figure = _figure(
      visuals,
      "query",
      "query",
      predicted[0] if predicted else None,
      result.query_path,
      "query-figure",
      image_id="query",
  )
  body = [
      "<header><h1>Query</h1>",
      f'<div class="query">{query_figure}',
      f'<div class="labels"><h2>Predicted labels</h2>{labels}</div></div>',
  ]
  body.extend(f'<p class="note">{html.escape(note)}</p>' for note in result.notes)
  body.append("</header><main>")
  for row in rows(result):
    category_attr = "" if row["category"] is None else f' data-category="{row["category"]}"'
    body.append(
        f'<section class="group"{category_attr}><h2>{html.escape(row["title"])}</h2>'
        f'<p class="sub">{html.escape(row["subtitle"])}</p><div class="row">'
    )
    if row["category"] is not None and visuals.has_saliency:
      body.append(
          _figure(visuals, "query", "query", row["category"], result.query_path, "query-cell")
      )
    for image_id, caption, category in row["results"]:
      body.append(_figure(visuals, image_id, caption, category, result.paths[image_id], "result"))
    body.append("</div></section>")
  body.append(f"</main><footer>{html.escape(footer)}</footer>")
  title = f"iah_jax search: {os.path.basename(result.query_path)}"
  return (
      '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
      f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
      + "\n".join(body)
      + "\n</body></html>\n"
  )


# ----------------------------------------------------------------------------- PNG sheet


def render_sheet(result, visuals: Visuals) -> np.ndarray:
  """uint8 [H, W, 3]: per row, the query then each result, each thumbnail above its grey
  saliency map, with a caption (IAH Fig. 5's layout)."""
  side, caption_height, pad, title_height = THUMBNAIL_SIDE, 14, 6, 18
  all_rows = rows(result)
  columns = 1 + max([len(row["results"]) for row in all_rows] + [0])
  cell_width, cell_height = side + pad, 2 * side + caption_height + pad
  sheet = Image.new(
      "RGB",
      (columns * cell_width + pad, len(all_rows) * (cell_height + title_height) + pad),
      "white",
  )
  draw = ImageDraw.Draw(sheet)
  font = ImageFont.load_default()
  for row_index, row in enumerate(all_rows):
    top = pad + row_index * (cell_height + title_height)
    draw.text((pad, top), row["title"], fill="black", font=font)
    cells = [("query", "query", row["category"] if row["category"] is not None else None)]
    cells += row["results"]
    for column, (key, caption, category) in enumerate(cells):
      if key == "query" and category is None:
        predicted = result.predicted_categories()
        category = predicted[0] if predicted else None
      left, cell_top = pad + column * cell_width, top + title_height
      image = visuals.thumbnail(key)
      sheet.paste(Image.fromarray(image), (left, cell_top))
      salient = visuals.saliency(key, category)
      if salient is not None:
        sheet.paste(Image.fromarray(grey(salient)), (left, cell_top + side))
      draw.text((left, cell_top + 2 * side + 1), caption, fill="black", font=font)
  return np.asarray(sheet)


def write_outputs(result, visuals: Visuals, out_dir: str, footer: str = "", sheet: bool = False):
  """Writes results.html (and saliency.png with `sheet`) to `out_dir`; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  written = {"html": os.path.join(out_dir, "results.html")}
  with open(written["html"], "w", encoding="utf-8") as file:
    file.write(render_html(result, visuals, footer))
  if sheet:
    written["saliency"] = os.path.join(out_dir, "saliency.png")
    Image.fromarray(render_sheet(result, visuals)).save(written["saliency"])
  return written
