"""PyTorch-style ceil-mode max-pooling with gradients that are fast on XLA's CPU backend.

``max_pool_ceil(x[B, H, W, C], window, stride, padding)`` equals
``torch.nn.MaxPool2d(window, stride, padding, ceil_mode=True)`` in value and gradient (the
gradient goes to the first maximal cell of each window, torch's choice among ties). GoogLeNet
(``iah_jax.models.googlenet``) pools with it.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp


def _ceil_mode_output_size(size: int, window: int, stride: int, padding: int) -> int:
  """PyTorch's pooling output length with ceil_mode=True.

  The length is rounded up, except that the last window must start inside the input or the
  left padding (torch drops a window that would start in the right padding only).
  """
  out = math.ceil((size + 2 * padding - window) / stride) + 1
  if (out - 1) * stride >= size + padding:
    out -= 1
  return out


def _pool_windows(padded: jax.Array, window: int, stride: int, out_h: int, out_w: int):
  """The window*window strided views [B, out_h, out_w, C] of padded[B, Hp, Wp, C], row-major."""
  batch, _, _, channels = padded.shape
  for dy in range(window):
    for dx in range(window):
      yield jax.lax.slice(
          padded,
          (0, dy, dx, 0),
          (batch, dy + (out_h - 1) * stride + 1, dx + (out_w - 1) * stride + 1, channels),
          (1, stride, stride, 1),
      )


# Max-pooling is written as a max over shifted strided views instead of lax.reduce_window,
# whose gradient (select_and_scatter) is slow on XLA's CPU backend. Measured on one core over
# GoogLeNet's 13 pools at batch 8 x 224 (forward + backward): reduce_window 0.9 s; views with
# the tangent rule below 0.26 s; plus the phase-wise backward for strided pools 0.10 s.
# Both rules send the gradient to the first maximal cell of each window in row-major order,
# torch's choice among ties (ties are common after ReLU).


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3, 4))
def _max_over_windows(padded, window, stride, out_h, out_w):
  """Stride-1 pools: forward and reverse mode through a linear tangent rule."""
  return functools.reduce(jnp.maximum, _pool_windows(padded, window, stride, out_h, out_w))


@_max_over_windows.defjvp
def _max_over_windows_jvp(window, stride, out_h, out_w, primals, tangents):
  # Linear in the tangent, so JAX transposes it for reverse mode; with stride 1 the transpose
  # is a sum of shifted masked copies, which XLA fuses well.
  (padded,), (padded_tangent,) = primals, tangents
  pooled = _max_over_windows(padded, window, stride, out_h, out_w)
  taken = jnp.zeros(pooled.shape, bool)
  pooled_tangent = jnp.zeros(pooled.shape, padded_tangent.dtype)
  views = _pool_windows(padded, window, stride, out_h, out_w)
  tangent_views = _pool_windows(padded_tangent, window, stride, out_h, out_w)
  for view, tangent_view in zip(views, tangent_views):
    first_max = (view == pooled) & ~taken
    taken = taken | first_max
    pooled_tangent = pooled_tangent + jnp.where(first_max, tangent_view, 0)
  return pooled, pooled_tangent


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_over_strided_windows(padded, window, stride, out_h, out_w):
  """Strided pools: reverse mode only (custom_vjp), with a phase-wise backward pass.

  The automatic transpose of a strided view is an interior-padded array as large as the
  input, one per window cell; XLA does not fuse those well. The backward pass here builds
  each of the stride x stride phases of the input gradient from plain shifts instead.
  """
  return functools.reduce(jnp.maximum, _pool_windows(padded, window, stride, out_h, out_w))


def _max_over_strided_windows_fwd(padded, window, stride, out_h, out_w):
  views = list(_pool_windows(padded, window, stride, out_h, out_w))
  pooled = functools.reduce(jnp.maximum, views)
  # Row-major index of the first maximal cell of each window (scan backwards so the first
  # match is written last).
  index_dtype = jnp.int8 if window * window < 128 else jnp.int32
  argmax = jnp.zeros(pooled.shape, index_dtype)
  for index in reversed(range(len(views))):
    argmax = jnp.where(views[index] == pooled, jnp.asarray(index, index_dtype), argmax)
  return pooled, (argmax, padded.shape)


def _max_over_strided_windows_bwd(window, stride, out_h, out_w, residuals, pooled_grad):
  argmax, (batch, padded_h, padded_w, channels) = residuals
  # Padded cell (y, x) = (a * stride + phase_y, b * stride + phase_x); window cell (dy, dx)
  # of output (i, j) lands in phase (dy % stride, dx % stride) at (i + dy // stride, ...).
  phase_h, phase_w = -(-padded_h // stride), -(-padded_w // stride)
  zero = jnp.zeros((), pooled_grad.dtype)
  phases = []
  for phase_y in range(stride):
    row = []
    for phase_x in range(stride):
      phase_grad = jnp.zeros((batch, phase_h, phase_w, channels), pooled_grad.dtype)
      for dy in range(phase_y, window, stride):
        for dx in range(phase_x, window, stride):
          routed = jnp.where(argmax == dy * window + dx, pooled_grad, zero)
          shift_y, shift_x = dy // stride, dx // stride
          phase_grad = phase_grad + jax.lax.pad(
              routed,
              zero,
              (
                  (0, 0, 0),
                  (shift_y, phase_h - out_h - shift_y, 0),
                  (shift_x, phase_w - out_w - shift_x, 0),
                  (0, 0, 0),
              ),
          )
      row.append(phase_grad)
    phases.append(jnp.stack(row, axis=3))  # [B, phase_h, phase_w, stride_x, C]
  interleaved = jnp.stack(phases, axis=2)  # [B, phase_h, stride_y, phase_w, stride_x, C]
  grad = interleaved.reshape(batch, phase_h * stride, phase_w * stride, channels)
  return (grad[:, :padded_h, :padded_w],)


_max_over_strided_windows.defvjp(_max_over_strided_windows_fwd, _max_over_strided_windows_bwd)


def max_pool_ceil(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
  """Max-pool x[B, H, W, C] like ``torch.nn.MaxPool2d(window, stride, padding, ceil_mode=True)``.

  Left/top padding is ``padding``; the right/bottom side gets whatever padding the ceil-mode
  output size needs (possibly more than ``padding``). Padded cells are -inf, so they never win.
  The gradient goes to the first maximal cell of each window, as in torch. Differentiable
  in reverse mode; forward mode (jax.jvp) only for stride 1.
  Returns [B, H', W', C] with H', W' from ``_ceil_mode_output_size``.
  """
  if x.ndim != 4:
    raise ValueError(f"max_pool_ceil expects [B, H, W, C], got shape {x.shape}")
  out_sizes, pads = [], []
  for size in x.shape[1:3]:
    out = _ceil_mode_output_size(size, window, stride, padding)
    if out < 1:
      raise ValueError(
          f"max-pool window {window} (stride {stride}, padding {padding}) does not fit a "
          f"spatial size of {size}; input shape {x.shape} is too small for GoogLeNet"
      )
    # A negative high pad means the last input rows are covered by no window; lax.pad
    # crops them, which is exactly torch's behaviour.
    out_sizes.append(out)
    pads.append((padding, (out - 1) * stride + window - size - padding, 0))
  neg_inf = jnp.array(-jnp.inf, x.dtype)
  padded = jax.lax.pad(x, neg_inf, ((0, 0, 0), pads[0], pads[1], (0, 0, 0)))
  if stride == 1:
    return _max_over_windows(padded, window, stride, *out_sizes)
  return _max_over_strided_windows(padded, window, stride, *out_sizes)
