"""Spatial pyramid max-pooling (SPP-net) of region proposals over one feature map.

The backbone runs once per image; every proposal box is pooled from that single feature map into
a fixed-length vector (IAH section III-B). A naive implementation masks the whole map once per
(box, bin), an N x bins x H x W x C intermediate. Here every bin is a rectangle of cells, and the
max over any rectangle is read from a 2-D *sparse table* of power-of-two block maxima:

  table[a, b, y, x, :] = max of feature_map[y : y + 2**a, x : x + 2**b, :]

A rectangle rows [y0, y1] x cols [x0, x1] is covered by four (possibly overlapping) blocks of
size 2**a x 2**b with a = floor(log2(y1 - y0 + 1)), b = floor(log2(x1 - x0 + 1)), so its max is the
max of four gathered table rows. Memory: the table is O(H W log H log W C), independent of N, and
the gathers are O(N * bins * C). Gradients flow through the gathers and the table's maxima.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def spp_output_dim(channels: int, levels: Sequence[int] = (4, 3, 2, 1)) -> int:
  """Length of one box's SPP vector: C * sum(l * l)."""
  return channels * sum(level * level for level in levels)


def spp_bin_ranges(boxes: jax.Array, height: int, width: int,
                   levels: Sequence[int] = (4, 3, 2, 1)):
  """Inclusive cell ranges of every pyramid bin of every box (the DESIGN.md bin convention).

  With the box mapped to feature cells bx0 = x0 * W, bx1 = x1 * W, bin i of n along x covers cells
  floor(bx0 + i (bx1 - bx0) / n) .. ceil(bx0 + (i + 1)(bx1 - bx0) / n) - 1, clipped to [0, W - 1]
  and at least one cell wide (same along y with H).

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
      step = (high_cells - low_cells) / level
      start = jnp.floor(low_cells + fractions * step).astype(jnp.int32)
      end = jnp.ceil(low_cells + (fractions + 1) * step).astype(jnp.int32) - 1
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


def _block_max_table(feature_map: jax.Array, axis: int) -> jax.Array:
  """Stacks block maxima of sizes 1, 2, 4, ... along `axis`: [K, H, W, C] (K = floor(log2 n) + 1).

  Entry k at position t is max(feature_map[t : t + 2**k]) along `axis`; positions whose block
  would run past the edge hold the max up to the edge (never read by `spp`).
  """
  size = feature_map.shape[axis]
  tables = [feature_map]
  span = 1
  while 2 * span <= size:
    previous = tables[-1]
    ahead = jnp.concatenate(
        [jax.lax.slice_in_dim(previous, span, size, axis=axis),
         jax.lax.slice_in_dim(previous, size - span, size, axis=axis)], axis=axis)
    tables.append(jnp.maximum(previous, ahead))
    span *= 2
  return jnp.stack(tables)


def spp(feature_map: jax.Array, boxes: jax.Array,
        levels: Sequence[int] = (4, 3, 2, 1)) -> jax.Array:
  """Spatial pyramid max-pooling of each box over one image's feature map.

  Args:
    feature_map: [H, W, C] features of the whole image.
    boxes: [N, 4] proposals (x0, y0, x1, y1) as fractions of the image width/height, in [0, 1].
    levels: pyramid levels; n gives n x n bins (paper: (4, 3, 2, 1), 30 bins).
  Returns:
    [N, C * sum(n * n)]: per box, levels in the order given, bins row-major (y then x) within a
    level, the C channels within a bin. A zero-area box yields the max of one cell.
  Use `jax.vmap(spp, in_axes=(0, 0, None))` for a batch.
  """
  if feature_map.ndim != 3:
    raise ValueError(f"spp expects one feature map [H, W, C], got shape {feature_map.shape}; "
                     "vmap over the batch axis")
  if boxes.ndim != 2 or boxes.shape[-1] != 4:
    raise ValueError(f"spp expects boxes [N, 4] (x0, y0, x1, y1), got shape {boxes.shape}")
  if not levels or any(int(level) < 1 for level in levels):
    raise ValueError(f"spp levels must be positive integers, got {levels}")
  height, width, channels = feature_map.shape
  num_boxes = boxes.shape[0]
  row_start, row_end, col_start, col_end = spp_bin_ranges(boxes, height, width, levels)

  # table[a, b] holds maxima of 2**a x 2**b blocks: [Ka, Kb, H, W, C].
  row_table = _block_max_table(feature_map, axis=0)                      # [Ka, H, W, C]
  table = jax.vmap(lambda t: _block_max_table(t, axis=1))(row_table)      # [Ka, Kb, H, W, C]

  # floor(log2(length)) for lengths 1..size, as constant lookup tables.
  log2_rows = jnp.asarray(np.floor(np.log2(np.arange(1, height + 1))).astype(np.int32))
  log2_cols = jnp.asarray(np.floor(np.log2(np.arange(1, width + 1))).astype(np.int32))
  row_level = log2_rows[row_end - row_start]
  col_level = log2_cols[col_end - col_start]
  row_far = row_end - (1 << row_level) + 1   # start of the block that ends on the last row
  col_far = col_end - (1 << col_level) + 1

  # One flat gather per corner: a single index into [Ka * Kb * H * W, C] is much faster on CPU
  # than a 4-D advanced index.
  flat_table = table.reshape(-1, channels)
  block = (row_level * table.shape[1] + col_level) * height
  corner = lambda rows, cols: jnp.take(flat_table, ((block + rows) * width + cols).reshape(-1),
                                       axis=0)
  pooled = jnp.maximum(jnp.maximum(corner(row_start, col_start), corner(row_start, col_far)),
                       jnp.maximum(corner(row_far, col_start), corner(row_far, col_far)))
  return pooled.reshape(num_boxes, spp_output_dim(channels, levels))
