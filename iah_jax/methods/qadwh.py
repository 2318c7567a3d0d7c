"""QaDWH, Query-adaptive Deep Weighted Hashing (METHODS.md section 4).

image -> backbone -> global average pool -> FC to q -> sigmoid bits, and FC to c class scores.
Learnable class-wise bit weights W [c, q], initialised N(1, std^2) (method_options.
qadwh_weight_init_std). Loss: config.loss.label_weight * multi-label softmax loss (IAH eq. 3) +
config.loss.semantic_weight * triplet loss on the bits multiplied by each image's averaged class
rows of W (margin method_options.qadwh_triplet_margin). Codes: 1[bit > 0.5]; query-adaptive
bit weights p @ W with p = softmax(class scores), for weighted Hamming ranking.

train.py hands `compute_losses` only `config.loss`, so the method's own options travel with the
model and come back in the outputs as `loss_options`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from iah_jax import losses
from iah_jax import method_losses
from iah_jax.models import iah


class QaDWH(nn.Module):
  """`__call__(images, proposals (ignored), train) -> dict` with ``semantic_features`` [B, q] in
  (0, 1), ``label_logits`` / ``label_probs`` [B, c], ``class_bit_weights`` W [c, q] and
  ``loss_options``."""

  backbone: nn.Module
  num_classes: int
  semantic_bits: int
  triplet_margin: float = 1.0
  weight_init_std: float = 0.1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
      self, images: jax.Array, proposals: jax.Array | None = None, train: bool = False
  ) -> dict:
    del proposals  # whole-image method
    pooled = jnp.mean(self.backbone(images, train=train).astype(jnp.float32), axis=(1, 2))
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
        "loss_options": {"margin": self.triplet_margin},
    }


def build_model(
    config: ml_collections.ConfigDict,
    num_classes: int,
    semantic_bits: int,
    bits_per_category: int,
    backbone: nn.Module,
) -> QaDWH:
  del bits_per_category
  options = config.method_options
  return QaDWH(
      backbone=backbone,
      num_classes=num_classes,
      semantic_bits=semantic_bits,
      triplet_margin=float(options.qadwh_triplet_margin),
      weight_init_std=float(options.qadwh_weight_init_std),
      dtype=jnp.dtype(config.model.dtype),
  )


def compute_losses(outputs: dict, labels: jax.Array, loss_config) -> dict:
  label_loss = losses.label_probability_loss(outputs["label_logits"], labels)
  semantic_loss = method_losses.qadwh_weighted_triplet_loss(
      outputs["semantic_features"],
      labels,
      outputs["class_bit_weights"],
      margin=outputs["loss_options"]["margin"],
  )
  total = loss_config.label_weight * label_loss + loss_config.semantic_weight * semantic_loss
  return {"loss": total, "label_loss": label_loss, "semantic_loss": semantic_loss}


def encode(outputs: dict, config: ml_collections.ConfigDict) -> dict:
  del config
  label_probs = outputs["label_probs"]
  return {
      "semantic_codes": iah.binarize(outputs["semantic_features"], "sigmoid"),
      "label_probs": label_probs,
      "bit_weights": label_probs @ outputs["class_bit_weights"],
  }  # w = sum_j p_j W_j
