"""Tiny image files for the data tests: RGB, grayscale and CMYK JPEGs, PNGs, corrupt files.

Images are small scenes of coloured rectangles on a plain background, so selective search has
regions to find and decoding differences are easy to check.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

KINDS = ("rgb", "gray", "cmyk", "png")


def scene(height: int, width: int, seed: int, rects=None) -> np.ndarray:
  """uint8 [H, W, 3]: a grey background and 2-3 coloured rectangles (or the given pixel rects)."""
  rng = np.random.default_rng(seed)
  image = np.full((height, width, 3), 128, np.uint8)
  if rects is None:
    rects = []
    for _ in range(int(rng.integers(2, 4))):
      x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
      rects.append(
          (
              x0,
              y0,
              x0 + int(rng.integers(width // 5, width // 2)),
              y0 + int(rng.integers(height // 5, height // 2)),
          )
      )
  for x0, y0, x1, y1 in rects:
    image[y0:y1, x0:x1] = rng.integers(0, 256, size=3)
  return image


def encode(image: np.ndarray, kind: str) -> bytes:
  """Encodes an RGB array as a JPEG (rgb / gray / cmyk colour mode) or a PNG."""
  buffer = io.BytesIO()
  pil = Image.fromarray(image)
  if kind == "rgb":
    pil.save(buffer, "JPEG", quality=95)
  elif kind == "gray":
    pil.convert("L").save(buffer, "JPEG", quality=95)
  elif kind == "cmyk":
    pil.convert("CMYK").save(buffer, "JPEG", quality=95)
  elif kind == "png":
    pil.save(buffer, "PNG")
  else:
    raise ValueError(kind)
  return buffer.getvalue()


def write_image(
    path, kind: str = "rgb", height: int = 48, width: int = 64, seed: int = 0, rects=None
) -> np.ndarray:
  """Writes a scene to ``path`` (PNG content keeps whatever extension ``path`` has).

  Returns the RGB array that was encoded (before any JPEG loss).
  """
  image = scene(height, width, seed, rects)
  os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
  with open(path, "wb") as f:
    f.write(encode(image, kind))
  return image


def write_corrupt(path, seed: int = 0) -> None:
  """A JPEG cut in the middle: it has a valid header but cannot be fully decoded."""
  data = encode(scene(48, 64, seed), "rgb")
  os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])
