"""Region proposals that never look at ground truth, plus box IoU, NMS and proposal recall.

IAH pools features over N region proposals per image (METHODS.md 1). The paper uses GOP; any
method may be used. This module gives a fast, generic one, used for the embedded synthetic scenes
and as the quick alternative for real datasets (selective search lives in its own module and
imports `box_iou` / `nms` from here).

Boxes are (x0, y0, x1, y1). `box_iou` and `nms` work in any consistent unit; `generic_proposals`
returns fractions of the image width / height in [0, 1] (the shared schema of `features.py`).

The objectness cue of `generic_proposals` (colour contrast at every side)
-----------------------------------------------------------------------
Windows of many sizes and aspect ratios slide over the image on a grid whose stride is a fixed
fraction of the window size. Around each window we take, on each of its four sides, the outer
strip (a border `ring_fraction` times the window size wide, outside the window, clipped to the
image) and the inner band (as wide, just inside the window), and compare mean RGB colours:

  surround = min over sides of || mean(window) - mean(outer strip) ||
  boundary = min over sides of || mean(inner band) - mean(outer strip) ||
  score    = sqrt(surround * boundary)

`surround` is the centre-surround colour contrast of Alexe et al.'s objectness (TPAMI 2012, with
mean colours instead of histograms), taken at the weakest side: a window that cuts through an
object has object colour in the strip on that side and scores low, one much larger than the
object dilutes it with background. `boundary` asks for a colour change across every side of the
window, which favours windows whose sides sit on object boundaries. Sides cut off by the image
border give no evidence and are skipped. Every mean is four lookups into an integral image, so
scoring is vectorised over all windows, with no Python loop per window.

Then: a window survives only if it scores at least as high as its 8 neighbours on its own
(size, aspect) grid (cheap non-maximum suppression in position), the best survivors go through
greedy NMS, and the top `num_proposals` are returned best first. If fewer survive, the output is
padded deterministically with the best windows that were suppressed, then with the whole-image
box, so it always has exactly `num_proposals` rows.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np


def _as_boxes(boxes, what: str) -> np.ndarray:
  boxes = np.asarray(boxes, dtype=np.float64)
  if boxes.ndim != 2 or boxes.shape[-1] != 4:
    raise ValueError(f"{what} must have shape [n, 4] (x0, y0, x1, y1), got {boxes.shape}")
  if not np.all(np.isfinite(boxes)):
    raise ValueError(f"{what} contains non-finite values")
  return boxes


def box_iou(boxes_a, boxes_b) -> np.ndarray:
  """Intersection over union of every pair of boxes.

  Args:
    boxes_a: [n, 4] (x0, y0, x1, y1).
    boxes_b: [m, 4] (x0, y0, x1, y1), same units as `boxes_a`.

  Returns:
    float64 [n, m]. Boxes with x1 < x0 or y1 < y0 count as empty; a pair whose union has zero
    area (two zero-area boxes) has IoU 0.
  """
  return _pairwise_iou(_as_boxes(boxes_a, "boxes_a"), _as_boxes(boxes_b, "boxes_b"))


def _pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """`box_iou` without input checks, in the dtype of the inputs (for the NMS inner loop)."""
  area_a = np.maximum(a[:, 2] - a[:, 0], 0.0) * np.maximum(a[:, 3] - a[:, 1], 0.0)
  area_b = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
  inter_w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
  inter_h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
  inter = np.maximum(inter_w, 0.0) * np.maximum(inter_h, 0.0)
  union = area_a[:, None] + area_b[None, :] - inter
  return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes, scores, iou_threshold: float, max_output: int | None = None) -> np.ndarray:
  """Greedy non-maximum suppression, best first.

  Repeatedly keeps the highest-scoring remaining box and drops every remaining box whose IoU with
  it is greater than `iou_threshold` (the torchvision convention). Equal scores keep the lower
  index first, so the result is deterministic.

  Args:
    boxes: [n, 4] (x0, y0, x1, y1).
    scores: [n].
    iou_threshold: in [0, 1].
    max_output: stop after this many kept boxes (None: run to the end).

  Returns:
    int64 [k] indices into `boxes`, in decreasing score order.
  """
  boxes = _as_boxes(boxes, "boxes")
  scores = np.asarray(scores, dtype=np.float64)
  if scores.shape != (boxes.shape[0],):
    raise ValueError(f"scores must have shape [{boxes.shape[0]}], got {scores.shape}")
  if not 0.0 <= iou_threshold <= 1.0:
    raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
  if max_output is not None and max_output < 0:
    raise ValueError(f"max_output must be >= 0, got {max_output}")
  limit = boxes.shape[0] if max_output is None else min(max_output, boxes.shape[0])
  # A stable sort of -scores keeps equal scores in index order.
  order = np.argsort(-scores, kind="stable")
  sorted_boxes = boxes[order]
  # Candidates are visited best first in blocks: a block is first checked against every box
  # kept so far in one vectorised IoU, then resolved greedily inside itself from its own IoU
  # matrix. Same result as the one-at-a-time loop, but the work stops at the block holding the
  # last box needed, which matters when only the top few of thousands of windows are wanted.
  kept: list[int] = []
  block_size = 64
  for start in range(0, order.shape[0], block_size):
    if len(kept) >= limit:
      break
    block = sorted_boxes[start : start + block_size]
    alive = np.ones(block.shape[0], dtype=bool)
    if kept:
      alive &= (_pairwise_iou(sorted_boxes[kept], block) <= iou_threshold).all(0)
    suppresses = _pairwise_iou(block, block) > iou_threshold
    for i in np.flatnonzero(alive):
      if not alive[i]:
        continue
      kept.append(start + int(i))
      if len(kept) >= limit:
        break
      alive[i + 1 :] &= ~suppresses[i, i + 1 :]
  return order[np.asarray(kept, dtype=np.int64)]


def proposal_recall(proposals, gt_boxes, iou_threshold: float = 0.5) -> float:
  """Fraction of ground-truth boxes matched by at least one proposal with IoU >= threshold.

  Args:
    proposals: [N, 4] boxes.
    gt_boxes: [K, 4] boxes, same units.
    iou_threshold: the match threshold.

  Returns:
    Recall in [0, 1]; NaN when K == 0 (nothing to recall).
  """
  gt_boxes = _as_boxes(gt_boxes, "gt_boxes")
  if gt_boxes.shape[0] == 0:
    return float("nan")
  proposals = _as_boxes(proposals, "proposals")
  if proposals.shape[0] == 0:
    return 0.0
  best_iou = box_iou(gt_boxes, proposals).max(axis=1)
  return float(np.mean(best_iou >= iou_threshold))


def batch_proposal_recall(
    proposals: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray], iou_threshold: float = 0.5
) -> float:
  """Recall pooled over many images: matched ground-truth boxes / all ground-truth boxes.

  Args:
    proposals: per image, [N_i, 4] boxes.
    gt_boxes: per image, [K_i, 4] boxes (images with K_i == 0 contribute nothing).
    iou_threshold: the match threshold.

  Returns:
    Recall in [0, 1]; NaN when there is no ground-truth box at all.
  """
  if len(proposals) != len(gt_boxes):
    raise ValueError(
        f"got proposals for {len(proposals)} images but ground truth for " f"{len(gt_boxes)}"
    )
  matched = total = 0
  for image_proposals, image_gt in zip(proposals, gt_boxes):
    image_gt = _as_boxes(image_gt, "gt_boxes")
    if image_gt.shape[0] == 0:
      continue
    total += image_gt.shape[0]
    image_proposals = _as_boxes(image_proposals, "proposals")
    if image_proposals.shape[0]:
      matched += int(np.sum(box_iou(image_gt, image_proposals).max(axis=1) >= iou_threshold))
  return matched / total if total else float("nan")


class _WindowGrid:
  """Every sliding window of one image shape, with the lookups needed to score them.

  Depends only on the image shape and the window parameters, so it is built once and cached.
  All arrays are flat over windows; windows of one (width, height) form a row-major grid.
  """

  def __init__(
      self,
      height: int,
      width: int,
      min_size: float,
      scale_step: float,
      max_aspect: float,
      stride_fraction: float,
      ring_fraction: float,
  ):
    fractions = [min_size]
    while fractions[-1] * scale_step < 1.0 - 1e-9:
      fractions.append(fractions[-1] * scale_step)
    fractions.append(1.0)
    window_widths = sorted({max(1, int(round(f * width))) for f in fractions})
    window_heights = sorted({max(1, int(round(f * height))) for f in fractions})

    coords, neighbours, offset = [], [], 0
    for w in window_widths:
      for h in window_heights:
        # Aspect is measured relative to the image, so a square image and a wide photo get the
        # same set of window shapes.
        aspect = (w / width) / (h / height)
        if aspect > max_aspect * (1 + 1e-9) or aspect < 1 / max_aspect * (1 - 1e-9):
          continue
        xs = _grid_starts(width, w, stride_fraction)
        ys = _grid_starts(height, h, stride_fraction)
        gy, gx = np.meshgrid(ys, xs, indexing="ij")
        ny, nx = gy.shape
        coords.append(np.stack([gx.ravel(), gy.ravel(), gx.ravel() + w, gy.ravel() + h], -1))
        # 8-neighbour indices on this grid; off-grid neighbours point at the window itself.
        index = np.arange(ny * nx).reshape(ny, nx) + offset
        padded = np.pad(index, 1, mode="edge")
        shifts = [
            padded[1 + dy : 1 + dy + ny, 1 + dx : 1 + dx + nx]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if (dy, dx) != (0, 0)
        ]
        neighbours.append(np.stack(shifts, -1).reshape(-1, 8))
        offset += ny * nx
    inner = np.concatenate(coords).astype(np.int64)
    x0, y0, x1, y1 = inner.T
    # Ring (outside) and band (inside) widths, at least one pixel.
    ring_x = np.maximum(1, np.round(ring_fraction * (x1 - x0))).astype(np.int64)
    ring_y = np.maximum(1, np.round(ring_fraction * (y1 - y0))).astype(np.int64)
    ox0, oy0 = np.maximum(x0 - ring_x, 0), np.maximum(y0 - ring_y, 0)
    ox1, oy1 = np.minimum(x1 + ring_x, width), np.minimum(y1 + ring_y, height)
    ix0, iy0 = np.minimum(x0 + ring_x, x1), np.minimum(y0 + ring_y, y1)
    ix1, iy1 = np.maximum(x1 - ring_x, x0), np.maximum(y1 - ring_y, y0)
    columns = {"x0": x0, "x1": x1, "ox0": ox0, "ox1": ox1, "ix0": ix0, "ix1": ix1}
    rows = {"y0": y0, "y1": y1, "oy0": oy0, "oy1": oy1, "iy0": iy0, "iy1": iy1}
    # The distinct integral-image corners of all _REGIONS as flat indices [P, M] into an
    # integral image of H+1 rows of W+1 (window-last layouts keep array operations contiguous),
    # and per region the positions of its corners (x1y1, x1y0, x0y1, x0y0) in that list, so a
    # region's sum is c0 - c1 - c2 + c3.
    point_ids: dict[tuple[str, str], int] = {}
    points, self.region_corners = [], []
    for rx0, ry0, rx1, ry1 in _REGIONS:
      corner_positions = []
      for key in ((rx1, ry1), (rx1, ry0), (rx0, ry1), (rx0, ry0)):
        if key not in point_ids:
          point_ids[key] = len(points)
          points.append(rows[key[1]] * (width + 1) + columns[key[0]])
        corner_positions.append(point_ids[key])
      self.region_corners.append(tuple(corner_positions))
    self.points = np.stack(points, 0)
    areas = np.stack(
        [
            (columns[rx1] - columns[rx0]) * (rows[ry1] - rows[ry0])
            for rx0, ry0, rx1, ry1 in _REGIONS
        ],
        0,
    )
    # 1 / area per region [R, M]; 0 for an empty region (a strip cut off by the image border).
    self.inverse_areas = (1.0 / np.maximum(areas, 1) * (areas > 0)).astype(np.float32)
    self.normalised = (inner / np.array([width, height, width, height])).astype(np.float32)
    self.neighbours = np.ascontiguousarray(np.concatenate(neighbours).T)  # [8, M]


# Regions scored around each window, as names of their (x0, y0, x1, y1) coordinates: the window;
# then for the sides left, right, top, bottom the outer strip ("o": ring_fraction of the window
# size outside it); then for the same sides the inner band (as wide, inside the window).
_REGIONS = (
    ("x0", "y0", "x1", "y1"),
    ("ox0", "y0", "x0", "y1"),
    ("x1", "y0", "ox1", "y1"),
    ("x0", "oy0", "x1", "y0"),
    ("x0", "y1", "x1", "oy1"),
    ("x0", "y0", "ix0", "y1"),
    ("ix1", "y0", "x1", "y1"),
    ("x0", "y0", "x1", "iy0"),
    ("x0", "iy1", "x1", "y1"),
)


def _grid_starts(extent: int, window: int, stride_fraction: float) -> np.ndarray:
  """Window start positions covering [0, extent - window] evenly, both ends included."""
  last = extent - window
  if last <= 0:
    return np.zeros(1, dtype=np.int64)
  stride = max(1.0, stride_fraction * window)
  count = int(np.ceil(last / stride)) + 1
  return np.unique(np.round(np.linspace(0, last, count)).astype(np.int64))


@functools.lru_cache(maxsize=16)
def _window_grid(
    height, width, min_size, scale_step, max_aspect, stride_fraction, ring_fraction
) -> _WindowGrid:
  return _WindowGrid(
      height, width, min_size, scale_step, max_aspect, stride_fraction, ring_fraction
  )


def window_scores(image: np.ndarray, grid: _WindowGrid) -> np.ndarray:
  """float32 [M] objectness of every window of `grid` (module docstring)."""
  rgb = np.moveaxis(image, -1, 0).astype(np.float64) / 255.0  # [3, H, W]
  channels, height, width = rgb.shape
  integral = np.zeros((channels, height + 1, width + 1))
  integral[:, 1:, 1:] = rgb.cumsum(1).cumsum(2)
  # float32 after the float64 cumulative sums; one gather of all corners of every window.
  values = np.take(
      integral.astype(np.float32).reshape(channels, -1), grid.points, axis=1
  )  # [3, P, M]
  means = []
  for (c0, c1, c2, c3), inverse_area in zip(grid.region_corners, grid.inverse_areas):
    region_sum = values[:, c0] - values[:, c1]
    region_sum -= values[:, c2]
    region_sum += values[:, c3]
    region_sum *= inverse_area
    means.append(region_sum)
  window, strips, bands = means[0], means[1:5], means[5:9]
  surround = np.full(window.shape[1], np.inf, np.float32)
  boundary = np.full(window.shape[1], np.inf, np.float32)
  for strip, band, strip_inverse_area in zip(strips, bands, grid.inverse_areas[1:5]):
    # A side cut off by the image border gives no evidence against the window.
    missing = strip_inverse_area == 0
    np.minimum(surround, np.where(missing, np.inf, _squared_distance(window, strip)), out=surround)
    np.minimum(boundary, np.where(missing, np.inf, _squared_distance(band, strip)), out=boundary)
  surround[np.isinf(surround)] = 0.0
  boundary[np.isinf(boundary)] = 0.0
  return np.sqrt(surround * boundary)


def _squared_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """[M] squared Euclidean distance between per-window colours [C, M]."""
  difference = a - b
  difference *= difference
  return difference.sum(0)


def generic_proposals(
    image,
    num_proposals: int = 100,
    *,
    min_size: float = 0.12,
    scale_step: float = 1.25,
    max_aspect: float = 3.0,
    stride_fraction: float = 0.2,
    ring_fraction: float = 0.25,
    nms_iou: float = 0.6,
    num_candidates: int = 2000,
) -> np.ndarray:
  """N region proposals from sliding windows scored by colour contrast (module docstring).

  Reads only the pixels: no ground truth enters.

  Args:
    image: uint8 [H, W, 3] RGB.
    num_proposals: N, the number of boxes returned.
    min_size: smallest window side as a fraction of the image side.
    scale_step: ratio between successive window sides.
    max_aspect: largest width/height ratio (relative to the image's) of a window, and its inverse.
    stride_fraction: grid stride as a fraction of the window side.
    ring_fraction: width of the outer strips and inner bands as a fraction of the window side.
    nms_iou: IoU above which NMS suppresses the weaker of two windows.
    num_candidates: how many of the best position-local maxima enter NMS.

  The defaults were tuned on the embedded synthetic scenes (objects >= 20% of the image side);
  for photos with small objects lower `min_size`.

  Returns:
    float32 [num_proposals, 4] (x0, y0, x1, y1) in [0, 1], x0 <= x1, y0 <= y1, best first.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
  if image.shape[0] < 2 or image.shape[1] < 2:
    raise ValueError(f"image must be at least 2x2 pixels, got {image.shape[:2]}")
  if num_proposals < 1:
    raise ValueError(f"num_proposals must be >= 1, got {num_proposals}")
  if not 0.0 < min_size <= 1.0 or scale_step <= 1.0 or max_aspect < 1.0:
    raise ValueError(
        "need 0 < min_size <= 1, scale_step > 1 and max_aspect >= 1, got "
        f"{min_size}, {scale_step}, {max_aspect}"
    )
  if stride_fraction <= 0.0 or ring_fraction <= 0.0 or not 0.0 <= nms_iou <= 1.0:
    raise ValueError(
        "need stride_fraction > 0, ring_fraction > 0 and 0 <= nms_iou <= 1, got "
        f"{stride_fraction}, {ring_fraction}, {nms_iou}"
    )
  if num_candidates < 1:
    raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
  grid = _window_grid(
      image.shape[0],
      image.shape[1],
      float(min_size),
      float(scale_step),
      float(max_aspect),
      float(stride_fraction),
      float(ring_fraction),
  )
  scores = window_scores(image, grid)

  best_neighbour = scores.take(grid.neighbours[0])
  for neighbour in grid.neighbours[1:]:
    np.maximum(best_neighbour, scores.take(neighbour), out=best_neighbour)
  is_peak = scores >= best_neighbour
  peaks = np.flatnonzero(is_peak)
  # Best first, ties to the lower window index, so the result is fully determined.
  peaks = peaks[np.lexsort((peaks, -scores[peaks]))][:num_candidates]
  kept = peaks[nms(grid.normalised[peaks], scores[peaks], nms_iou, max_output=num_proposals)]

  if kept.size < num_proposals:
    # Pad with the best windows NMS (or the peak test) removed, then with the whole image.
    order = np.lexsort((np.arange(scores.size), -scores))
    spare = order[~np.isin(order, kept)][: num_proposals - kept.size]
    kept = np.concatenate([kept, spare])
  boxes = grid.normalised[kept]
  if boxes.shape[0] < num_proposals:
    whole = np.tile(
        np.array([[0.0, 0.0, 1.0, 1.0]], np.float32), (num_proposals - boxes.shape[0], 1)
    )
    boxes = np.concatenate([boxes, whole])
  return np.ascontiguousarray(boxes, dtype=np.float32)
