"""The embedded default dataset: synthetic multi-object scenes, generated offline by TFDS.

Every image shows 1..max_objects objects on a cluttered background. Each category is a fixed
shape in a fixed colour family (mild jitter in hue, saturation, value, size, aspect and rotation),
so a small CNN can tell categories apart at 64x64:

- categories 0..9 pair ten shapes with ten colour families one to one (shape and colour each
  identify the category);
- categories 10..19 (only when num_classes > 10) reuse the shapes and colours in new pairs, so
  telling them from 0..9 needs the conjunction of shape and colour.

Scene rules (all sizes relative to the image side S):

- background: a linear gradient between two low-saturation colours in a random direction, plus
  3..8 thin distractor strokes (1-2 px polylines, any hue, low to mid saturation) that are not any
  category, drawn under the objects, and Gaussian pixel noise over everything;
- object count k: P(k) proportional to 1/k for k = 1..max_objects; each object's category is drawn
  uniformly and independently (so an image can hold two instances of one category); label
  co-occurrence is random;
- object extent: side s ~ U(0.2, 0.5) * S, aspect exp(U(-0.15, 0.15)), rotation U(-12, 12)
  degrees, placed fully inside the image;
- occlusion: objects are drawn in order, later ones on top. A placement is rejected (and retried,
  up to 30 times, else the object is skipped) when it would cover more than 40% of the pixels of
  any earlier object ("limited overlap"). After placement, an object whose visible pixels are
  fewer than 50% of its own pixels (possible when several later objects each cover part of it) is
  "mostly hidden": it is removed from the scene entirely (not drawn, no label, no box), so labels
  never disagree with the pixels. Removing an object only uncovers others, so the remaining ones
  all stay at least 50% visible, and the topmost object is never hidden: every image has >= 1
  label;
- object boxes: the bounding box of the object's visible pixels (those where it is the topmost
  object with coverage >= 0.5), as (x0, y0, x1, y1) fractions of the image side.

Default config (seed 0): 1.93 objects and 1.79 distinct labels per training image; a random
ranking of the train split for the test queries (relevant = sharing >= 1 label) has MAP 0.28.
Note that codes equal to the +-1 label vectors, ranked by Hamming distance, reach only MAP 0.81
(an image with many labels is far from everything), so hash codes must do better than copying
the labels. benchmarks/proposal_recall.py prints these figures.

Determinism: example `index` of split `split` is rendered from its own generator seeded with
(seed, crc32(split), index), so examples do not depend on generation order, and the same seed
gives byte-identical examples. Proposals come from `proposals.generic_proposals`, which reads
only the pixels.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import zlib

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from iah_jax import phases
from iah_jax.data import features as features_lib
from iah_jax.data import proposals as proposals_lib

# Shapes and colour families; category k < 10 is (_SHAPES[k], _COLOURS[k]), category 10 + k is
# (_SHAPES[(k + 3) % 10], _COLOURS[k]).
_SHAPES = (
    "disc",
    "square",
    "triangle",
    "plus",
    "ring",
    "diamond",
    "star",
    "frame",
    "striped_square",
    "hourglass",
)
# (name, hue in degrees); hues spaced >= 26 degrees apart, jittered by at most 4.
_COLOURS = (
    ("red", 0.0),
    ("orange", 32.0),
    ("yellow", 58.0),
    ("lime", 90.0),
    ("green", 130.0),
    ("cyan", 180.0),
    ("azure", 208.0),
    ("blue", 240.0),
    ("violet", 275.0),
    ("magenta", 315.0),
)
_CATEGORIES = tuple((_SHAPES[k], k) for k in range(10)) + tuple(
    (_SHAPES[(k + 3) % 10], k) for k in range(10)
)
CATEGORY_NAMES = tuple(f"{_COLOURS[colour][0]}_{shape}" for shape, colour in _CATEGORIES)

_MIN_SIDE, _MAX_SIDE = 0.2, 0.5
_MAX_ASPECT_LOG = 0.15
_MAX_ROTATION_DEGREES = 12.0
_MAX_COVER_FRACTION = 0.4  # A new object may cover at most this much of any earlier object.
_MIN_VISIBLE_FRACTION = 0.5  # Below this an object is "mostly hidden" and removed.
_PLACEMENT_TRIES = 30


def class_names(num_classes: int) -> tuple[str, ...]:
  """Names of the first `num_classes` categories (at most len(CATEGORY_NAMES) = 20)."""
  if not 1 <= num_classes <= len(CATEGORY_NAMES):
    raise ValueError(f"num_classes must be in [1, {len(CATEGORY_NAMES)}], got {num_classes}")
  return CATEGORY_NAMES[:num_classes]


# ---------------------------------------------------------------------------------------------
# Rendering. Shapes are signed distance functions in the object's local frame, where the object's
# box is [-1, 1]^2 (negative inside); coverage = clip(0.5 - distance_in_pixels, 0, 1), which
# anti-aliases edges.


def _convex_polygon_distance(u, v, vertices):
  """Approximate signed distance to a convex polygon (exact inside, negative inside); vertices in
  order around the polygon, either direction."""
  vertices = np.asarray(vertices, dtype=np.float64)
  centre = vertices.mean(0)
  distance = np.full(u.shape, -np.inf)
  count = len(vertices)
  for i in range(count):
    (ax, ay), (bx, by) = vertices[i], vertices[(i + 1) % count]
    length = math.hypot(bx - ax, by - ay)
    nx, ny = (by - ay) / length, (ax - bx) / length
    # Point the edge normal away from the centre, whatever the vertex order.
    if (0.5 * (ax + bx) - centre[0]) * nx + (0.5 * (ay + by) - centre[1]) * ny < 0:
      nx, ny = -nx, -ny
    distance = np.maximum(distance, (u - ax) * nx + (v - ay) * ny)
  return distance


def _polygon(points):
  """Orders points around their centroid (by angle), as `_convex_polygon_distance` expects."""
  points = np.asarray(points, dtype=np.float64)
  centre = points.mean(0)
  angles = np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0])
  return points[np.argsort(angles)]


_TRIANGLE = _polygon([(-1.0, 1.0), (1.0, 1.0), (0.0, -1.0)])
_DIAMOND = _polygon([(0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)])
_HOURGLASS = (
    _polygon([(-1.0, -1.0), (1.0, -1.0), (0.0, 0.05)]),
    _polygon([(-1.0, 1.0), (1.0, 1.0), (0.0, -0.05)]),
)


def _star_pieces():
  outer = [(math.cos(a), math.sin(a)) for a in (math.radians(-90 + 72 * i) for i in range(5))]
  inner_radius = 0.42
  inner = [
      (inner_radius * math.cos(a), inner_radius * math.sin(a))
      for a in (math.radians(-90 + 36 + 72 * i) for i in range(5))
  ]
  pieces = [_polygon(inner)]
  for i in range(5):
    pieces.append(_polygon([outer[i], inner[i], inner[i - 1]]))
  # Scale the star so its points reach the box edges vertically ([-1, ~0.81] -> [-1, 1]).
  return tuple(piece * np.array([1.0, 2.0 / 1.81]) + np.array([0.0, 0.105]) for piece in pieces)


_STAR = _star_pieces()


def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Signed distance (in box half-widths) of local coordinates to a shape filling [-1, 1]^2."""
  if shape == "disc":
    return np.sqrt(u * u + v * v) - 1.0
  if shape in ("square", "striped_square"):
    return np.maximum(np.abs(u), np.abs(v)) - 1.0
  if shape == "triangle":
    return _convex_polygon_distance(u, v, _TRIANGLE)
  if shape == "plus":
    half = 0.34
    return np.minimum(
        np.maximum(np.abs(u) - 1.0, np.abs(v) - half), np.maximum(np.abs(u) - half, np.abs(v) - 1.0)
    )
  if shape == "ring":
    return np.abs(np.sqrt(u * u + v * v) - 0.7) - 0.3
  if shape == "diamond":
    return _convex_polygon_distance(u, v, _DIAMOND)
  if shape == "star":
    return np.min([_convex_polygon_distance(u, v, piece) for piece in _STAR], axis=0)
  if shape == "frame":
    chebyshev = np.maximum(np.abs(u), np.abs(v))
    return np.maximum(chebyshev - 1.0, 0.6 - chebyshev)
  if shape == "hourglass":
    return np.min([_convex_polygon_distance(u, v, piece) for piece in _HOURGLASS], axis=0)
  raise ValueError(f"unknown shape {shape!r}")


def _hsv_to_rgb(hue_degrees: float, saturation: float, value: float) -> np.ndarray:
  h = (hue_degrees % 360.0) / 60.0
  c = value * saturation
  x = c * (1 - abs(h % 2 - 1))
  sector = int(h) % 6
  r, g, b = ((c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x))[sector]
  m = value - c
  return np.array([r + m, g + m, b + m])


@dataclasses.dataclass
class _SceneObject:
  category: int
  coverage: np.ndarray  # float [S, S] anti-aliased coverage in [0, 1].
  mask: np.ndarray  # bool [S, S], coverage >= 0.5.
  paint: np.ndarray  # float [S, S, 3] colour (with texture) where the object is drawn.


def _make_object(
    rng: np.random.Generator, category: int, size: int, ys: np.ndarray, xs: np.ndarray
) -> _SceneObject:
  shape, colour = _CATEGORIES[category]
  side = rng.uniform(_MIN_SIDE, _MAX_SIDE) * size
  aspect = math.exp(rng.uniform(-_MAX_ASPECT_LOG, _MAX_ASPECT_LOG))
  half_w, half_h = 0.5 * side * aspect, 0.5 * side / aspect
  angle = math.radians(rng.uniform(-_MAX_ROTATION_DEGREES, _MAX_ROTATION_DEGREES))
  cos, sin = math.cos(angle), math.sin(angle)
  # Axis-aligned half extent of the rotated box; keep it inside the image.
  extent_x = abs(cos) * half_w + abs(sin) * half_h
  extent_y = abs(sin) * half_w + abs(cos) * half_h
  cx = rng.uniform(extent_x, size - extent_x)
  cy = rng.uniform(extent_y, size - extent_y)
  # Shape distances are only evaluated on the object's own patch (plus an anti-aliasing margin).
  rows, cols = _patch(size, cx - extent_x, cx + extent_x, cy - extent_y, cy + extent_y)
  dx, dy = xs[rows, cols] - cx, ys[rows, cols] - cy
  u = (cos * dx + sin * dy) / half_w
  v = (-sin * dx + cos * dy) / half_h
  distance = _shape_distance(shape, u, v) * min(half_w, half_h)
  coverage = np.zeros((size, size))
  coverage[rows, cols] = np.clip(0.5 - distance, 0.0, 1.0)

  hue = _COLOURS[colour][1] + rng.uniform(-4.0, 4.0)
  rgb = _hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))
  paint = np.broadcast_to(rgb, (size, size, 3))
  if shape == "striped_square":
    # Four dark bands across the square, along its local u axis.
    bands = np.zeros((size, size, 1), dtype=bool)
    bands[rows, cols, 0] = np.floor((u + 1.0) * 4.0) % 2 == 1
    paint = np.where(bands, 0.3 * rgb, rgb)
  return _SceneObject(category, coverage, coverage >= 0.5, paint)


def _patch(size: int, x_lo: float, x_hi: float, y_lo: float, y_hi: float, margin: float = 2.0):
  """(row slice, column slice) of the pixels within `margin` of a box, clipped to the image."""

  def span(lo, hi):
    return slice(max(0, int(math.floor(lo - margin))), min(size, int(math.ceil(hi + margin))))

  return span(y_lo, y_hi), span(x_lo, x_hi)


def _background(rng: np.random.Generator, size: int, ys: np.ndarray, xs: np.ndarray):
  colours = [
      _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.2), rng.uniform(0.25, 0.75))
      for _ in range(2)
  ]
  angle = rng.uniform(0, 2 * math.pi)
  along = (math.cos(angle) * xs + math.sin(angle) * ys) / size
  t = (along - along.min()) / max(along.max() - along.min(), 1e-6)
  image = colours[0] * (1 - t[..., None]) + colours[1] * t[..., None]
  # Distractor strokes: short thin polylines, not any category's shape.
  for _ in range(rng.integers(3, 9)):
    colour = _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.6), rng.uniform(0.15, 0.95))
    half_width = rng.uniform(0.35, 0.9) * size / 64
    points = [rng.uniform(0, size, 2)]
    heading = rng.uniform(0, 2 * math.pi)
    for _ in range(rng.integers(1, 4)):
      heading += rng.uniform(-1.2, 1.2)
      length = rng.uniform(0.05, 0.15) * size
      points.append(points[-1] + length * np.array([math.cos(heading), math.sin(heading)]))
    points = np.asarray(points)
    rows, cols = _patch(
        size,
        points[:, 0].min(),
        points[:, 0].max(),
        points[:, 1].min(),
        points[:, 1].max(),
        margin=half_width + 1.0,
    )
    if rows.start >= rows.stop or cols.start >= cols.stop:
      continue  # The stroke lies entirely outside the image.
    patch_x, patch_y = xs[rows, cols], ys[rows, cols]
    distance = np.min(
        [
            _segment_distance(patch_x, patch_y, start, end)
            for start, end in zip(points[:-1], points[1:])
        ],
        axis=0,
    )
    alpha = np.clip(half_width + 0.5 - distance, 0.0, 1.0)[..., None]
    image[rows, cols] = image[rows, cols] * (1 - alpha) + colour * alpha
  return image


def _segment_distance(xs, ys, start, end):
  direction = end - start
  t = ((xs - start[0]) * direction[0] + (ys - start[1]) * direction[1]) / max(
      float(direction @ direction), 1e-9
  )
  t = np.clip(t, 0.0, 1.0)
  return np.hypot(xs - (start[0] + t * direction[0]), ys - (start[1] + t * direction[1]))


def _visible_masks(objects: list[_SceneObject]) -> list[np.ndarray]:
  """Per object, the pixels where it is the topmost object (later objects are on top)."""
  if not objects:
    return []
  owner = np.full(objects[0].mask.shape, -1)
  for i, obj in enumerate(objects):
    owner[obj.mask] = i
  return [owner == i for i in range(len(objects))]


def render_scene(rng: np.random.Generator, image_size: int, num_classes: int, max_objects: int):
  """One scene (see the module docstring for the rules).

  Returns:
    image uint8 [S, S, 3], object_boxes float32 [K, 4] (x0, y0, x1, y1) in [0, 1] of the visible
    extents, object_labels int32 [K], with K >= 1.
  """
  size = image_size
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
  image = _background(rng, size, ys, xs)

  weights = 1.0 / np.arange(1, max_objects + 1)
  count = int(rng.choice(np.arange(1, max_objects + 1), p=weights / weights.sum()))
  objects: list[_SceneObject] = []
  for _ in range(count):
    category = int(rng.integers(num_classes))
    for _ in range(_PLACEMENT_TRIES):
      candidate = _make_object(rng, category, size, ys, xs)
      if all(
          (candidate.mask & earlier.mask).sum() <= _MAX_COVER_FRACTION * earlier.mask.sum()
          for earlier in objects
      ):
        objects.append(candidate)
        break

  visible = _visible_masks(objects)
  objects = [
      obj
      for obj, seen in zip(objects, visible)
      if seen.sum() >= _MIN_VISIBLE_FRACTION * obj.mask.sum()
  ]
  visible = _visible_masks(objects)

  for obj in objects:
    alpha = obj.coverage[..., None]
    image = image * (1 - alpha) + obj.paint * alpha
  image = image + rng.normal(0.0, rng.uniform(2.0, 6.0) / 255.0, image.shape)
  image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)

  boxes, labels = [], []
  for obj, seen in zip(objects, visible):
    rows = np.flatnonzero(seen.any(1))
    cols = np.flatnonzero(seen.any(0))
    boxes.append([cols[0] / size, rows[0] / size, (cols[-1] + 1) / size, (rows[-1] + 1) / size])
    labels.append(obj.category)
  return (image, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int32))


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator of one example, independent of generation order."""
  return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def make_example(config: "SyntheticScenesConfig", split: str, index: int) -> dict:
  """The full example `index` of `split` in the shared schema (features.py)."""
  rng = example_rng(config.seed, split, index)
  image, boxes, object_labels = render_scene(
      rng, config.image_size, config.num_classes, config.max_objects
  )
  labels = np.zeros(config.num_classes, np.uint8)
  labels[object_labels] = 1
  with phases.phase("proposals"):  # the job's time report shows it apart from rendering
    proposal_boxes = proposals_lib.generic_proposals(image, config.num_proposals)
  return {
      features_lib.IMAGE: image,
      features_lib.LABELS: labels,
      features_lib.PROPOSALS: proposal_boxes,
      features_lib.OBJECT_BOXES: boxes,
      features_lib.OBJECT_LABELS: object_labels,
      features_lib.INDEX: index,
      features_lib.IMAGE_ID: f"synthetic-seed{config.seed}-{split}-{index:06d}",
  }


# ---------------------------------------------------------------------------------------------
# TFDS builder.


class SyntheticScenesConfig(tfds.core.BuilderConfig):
  """Parameters of a synthetic-scenes variant. Data of different parameters must use different
  config names (TFDS stores each config under data_dir/iah_synthetic_scenes/<name>/<version>)."""

  def __init__(
      self,
      *,
      name: str,
      image_size: int = 64,
      num_classes: int = 10,
      num_train: int = 4000,
      num_test: int = 500,
      num_proposals: int = 100,
      max_objects: int = 4,
      seed: int = 0,
      description: str | None = None,
      **kwargs,
  ):
    class_names(num_classes)  # Validates num_classes.
    if image_size < 16:
      raise ValueError(f"image_size must be >= 16, got {image_size}")
    if num_train < 1 or num_test < 1:
      raise ValueError(f"num_train and num_test must be >= 1, got {num_train}, {num_test}")
    if num_proposals < 1:
      raise ValueError(f"num_proposals must be >= 1, got {num_proposals}")
    if max_objects < 1:
      raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    self.image_size = int(image_size)
    self.num_classes = int(num_classes)
    self.num_train = int(num_train)
    self.num_test = int(num_test)
    self.num_proposals = int(num_proposals)
    self.max_objects = int(max_objects)
    self.seed = int(seed)
    if description is None:
      description = (
          f"{image_size}x{image_size} scenes, {num_classes} categories, "
          f"{num_train}/{num_test} train/test, {num_proposals} proposals, "
          f"<= {max_objects} objects, seed {seed}"
      )
    super().__init__(name=name, description=description, **kwargs)

  def parameters(self) -> dict:
    return {
        "image_size": self.image_size,
        "num_classes": self.num_classes,
        "num_train": self.num_train,
        "num_test": self.num_test,
        "num_proposals": self.num_proposals,
        "max_objects": self.max_objects,
        "seed": self.seed,
    }


class SyntheticScenes(tfds.core.GeneratorBasedBuilder):
  """Synthetic multi-object scenes with labels, object boxes and region proposals."""

  name = "iah_synthetic_scenes"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      SyntheticScenesConfig(name="default"),
      SyntheticScenesConfig(name="tiny", num_train=96, num_test=32),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return self.dataset_info_from_configs(
        features=features_lib.example_features(
            config.num_classes,
            config.num_proposals,
            image_shape=(config.image_size, config.image_size, 3),
            encoding_format="png",
        ),
        metadata=tfds.core.MetadataDict(
            parameters=config.parameters(), class_names=list(class_names(config.num_classes))
        ),
        description=__doc__,
        # Keep examples in index order on disk: retrieval breaks ties by database index.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is generated; nothing is downloaded.
    config = self.builder_config
    return {
        "train": self._generate_examples("train", config.num_train),
        "test": self._generate_examples("test", config.num_test),
    }

  def _generate_examples(self, split: str, count: int):
    for index in range(count):
      example = make_example(self.builder_config, split, index)
      # PNG bytes from PIL: TFDS would otherwise encode through a TensorFlow graph, which costs
      # several times more than the rest of the example. Lossless, so readers get the array back.
      encoded = io.BytesIO()
      PIL.Image.fromarray(example[features_lib.IMAGE]).save(encoded, format="PNG")
      example[features_lib.IMAGE] = encoded.getvalue()
      yield index, example


def load_builder(
    data_dir: str, config: SyntheticScenesConfig | str = "default"
) -> tfds.core.DatasetBuilder:
  """The prepared builder: generates into `data_dir` on first use, reuses it afterwards.

  Raises ValueError when `data_dir` already holds this config name prepared with other
  parameters (rename the config or use another data_dir).
  """
  if isinstance(config, str):
    known = {c.name: c for c in SyntheticScenes.BUILDER_CONFIGS}
    if config not in known:
      raise ValueError(
          f"unknown synthetic-scenes config {config!r}; known: {sorted(known)} "
          "(or pass a SyntheticScenesConfig)"
      )
    config = known[config]
  if not isinstance(config, SyntheticScenesConfig):
    raise ValueError(f"config must be a config name or a SyntheticScenesConfig, got {config!r}")
  data_dir = os.fspath(data_dir)
  builder = SyntheticScenes(config=config, data_dir=data_dir)
  if builder.is_prepared():
    stored = dict(builder.info.metadata.get("parameters", {}))
    if stored != config.parameters():
      raise ValueError(
          f"{builder.data_dir} holds config {config.name!r} prepared with {stored}, not "
          f"{config.parameters()}; give the new parameters another config name or data_dir"
      )
  else:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP, try_download_gcs=False
        )
    )
  return builder
