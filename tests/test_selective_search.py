"""Selective-search proposals: range, order, NMS against a loop reference, determinism, padding."""

import numpy as np
import pytest

import data_fixtures
from iah_jax.data import features
from iah_jax.data import selective_search


def _loop_iou(a, b):
  inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = inter_w * inter_h
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def _reference(image, num_proposals, nms_iou, min_side, max_candidates=1000):
  """The documented pipeline written with loops (image already below search_max_side)."""
  height, width = image.shape[:2]
  rects = selective_search.raw_selective_search(image, "fast", seed=0)[:max_candidates]
  boxes = [[0.0, 0.0, 1.0, 1.0]]
  for x, y, w, h in rects:
    box = [x / width, y / height, (x + w) / width, (y + h) / height]
    box = [min(max(v, 0.0), 1.0) for v in box]
    if box[2] - box[0] >= min_side and box[3] - box[1] >= min_side:
      boxes.append(box)
  kept = []
  for box in boxes:
    if all(_loop_iou(box, other) <= nms_iou for other in kept):
      kept.append(box)
    if len(kept) == num_proposals:
      break
  return np.array([kept[i % len(kept)] for i in range(num_proposals)], np.float32)


@pytest.fixture(scope="module")
def image():
  return data_fixtures.scene(72, 96, seed=5)


def test_proposals_are_valid_fractions_with_whole_image_first(image):
  boxes = selective_search.selective_search_proposals(image, 30)
  assert boxes.shape == (30, 4) and boxes.dtype == np.float32
  features.check_boxes(boxes)  # in [0, 1], x0 <= x1, y0 <= y1
  assert np.all(boxes[:, 0] <= boxes[:, 2]) and np.all(boxes[:, 1] <= boxes[:, 3])
  np.testing.assert_array_equal(boxes[0], [0, 0, 1, 1])


def test_matches_the_loop_reference(image):
  boxes = selective_search.selective_search_proposals(
      image, 25, search_max_side=256, nms_iou=0.6, min_side=0.05
  )
  np.testing.assert_allclose(boxes, _reference(image, 25, 0.6, 0.05), atol=1e-6)


def test_distinct_kept_boxes_respect_the_nms_threshold(image):
  boxes = selective_search.selective_search_proposals(image, 40, nms_iou=0.5)
  distinct = np.unique(boxes, axis=0)
  for i in range(len(distinct)):
    for j in range(i + 1, len(distinct)):
      assert _loop_iou(distinct[i], distinct[j]) <= 0.5 + 1e-6
  small = boxes[1:]
  assert np.all(small[:, 2] - small[:, 0] >= 0.04 - 1e-6)
  assert np.all(small[:, 3] - small[:, 1] >= 0.04 - 1e-6)


def test_same_image_same_boxes_even_after_other_images(image):
  first = selective_search.selective_search_proposals(image, 50)
  selective_search.selective_search_proposals(data_fixtures.scene(64, 64, seed=9), 50)
  np.testing.assert_array_equal(first, selective_search.selective_search_proposals(image, 50))


def test_large_image_is_searched_downscaled_and_boxes_stay_fractions():
  # One strong rectangle covering x in [0.25, 0.75), y in [0.2, 0.6).
  small = data_fixtures.scene(100, 160, seed=2, rects=[(40, 20, 120, 60)])
  large = np.repeat(np.repeat(small, 5, axis=0), 5, axis=1)  # 500 x 800
  target = np.array([0.25, 0.2, 0.75, 0.6])
  for img in (small, large):
    boxes = selective_search.selective_search_proposals(img, 20, search_max_side=160)
    best = max(_loop_iou(target, box) for box in boxes[1:])
    assert best > 0.9, best


def test_flat_and_tiny_images_are_padded_cyclically():
  flat = np.full((40, 40, 3), 90, np.uint8)
  boxes = selective_search.selective_search_proposals(flat, 12)
  distinct = len(np.unique(boxes, axis=0))
  assert distinct < 12
  # Padding repeats the list from the top: row i equals row i mod (number of distinct boxes).
  np.testing.assert_array_equal(boxes, boxes[np.arange(12) % distinct])
  tiny = np.zeros((4, 5, 3), np.uint8)
  np.testing.assert_array_equal(
      selective_search.selective_search_proposals(tiny, 3), np.tile([[0, 0, 1, 1]], (3, 1))
  )


def test_pad_cyclically_and_bad_inputs(image):
  np.testing.assert_array_equal(
      selective_search.pad_cyclically(np.array([[0, 0, 1, 1], [0, 0, 0.5, 0.5]]), 5)[:, 2],
      [1, 0.5, 1, 0.5, 1],
  )
  with pytest.raises(ValueError, match="empty"):
    selective_search.pad_cyclically(np.zeros((0, 4)), 3)
  with pytest.raises(ValueError, match="uint8"):
    selective_search.selective_search_proposals(image.astype(np.float32), 5)
  with pytest.raises(ValueError, match="mode"):
    selective_search.raw_selective_search(image, mode="slow")
  with pytest.raises(ValueError, match="num_proposals"):
    selective_search.selective_search_proposals(image, 0)
