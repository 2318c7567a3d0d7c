"""Spatial pyramid max-pooling (SPP-net) of region proposals over one feature map.

The backbone runs once per image; every proposal box is pooled from that single feature map into
a fixed-length vector (IAH section III-B). A naive implementation masks the whole map once per
(box, bin), an N x bins x H x W x C intermediate. Here every bin is a rectangle of cells, and the
max over any rectangle is read from a 2-D *sparse table* of power-of-two block maxima:

  table[a, b, y, x, :] = max of feature_map[y : y + 2**a, x : x + 2**b, :]

(stored only where the block fits). A rectangle rows [y0, y1] x cols [x0, x1] is covered by four
(possibly overlapping) blocks of size 2**a x 2**b with a = floor(log2(y1 - y0 + 1)),
b = floor(log2(x1 - x0 + 1)), so its max is the max of four gathered table rows. Memory: the table
is O(B H W log H log W C), independent of N, and the gathers are O(B * N * bins * C). The table
also records which cell holds each maximum, so the backward pass (a custom VJP, like
max-pooling's) is one scatter-add of the N * bins * C cotangents onto their argmax cells.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_EDGE_TOLERANCE = 1e-4  # in feature cells


def spp_output_dim(channels: int, levels: Sequence[int] = (4, 3, 2, 1)) -> int:
  """Length of one box's SPP vector: C * sum(l * l)."""
  return channels * sum(level * level for level in levels)


def spp_bin_ranges(boxes: jax.Array, height: int, width: int, levels: Sequence[int] = (4, 3, 2, 1)):
  """Inclusive cell ranges of every pyramid bin of every box (the DESIGN.md bin convention).

  With the box mapped to feature cells bx0 = x0 * W, bx1 = x1 * W, bin i of n along x covers cells
  floor(bx0 + i (bx1 - bx0) / n) .. ceil(bx0 + (i + 1)(bx1 - bx0) / n) - 1, clipped to [0, W - 1]
  and at least one cell wide (same along y with H). Computed in float32 with edges within 1e-4
  cells of a whole cell snapped to it, so boxes on cell edges (and fractions like 7/13 that
  float32 cannot store) give the bins exact arithmetic gives.

  Args:
    boxes: [N, 4] (x0, y0, x1, y1) in [0, 1].
    height, width: feature-map size H, W.
    levels: pyramid levels, each n giving n x n bins.
  Returns:
    (row_start, row_end, col_start, col_end), each int32 [N, bins] with bins = sum(n * n), bins
    ordered by level (as given), then row-major (y, then x) within a level.
  """
  boxes = jnp.asarray(boxes, jnp.float32)
  row_starts, row_ends, col_starts, col_ends = [], [], [], []
  for level in levels:
    fractions = np.arange(level, dtype=np.float32)  # bin index i as a constant

    def cell_ranges(low, high, size):
      low_cells, high_cells = low[:, None] * size, high[:, None] * size
      extent = high_cells - low_cells
      # Multiplying before dividing keeps edges that fall on whole cells exact in float32, and
      # a tolerance far below one cell absorbs the rounding of box fractions such as 7 / 13.
      start = jnp.floor(low_cells + extent * fractions / level + _EDGE_TOLERANCE)
      end = jnp.ceil(low_cells + extent * (fractions + 1) / level - _EDGE_TOLERANCE) - 1
      start, end = start.astype(jnp.int32), end.astype(jnp.int32)
      start = jnp.clip(start, 0, size - 1)
      end = jnp.maximum(jnp.clip(end, 0, size - 1), start)
      return start, end  # [N, level]

    y_start, y_end = cell_ranges(boxes[:, 1], boxes[:, 3], height)
    x_start, x_end = cell_ranges(boxes[:, 0], boxes[:, 2], width)
    # Row-major bins: bin (iy, ix) -> iy * level + ix.
    row_starts.append(jnp.repeat(y_start, level, axis=1))
    row_ends.append(jnp.repeat(y_end, level, axis=1))
    col_starts.append(jnp.tile(x_start, (1, level)))
    col_ends.append(jnp.tile(x_end, (1, level)))
  cat = lambda parts: jnp.concatenate(parts, axis=1)
  return cat(row_starts), cat(row_ends), cat(col_starts), cat(col_ends)


def _block_max_levels(values: jax.Array, cells: jax.Array, axis: int):
  """Block maxima of sizes 1, 2, 4, ... along `axis`, with the flat cell index of each maximum.

  Returns K = floor(log2 n) + 1 pairs (maxima, argmax cells); pair k has n - 2**k + 1 entries along
  `axis`, entry t covering positions t .. t + 2**k - 1. Ties go to the first position.
  """
  size = values.shape[axis]
  levels = [(values, cells)]
  span = 1
  while 2 * span <= size:
    previous, previous_cells = levels[-1]
    length = previous.shape[axis]
    first = lambda array: jax.lax.slice_in_dim(array, 0, length - span, axis=axis)
    second = lambda array: jax.lax.slice_in_dim(array, span, length, axis=axis)
    take_first = first(previous) >= second(previous)
    levels.append(
        (
            jnp.where(take_first, first(previous), second(previous)),
            jnp.where(take_first, first(previous_cells), second(previous_cells)),
        )
    )
    span *= 2
  return levels


def _pool_with_argmax(feature_maps: jax.Array, boxes: jax.Array, levels: Sequence[int]):
  """Bin maxima [B, N, bins, C] and the flat index (into B*H*W) of the cell holding each."""
  batch, height, width, channels = feature_maps.shape
  num_boxes = boxes.shape[1]
  row_start, row_end, col_start, col_end = spp_bin_ranges(
      boxes.reshape(-1, 4), height, width, levels
  )
  # All 2**a x 2**b block-maximum tables of the batch, flattened into one [rows, C] array:
  # table (a, b) is [B, H - 2**a + 1, W - 2**b + 1, C] and starts at row offsets[a][b].
  cells = jnp.broadcast_to(
      jnp.arange(batch * height * width, dtype=jnp.int32).reshape(batch, height, width, 1),
      feature_maps.shape,
  )
  values_parts, cell_parts, offsets, total = [], [], [], 0
  for row_values, row_cells in _block_max_levels(feature_maps, cells, axis=1):
    offsets.append([])
    for block_values, block_cells in _block_max_levels(row_values, row_cells, axis=2):
      offsets[-1].append(total)
      values_parts.append(block_values.reshape(-1, channels))
      cell_parts.append(block_cells.reshape(-1, channels))
      total += values_parts[-1].shape[0]
  table_values = jnp.concatenate(values_parts, axis=0)
  table_cells = jnp.concatenate(cell_parts, axis=0)
  table_heights = jnp.asarray([height - (1 << a) + 1 for a in range(len(offsets))], jnp.int32)
  table_widths = jnp.asarray([width - (1 << b) + 1 for b in range(len(offsets[0]))], jnp.int32)
  offsets = jnp.asarray(np.asarray(offsets, np.int32))  # [Ka, Kb]

  # floor(log2(length)) for lengths 1..size, as constant lookup tables.
  log2_rows = jnp.asarray(np.floor(np.log2(np.arange(1, height + 1))).astype(np.int32))
  log2_cols = jnp.asarray(np.floor(np.log2(np.arange(1, width + 1))).astype(np.int32))
  row_level = log2_rows[row_end - row_start]  # [B * N, bins]
  col_level = log2_cols[col_end - col_start]
  row_far = row_end - (1 << row_level) + 1  # start of the block that ends on the last row
  col_far = col_end - (1 << col_level) + 1

  image = jnp.repeat(jnp.arange(batch, dtype=jnp.int32), num_boxes)[:, None]
  heights, widths = table_heights[row_level], table_widths[col_level]
  base = offsets[row_level, col_level] + image * heights * widths
  best_values, best_cells = None, None
  for rows, cols in (
      (row_start, col_start),
      (row_start, col_far),
      (row_far, col_start),
      (row_far, col_far),
  ):
    # "clip" skips the out-of-bounds fill logic: the indices are in bounds by construction.
    index = (base + rows * widths + cols).reshape(-1)
    values = jnp.take(table_values, index, axis=0, mode="clip")
    corner_cells = jnp.take(table_cells, index, axis=0, mode="clip")
    if best_values is None:
      best_values, best_cells = values, corner_cells
    else:
      better = values > best_values
      best_values = jnp.where(better, values, best_values)
      best_cells = jnp.where(better, corner_cells, best_cells)
  shape = (batch, num_boxes, -1, channels)
  return best_values.reshape(shape), best_cells.reshape(shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _pyramid_max(feature_maps: jax.Array, boxes: jax.Array, levels: tuple) -> jax.Array:
  return _pool_with_argmax(feature_maps, boxes, levels)[0]


def _pyramid_max_forward(feature_maps, boxes, levels):
  pooled, cells = _pool_with_argmax(feature_maps, boxes, levels)
  return pooled, (cells, feature_maps.shape, boxes)


def _pyramid_max_backward(levels, residuals, cotangent):
  # Like max-pooling: each bin's cotangent goes to the one cell that holds its maximum, so the
  # backward pass is a single scatter-add of N * bins * C values.
  cells, shape, boxes = residuals
  batch, height, width, channels = shape
  channel = jnp.arange(channels, dtype=jnp.int32)
  flat_index = (cells * channels + channel).reshape(-1)
  grad = jnp.zeros((batch * height * width * channels,), cotangent.dtype)
  grad = grad.at[flat_index].add(cotangent.reshape(-1))
  return grad.reshape(shape), jnp.zeros_like(boxes)


_pyramid_max.defvjp(_pyramid_max_forward, _pyramid_max_backward)


def batched_spp(
    feature_maps: jax.Array, boxes: jax.Array, levels: Sequence[int] = (4, 3, 2, 1)
) -> jax.Array:
  """`spp` for a batch in one pass: feature_maps [B, H, W, C], boxes [B, N, 4] -> [B, N, d].

  Same result as `jax.vmap(spp, in_axes=(0, 0, None))`, but every gather reads one flat table
  of the whole batch, which is several times faster on CPU than vmapped gathers. The gradient
  w.r.t. the feature maps goes, per bin and channel, to the cell holding the maximum (the first
  one in row-major order of the table blocks on exact ties), as in max-pooling; boxes get no
  gradient (they are inputs, as in the paper).
  """
  if feature_maps.ndim != 4:
    raise ValueError(f"batched_spp expects feature maps [B, H, W, C], got {feature_maps.shape}")
  if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != feature_maps.shape[0]:
    raise ValueError(
        f"batched_spp expects boxes [B, N, 4] for {feature_maps.shape[0]} feature "
        f"maps, got {boxes.shape}"
    )
  if not levels or any(int(level) < 1 for level in levels):
    raise ValueError(f"spp levels must be positive integers, got {levels}")
  batch, num_boxes, channels = boxes.shape[0], boxes.shape[1], feature_maps.shape[-1]
  levels = tuple(int(level) for level in levels)
  pooled = _pyramid_max(feature_maps, boxes.astype(jnp.float32), levels)
  return pooled.reshape(batch, num_boxes, spp_output_dim(channels, levels))


def spp(
    feature_map: jax.Array, boxes: jax.Array, levels: Sequence[int] = (4, 3, 2, 1)
) -> jax.Array:
  """Spatial pyramid max-pooling of each box over one image's feature map.

  Args:
    feature_map: [H, W, C] features of the whole image.
    boxes: [N, 4] proposals (x0, y0, x1, y1) as fractions of the image width/height, in [0, 1].
    levels: pyramid levels; n gives n x n bins (paper: (4, 3, 2, 1), 30 bins).
  Returns:
    [N, C * sum(n * n)]: per box, levels in the order given, bins row-major (y then x) within a
    level, the C channels within a bin. A zero-area box yields the max of one cell.
  Use `batched_spp` (faster) or `jax.vmap(spp, in_axes=(0, 0, None))` for a batch.
  """
  if feature_map.ndim != 3:
    raise ValueError(
        f"spp expects one feature map [H, W, C], got shape {feature_map.shape}; "
        "use batched_spp or vmap over the batch axis"
    )
  if boxes.ndim != 2 or boxes.shape[-1] != 4:
    raise ValueError(f"spp expects boxes [N, 4] (x0, y0, x1, y1), got shape {boxes.shape}")
  return batched_spp(feature_map[None], boxes[None], levels)[0]
