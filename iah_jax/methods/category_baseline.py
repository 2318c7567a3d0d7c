"""The category-aware baseline of IAH Fig. 9 (METHODS.md section 6).

image -> backbone -> global average pool -> FC to c * b -> tanh -> c slices of b bits; slice j is
trained with the category-aware triplet loss (IAH eq. 7: images carrying category j are positives,
the rest negatives; margin config.loss.category_margin, weight config.loss.category_weight).
No proposals and no label-probability branch.

The method has no semantic code of its own: `encode` returns as `semantic_codes` the c * b
category bits concatenated in category order, so the shared semantic evaluation still runs
(it is not a result the paper reports); `category_codes` [B, c, b] is what Fig. 9 evaluates.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from iah_jax import losses
from iah_jax.models import iah


class CategoryBaseline(nn.Module):
  """`__call__(images, proposals (ignored), train) -> {"category_features": [B, c, b] in
  (-1, 1), "semantic_features": the same flattened to [B, c * b]}`."""

  backbone: nn.Module
  num_classes: int
  bits_per_category: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
      self, images: jax.Array, proposals: jax.Array | None = None, train: bool = False
  ) -> dict:
    del proposals  # whole-image method
    pooled = jnp.mean(self.backbone(images, train=train).astype(jnp.float32), axis=(1, 2))
    flat = jnp.tanh(
        nn.Dense(self.num_classes * self.bits_per_category, dtype=self.dtype, name="category_fc")(
            pooled
        ).astype(jnp.float32)
    )
    return {
        "category_features": flat.reshape(-1, self.num_classes, self.bits_per_category),
        "semantic_features": flat,
    }


def build_model(
    config: ml_collections.ConfigDict,
    num_classes: int,
    semantic_bits: int,
    bits_per_category: int,
    backbone: nn.Module,
) -> CategoryBaseline:
  del semantic_bits
  return CategoryBaseline(
      backbone=backbone,
      num_classes=num_classes,
      bits_per_category=bits_per_category,
      dtype=jnp.dtype(config.model.dtype),
  )


def compute_losses(outputs: dict, labels: jax.Array, loss_config) -> dict:
  category_loss = losses.category_triplet_loss(
      outputs["category_features"], labels, margin=loss_config.category_margin
  )
  return {"loss": loss_config.category_weight * category_loss, "category_loss": category_loss}


def encode(outputs: dict, config: ml_collections.ConfigDict) -> dict:
  del config
  category_codes = iah.binarize(outputs["category_features"], "tanh")
  return {
      "semantic_codes": category_codes.reshape(category_codes.shape[0], -1),
      "category_codes": category_codes,
  }
