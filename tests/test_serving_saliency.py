"""IAH Fig. 5 saliency maps against a loop reference on hand-made boxes and probabilities."""

import jax
import numpy as np
import pytest

from iah_jax.serving import saliency


def loop_reference(boxes, probs, height, width, reduce):
  """Pixel by pixel, box by box: the definition in the module docstring (in float32, so a box
  edge exactly on a pixel centre compares as the definition says)."""
  out = np.zeros((height, width), np.float64)
  for row in range(height):
    for col in range(width):
      covering = [
          float(p)
          for (x0, y0, x1, y1), p in zip(boxes.astype(np.float32), probs)
          if x0 * np.float32(width) <= col + 0.5 <= x1 * np.float32(width)
          and y0 * np.float32(height) <= row + 0.5 <= y1 * np.float32(height)
      ]
      if covering:
        out[row, col] = max(covering) if reduce == "max" else sum(covering)
  return out


# Hand-made: overlapping boxes, a box whose edges lie exactly on pixel centres of a 4 x 4 map
# (0.125 and 0.375), a zero-area box, a whole-image box with a low probability, and a box that
# covers no pixel centre.
BOXES = np.array(
    [
        [0.0, 0.0, 1.0, 1.0],
        [0.1, 0.2, 0.6, 0.7],
        [0.4, 0.5, 0.9, 0.95],
        [0.125, 0.125, 0.375, 0.375],
        [0.5, 0.5, 0.5, 0.5],
        [0.01, 0.01, 0.02, 0.02],
    ],
    np.float32,
)
PROBS = np.array([0.05, 0.8, 0.6, 0.3, 0.9, 0.7], np.float32)


@pytest.mark.parametrize("reduce", saliency.REDUCTIONS)
@pytest.mark.parametrize("height,width", [(4, 4), (8, 8), (7, 12), (16, 5)])
def test_saliency_map_equals_the_loop_reference(reduce, height, width):
  got = np.asarray(saliency.saliency_map(BOXES, PROBS, height, width, reduce=reduce))
  assert got.shape == (height, width) and got.dtype == np.float32
  np.testing.assert_allclose(
      got, loop_reference(BOXES, PROBS, height, width, reduce), rtol=1e-6, atol=1e-7
  )


def test_edges_on_pixel_centres_count_as_covered():
  # On a 4 x 4 map the pixel centres are at 0.125, 0.375, ...: box 3 covers exactly rows and
  # columns 0 and 1.
  got = np.asarray(saliency.saliency_map(BOXES[3:4], np.ones(1), 4, 4))
  expected = np.zeros((4, 4))
  expected[:2, :2] = 1.0
  np.testing.assert_array_equal(got, expected)


def test_random_boxes_and_vmap_over_categories():
  rng = np.random.default_rng(0)
  corners = rng.uniform(size=(30, 4))
  boxes = np.concatenate(
      [np.minimum(corners[:, :2], corners[:, 2:]), np.maximum(corners[:, :2], corners[:, 2:])], 1
  ).astype(np.float32)
  proposal_probs = rng.dirichlet(np.ones(5), size=30).astype(np.float32)  # P [N, c]
  maps = jax.vmap(lambda p: saliency.saliency_map(boxes, p, 9, 11, reduce="max"), in_axes=1)(
      proposal_probs
  )
  assert maps.shape == (5, 9, 11)
  for category in range(5):
    np.testing.assert_allclose(
        np.asarray(maps[category]),
        loop_reference(boxes, proposal_probs[:, category], 9, 11, "max"),
        rtol=1e-6,
    )
  assert float(maps.max()) <= 1.0


def test_no_boxes_gives_a_zero_map_and_bad_reduce_is_rejected():
  got = saliency.saliency_map(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 3, 3)
  np.testing.assert_array_equal(np.asarray(got), np.zeros((3, 3)))
  with pytest.raises(ValueError, match="reduce must be one of"):
    saliency.saliency_map(BOXES, PROBS, 4, 4, reduce="mean")
