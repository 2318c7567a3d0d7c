"""GoogLeNet (Inception v1) in Flax Linen, numerically matching torchvision's ``googlenet``.

Architecture as torchvision builds it with ``aux_logits=False`` (the auxiliary classifiers only
exist for ImageNet training and are not part of the IAH backbone):

- every convolution is a ``BasicConv``: conv without bias -> BatchNorm (eps 1e-3) -> ReLU;
- max-pools use PyTorch's ``ceil_mode=True`` output size (``iah_jax.ops.pooling_kernels``);
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

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from iah_jax.ops.conv_kernels import conv_gemm_grads
from iah_jax.ops.conv_kernels import resolve_conv_impl
from iah_jax.ops.pooling_kernels import max_pool_ceil

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
