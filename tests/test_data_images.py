"""Image decoding (grayscale, CMYK, PNG, 16-bit, palette), corrupt files and box-consistent resizing."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image

import data_fixtures
from iah_jax.data import images


def test_grayscale_jpeg_becomes_three_equal_channels(tmp_path):
  path = tmp_path / "gray.jpg"
  data_fixtures.write_image(path, "gray")
  rgb = images.read_image(path)
  reference = np.asarray(Image.open(path))  # mode L, [H, W]
  assert rgb.dtype == np.uint8 and rgb.shape == reference.shape + (3,)
  for channel in range(3):
    np.testing.assert_array_equal(rgb[..., channel], reference)


def test_cmyk_jpeg_matches_opencv_and_the_source_colours(tmp_path):
  path = tmp_path / "cmyk.jpg"
  source = data_fixtures.write_image(path, "cmyk")
  assert Image.open(path).mode == "CMYK"
  rgb = images.read_image(path)
  # OpenCV's libjpeg path is an independent CMYK -> RGB decoder.
  opencv = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
  assert np.abs(rgb.astype(int) - opencv.astype(int)).max() <= 3
  assert np.abs(rgb.astype(int) - source.astype(int)).mean() < 3


def test_png_is_lossless_and_alpha_is_dropped(tmp_path):
  source = data_fixtures.scene(30, 40, seed=3)
  rgba = np.concatenate([source, np.full((30, 40, 1), 77, np.uint8)], axis=-1)
  path = tmp_path / "rgba.png"
  Image.fromarray(rgba, "RGBA").save(path)
  np.testing.assert_array_equal(images.read_image(path), source)


def test_palette_png_with_transparency_maps_palette_colours(tmp_path):
  palette_image = Image.new("P", (8, 6))
  palette_image.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
  pixels = np.zeros((6, 8), np.uint8)
  pixels[:, 4:] = 1
  palette_image.putdata(pixels.reshape(-1).tolist())
  palette_image.info["transparency"] = 0
  path = tmp_path / "palette.png"
  palette_image.save(path, transparency=0)
  rgb = images.read_image(path)
  np.testing.assert_array_equal(rgb[:, :4], np.broadcast_to([10, 20, 30], (6, 4, 3)))
  np.testing.assert_array_equal(rgb[:, 4:], np.broadcast_to([200, 100, 50], (6, 4, 3)))


def test_16_bit_grayscale_png_is_scaled_to_8_bits(tmp_path):
  values = np.array([[0, 257, 65535], [25700, 514, 1000]], np.uint16)
  path = tmp_path / "deep.png"
  Image.fromarray(values).save(path)
  rgb = images.read_image(path)
  expected = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
  for channel in range(3):
    np.testing.assert_array_equal(rgb[..., channel], expected)


@pytest.mark.parametrize("content", ["truncated", "garbage", "empty"])
def test_corrupt_files_raise_a_clear_error_naming_the_file(tmp_path, content):
  path = tmp_path / f"{content}.jpg"
  if content == "truncated":
    data_fixtures.write_corrupt(path)
  elif content == "garbage":
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, np.uint8).tobytes())
  else:
    path.write_bytes(b"")
  with pytest.raises(images.CorruptImageError, match=str(path.name)):
    images.read_image(path)
  assert issubclass(images.CorruptImageError, ValueError)


def test_missing_file_raises_file_not_found_naming_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.jpg"):
    images.read_image(tmp_path / "nowhere.jpg")


def test_decode_bytes_equals_read_image(tmp_path):
  path = tmp_path / "a.png"
  source = data_fixtures.write_image(path, "png")
  np.testing.assert_array_equal(images.decode_image_bytes(path.read_bytes()), source)


@pytest.mark.parametrize(
    "height,width,max_side,expected",
    [
        (300, 400, 200, (150, 200)),
        (400, 300, 200, (200, 150)),
        (100, 80, 200, (100, 80)),  # never upscale
        (100, 80, 0, (100, 80)),  # 0 keeps
        (100, 80, None, (100, 80)),
        (1000, 3, 100, (100, 1)),  # sides stay >= 1 (0.3 rounds to 0)
    ],
)
def test_resized_shape(height, width, max_side, expected):
  assert images.resized_shape(height, width, max_side) == expected


def _rect_extent(image, colour):
  """(x0, y0, x1, y1) continuous pixel extent of the pixels close to ``colour``."""
  mask = np.abs(image.astype(int) - np.asarray(colour)).sum(-1) < 60
  ys, xs = np.nonzero(mask)
  return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_resizing_keeps_pixel_and_fraction_boxes_on_the_same_content():
  height, width = 240, 320
  pixel_box = np.array([[64, 48, 192, 144]], np.float32)
  image = np.zeros((height, width, 3), np.uint8)
  image[48:144, 64:192] = (250, 20, 20)
  resized, scaled = images.resize_to_max_side(image, 100, pixel_boxes=pixel_box)
  assert resized.shape == (75, 100, 3)
  # The scaled pixel box covers the rectangle in the resized image (within a pixel).
  np.testing.assert_allclose(scaled[0], _rect_extent(resized, (250, 20, 20)), atol=1.0)
  # Fractions are resolution independent: the same before and after.
  before = images.pixel_boxes_to_fractions(pixel_box, height, width)
  after = images.pixel_boxes_to_fractions(scaled, *resized.shape[:2])
  np.testing.assert_allclose(before, after, atol=1e-6)
  back = images.fractions_to_pixel_boxes(before, *resized.shape[:2])
  np.testing.assert_allclose(back, scaled, atol=1e-4)


def test_resize_without_boxes_and_no_op_resize():
  image = data_fixtures.scene(30, 40, seed=1)
  assert images.resize_to_max_side(image, 0) is image or np.array_equal(
      images.resize_to_max_side(image, 0), image
  )
  np.testing.assert_array_equal(images.resize_to_max_side(image, 40), image)
  with pytest.raises(ValueError, match="uint8"):
    images.resize_to_max_side(image.astype(np.float32), 10)


def test_pixel_boxes_to_fractions_matches_a_loop_reference():
  rng = np.random.default_rng(0)
  height, width = 50, 80
  boxes = rng.uniform(-20, 100, size=(40, 4)).astype(np.float32)
  fractions = images.pixel_boxes_to_fractions(boxes, height, width)
  for row, (x0, y0, x1, y1) in enumerate(boxes):
    fx0, fx1 = sorted([min(max(x0 / width, 0), 1), min(max(x1 / width, 0), 1)])
    fy0, fy1 = sorted([min(max(y0 / height, 0), 1), min(max(y1 / height, 0), 1)])
    np.testing.assert_allclose(fractions[row], [fx0, fy0, fx1, fy1], atol=1e-6)
  with pytest.raises(ValueError, match="positive"):
    images.pixel_boxes_to_fractions(boxes, 0, width)


def test_multiframe_gif_yields_first_frame(tmp_path):
  frames = [Image.new("RGB", (6, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
  buffer = io.BytesIO()
  frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
  rgb = images.decode_image_bytes(buffer.getvalue())
  assert rgb.shape == (4, 6, 3)
  assert rgb[..., 0].min() > 200 and rgb[..., 2].max() < 50
