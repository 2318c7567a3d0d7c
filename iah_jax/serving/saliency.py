"""Saliency maps from region proposals and their label probabilities (IAH Fig. 5).

The paper: "The grey images are saliency maps that are obtained in favor of the automatically
generated region proposals and the predicted probability scores (i.e., the vector P)". It does
not say how the proposals are combined. For category j, every pixel gets

- ``reduce="max"`` (default, issue 10): the largest P_ij over the proposals i covering it, so
  the map stays a probability in [0, 1] and one confident box is enough to light its region;
- ``reduce="sum"`` (METHODS.md 1.13): the sum of P_ij over the covering proposals, which also
  counts how many proposals agree (unbounded; normalise by the map's maximum to display it).

A proposal covers a pixel when the pixel's centre lies inside the box, edges included: pixel
(row r, column c) of an H x W map is covered by box (x0, y0, x1, y1) (fractions of the image)
when x0 * W <= c + 0.5 <= x1 * W and y0 * H <= r + 0.5 <= y1 * H, in float32 (compared in pixel
units, where the centres are exact). Pixels no proposal covers are 0.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

REDUCTIONS = ("max", "sum")


@functools.partial(jax.jit, static_argnames=("height", "width", "reduce"))
def saliency_map(
    boxes: jax.Array, probs: jax.Array, height: int, width: int, reduce: str = "max"
) -> jax.Array:
  """Per-pixel max (or sum) of the probabilities of the boxes covering each pixel.

  Args:
    boxes: float [N, 4] (x0, y0, x1, y1) fractions of the image width / height.
    probs: float [N] >= 0, e.g. the proposals' probabilities P[:, j] of one category.
    height, width: size of the map in pixels (static).
    reduce: "max" or "sum" (module docstring).

  Returns:
    float32 [height, width].
  """
  if reduce not in REDUCTIONS:
    raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
  boxes = jnp.asarray(boxes, jnp.float32)
  probs = jnp.asarray(probs, jnp.float32)
  centres_x = jnp.arange(width, dtype=jnp.float32) + 0.5
  centres_y = jnp.arange(height, dtype=jnp.float32) + 0.5
  x0, x1 = boxes[:, 0:1] * width, boxes[:, 2:3] * width
  y0, y1 = boxes[:, 1:2] * height, boxes[:, 3:4] * height
  covers_x = (x0 <= centres_x) & (centres_x <= x1)  # [N, W]
  covers_y = (y0 <= centres_y) & (centres_y <= y1)  # [N, H]
  weighted_rows = covers_y.astype(jnp.float32) * probs[:, None]  # [N, H]
  if reduce == "sum":
    return jnp.einsum("nh,nw->hw", weighted_rows, covers_x.astype(jnp.float32))
  # max over boxes of a broadcast product: XLA fuses it into the reduction, so the [N, H, W]
  # product is never stored.
  return jnp.max(
      jnp.where(covers_x[:, None, :], weighted_rows[:, :, None], 0.0), axis=0, initial=0.0
  )
