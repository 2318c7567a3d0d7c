"""DNNH / "One-Stage Hashing" (METHODS.md section 2) as in the IAH paper's comparison.

image -> backbone -> global average pool -> [FC to q * s] -> divide-and-encode: q slices of s
units, slice k -> FC to 1 unit -> sigmoid -> bit k. Loss: the weighted triplet loss (IAH eq. 9,
as the IAH paper trains it) or, with method_options.one_stage_loss = "plain", DNNH's own plain
triplet ranking loss; the margin is config.loss.semantic_margin, the weight
config.loss.semantic_weight. Codes: 1[sigmoid output > 0.5].

train.py hands `compute_losses` only `config.loss`, so the method's own options (which loss)
travel with the model and come back in the outputs as `loss_options`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from iah_jax import losses
from iah_jax import method_losses
from iah_jax.models import iah

LOSSES = ("weighted", "plain")


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
  in (0, 1), "loss_options": {...}}`.

  Attributes:
    backbone: images -> feature map [B, h, w, C].
    semantic_bits: q.
    slice_units: s; 0 = slice the C pooled features directly when q divides C, otherwise an FC
      to q * ceil(C / q) units first.
    loss: "weighted" | "plain" (see the module docstring).
  """

  backbone: nn.Module
  semantic_bits: int
  slice_units: int = 0
  loss: str = "weighted"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
      self, images: jax.Array, proposals: jax.Array | None = None, train: bool = False
  ) -> dict:
    del proposals  # whole-image method
    pooled = jnp.mean(self.backbone(images, train=train).astype(jnp.float32), axis=(1, 2))
    channels = pooled.shape[-1]
    slice_units = self.slice_units
    if slice_units == 0 and channels % self.semantic_bits:
      slice_units = -(-channels // self.semantic_bits)
    if slice_units:
      pooled = nn.Dense(self.semantic_bits * slice_units, dtype=self.dtype, name="slice_fc")(
          pooled
      ).astype(jnp.float32)
    bits = DivideAndEncode(self.semantic_bits, dtype=self.dtype, name="divide_and_encode")(pooled)
    return {"semantic_features": bits, "loss_options": {"loss": self.loss}}


def build_model(
    config: ml_collections.ConfigDict,
    num_classes: int,
    semantic_bits: int,
    bits_per_category: int,
    backbone: nn.Module,
) -> OneStageHashing:
  del num_classes, bits_per_category
  options = config.method_options
  if options.one_stage_loss not in LOSSES:
    raise ValueError(
        f"method_options.one_stage_loss must be one of {LOSSES}, got " f"{options.one_stage_loss!r}"
    )
  if options.one_stage_slice_units < 0:
    raise ValueError(
        "method_options.one_stage_slice_units must be >= 0, got " f"{options.one_stage_slice_units}"
    )
  return OneStageHashing(
      backbone=backbone,
      semantic_bits=semantic_bits,
      slice_units=int(options.one_stage_slice_units),
      loss=options.one_stage_loss,
      dtype=jnp.dtype(config.model.dtype),
  )


def compute_losses(outputs: dict, labels: jax.Array, loss_config) -> dict:
  features = outputs["semantic_features"]
  if outputs["loss_options"]["loss"] == "plain":
    semantic_loss = method_losses.triplet_ranking_loss(
        features, labels, margin=loss_config.semantic_margin
    )
  else:
    semantic_loss = losses.weighted_triplet_loss(
        features, labels, margin=loss_config.semantic_margin
    )
  return {"loss": loss_config.semantic_weight * semantic_loss, "semantic_loss": semantic_loss}


def encode(outputs: dict, config: ml_collections.ConfigDict) -> dict:
  del config
  return {"semantic_codes": iah.binarize(outputs["semantic_features"], "sigmoid")}
