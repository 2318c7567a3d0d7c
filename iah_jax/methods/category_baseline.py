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

from iah_jax import losses
from iah_jax.methods import registry
from iah_jax.models.hashing import binarize
from iah_jax.models.hashing import global_average_pool


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
    del proposals  # whole-image method (the shared call signature passes them)
    pooled = global_average_pool(self.backbone(images, train=train))
    flat = jnp.tanh(
        nn.Dense(self.num_classes * self.bits_per_category, dtype=self.dtype, name="category_fc")(
            pooled
        ).astype(jnp.float32)
    )
    return {
        "category_features": flat.reshape(-1, self.num_classes, self.bits_per_category),
        "semantic_features": flat,
    }


def build(context: registry.BuildContext) -> CategoryBaseline:
  return CategoryBaseline(
      backbone=context.backbone,
      num_classes=context.num_classes,
      bits_per_category=context.bits_per_category,
      dtype=context.dtype,
  )


def compute_losses(outputs: dict, labels: jax.Array, settings: registry.Settings) -> dict:
  weights = settings.loss
  # One mean over all valid (category, triple) pairs, as this baseline was measured (README);
  # IAH's method_options.iah.category_loss_mean offers the per-category mean too.
  category_loss = losses.category_triplet_loss(
      outputs["category_features"], labels, margin=weights.category_margin, category_mean="pooled"
  )
  return {"loss": weights.category_weight * category_loss, "category_loss": category_loss}


def encode(outputs: dict, settings: registry.Settings) -> dict:
  """Category codes 1[f > 0] (tanh outputs; no setting changes them), flattened as semantic."""
  category_codes = binarize(outputs["category_features"], "tanh")
  return {
      "semantic_codes": category_codes.reshape(category_codes.shape[0], -1),
      "category_codes": category_codes,
  }


METHOD = registry.register(
    registry.Method(
        name="category_baseline",
        title="Category baseline (Fig. 9)",
        build=build,
        losses=compute_losses,
        encode=encode,
        capabilities=registry.Capabilities(category_codes=True, semantic_table=False),
        tuned_weights=("loss.category_margin",),  # its one loss: the margin, not a weight
    )
)
