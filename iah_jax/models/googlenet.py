"""GoogLeNet (Inception v1) in Flax Linen, numerically matching torchvision's ``googlenet``.

Architecture as torchvision builds it with ``aux_logits=False`` (the auxiliary classifiers only
exist for ImageNet training and are not part of the IAH backbone):

- every convolution is a ``BasicConv``: conv without bias -> BatchNorm (eps 1e-3) -> ReLU;
- max-pools use PyTorch's ``ceil_mode=True`` output size (see ``max_pool_ceil``);
- the third inception branch uses a 3x3 convolution where the paper has 5x5 (a long-standing
  torchvision quirk; its ImageNet weights are shaped that way, so we keep it);
- the classifier is global average pooling -> dropout 0.2 -> fc.

Layouts are NHWC throughout (JAX's natural conv layout); the converter in
``iah_jax.convert.torchvision_googlenet`` moves torchvision's OIHW kernels to HWIO.

Two entry points share one feature extractor, so converted variables fit both:

- ``GoogLeNet``: the classifier, input in torchvision's convention (already ImageNet-normalised),
  used to verify conversion against torchvision's logits. Its feature extractor is the submodule
  ``features``.
- ``GoogLeNetBackbone``: the IAH backbone interface, input RGB in [0, 1], output the inception5b
  feature map [B, h, w, 1024]. ``classifier_variables[col]['features']`` is a valid
  ``iah_variables[col]['backbone']`` (see ``iah_jax.models.pretrained.load``).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# ImageNet statistics used by torchvision's preprocessing (transforms.Normalize).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FEATURE_CHANNELS = 1024

# (name, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5" (a 3x3 conv), pool projection), torchvision order.
INCEPTION_BLOCKS = (
    ("inception3a", 64, 96, 128, 16, 32, 32),
    ("inception3b", 128, 128, 192, 32, 96, 64),
    ("inception4a", 192, 96, 208, 16, 48, 64),
    ("inception4b", 160, 112, 224, 24, 64, 64),
    ("inception4c", 128, 128, 256, 24, 64, 64),
    ("inception4d", 112, 144, 288, 32, 64, 64),
    ("inception4e", 256, 160, 320, 32, 128, 128),
    ("inception5a", 256, 160, 320, 32, 128, 128),
    ("inception5b", 384, 192, 384, 48, 128, 128),
)


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


class BasicConv(nn.Module):
  """Conv (no bias) -> BatchNorm(eps=1e-3) -> ReLU, torchvision's ``BasicConv2d``.

  BatchNorm: train=True normalises with batch statistics and updates ``batch_stats`` (momentum
  0.9 in Flax's convention = torch's 0.1); train=False uses the running averages. Note Flax
  updates the running variance with the biased batch variance, torch with the unbiased one
  (a factor n/(n-1), n = B*H*W); evaluation is unaffected.
  """

  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv_fn = {"xla": jax.lax.conv_general_dilated, "gemm_grads": conv_gemm_grads}[
        resolve_conv_impl(self.conv_impl)
    ]
    x = nn.Conv(
        self.features,
        (self.kernel_size, self.kernel_size),
        strides=(self.stride, self.stride),
        padding=((self.padding, self.padding), (self.padding, self.padding)),
        use_bias=False,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        conv_general_dilated=conv_fn,
        name="conv",
    )(x)
    x = nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-3,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        name="bn",
    )(x)
    return nn.relu(x)


class Inception(nn.Module):
  """Four parallel branches concatenated on channels: 1x1 | 1x1->3x3 | 1x1->3x3 | pool->1x1."""

  ch1x1: int
  ch3x3_reduce: int
  ch3x3: int
  ch5x5_reduce: int
  ch5x5: int  # torchvision's "5x5" branch is a 3x3 conv; the name follows the paper's table
  pool_proj: int
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = lambda features, kernel, name: BasicConv(  # noqa: E731
        features,
        kernel,
        padding=kernel // 2,
        dtype=self.dtype,
        conv_impl=self.conv_impl,
        name=name,
    )
    branch1 = conv(self.ch1x1, 1, "branch1")(x, train)
    branch2 = conv(self.ch3x3_reduce, 1, "branch2_reduce")(x, train)
    branch2 = conv(self.ch3x3, 3, "branch2_conv")(branch2, train)
    branch3 = conv(self.ch5x5_reduce, 1, "branch3_reduce")(x, train)
    branch3 = conv(self.ch5x5, 3, "branch3_conv")(branch3, train)
    branch4 = max_pool_ceil(x, window=3, stride=1, padding=1)
    branch4 = conv(self.pool_proj, 1, "branch4_proj")(branch4, train)
    return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


def normalize_unit_images(images: jax.Array, transform_input: bool) -> jax.Array:
  """Map RGB images in [0, 1] to what torchvision's GoogLeNet layers receive.

  Step 1 is torchvision's ImageNet preprocessing, (x - mean) / std per channel. Step 2, only
  if ``transform_input``, is GoogLeNet's own ``transform_input``, which undoes step 1 and maps to
  (x - 0.5) / 0.5: the ImageNet weights ported from the original paper (torchvision's
  IMAGENET1K_V1, loaded with transform_input=True) expect inputs in [-1, 1].
  images: float [..., 3] -> float32 [..., 3].
  """
  images = jnp.asarray(images, jnp.float32)
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)
  normalized = (images - mean) / std
  if transform_input:
    normalized = apply_transform_input(normalized)
  return normalized


def apply_transform_input(normalized: jax.Array) -> jax.Array:
  """torchvision GoogLeNet's ``transform_input`` on ImageNet-normalised x[..., 3] (RGB last)."""
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)
  # Same arithmetic order as torchvision: x * (std / 0.5) + (mean - 0.5) / 0.5.
  return normalized * (std / 0.5) + (mean - 0.5) / 0.5


class GoogLeNetBackbone(nn.Module):
  """GoogLeNet feature extractor: images [B, H, W, 3] -> inception5b map [B, h, w, 1024].

  With ``normalize_input=True`` (the IAH backbone interface) images are float RGB in [0, 1]
  and are normalised here by ``normalize_unit_images`` (ImageNet mean/std, then
  ``transform_input`` if set). Default transform_input=True, because the only ImageNet
  GoogLeNet weights torchvision ships expect it; with random or self-trained weights either
  setting works. With ``normalize_input=False`` images are already in torchvision's input
  convention (ImageNet-normalised) and only ``transform_input`` is applied, exactly like
  torchvision's ``GoogLeNet.forward``; that is how the ``GoogLeNet`` classifier uses it.

  h, w = ceil-mode /32 of H, W (7 x 7 at 224 x 224). ``dtype`` is the compute dtype (e.g.
  jnp.bfloat16 on GPU/TPU); parameters and BatchNorm statistics stay float32. ``conv_impl``
  only changes how convolution gradients are computed (see ``conv_gemm_grads``): "auto" picks
  "gemm_grads" on CPU and plain XLA convolutions ("xla") elsewhere; "xla" also supports
  forward-mode differentiation through the convs.
  """

  transform_input: bool = True
  normalize_input: bool = True
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"GoogLeNet expects images [B, H, W, 3] (NHWC RGB), got {images.shape}")
    if self.normalize_input:
      x = normalize_unit_images(images, self.transform_input)
    elif self.transform_input:
      x = apply_transform_input(jnp.asarray(images, jnp.float32))
    else:
      x = jnp.asarray(images, jnp.float32)
    x = x.astype(self.dtype)

    common = dict(dtype=self.dtype, conv_impl=resolve_conv_impl(self.conv_impl))
    x = BasicConv(64, 7, stride=2, padding=3, name="conv1", **common)(x, train)
    x = max_pool_ceil(x, window=3, stride=2)
    x = BasicConv(64, 1, name="conv2", **common)(x, train)
    x = BasicConv(192, 3, padding=1, name="conv3", **common)(x, train)
    x = max_pool_ceil(x, window=3, stride=2)
    for name, *channels in INCEPTION_BLOCKS:
      # Stride-2 pools sit before inception4a (3x3) and before inception5a (2x2).
      if name == "inception4a":
        x = max_pool_ceil(x, window=3, stride=2)
      elif name == "inception5a":
        x = max_pool_ceil(x, window=2, stride=2)
      x = Inception(*channels, name=name, **common)(x, train)
    return x


class GoogLeNet(nn.Module):
  """torchvision's GoogLeNet classifier (aux_logits=False): images -> logits [B, num_classes].

  images_nhwc are in torchvision's input convention (ImageNet-normalised RGB, NHWC). train=True
  uses batch statistics (mutable ``batch_stats``) and dropout (needs a 'dropout' rng).
  Logits are float32 whatever ``dtype`` is. ``dtype`` and ``conv_impl`` as in
  ``GoogLeNetBackbone``.
  """

  num_classes: int = 1000
  transform_input: bool = False
  dtype: Any = jnp.float32
  dropout_rate: float = 0.2
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, images_nhwc: jax.Array, train: bool = False) -> jax.Array:
    feature_map = GoogLeNetBackbone(
        transform_input=self.transform_input,
        normalize_input=False,
        dtype=self.dtype,
        conv_impl=self.conv_impl,
        name="features",
    )(images_nhwc, train)
    pooled = jnp.mean(feature_map.astype(jnp.float32), axis=(1, 2))  # adaptive avg pool to 1x1
    pooled = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(
        pooled.astype(self.dtype)
    )
    return logits.astype(jnp.float32)
