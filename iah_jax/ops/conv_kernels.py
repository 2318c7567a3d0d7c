"""Convolutions with kernel gradients that are fast on XLA's CPU backend (``conv_impl``).

``conv_gemm_grads`` is a drop-in ``conv_general_dilated`` for ``flax.linen.Conv``: the same values,
with 1x1 stride-1 convs as dots and other stride-1 convs' kernel gradients as one im2col GEMM.
``resolve_conv_impl`` turns a ``conv_impl`` setting ("auto" / "xla" / "gemm_grads") into the
implementation to use. GoogLeNet (``iah_jax.models.googlenet``) convolves with them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

CONV_IMPLS = ("auto", "xla", "gemm_grads")


def _is_plain_stride1(kernel, window_strides, lhs_dilation, rhs_dilation, feature_group_count):
  dilations = tuple(lhs_dilation or ()) + tuple(rhs_dilation or ())
  return (
      kernel.ndim == 4
      and tuple(window_strides) == (1, 1)
      and all(d == 1 for d in dilations)
      and feature_group_count == 1
  )


def _conv_nhwc(x, kernel, padding):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_stride1_gemm_grad(x, kernel, padding):
  """Stride-1 NHWC conv whose kernel gradient is one GEMM over im2col patches."""
  return _conv_nhwc(x, kernel, padding)


def _conv_stride1_gemm_grad_fwd(x, kernel, padding):
  return _conv_nhwc(x, kernel, padding), (x, kernel)


def _conv_stride1_gemm_grad_bwd(padding, residuals, out_grad):
  x, kernel = residuals
  kernel_h, kernel_w, in_channels, out_channels = kernel.shape
  _, input_vjp = jax.vjp(lambda inputs: _conv_nhwc(inputs, kernel, padding), x)
  (x_grad,) = input_vjp(out_grad)
  out_h, out_w = out_grad.shape[1:3]
  zero = jnp.zeros((), x.dtype)
  padded = jax.lax.pad(x, zero, ((0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)))
  # patches[b, i, j, (dy, dx, c)] = padded[b, i + dy, j + dx, c], the order of HWIO's H, W, I.
  patches = jnp.concatenate(
      [
          padded[:, dy : dy + out_h, dx : dx + out_w, :]
          for dy in range(kernel_h)
          for dx in range(kernel_w)
      ],
      axis=-1,
  )
  kernel_grad = jax.lax.dot_general(
      patches.reshape(-1, kernel_h * kernel_w * in_channels),
      out_grad.reshape(-1, out_channels),
      (((0,), (0,)), ((), ())),
  )
  return x_grad, kernel_grad.reshape(kernel.shape).astype(kernel.dtype)


_conv_stride1_gemm_grad.defvjp(_conv_stride1_gemm_grad_fwd, _conv_stride1_gemm_grad_bwd)


def conv_gemm_grads(
    inputs,
    kernel,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    preferred_element_type=None,
):
  """``lax.conv_general_dilated`` as ``nn.Conv`` calls it (NHWC / HWIO), with cheaper gradients
  on XLA's CPU backend. Same values; only how the kernel gradient is computed differs.

  XLA:CPU computes a kernel gradient as a convolution whose window is the whole feature map,
  far slower than a GEMM. So: a 1x1 stride-1 conv is written as a dot over channels (its
  gradients are dots too); other stride-1 convs keep XLA's forward and input gradient but get
  the kernel gradient as patches^T @ out_grad; anything else (GoogLeNet's strided 7x7 conv1,
  whose 3 input channels make patches wasteful) is lax.conv_general_dilated unchanged.
  Reverse-mode only for the stride-1 k > 1 case (custom_vjp).
  """
  explicit_padding = not isinstance(padding, str)
  if (
      explicit_padding
      and inputs.ndim == 4
      and precision is None
      and preferred_element_type is None
      and _is_plain_stride1(kernel, window_strides, lhs_dilation, rhs_dilation, feature_group_count)
  ):
    pads = tuple(map(tuple, padding))
    if kernel.shape[:2] == (1, 1) and pads == ((0, 0), (0, 0)):
      return jax.lax.dot_general(inputs, kernel[0, 0], (((3,), (0,)), ((), ())))
    return _conv_stride1_gemm_grad(inputs, kernel, pads)
  return jax.lax.conv_general_dilated(
      inputs,
      kernel,
      window_strides,
      padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      precision=precision,
      preferred_element_type=preferred_element_type,
  )


def resolve_conv_impl(conv_impl: str) -> str:
  """'auto' -> 'gemm_grads' on CPU (measured faster there), 'xla' on GPU/TPU."""
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
  if conv_impl == "auto":
    return "gemm_grads" if jax.default_backend() == "cpu" else "xla"
  return conv_impl
