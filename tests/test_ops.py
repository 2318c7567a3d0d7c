"""Tests of `iah_jax.ops` (SPP over boxes, eq. 1 pooling, eq. 6 fusion) against naive loop references.

The references are written from DESIGN.md ("Public functional API") and the IAH paper, not from the
implementation: SPP bin edges use exact rational arithmetic on the given float32 box coordinates (the
DESIGN.md convention is stated in real numbers), values and gradients are computed in float64 with
explicit Python loops over boxes, bins, channels and cells.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from iah_jax.ops import (
    batched_spp,
    cross_hypothesis_pool,
    kronecker_fusion,
    spp,
    spp_bin_ranges,
    spp_output_dim,
)

# ------------------------------------------------------------------------------------------------
# Naive references.
# ------------------------------------------------------------------------------------------------


def reference_cell_range(low: float, high: float, size: int, num_bins: int, index: int):
  """Inclusive cells (start, end) of bin `index` of `num_bins` along one axis (DESIGN.md rule).

  bx0 = low * size, bx1 = high * size; bin i covers floor(bx0 + i (bx1 - bx0) / n) ..
  ceil(bx0 + (i + 1)(bx1 - bx0) / n) - 1, clipped to [0, size - 1], at least one cell wide.
  Computed exactly (Fraction of the float value actually passed in).
  """
  low_cells = Fraction(float(low)) * size
  high_cells = Fraction(float(high)) * size
  step = (high_cells - low_cells) / num_bins
  start = math.floor(low_cells + index * step)
  end = math.ceil(low_cells + (index + 1) * step) - 1
  start = min(max(start, 0), size - 1)
  end = min(max(end, 0), size - 1)
  return start, max(end, start)


def reference_bins(box, height: int, width: int, levels):
  """Every bin of one box as (row_start, row_end, col_start, col_end), in the output order."""
  x0, y0, x1, y1 = box
  bins = []
  for level in levels:
    all_cols = [reference_cell_range(x0, x1, width, level, ix) for ix in range(level)]
    for iy in range(level):
      rows = reference_cell_range(y0, y1, height, level, iy)
      for cols in all_cols:
        bins.append(rows + cols)
  return bins


def has_near_integer_edge(box, height: int, width: int, levels, tolerance: float = 1e-3) -> bool:
  """True when some bin edge is within `tolerance` cells of a cell edge without being exactly on it.

  Such an edge (e.g. 0.1 * 3 + (0.8 * 3 - 0.1 * 3) / 3, exactly 1.0000000163 for the float32 values
  of 0.1 and 0.8) is on the cell edge up to the float32 precision of the input, so floor/ceil may
  legitimately go either way (an implementation may also snap edges within a small tolerance);
  boxes with such edges are left out of the value comparisons. Exact-integer edges stay in.
  """
  x0, y0, x1, y1 = (Fraction(float(v)) for v in box)
  for low, high, size in ((x0, x1, width), (y0, y1, height)):
    for level in levels:
      step = (high - low) * size / level
      for index in range(level + 1):
        edge = low * size + index * step
        if 0 < abs(edge - round(edge)) < tolerance:
          return True
  return False


def unambiguous_boxes(boxes, height: int, width: int, levels) -> np.ndarray:
  kept = [box for box in boxes if not has_near_integer_edge(box, height, width, levels)]
  assert len(kept) >= 0.75 * len(boxes), "fixture boxes should rarely sit near cell edges"
  return np.asarray(kept, np.float32)


def reference_spp(feature_map, boxes, levels):
  """[N, C * bins] float64: loops over boxes, bins, channels and every cell of the bin."""
  feature_map = np.asarray(feature_map, np.float64)
  height, width, channels = feature_map.shape
  rows = []
  for box in np.asarray(boxes):
    values = []
    for row_start, row_end, col_start, col_end in reference_bins(box, height, width, levels):
      for channel in range(channels):
        best = -math.inf
        for y in range(row_start, row_end + 1):
          for x in range(col_start, col_end + 1):
            best = max(best, feature_map[y, x, channel])
        values.append(best)
    rows.append(values)
  return np.asarray(rows, np.float64).reshape(len(rows), -1)


def reference_spp_gradient(feature_map, boxes, levels, cotangent):
  """ "Argmax scatter": each output's cotangent goes to the argmax cell of its bin (no ties)."""
  feature_map = np.asarray(feature_map, np.float64)
  cotangent = np.asarray(cotangent, np.float64)
  height, width, channels = feature_map.shape
  gradient = np.zeros_like(feature_map)
  for box_index, box in enumerate(np.asarray(boxes)):
    output = 0
    for row_start, row_end, col_start, col_end in reference_bins(box, height, width, levels):
      for channel in range(channels):
        best, best_cell = -math.inf, None
        for y in range(row_start, row_end + 1):
          for x in range(col_start, col_end + 1):
            if feature_map[y, x, channel] > best:
              best, best_cell = feature_map[y, x, channel], (y, x)
        gradient[best_cell + (channel,)] += cotangent[box_index, output]
        output += 1
  return gradient


def reference_cross_hypothesis_pool(proposal_scores):
  scores = np.asarray(proposal_scores, np.float64)
  pooled = np.zeros(scores.shape[:-2] + scores.shape[-1:])
  for batch_index in np.ndindex(scores.shape[:-2]):
    num_proposals, num_categories = scores.shape[-2:]
    for j in range(num_categories):
      best = -math.inf
      for i in range(num_proposals):
        best = max(best, scores[batch_index + (i, j)])
      pooled[batch_index + (j,)] = best
  return pooled


def reference_kronecker_fusion(proposal_probs, proposal_hashes):
  """Literal eq. 6: (1/N) sum_i kron(P_i, H_i), reshaped from [c*b] to [c, b]."""
  probs = np.asarray(proposal_probs, np.float64)
  hashes = np.asarray(proposal_hashes, np.float64)
  num_proposals, num_categories = probs.shape[-2:]
  bits = hashes.shape[-1]
  fused = np.zeros(probs.shape[:-2] + (num_categories, bits))
  for batch_index in np.ndindex(probs.shape[:-2]):
    total = np.zeros(num_categories * bits)
    for i in range(num_proposals):
      total += np.kron(probs[batch_index + (i,)], hashes[batch_index + (i,)])
    fused[batch_index] = (total / num_proposals).reshape(num_categories, bits)
  return fused


# ------------------------------------------------------------------------------------------------
# Fixtures.
# ------------------------------------------------------------------------------------------------


def random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
  """Random (x0, y0, x1, y1) with x0 <= x1, y0 <= y1, float32 in [0, 1]."""
  xs = np.sort(rng.uniform(0.0, 1.0, (count, 2)), axis=1)
  ys = np.sort(rng.uniform(0.0, 1.0, (count, 2)), axis=1)
  return np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1).astype(np.float32)


def degenerate_boxes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """Zero-area, border, whole-image, tiny and quarter-aligned boxes."""
  x, y = rng.uniform(0.05, 0.95, 2)
  cell_x, cell_y = rng.integers(0, width), rng.integers(0, height)
  boxes = [
      (0.0, 0.0, 1.0, 1.0),  # whole image
      (0.0, 0.0, 0.0, 0.0),  # zero area at the top-left corner
      (1.0, 1.0, 1.0, 1.0),  # zero area at the bottom-right corner
      (1.0, 0.0, 1.0, 1.0),  # zero width on the right border
      (0.0, 1.0, 1.0, 1.0),  # zero height on the bottom border
      (0.0, 0.0, 0.0, 1.0),  # zero width on the left border
      (x, y, x, y),  # zero area inside
      (0.1, y, 0.8, y),  # zero height inside
      (x, 0.2, x, 0.9),  # zero width inside
      # tiny box strictly inside one cell
      (
          (cell_x + 0.3) / width,
          (cell_y + 0.4) / height,
          (cell_x + 0.6) / width,
          (cell_y + 0.7) / height,
      ),
      (0.25, 0.5, 0.75, 1.0),  # exactly representable edges
      (0.0, 0.25, 0.5, 0.75),
  ]
  return np.asarray(boxes, np.float32)


def distinct_feature_map(rng: np.random.Generator, shape) -> np.ndarray:
  """Values without ties, spaced 0.1 apart: max is piecewise linear with no kink within 0.05."""
  size = int(np.prod(shape))
  return (rng.permutation(size).reshape(shape) * 0.1 - 0.05 * size).astype(np.float32)


# One compilation per (shape, levels): pairs rather than the full product keep the file fast while
# every shape and every level tuple is covered (4, 3, 2, 1 on most shapes).
SHAPES_AND_LEVELS = [
    ((1, 1, 1), (4, 3, 2, 1)),
    ((1, 5, 2), (2, 1)),
    ((5, 1, 2), (4, 3, 2, 1)),
    ((2, 3, 3), (4, 3, 2, 1)),
    ((3, 2, 1), (6,)),
    ((2, 2, 1), (1,)),
    ((3, 3, 2), (4, 3, 2, 1)),
    ((4, 4, 2), (6,)),
    ((7, 5, 3), (4, 3, 2, 1)),
    ((6, 6, 1), (2, 1)),
    ((8, 13, 2), (4, 3, 2, 1)),
    ((13, 8, 2), (6, 1, 3)),
    ((5, 7, 1), (1,)),
]

# Compiled once per (shape, levels): on this JAX version eager op-by-op dispatch costs seconds per
# test, a compilation well under one.
spp_jit = jax.jit(spp, static_argnames="levels")
pool_jit = jax.jit(cross_hypothesis_pool)
fusion_jit = jax.jit(kronecker_fusion)


# ------------------------------------------------------------------------------------------------
# spp: values.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,levels",
    SHAPES_AND_LEVELS,
    ids=lambda v: "x".join(map(str, v)) if len(v) == 3 else str(v),
)
def test_spp_matches_loop_reference(shape, levels):
  rng = np.random.default_rng(sum(shape) * 101 + shape[0])
  feature_map = rng.normal(size=shape).astype(np.float32)
  height, width, _ = shape
  boxes = np.concatenate([random_boxes(rng, 6), degenerate_boxes(rng, height, width)])
  boxes = unambiguous_boxes(boxes, height, width, levels)
  pooled = spp_jit(jnp.asarray(feature_map), jnp.asarray(boxes), levels=levels)
  assert pooled.shape == (len(boxes), spp_output_dim(shape[2], levels))
  assert pooled.shape[1] == shape[2] * sum(level * level for level in levels)
  # max selects one input value: equality is exact.
  np.testing.assert_array_equal(
      np.asarray(pooled, np.float64), reference_spp(feature_map, boxes, levels)
  )


def test_spp_output_order_is_levels_then_row_major_bins_then_channels():
  # feature[y, x, c] = 100 y + 10 x + c grows with y and x, so a bin's max names its last cell.
  height, width, channels = 4, 4, 2
  ys, xs, cs = np.meshgrid(np.arange(height), np.arange(width), np.arange(channels), indexing="ij")
  feature_map = jnp.asarray(100.0 * ys + 10.0 * xs + cs, jnp.float32)
  whole = jnp.asarray([[0.0, 0.0, 1.0, 1.0]], jnp.float32)
  level2 = [110, 111, 130, 131, 310, 311, 330, 331]  # bins (0,0), (0,1), (1,0), (1,1)
  level1 = [330, 331]
  np.testing.assert_array_equal(spp_jit(feature_map, whole, levels=(2, 1))[0], level2 + level1)
  np.testing.assert_array_equal(spp_jit(feature_map, whole, levels=(1, 2))[0], level1 + level2)


def test_spp_non_square_overlapping_bins_by_hand():
  # H=2, W=6, one 3x3 level over the whole image. Rows: step 2/3 -> bins cover rows 0..0,
  # floor(2/3)=0..ceil(4/3)-1=1, floor(4/3)=1..1. Cols: step 2 -> 0..1, 2..3, 4..5.
  ys, xs = np.meshgrid(np.arange(2), np.arange(6), indexing="ij")
  feature_map = jnp.asarray((100.0 * ys + 10.0 * xs)[..., None], jnp.float32)
  pooled = spp_jit(feature_map, jnp.asarray([[0.0, 0.0, 1.0, 1.0]], jnp.float32), levels=(3,))
  np.testing.assert_array_equal(pooled[0], [10, 30, 50, 110, 130, 150, 110, 130, 150])


def test_spp_degenerate_boxes_by_hand():
  rng = np.random.default_rng(3)
  height, width, channels = 5, 7, 3
  feature_map = rng.normal(size=(height, width, channels)).astype(np.float32)
  levels = (4, 3, 2, 1)
  bins = sum(level * level for level in levels)
  cell_y, cell_x = 2, 4
  boxes = jnp.asarray(
      [
          [0.0, 0.0, 0.0, 0.0],
          [1.0, 1.0, 1.0, 1.0],
          [
              (cell_x + 0.2) / width,
              (cell_y + 0.3) / height,
              (cell_x + 0.7) / width,
              (cell_y + 0.9) / height,
          ],
          [
              (cell_x + 0.5) / width,
              (cell_y + 0.5) / height,
              (cell_x + 0.5) / width,
              (cell_y + 0.5) / height,
          ],
          [0.0, 0.0, 1.0, 1.0],
      ],
      jnp.float32,
  )
  pooled = np.asarray(spp_jit(jnp.asarray(feature_map), boxes, levels=levels))
  pooled = pooled.reshape(5, bins, channels)
  # Zero-area boxes and boxes inside one cell: every bin is that one cell.
  np.testing.assert_array_equal(pooled[0], np.tile(feature_map[0, 0], (bins, 1)))
  np.testing.assert_array_equal(pooled[1], np.tile(feature_map[-1, -1], (bins, 1)))
  np.testing.assert_array_equal(pooled[2], np.tile(feature_map[cell_y, cell_x], (bins, 1)))
  np.testing.assert_array_equal(pooled[3], np.tile(feature_map[cell_y, cell_x], (bins, 1)))
  # Whole image: the 1x1 bin is the global max per channel; the 4x4 level with H=5, W=7
  # (steps 1.25, 1.75) covers every cell, so the max over its bins is the global max too.
  np.testing.assert_array_equal(pooled[4, -1], feature_map.max(axis=(0, 1)))
  np.testing.assert_array_equal(pooled[4, :16].max(axis=0), feature_map.max(axis=(0, 1)))


@pytest.mark.parametrize("size", [8, 16])
def test_spp_bin_ranges_exact_for_boxes_aligned_on_cell_edges(size):
  """Boxes k0/size .. k1/size (exactly representable): every bin vs the exact convention.

  Regression test: with end = ceil(bx0 + (i + 1) * float32(step)) - 1, float32 rounding of
  n * ((bx1 - bx0) / n) can exceed bx1 by one ulp, so when bx1 is an integer the last bin takes
  one cell beyond the box (e.g. size 8, box x 0 .. 7/8, 3 bins: last bin is cells 4..6, the
  first implementation took 4..7; also 16 x 16 maps with the paper's 3 x 3 level).
  """
  pairs = [(k0, k1) for k0 in range(size + 1) for k1 in range(k0, size + 1)]
  boxes = np.asarray([[k0 / size, k0 / size, k1 / size, k1 / size] for k0, k1 in pairs], np.float32)
  levels = (1, 2, 3, 4, 5, 6, 7)
  bin_ranges = jax.jit(spp_bin_ranges, static_argnums=(1, 2, 3))
  ranges = np.stack(
      [np.asarray(r) for r in bin_ranges(jnp.asarray(boxes), size, size, levels)], axis=-1
  )  # [N, bins, 4]
  # Square boxes on a square map: rows and columns follow the same rule, checked per axis.
  mismatches = []
  for box_index, (k0, k1) in enumerate(pairs):
    first_bin = 0
    for level in levels:
      for index in range(level):
        want = reference_cell_range(boxes[box_index, 0], boxes[box_index, 2], size, level, index)
        rows = ranges[box_index, first_bin + index * level, :2]  # bin (index, 0)
        cols = ranges[box_index, first_bin + index, 2:]  # bin (0, index)
        for axis, got in (("rows", rows), ("cols", cols)):
          if tuple(int(v) for v in got) != want:
            mismatches.append(
                ((k0, k1), f"level {level} bin {index} {axis}", want, tuple(int(v) for v in got))
            )
      first_bin += level * level
  assert not mismatches, (
      f"{len(mismatches)} bin ranges differ from the DESIGN.md convention "
      f"((k0, k1), where, expected, got); first ones: {mismatches[:4]}"
  )


def test_spp_last_bin_stays_inside_a_box_aligned_on_cell_edges():
  """The regression above, seen through spp's values: a huge value just outside the box.

  Box x in [0, 7/8] of a W=8 map covers cells 0..6; with 3 bins the last bin is cells 4..6
  (exactly: 7/3 * 3 = 7, ceil(7) - 1 = 6). Cell 7 lies outside the box and must never be pooled.
  """
  feature_map = np.arange(8, dtype=np.float32).reshape(1, 8, 1)
  feature_map[0, 7, 0] = 1000.0
  box = jnp.asarray([[0.0, 0.0, 7 / 8, 1.0]], jnp.float32)
  for levels in [(3,), (6,), (7,)]:
    pooled = np.asarray(spp_jit(jnp.asarray(feature_map), box, levels=levels))
    np.testing.assert_array_equal(
        pooled, reference_spp(feature_map, box, levels), err_msg=f"levels={levels}"
    )
    assert pooled.max() == 6.0, f"levels={levels}: pooled a cell outside the box: {pooled}"


# ------------------------------------------------------------------------------------------------
# spp: batching, compilation.
# ------------------------------------------------------------------------------------------------


def test_spp_vmap_and_jit_match_per_image_reference():
  rng = np.random.default_rng(7)
  batch, height, width, channels, num_boxes = 3, 5, 6, 2, 5
  levels = (4, 3, 2, 1)
  feature_maps = rng.normal(size=(batch, height, width, channels)).astype(np.float32)
  boxes = np.stack([random_boxes(rng, num_boxes) for _ in range(batch)])
  batched = jax.jit(jax.vmap(functools.partial(spp, levels=levels)))
  pooled = batched(jnp.asarray(feature_maps), jnp.asarray(boxes))
  assert pooled.shape == (batch, num_boxes, channels * 30)
  for image in range(batch):
    np.testing.assert_array_equal(
        np.asarray(pooled[image], np.float64),
        reference_spp(feature_maps[image], boxes[image], levels),
    )
  # The docstring's form: vmap with in_axes (0, 0, None), levels positional and unmapped.
  documented = jax.jit(lambda fms, bxs: jax.vmap(spp, in_axes=(0, 0, None))(fms, bxs, levels))
  np.testing.assert_array_equal(documented(jnp.asarray(feature_maps), jnp.asarray(boxes)), pooled)
  # batched_spp: the same result in one pass over the batch.
  batched_jit = jax.jit(batched_spp, static_argnames="levels")
  np.testing.assert_array_equal(
      batched_jit(jnp.asarray(feature_maps), jnp.asarray(boxes), levels=levels), pooled
  )


def test_batched_spp_gradient_is_per_image_argmax_scatter():
  rng = np.random.default_rng(37)
  batch, height, width, channels = 3, 5, 4, 2
  levels = (4, 3, 2, 1)
  feature_maps = distinct_feature_map(rng, (batch, height, width, channels))
  boxes = np.stack(
      [unambiguous_boxes(random_boxes(rng, 4), height, width, levels)[:3] for _ in range(batch)]
  )
  batched_jit = jax.jit(batched_spp, static_argnames="levels")
  pooled, vjp = jax.vjp(
      lambda fms: batched_jit(fms, jnp.asarray(boxes), levels=levels), jnp.asarray(feature_maps)
  )
  cotangent = rng.normal(size=pooled.shape).astype(np.float32)
  (gradient,) = vjp(jnp.asarray(cotangent))
  for image in range(batch):
    np.testing.assert_array_equal(
        np.asarray(pooled[image], np.float64),
        reference_spp(feature_maps[image], boxes[image], levels),
    )
    np.testing.assert_allclose(
        np.asarray(gradient[image], np.float64),
        reference_spp_gradient(feature_maps[image], boxes[image], levels, cotangent[image]),
        rtol=1e-5,
        atol=1e-5,
    )


def test_batched_spp_rejects_bad_shapes():
  with pytest.raises(ValueError):
    batched_spp(jnp.zeros((4, 4, 2)), jnp.zeros((1, 4)))  # one map, not a batch
  with pytest.raises(ValueError):
    batched_spp(jnp.zeros((2, 4, 4, 2)), jnp.zeros((3, 5, 4)))  # batch sizes differ
  with pytest.raises(ValueError):
    batched_spp(jnp.zeros((2, 4, 4, 2)), jnp.zeros((2, 5, 3)))  # boxes not [..., 4]
  with pytest.raises(ValueError):
    batched_spp(jnp.zeros((2, 4, 4, 2)), jnp.zeros((2, 5, 4)), (0,))


# ------------------------------------------------------------------------------------------------
# spp: gradients.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,levels", [((5, 7, 2), (4, 3, 2, 1)), ((3, 3, 2), (6,))])
def test_spp_check_grads(shape, levels):
  rng = np.random.default_rng(11)
  boxes = jnp.asarray(
      np.concatenate([random_boxes(rng, 4), degenerate_boxes(rng, shape[0], shape[1])[:4]])
  )
  with jax.enable_x64(True):
    feature_map = jnp.asarray(distinct_feature_map(rng, shape), jnp.float64)
    # Values are 0.1 apart, so eps = 1e-3 never crosses a tie and differences are exact.
    check_grads(
        lambda fm: spp_jit(fm, boxes, levels=levels),
        (feature_map,),
        order=1,
        modes=("rev",),
        eps=1e-3,
    )


@pytest.mark.parametrize(
    "shape,levels", [((5, 7, 2), (4, 3, 2, 1)), ((8, 3, 3), (6, 1)), ((1, 4, 2), (2, 1))]
)
def test_spp_gradient_is_argmax_scatter(shape, levels):
  rng = np.random.default_rng(13)
  feature_map = distinct_feature_map(rng, shape)
  boxes = np.concatenate([random_boxes(rng, 5), degenerate_boxes(rng, shape[0], shape[1])])
  boxes = unambiguous_boxes(boxes, shape[0], shape[1], levels)
  pooled, vjp = jax.vjp(
      lambda fm: spp_jit(fm, jnp.asarray(boxes), levels=levels), jnp.asarray(feature_map)
  )
  cotangent = rng.normal(size=pooled.shape).astype(np.float32)
  (gradient,) = vjp(jnp.asarray(cotangent))
  np.testing.assert_allclose(
      np.asarray(gradient, np.float64),
      reference_spp_gradient(feature_map, boxes, levels, cotangent),
      rtol=1e-5,
      atol=1e-5,
  )


# ------------------------------------------------------------------------------------------------
# spp: memory (structure of the traced computation).
# ------------------------------------------------------------------------------------------------


def _all_equations(jaxpr):
  """Every equation of a jaxpr, recursing into sub-jaxprs (pjit, custom_jvp, cond, ...)."""
  for equation in jaxpr.eqns:
    yield equation
    for param in equation.params.values():
      candidates = param if isinstance(param, (list, tuple)) else [param]
      for candidate in candidates:
        inner = getattr(candidate, "jaxpr", candidate)
        if hasattr(inner, "eqns"):
          yield from _all_equations(inner)


def _largest_intermediate(closed_jaxpr) -> tuple[int, str]:
  largest, where = 0, ""
  for equation in _all_equations(closed_jaxpr.jaxpr):
    for var in equation.outvars:
      shape = getattr(var.aval, "shape", ())
      size = int(np.prod(shape)) if shape else 1
      if size > largest:
        largest, where = size, f"{equation.primitive} -> {shape}"
  return largest, where


def test_spp_has_no_per_box_full_map_intermediate():
  # N = 64 boxes is larger than the 16 = (log2 H + 1)(log2 W + 1) blocks of a sparse table, so
  # any [N, H, W, C] (or [N, bins, H, W, C]) intermediate would be the largest array here.
  num_boxes, height, width, channels = 64, 8, 8, 4
  levels = (4, 3, 2, 1)
  bins = 30
  rng = np.random.default_rng(17)
  feature_map = jnp.asarray(rng.normal(size=(height, width, channels)), jnp.float32)
  boxes = jnp.asarray(random_boxes(rng, num_boxes))
  limit = num_boxes * height * width * channels
  forward = jax.make_jaxpr(lambda fm, b: spp(fm, b, levels))(feature_map, boxes)
  largest, where = _largest_intermediate(forward)
  assert largest < limit, f"forward intermediate of {largest} >= N*H*W*C = {limit}: {where}"
  assert num_boxes * bins * height * width * channels > limit  # the naive mask is bigger still
  backward = jax.make_jaxpr(jax.grad(lambda fm: spp(fm, boxes, levels).sum()))(feature_map)
  largest, where = _largest_intermediate(backward)
  assert largest < limit, f"backward intermediate of {largest} >= N*H*W*C = {limit}: {where}"


def test_spp_rejects_bad_shapes():
  feature_map = jnp.zeros((4, 4, 2))
  boxes = jnp.asarray([[0.0, 0.0, 1.0, 1.0]])
  with pytest.raises(ValueError):
    spp(jnp.zeros((4, 4)), boxes)
  with pytest.raises(ValueError):
    spp(jnp.zeros((2, 4, 4, 2)), boxes)
  with pytest.raises(ValueError):
    spp(feature_map, jnp.zeros((3, 3)))
  with pytest.raises(ValueError):
    spp(feature_map, jnp.zeros((4,)))
  with pytest.raises(ValueError):
    spp(feature_map, boxes, ())
  with pytest.raises(ValueError):
    spp(feature_map, boxes, (2, 0))


# ------------------------------------------------------------------------------------------------
# cross_hypothesis_pool (eq. 1).
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (4, 7, 2), (2, 3, 6, 4)])
def test_cross_hypothesis_pool_matches_loops(shape):
  rng = np.random.default_rng(len(shape) * 10 + shape[-1])
  scores = rng.normal(size=shape).astype(np.float32)
  pooled = pool_jit(jnp.asarray(scores))
  assert pooled.shape == shape[:-2] + shape[-1:]
  np.testing.assert_array_equal(
      np.asarray(pooled, np.float64), reference_cross_hypothesis_pool(scores)
  )


def test_cross_hypothesis_pool_gradient_goes_to_the_max_proposal():
  rng = np.random.default_rng(19)
  scores = distinct_feature_map(rng, (2, 6, 4))  # [batch, N, c], no ties
  pooled, vjp = jax.vjp(pool_jit, jnp.asarray(scores))
  cotangent = rng.normal(size=pooled.shape).astype(np.float32)
  (gradient,) = vjp(jnp.asarray(cotangent))
  expected = np.zeros(scores.shape)
  for b in range(scores.shape[0]):
    for j in range(scores.shape[2]):
      best = max(range(scores.shape[1]), key=lambda i: scores[b, i, j])
      expected[b, best, j] += cotangent[b, j]
  np.testing.assert_allclose(gradient, expected, rtol=1e-6)
  with jax.enable_x64(True):
    check_grads(pool_jit, (jnp.asarray(scores, jnp.float64),), order=1, modes=("rev",), eps=1e-3)


def test_cross_hypothesis_pool_rejects_bad_shapes():
  with pytest.raises(ValueError):
    cross_hypothesis_pool(jnp.zeros((5,)))
  with pytest.raises(ValueError):
    cross_hypothesis_pool(jnp.zeros(()))


# ------------------------------------------------------------------------------------------------
# kronecker_fusion (eq. 6).
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "batch_shape,num_proposals,num_categories,bits",
    [((), 1, 1, 1), ((), 4, 2, 3), ((), 7, 5, 4), ((3,), 6, 4, 5), ((2, 3), 5, 3, 2)],
)
def test_kronecker_fusion_matches_literal_kronecker_sum(
    batch_shape, num_proposals, num_categories, bits
):
  rng = np.random.default_rng(num_proposals * 100 + num_categories * 10 + bits)
  logits = rng.normal(size=batch_shape + (num_proposals, num_categories))
  probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
  hashes = rng.normal(size=batch_shape + (num_proposals, bits)).astype(np.float32)
  fused = fusion_jit(jnp.asarray(probs), jnp.asarray(hashes))
  assert fused.shape == batch_shape + (num_categories, bits)
  expected = reference_kronecker_fusion(probs, hashes)
  np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-6)
  # Flattened category-major, it is the paper's c*b vector (1/N) sum_i P_i (x) H_i.
  for batch_index in np.ndindex(batch_shape):
    flat = (
        sum(
            np.kron(
                probs[batch_index + (i,)].astype(np.float64),
                hashes[batch_index + (i,)].astype(np.float64),
            )
            for i in range(num_proposals)
        )
        / num_proposals
    )
    np.testing.assert_allclose(
        np.asarray(fused[batch_index]).reshape(-1), flat, rtol=1e-5, atol=1e-6
    )


def test_kronecker_fusion_paper_figure_4_example():
  # c = 2 (bicycle, sofa), N = 4 proposals.
  probs = np.asarray([[0.99, 0.01], [0.9, 0.1], [0.05, 0.95], [0.08, 0.92]], np.float32)
  hashes = np.random.default_rng(23).normal(size=(4, 6)).astype(np.float32)
  fused = np.asarray(fusion_jit(jnp.asarray(probs), jnp.asarray(hashes)))
  h = hashes.astype(np.float64)
  bicycle = (0.99 * h[0] + 0.9 * h[1] + 0.05 * h[2] + 0.08 * h[3]) / 4
  sofa = (0.01 * h[0] + 0.1 * h[1] + 0.95 * h[2] + 0.92 * h[3]) / 4
  np.testing.assert_allclose(fused[0], bicycle, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fused[1], sofa, rtol=1e-5, atol=1e-6)


def test_kronecker_fusion_gradients():
  rng = np.random.default_rng(29)
  probs = rng.uniform(size=(2, 5, 3))
  hashes = rng.normal(size=(2, 5, 4))
  fused, vjp = jax.vjp(
      fusion_jit, jnp.asarray(probs, jnp.float32), jnp.asarray(hashes, jnp.float32)
  )
  cotangent = rng.normal(size=fused.shape)
  grad_probs, grad_hashes = vjp(jnp.asarray(cotangent, jnp.float32))
  # d f[c, b] / d P[i, c] = H[i, b] / N and d f[c, b] / d H[i, b] = P[i, c] / N.
  expected_probs = np.zeros(probs.shape)
  expected_hashes = np.zeros(hashes.shape)
  batch, num_proposals, num_categories = probs.shape
  bits = hashes.shape[-1]
  for n in range(batch):
    for i in range(num_proposals):
      for c in range(num_categories):
        for b in range(bits):
          expected_probs[n, i, c] += cotangent[n, c, b] * hashes[n, i, b] / num_proposals
          expected_hashes[n, i, b] += cotangent[n, c, b] * probs[n, i, c] / num_proposals
  np.testing.assert_allclose(grad_probs, expected_probs, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad_hashes, expected_hashes, rtol=1e-5, atol=1e-6)
  with jax.enable_x64(True):
    check_grads(fusion_jit, (jnp.asarray(probs), jnp.asarray(hashes)), order=1, modes=("rev",))


def test_kronecker_fusion_rejects_bad_shapes():
  with pytest.raises(ValueError):
    kronecker_fusion(jnp.zeros((4, 2)), jnp.zeros((5, 3)))  # different N
  with pytest.raises(ValueError):
    kronecker_fusion(jnp.zeros((2,)), jnp.zeros((2, 3)))  # P not [N, c]
  with pytest.raises(ValueError):
    kronecker_fusion(jnp.zeros((4, 2)), jnp.zeros((3,)))  # H not [N, b]
  with pytest.raises(ValueError):
    kronecker_fusion(jnp.zeros((2, 4, 2)), jnp.zeros((3, 4, 3)))  # different batch
  with pytest.raises(ValueError):
    kronecker_fusion(jnp.zeros((2, 4, 2)), jnp.zeros((4, 3)))  # batch on one side only
