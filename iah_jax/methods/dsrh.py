"""DSRH, Deep Semantic Ranking Hashing (METHODS.md section 3).

image -> backbone -> global average pool -> FC to q -> sigmoid x -> h = 2x - 1 in (-1, 1).
Loss: config.loss.semantic_weight * NDCG-weighted ranking hinge (margin method_options.dsrh.margin)
+ rho * sum_k (batch mean of h_k)^2 with rho = method_options.dsrh.bit_balance_weight (losses.py).
Codes: 1[h > 0] (= 1[x > 0.5]).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from iah_jax import losses
from iah_jax.methods import registry
from iah_jax.models.hashing import binarize
from iah_jax.models.hashing import global_average_pool

OPTIONS = {
    "margin": 5.0,  # hinge margin (authors: 5.0, 64 bits)
    "bit_balance_weight": 1.0,  # rho of the bit-balance penalty
}


class DSRH(nn.Module):
  """`__call__(images, proposals (ignored), train) -> {"semantic_features": h [B, q] in
  (-1, 1)}`."""

  backbone: nn.Module
  semantic_bits: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
      self, images: jax.Array, proposals: jax.Array | None = None, train: bool = False
  ) -> dict:
    del proposals  # whole-image method (the shared call signature passes them)
    pooled = global_average_pool(self.backbone(images, train=train))
    scores = nn.Dense(self.semantic_bits, dtype=self.dtype, name="hash_fc")(pooled)
    return {"semantic_features": 2.0 * jax.nn.sigmoid(scores.astype(jnp.float32)) - 1.0}


def build(context: registry.BuildContext) -> DSRH:
  return DSRH(backbone=context.backbone, semantic_bits=context.semantic_bits, dtype=context.dtype)


def compute_losses(outputs: dict, labels: jax.Array, settings: registry.Settings) -> dict:
  signed, options = outputs["semantic_features"], settings.options
  ranking_loss = losses.dsrh_ranking_loss(signed, labels, margin=float(options.margin))
  balance = losses.bit_balance_penalty(signed)
  total = settings.loss.semantic_weight * ranking_loss + float(options.bit_balance_weight) * balance
  return {"loss": total, "semantic_loss": ranking_loss, "bit_balance_loss": balance}


def encode(outputs: dict, settings: registry.Settings) -> dict:
  """Codes 1[h > 0] (h is bounded by construction; no setting changes them)."""
  return {"semantic_codes": binarize(outputs["semantic_features"], "tanh")}


METHOD = registry.register(
    registry.Method(
        name="dsrh",
        title="DSRH",
        build=build,
        losses=compute_losses,
        encode=encode,
        options=OPTIONS,
    )
)
