"""QaDWH, Query-adaptive Deep Weighted Hashing (METHODS.md section 4).

image -> backbone -> global average pool -> FC to q -> sigmoid bits, and FC to c class scores.
Learnable class-wise bit weights W [c, q], initialised N(1, std^2) (method_options.qadwh.
weight_init_std). Loss: config.loss.label_weight * multi-label softmax loss (IAH eq. 3) +
config.loss.semantic_weight * triplet loss on the bits multiplied by each image's averaged class
rows of W (margin method_options.qadwh.triplet_margin). Codes: 1[bit > 0.5]; query-adaptive
bit weights p @ W with p = softmax(class scores): its own ranking is weighted Hamming.
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
    "triplet_margin": 1.0,  # margin of the weighted triplet loss
    "weight_init_std": 0.1,  # W (c x q) starts at N(1, std^2)
}


class QaDWH(nn.Module):
  """`__call__(images, proposals (ignored), train) -> dict` with ``semantic_features`` [B, q] in
  (0, 1), ``label_logits`` / ``label_probs`` [B, c] and ``class_bit_weights`` W [c, q]."""

  backbone: nn.Module
  num_classes: int
  semantic_bits: int
  weight_init_std: float = 0.1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
      self, images: jax.Array, proposals: jax.Array | None = None, train: bool = False
  ) -> dict:
    del proposals  # whole-image method (the shared call signature passes them)
    pooled = global_average_pool(self.backbone(images, train=train))
    bits = jax.nn.sigmoid(
        nn.Dense(self.semantic_bits, dtype=self.dtype, name="hash_fc")(pooled).astype(jnp.float32)
    )
    label_logits = nn.Dense(self.num_classes, dtype=self.dtype, name="label_fc")(pooled).astype(
        jnp.float32
    )
    std = self.weight_init_std
    class_bit_weights = self.param(
        "class_bit_weights",
        lambda key, shape: 1.0 + std * jax.random.normal(key, shape),
        (self.num_classes, self.semantic_bits),
    )
    return {
        "semantic_features": bits,
        "label_logits": label_logits,
        "label_probs": jax.nn.softmax(label_logits, axis=-1),
        "class_bit_weights": class_bit_weights,
    }


def build(context: registry.BuildContext) -> QaDWH:
  return QaDWH(
      backbone=context.backbone,
      num_classes=context.num_classes,
      semantic_bits=context.semantic_bits,
      weight_init_std=float(context.options.weight_init_std),
      dtype=context.dtype,
  )


def compute_losses(outputs: dict, labels: jax.Array, settings: registry.Settings) -> dict:
  weights = settings.loss
  label_loss = losses.label_probability_loss(outputs["label_logits"], labels)
  semantic_loss = losses.qadwh_weighted_triplet_loss(
      outputs["semantic_features"],
      labels,
      outputs["class_bit_weights"],
      margin=float(settings.options.triplet_margin),
  )
  total = weights.label_weight * label_loss + weights.semantic_weight * semantic_loss
  return {"loss": total, "label_loss": label_loss, "semantic_loss": semantic_loss}


def encode(outputs: dict, settings: registry.Settings) -> dict:
  """Codes 1[bit > 0.5], p and w = sum_j p_j W_j (no setting changes them)."""
  label_probs = outputs["label_probs"]
  return {
      "semantic_codes": binarize(outputs["semantic_features"], "sigmoid"),
      "label_probs": label_probs,
      "bit_weights": label_probs @ outputs["class_bit_weights"],
  }


METHOD = registry.register(
    registry.Method(
        name="qadwh",
        title="QaDWH",
        build=build,
        losses=compute_losses,
        encode=encode,
        capabilities=registry.Capabilities(
            label_probs=True, bit_weights=True, query_adaptive_ranking=True
        ),
        options=OPTIONS,
    )
)
