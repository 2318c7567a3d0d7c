"""Image decoding to RGB uint8 and resizing that keeps boxes consistent.

Every dataset builder reads its files through :func:`read_image`, so grayscale, palette, CMYK,
RGBA and 16-bit sources all reach the model as uint8 [H, W, 3] RGB, and a file that cannot be
decoded raises :class:`CorruptImageError` naming the file (never a bare PIL traceback, never a
silently black image).

Conventions:
- The EXIF orientation tag is NOT applied: VOC and COCO annotate the stored pixel grid, so
  rotating the pixels would move every ground-truth box.
- Alpha channels are dropped (the stored colour of transparent pixels is kept).
- 16-bit sources are mapped to 8 bits by dividing by 257 (65535 -> 255).
- Multi-frame files (GIF, TIFF) yield their first frame.
- Boxes in the shared schema are fractions of the width / height, so resizing the whole image
  leaves them unchanged; pixel boxes are scaled per axis by new_size / old_size
  (:func:`resize_to_max_side`).
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image


class CorruptImageError(ValueError):
  """An image file exists but cannot be decoded (truncated, not an image, unsupported)."""


# Modes whose samples are wider than 8 bits; mapped to 8 bits by dividing by 257.
_WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _to_rgb_array(image: Image.Image) -> np.ndarray:
  """PIL image of any mode -> uint8 [H, W, 3] RGB."""
  if image.mode in _WIDE_GRAY_MODES:
    gray = np.asarray(image, dtype=np.float64) / 257.0
    gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)
  if image.mode == "F":
    # Float images carry no standard range; values are taken as 0..255 intensities.
    gray = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)
  if image.mode == "P" and "transparency" in image.info:
    # Palette transparency must go through RGBA, or PIL warns and may mis-map colours.
    image = image.convert("RGBA")
  # PIL converts L, LA, 1, P, RGBA, CMYK (including Adobe's inverted CMYK JPEGs), YCbCr, LAB.
  rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
  if rgb.ndim != 3 or rgb.shape[-1] != 3:
    raise CorruptImageError(f"decoded to an unexpected shape {rgb.shape} (mode {image.mode})")
  return np.ascontiguousarray(rgb)


def decode_image_bytes(data: bytes, source: str = "<bytes>") -> np.ndarray:
  """Decodes encoded image bytes (JPEG, PNG, GIF, BMP, TIFF, WebP) to uint8 [H, W, 3] RGB.

  Args:
    data: the encoded file content.
    source: a name for error messages (usually the file path).

  Raises:
    CorruptImageError: the bytes are empty, truncated or not a decodable image.
  """
  if not data:
    raise CorruptImageError(f"cannot decode image {source!r}: the file is empty")
  try:
    with warnings.catch_warnings():
      # Turn PIL's decompression-bomb warning into an error we report per file.
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(data)) as image:
        image.seek(0)
        image.load()  # forces a full decode, so truncated files fail here
        rgb = _to_rgb_array(image)
  except CorruptImageError as err:
    raise CorruptImageError(f"cannot decode image {source!r}: {err}") from None
  except (
      OSError,
      ValueError,
      SyntaxError,
      EOFError,
      Image.DecompressionBombError,
      Image.DecompressionBombWarning,
  ) as err:
    raise CorruptImageError(f"cannot decode image {source!r}: {type(err).__name__}: {err}") from err
  if rgb.shape[0] == 0 or rgb.shape[1] == 0:
    raise CorruptImageError(f"cannot decode image {source!r}: it has zero size {rgb.shape}")
  return rgb


def read_image(path: str | os.PathLike) -> np.ndarray:
  """Reads an image file as uint8 [H, W, 3] RGB.

  Raises:
    FileNotFoundError: no file at ``path`` (the message names the path).
    CorruptImageError: the file exists but cannot be decoded.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"image file not found: {path!r}")
  with open(path, "rb") as f:
    data = f.read()
  return decode_image_bytes(data, source=path)


def resized_shape(height: int, width: int, max_side: int | None) -> tuple[int, int]:
  """(height, width) after scaling so the longer side is at most ``max_side``.

  Never upscales; ``max_side`` of None or 0 keeps the size. Both sides stay >= 1.
  """
  if height <= 0 or width <= 0:
    raise ValueError(f"image size must be positive, got {height}x{width}")
  if not max_side or max(height, width) <= max_side:
    return int(height), int(width)
  if max_side < 1:
    raise ValueError(f"max_side must be a positive integer or None, got {max_side}")
  scale = max_side / max(height, width)
  return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def resize_to_max_side(
    image: np.ndarray, max_side: int | None, pixel_boxes: np.ndarray | None = None
):
  """Downscales ``image`` so its longer side is at most ``max_side`` (area averaging).

  Args:
    image: uint8 [H, W, 3].
    max_side: largest allowed side in pixels; None or 0 keeps the image as it is.
    pixel_boxes: optional float [K, 4] (x0, y0, x1, y1) in pixels of ``image``.

  Returns:
    The resized image uint8 [H', W', 3] and, when ``pixel_boxes`` is given, the boxes scaled per
    axis by W'/W and H'/H (so they cover the same content). Boxes stored as fractions of the
    image size (the shared schema) need no change at all.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
  height, width = image.shape[:2]
  new_height, new_width = resized_shape(height, width, max_side)
  if (new_height, new_width) != (height, width):
    # BOX filter = exact area averaging on downscale, no ringing on edges.
    resized = Image.fromarray(image).resize((new_width, new_height), Image.Resampling.BOX)
    image = np.asarray(resized, dtype=np.uint8)
  if pixel_boxes is None:
    return image
  pixel_boxes = np.asarray(pixel_boxes, dtype=np.float32).reshape(-1, 4)
  scale = np.array([new_width / width, new_height / height] * 2, dtype=np.float32)
  return image, pixel_boxes * scale


def pixel_boxes_to_fractions(pixel_boxes: np.ndarray, height: int, width: int) -> np.ndarray:
  """(x0, y0, x1, y1) pixel boxes [K, 4] -> fractions of width / height, clipped to [0, 1].

  Pixel coordinates are continuous: pixel column i spans [i, i + 1), so a box covering the whole
  image is (0, 0, width, height). Corners are ordered (x0 <= x1, y0 <= y1) after clipping.
  """
  if height <= 0 or width <= 0:
    raise ValueError(f"image size must be positive, got {height}x{width}")
  boxes = np.asarray(pixel_boxes, dtype=np.float64).reshape(-1, 4)
  boxes = boxes / np.array([width, height, width, height], dtype=np.float64)
  boxes = np.clip(boxes, 0.0, 1.0)
  x0 = np.minimum(boxes[:, 0], boxes[:, 2])
  x1 = np.maximum(boxes[:, 0], boxes[:, 2])
  y0 = np.minimum(boxes[:, 1], boxes[:, 3])
  y1 = np.maximum(boxes[:, 1], boxes[:, 3])
  return np.stack([x0, y0, x1, y1], axis=-1).astype(np.float32)


def fractions_to_pixel_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
  """Fraction boxes [K, 4] -> (x0, y0, x1, y1) in continuous pixel coordinates, float32."""
  boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
  return boxes * np.array([width, height, width, height], dtype=np.float32)
