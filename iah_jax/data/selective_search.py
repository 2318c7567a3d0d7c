"""Selective-search region proposals (OpenCV contrib), then NMS and the top N boxes.

The IAH paper (section IV-B) generates up to 1000 object proposals per image, applies non-maximum
suppression and keeps the N = 100 best. The paper used GOP; GOP has no maintained Python build, so
we use selective search (Uijlings et al., IJCV 2013), the paper's listed alternative, through
``cv2.ximgproc.segmentation.createSelectiveSearchSegmentation`` (pip package
opencv-contrib-python-headless).

Pipeline for one image (:func:`selective_search_proposals`):
1. Downscale so the longer side is ``search_max_side`` pixels (never upscale). Selective search
   costs roughly quadratic time in the side, and proposals are stored as fractions of the image
   size, so they carry over to the full-resolution image unchanged.
2. Run selective search ("fast" = Uijlings' fast diversification: 2 colour spaces x 2 k values x
   2 similarity strategies; "quality" is ~5x slower; "single" one strategy). OpenCV returns the
   boxes ordered by its rank (hierarchy level x a random factor, as in the paper); that order is
   the "confidence" we keep. OpenCV draws that random factor from C's ``rand()``, so we seed it with
   ``srand(seed)`` before every image: the same image always yields the same boxes in the same
   order, whichever worker process computes it.
3. Keep the first ``max_candidates`` boxes, drop boxes narrower or shorter than ``min_side`` (a
   fraction of the image side: tiny boxes map to less than one feature-map cell in SPP).
4. Greedy NMS at IoU ``nms_iou`` in rank order (:func:`iah_jax.data.proposals.nms`), then the
   top N.
5. Row 0 is the whole image (0, 0, 1, 1) when ``include_whole_image`` (default): scene labels such as
   "sea" or "sunset" cover the whole frame, and cross-hypothesis max-pooling (eq. 1) then always has
   at least one proposal that sees every object.
6. If fewer than N distinct boxes survive (tiny or flat images), the list is padded by repeating it
   cyclically from the top, so every image has exactly N rows (the schema has a fixed N). Repeats
   change nothing under max-pooling and only re-weight the mean in the Kronecker fusion.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np

MODES = ("fast", "quality", "single")
WHOLE_IMAGE_BOX = np.array([0.0, 0.0, 1.0, 1.0], dtype=np.float32)
# Below this side (pixels) graph segmentation has nothing to group; we return the whole image.
_MIN_SEARCH_SIDE = 8


@functools.lru_cache(maxsize=1)
def _c_srand():
  """C's srand, which seeds the rand() OpenCV's selective search ranks with; None if unavailable."""
  name = ctypes.util.find_library("c")
  try:
    return ctypes.CDLL(name).srand if name else None
  except OSError:
    return None


def _import_cv2():
  try:
    import cv2  # pylint: disable=g-import-not-at-top
  except ImportError as err:
    raise ImportError(
        "selective search needs OpenCV contrib: pip install " "opencv-contrib-python-headless"
    ) from err
  if not hasattr(cv2, "ximgproc"):
    raise ImportError(
        "cv2 has no ximgproc module: the plain opencv-python package shadows the "
        "contrib build; pip uninstall opencv-python opencv-python-headless && pip "
        "install opencv-contrib-python-headless"
    )
  return cv2


def raw_selective_search(image: np.ndarray, mode: str = "fast", seed: int = 0) -> np.ndarray:
  """Selective search on ``image`` as is (no resizing, no filtering).

  Args:
    image: uint8 [H, W, 3] RGB.
    mode: "fast", "quality" or "single" (OpenCV's three strategies).
    seed: seeds the random part of OpenCV's ranking, for reproducible order.

  Returns:
    int32 [M, 4] (x, y, width, height) pixel rectangles in OpenCV's rank order.
  """
  if mode not in MODES:
    raise ValueError(f"selective search mode must be one of {MODES}, got {mode!r}")
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
  cv2 = _import_cv2()
  search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
  # OpenCV's colour-space conversions assume BGR channel order.
  search.setBaseImage(np.ascontiguousarray(image[..., ::-1]))
  if mode == "fast":
    search.switchToSelectiveSearchFast()
  elif mode == "quality":
    search.switchToSelectiveSearchQuality()
  else:
    search.switchToSingleStrategy()
  srand = _c_srand()
  if srand is not None:
    srand(int(seed) & 0xFFFFFFFF)
  rects = search.process()
  return np.asarray(rects, dtype=np.int32).reshape(-1, 4)


def pad_cyclically(boxes: np.ndarray, num_rows: int) -> np.ndarray:
  """Repeats the rows of ``boxes`` [K >= 1, 4] from the top until there are ``num_rows``."""
  boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
  if len(boxes) == 0:
    raise ValueError("cannot pad an empty box list")
  return boxes[np.arange(num_rows) % len(boxes)]


def selective_search_proposals(
    image: np.ndarray,
    num_proposals: int = 100,
    *,
    search_max_side: int = 256,
    mode: str = "fast",
    nms_iou: float = 0.7,
    max_candidates: int = 1000,
    min_side: float = 0.04,
    include_whole_image: bool = True,
    seed: int = 0,
) -> np.ndarray:
  """Region proposals for one image (see the module docstring for each step).

  Args:
    image: uint8 [H, W, 3] RGB, any size.
    num_proposals: N, rows of the result.
    search_max_side: the image is downscaled to this longer side before the search.
    mode: "fast", "quality" or "single".
    nms_iou: IoU above which a lower-ranked box is suppressed.
    max_candidates: only the first boxes of the search's ranking enter NMS (paper: 1000).
    min_side: boxes narrower or shorter than this fraction of the image are dropped.
    include_whole_image: row 0 is (0, 0, 1, 1).
    seed: seeds OpenCV's ranking (same image + seed -> same boxes, same order).

  Returns:
    float32 [num_proposals, 4] (x0, y0, x1, y1) in [0, 1] of the image width / height, best first.
  """
  if num_proposals < 1:
    raise ValueError(f"num_proposals must be >= 1, got {num_proposals}")
  if search_max_side < _MIN_SEARCH_SIDE:
    raise ValueError(f"search_max_side must be >= {_MIN_SEARCH_SIDE}, got {search_max_side}")
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
  height, width = image.shape[:2]
  scale = min(1.0, search_max_side / max(height, width))
  small_h, small_w = max(1, round(height * scale)), max(1, round(width * scale))
  kept = np.zeros((0, 4), dtype=np.float32)
  if min(small_h, small_w) >= _MIN_SEARCH_SIDE:
    if (small_h, small_w) != (height, width):
      cv2 = _import_cv2()
      image = cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA)
    rects = raw_selective_search(image, mode=mode, seed=seed)[:max_candidates]
    rects = rects.astype(np.float32)
    boxes = np.stack(
        [
            rects[:, 0] / small_w,
            rects[:, 1] / small_h,
            (rects[:, 0] + rects[:, 2]) / small_w,
            (rects[:, 1] + rects[:, 3]) / small_h,
        ],
        axis=-1,
    )
    boxes = np.clip(boxes, 0.0, 1.0)
    large = ((boxes[:, 2] - boxes[:, 0]) >= min_side) & ((boxes[:, 3] - boxes[:, 1]) >= min_side)
    boxes = boxes[large]
    if include_whole_image:
      boxes = np.concatenate([WHOLE_IMAGE_BOX[None], boxes], axis=0)
    # NMS in rank order: the score of the k-th box is -k.
    from iah_jax.data import proposals  # pylint: disable=g-import-not-at-top

    ranks = -np.arange(len(boxes), dtype=np.float64)
    kept = boxes[proposals.nms(boxes, ranks, nms_iou, max_output=num_proposals)]
  if len(kept) == 0:
    kept = WHOLE_IMAGE_BOX[None]
  return pad_cyclically(kept, num_proposals).astype(np.float32)
