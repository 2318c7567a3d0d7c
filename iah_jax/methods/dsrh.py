"""DSRH, Deep Semantic Ranking Hashing (METHODS.md section 3; Zhao et al., CVPR 2015, seed 002).

image -> backbone -> global average pool -> FC to q -> sigmoid x -> h = 2x - 1 in (-1, 1).
Loss: config.loss.semantic_weight * NDCG-weighted ranking hinge + rho * sum_k (batch mean of
h_k)^2 with rho = method_options.dsrh.bit_balance_weight (losses.py). The hinge's margin is
method_options.dsrh.margin * q / method_options.dsrh.margin_bits: the authors' 5.0 is for their
64-bit codes (`cuda-convnet-for-hashing`, layer_kernels.cu, kLocRankCost, with 64 hash outputs
in layers-nuswide-train.cfg); the hinge is on a Hamming-distance difference, which ranges over
[-q, q], so by default the margin keeps its share of that range (2.5 at 32 bits; our choice:
the authors give no other code length). margin_bits = 0 uses `margin` at every q.
Solver (the authors' layer-params-nuswide-train.cfg): the hash layer (`hash_fc`) learns at 10x
the rate of the layers below (epsW 0.001 against 0.0001) and every weight has decay 5e-4 (wc),
as method_options.dsrh.new_layer_lr_multiplier / weight_decay (see train.make_optimizer).
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
    "margin": 5.0,  # hinge margin at margin_bits bits (authors: 5.0 at 64 bits)
    # The hinge uses margin * q / margin_bits (2.5 at 32 bits); 0: `margin` at every q.
    "margin_bits": 64,
    "bit_balance_weight": 1.0,  # rho of the bit-balance penalty
    "new_layer_lr_multiplier": 10.0,  # hash_fc's rate / the backbone's (authors: 10)
    "weight_decay": 5e-4,  # on every weight matrix and kernel (authors: 5e-4)
}
NEW_LAYERS = ("hash_fc",)


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
  options = context.options
  if options.margin_bits < 0:
    raise ValueError(f"method_options.dsrh.margin_bits must be >= 0, got {options.margin_bits}")
  registry.check_optimizer_options("dsrh", options)
  return DSRH(backbone=context.backbone, semantic_bits=context.semantic_bits, dtype=context.dtype)


def hinge_margin(options, semantic_bits: int) -> float:
  """The ranking hinge's margin at q = semantic_bits: margin * q / margin_bits (margin as given
  when margin_bits is 0)."""
  if not options.margin_bits:
    return float(options.margin)
  return float(options.margin) * semantic_bits / options.margin_bits


def compute_losses(outputs: dict, labels: jax.Array, settings: registry.Settings) -> dict:
  signed, options = outputs["semantic_features"], settings.options
  margin = hinge_margin(options, signed.shape[-1])
  ranking_loss = losses.dsrh_ranking_loss(signed, labels, margin=margin)
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
        tuned_weights=("method_options.dsrh.bit_balance_weight",),  # rho against the ranking hinge
        optimizer_settings=registry.new_layer_optimizer_settings(NEW_LAYERS),
    )
)
