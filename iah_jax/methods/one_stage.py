"""DNNH / "One-Stage Hashing" (METHODS.md section 2) as in the IAH paper's comparison.

image -> backbone -> global average pool -> [FC to q * s] -> divide-and-encode: q slices of s
units, slice k -> FC to 1 unit -> sigmoid -> bit k. Loss: the weighted triplet loss (IAH eq. 9,
as the IAH paper trains it) or, with method_options.one_stage.loss = "plain", DNNH's own plain
triplet ranking loss; the margin is config.loss.semantic_margin, the weight
config.loss.semantic_weight. Codes: 1[sigmoid output > 0.5].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from iah_jax import losses
from iah_jax.methods import registry
from iah_jax.models.hashing import binarize
from iah_jax.models.hashing import global_average_pool

LOSSES = ("weighted", "plain")
OPTIONS = {
    "loss": "weighted",  # "weighted" (IAH eq. 9, as the IAH paper trains it) | "plain" (DNNH's)
    # FC to q * slice_units units, then q slices (DNNH's Caffe port: 50 units per bit slice; 0:
    # slice the pooled backbone features directly). On MIML at 32 bits 50 gave MAP 0.6337
    # against 0.5744 with 0 (README, "Method comparison").
    "slice_units": 50,
}


class DivideAndEncode(nn.Module):
  """[..., q * s] -> [..., q] sigmoid outputs; output k is a function of input slice k only
  (s = features // q consecutive units), through its own weight vector and bias."""

  bits: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    width = features.shape[-1]
    if width % self.bits:
      raise ValueError(
          f"divide-and-encode: {width} features do not split into {self.bits} " "equal slices"
      )
    slice_units = width // self.bits
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.bits, slice_units))
    bias = self.param("bias", nn.initializers.zeros, (self.bits,))
    slices = features.reshape(*features.shape[:-1], self.bits, slice_units)
    scores = jnp.einsum("...ks,ks->...k", slices.astype(self.dtype), kernel.astype(self.dtype))
    return jax.nn.sigmoid(scores.astype(jnp.float32) + bias)


class OneStageHashing(nn.Module):
  """`__call__(images [B,H,W,3], proposals (ignored), train) -> {"semantic_features": [B, q]
  in (0, 1)}`.

  Attributes:
    backbone: images -> feature map [B, h, w, C].
    semantic_bits: q.
    slice_units: s; 0 = slice the C pooled features directly when q divides C, otherwise an FC
      to q * ceil(C / q) units first.
  """

  backbone: nn.Module
  semantic_bits: int
  slice_units: int = 0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
      self, images: jax.Array, proposals: jax.Array | None = None, train: bool = False
  ) -> dict:
    del proposals  # whole-image method (the shared call signature passes them)
    pooled = global_average_pool(self.backbone(images, train=train))
    channels = pooled.shape[-1]
    slice_units = self.slice_units
    if slice_units == 0 and channels % self.semantic_bits:
      slice_units = -(-channels // self.semantic_bits)
    if slice_units:
      pooled = nn.Dense(self.semantic_bits * slice_units, dtype=self.dtype, name="slice_fc")(
          pooled
      ).astype(jnp.float32)
    bits = DivideAndEncode(self.semantic_bits, dtype=self.dtype, name="divide_and_encode")(pooled)
    return {"semantic_features": bits}


def build(context: registry.BuildContext) -> OneStageHashing:
  options = context.options
  if options.loss not in LOSSES:
    raise ValueError(f"method_options.one_stage.loss must be one of {LOSSES}, got {options.loss!r}")
  if options.slice_units < 0:
    raise ValueError(
        f"method_options.one_stage.slice_units must be >= 0, got {options.slice_units}"
    )
  return OneStageHashing(
      backbone=context.backbone,
      semantic_bits=context.semantic_bits,
      slice_units=int(options.slice_units),
      dtype=context.dtype,
  )


def compute_losses(outputs: dict, labels: jax.Array, settings: registry.Settings) -> dict:
  features, weights = outputs["semantic_features"], settings.loss
  if settings.options.loss == "plain":
    semantic_loss = losses.triplet_ranking_loss(features, labels, margin=weights.semantic_margin)
  else:
    semantic_loss = losses.weighted_triplet_loss(features, labels, margin=weights.semantic_margin)
  return {"loss": weights.semantic_weight * semantic_loss, "semantic_loss": semantic_loss}


def encode(outputs: dict, settings: registry.Settings) -> dict:
  """Codes 1[x > 0.5] (the sigmoid outputs; no setting changes them)."""
  return {"semantic_codes": binarize(outputs["semantic_features"], "sigmoid")}


METHOD = registry.register(
    registry.Method(
        name="one_stage",
        title="One-Stage (DNNH)",
        build=build,
        losses=compute_losses,
        encode=encode,
        options=OPTIONS,
        # Its one loss: a weight only rescales the rate; the margin sets the code spread.
        tuned_weights=("loss.semantic_margin",),
    )
)
