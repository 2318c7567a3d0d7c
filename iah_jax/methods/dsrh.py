"""DSRH, Deep Semantic Ranking Hashing (METHODS.md section 3).

image -> backbone -> global average pool -> FC to q -> sigmoid x -> h = 2x - 1 in (-1, 1).
Loss: config.loss.semantic_weight * NDCG-weighted ranking hinge (margin
method_options.dsrh_margin) + rho * sum_k (batch mean of h_k)^2 with rho =
method_options.bit_balance_weight (method_losses). Codes: 1[h > 0] (= 1[x > 0.5]).

train.py hands `compute_losses` only `config.loss`, so the method's own options travel with the
model and come back in the outputs as `loss_options`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from iah_jax import method_losses
from iah_jax.models import iah


class DSRH(nn.Module):
  """`__call__(images, proposals (ignored), train) -> {"semantic_features": h [B, q] in (-1, 1),
  "loss_options": {"margin", "bit_balance_weight"}}`."""

  backbone: nn.Module
  semantic_bits: int
  margin: float = 5.0
  bit_balance_weight: float = 1.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
      self, images: jax.Array, proposals: jax.Array | None = None, train: bool = False
  ) -> dict:
    del proposals  # whole-image method
    pooled = jnp.mean(self.backbone(images, train=train).astype(jnp.float32), axis=(1, 2))
    scores = nn.Dense(self.semantic_bits, dtype=self.dtype, name="hash_fc")(pooled)
    signed = 2.0 * jax.nn.sigmoid(scores.astype(jnp.float32)) - 1.0
    return {
        "semantic_features": signed,
        "loss_options": {"margin": self.margin, "bit_balance_weight": self.bit_balance_weight},
    }


def build_model(
    config: ml_collections.ConfigDict,
    num_classes: int,
    semantic_bits: int,
    bits_per_category: int,
    backbone: nn.Module,
) -> DSRH:
  del num_classes, bits_per_category
  options = config.method_options
  return DSRH(
      backbone=backbone,
      semantic_bits=semantic_bits,
      margin=float(options.dsrh_margin),
      bit_balance_weight=float(options.bit_balance_weight),
      dtype=jnp.dtype(config.model.dtype),
  )


def compute_losses(outputs: dict, labels: jax.Array, loss_config) -> dict:
  signed = outputs["semantic_features"]
  options = outputs["loss_options"]
  ranking_loss = method_losses.dsrh_ranking_loss(signed, labels, margin=options["margin"])
  balance = method_losses.bit_balance_penalty(signed)
  total = loss_config.semantic_weight * ranking_loss + options["bit_balance_weight"] * balance
  return {"loss": total, "semantic_loss": ranking_loss, "bit_balance_loss": balance}


def encode(outputs: dict, config: ml_collections.ConfigDict) -> dict:
  del config
  return {"semantic_codes": iah.binarize(outputs["semantic_features"], "tanh")}  # h > 0
