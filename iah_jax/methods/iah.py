"""Instance-Aware Hashing: the network of models/iah.py trained with label loss (eq. 3) +
semantic weighted triplet loss (eq. 9) + category-aware triplet loss (eq. 7).

Eq. 7 is "c triplet losses, one per category": method_options.iah.category_loss_mean =
"per_category" (default, the paper's reading) averages each category's valid triples, then the
categories with any valid triple in the batch; "pooled" (the default before issue 12) takes one
mean over all valid (category, triple) pairs, so frequent categories weigh more. Measured against
each other on MIML, 32 bits, 3 seeds (README, "Method comparison on MIML"). Run manifests written
before the option existed read as "pooled", so their runs resume unchanged.

Codes: semantic 1[s > t], category-aware per category (t from config.model.output_bound), the
label probabilities p for section IV's tables, and query-adaptive bit weights w = p @ W with W
read off the semantic FC (weighted Hamming ranking, a variant beside plain Hamming).
"""

from __future__ import annotations

import jax

from iah_jax import losses
from iah_jax.methods import registry
from iah_jax.models import iah
from iah_jax.models.hashing import binarize

OPTIONS = {
    # "per_category" (the paper's reading of eq. 7) | "pooled" (one mean over all valid
    # (category, triple) pairs; frequent categories weigh more).
    "category_loss_mean": "per_category",
}


def build(context: registry.BuildContext) -> iah.IAH:
  if context.options.category_loss_mean not in losses.CATEGORY_LOSS_MEANS:
    raise ValueError(
        f"method_options.iah.category_loss_mean must be one of {losses.CATEGORY_LOSS_MEANS}, "
        f"got {context.options.category_loss_mean!r}"
    )
  model = context.model
  return iah.IAH(
      backbone=context.backbone,
      num_classes=context.num_classes,
      bits_per_category=context.bits_per_category,
      semantic_bits=context.semantic_bits,
      reduced_maps=model.reduced_maps,
      spp_levels=tuple(model.spp_levels),
      output_bound=model.output_bound,
      dtype=context.dtype,
  )


def compute_losses(outputs: dict, labels: jax.Array, settings: registry.Settings) -> dict:
  """The IAH objective: label loss + semantic weighted triplet + category-aware triplet."""
  weights = settings.loss
  label_loss = losses.label_probability_loss(outputs["label_logits"], labels)
  semantic_loss = losses.weighted_triplet_loss(
      outputs["semantic_features"], labels, margin=weights.semantic_margin
  )
  category_loss = losses.category_triplet_loss(
      outputs["category_features"],
      labels,
      margin=weights.category_margin,
      category_mean=settings.options.category_loss_mean,
  )
  total = (
      weights.label_weight * label_loss
      + weights.semantic_weight * semantic_loss
      + weights.category_weight * category_loss
  )
  return {
      "loss": total,
      "label_loss": label_loss,
      "semantic_loss": semantic_loss,
      "category_loss": category_loss,
  }


def encode(outputs: dict, settings: registry.Settings) -> dict:
  output_bound = settings.model.output_bound
  return {
      "semantic_codes": binarize(outputs["semantic_features"], output_bound),
      "category_codes": iah.category_codes(
          outputs["category_features"], outputs["proposal_label_probs"], output_bound
      ),
      "label_probs": outputs["label_probs"],
      # Query-adaptive weighted Hamming ranking (a variant beside plain Hamming): w = p @ W.
      "bit_weights": outputs["label_probs"] @ outputs["class_bit_weights"],
  }


METHOD = registry.register(
    registry.Method(
        name="iah",
        title="IAH",
        build=build,
        losses=compute_losses,
        encode=encode,
        capabilities=registry.Capabilities(
            category_codes=True, label_probs=True, bit_weights=True, proposals=True
        ),
        options=OPTIONS,
        # eq. 7 against eq. 3 (eq. 9 keeps weight 1): the two terms the paper balances.
        tuned_weights=("loss.category_weight", "loss.label_weight"),
    )
)
