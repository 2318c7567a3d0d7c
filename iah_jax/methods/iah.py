"""Instance-Aware Hashing: the network of models/iah.py trained with label loss (eq. 3) +
semantic weighted triplet loss (eq. 9) + category-aware triplet loss (eq. 7)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from iah_jax import losses
from iah_jax.models import iah


def build_model(
    config: ml_collections.ConfigDict,
    num_classes: int,
    semantic_bits: int,
    bits_per_category: int,
    backbone: nn.Module,
) -> iah.IAH:
  return iah.IAH(
      backbone=backbone,
      num_classes=num_classes,
      bits_per_category=bits_per_category,
      semantic_bits=semantic_bits,
      reduced_maps=config.model.reduced_maps,
      spp_levels=tuple(config.model.spp_levels),
      output_bound=config.model.output_bound,
      dtype=jnp.dtype(config.model.dtype),
  )


def compute_losses(outputs: dict, labels: jax.Array, loss_config) -> dict:
  """The IAH objective: label loss + semantic weighted triplet + category-aware triplet."""
  label_loss = losses.label_probability_loss(outputs["label_logits"], labels)
  semantic_loss = losses.weighted_triplet_loss(
      outputs["semantic_features"], labels, margin=loss_config.semantic_margin
  )
  category_loss = losses.category_triplet_loss(
      outputs["category_features"], labels, margin=loss_config.category_margin
  )
  total = (
      loss_config.label_weight * label_loss
      + loss_config.semantic_weight * semantic_loss
      + loss_config.category_weight * category_loss
  )
  return {
      "loss": total,
      "label_loss": label_loss,
      "semantic_loss": semantic_loss,
      "category_loss": category_loss,
  }


def encode(outputs: dict, config: ml_collections.ConfigDict) -> dict:
  bound = config.model.output_bound
  return {
      "semantic_codes": iah.binarize(outputs["semantic_features"], bound),
      "category_codes": iah.category_codes(
          outputs["category_features"], outputs["proposal_label_probs"], bound
      ),
      "label_probs": outputs["label_probs"],
      # Query-adaptive weighted Hamming ranking (optional, train.evaluate_run): w = p @ W.
      "bit_weights": outputs["label_probs"] @ outputs["class_bit_weights"],
  }
