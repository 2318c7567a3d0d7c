"""QaDWH, Query-adaptive Deep Weighted Hashing (METHODS.md section 4; Zhang & Peng, TMM 2018,
seed 003).

image -> backbone -> global average pool -> FC to q -> sigmoid bits, and FC to c class scores.
Learnable class-wise bit weights W [c, q], initialised N(1, std^2) (method_options.qadwh.
weight_init_std). Loss: config.loss.label_weight * label loss + config.loss.semantic_weight *
triplet_loss_scale * triplet loss on the bits multiplied by each image's averaged class rows of
W (margin method_options.qadwh.triplet_margin). Codes: 1[bit > 0.5]; query-adaptive bit weights
p @ W with p the predicted class probabilities: its own ranking is weighted Hamming.

From the authors' training code (`PKU-ICST-MIPL/QaDWH_TMM2018`: the *_train_test_vgg19_cw_*b
prototxts, flickr25k_wtri_solver.prototxt and the layers in src/caffe/layers/):
- the triplet loss layer (triplet_loss_layer.cpp) divides the summed hinges by twice the number
  of triplets: `triplet_loss_scale` = 0.5 on our mean over triplets;
- the class-score layer (`pred`) and W (`whash`) have lr_mult 10, the bit layer and the network
  below lr_mult 1; the solver's weight_decay is 5e-4 on every weight (decay_mult 1; biases 0):
  `new_layer_lr_multiplier` on ("label_fc", "class_bit_weights") and `weight_decay`;
- `label_loss`: METHODS.md calls the label loss the multi-label softmax loss, as the layer is
  named (MultiLabelSoftmaxWithLoss), and that (IAH eq. 3, p = softmax) stays the default. That
  layer's inner layer is a Sigmoid, though, and its gradient is sigmoid(z) - y on every class
  divided by the batch size, i.e. per-class sigmoid cross-entropy summed over the classes
  (its forward value only sums the positives' -log sigmoid): `label_loss = "sigmoid"` trains
  that, and p is then the per-class sigmoid (a per-query scale of p does not change the
  weighted-Hamming ranking).
- `triplet_weighting` (default "anchor", a deliberate departure from the authors' layer): the
  ClassWiseProduct layer multiplies every image's bits by its *own* labels' averaged rows of W
  ("own"). Then two images of different labels are apart through W alone, even with equal bits,
  so the triplets can be met by W while bits stay constant (losses.qadwh_weighted_triplet_loss)
  and the codes leave bits unused. "anchor" weighs both images of a pair by the anchor's
  weights: the distance the query-adaptive ranking computes at query time (the query's weights
  on both codes), in which only differing bits make a distance. Measured on MIML (README,
  "QaDWH's triplet weighting"): "own" left 2-8 of 32 bits constant and ranked below ITQ;
  "anchor" uses every bit and ranks above it. `triplet_weighting = "own"` trains the authors'
  layer exactly.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from iah_jax import losses
from iah_jax.methods import registry
from iah_jax.models.hashing import binarize
from iah_jax.models.hashing import global_average_pool

LABEL_LOSSES = ("softmax", "sigmoid")
OPTIONS = {
    "triplet_margin": 1.0,  # margin of the weighted triplet loss (authors: 1)
    "weight_init_std": 0.1,  # W (c x q) starts at N(1, std^2) (authors: 0.1)
    # "softmax": multi-label softmax (IAH eq. 3; METHODS.md) | "sigmoid": per-class sigmoid
    # cross-entropy (what the authors' MultiLabelSoftmaxWithLoss layer's gradient is).
    "label_loss": "softmax",
    # "anchor": both images of a pair weighted by the anchor's weights (the query-adaptive
    # ranking's distance) | "own": each image's bits times its own labels' weights (the
    # authors' ClassWiseProduct layer, which lets W meet the triplets with constant bits).
    "triplet_weighting": "anchor",
    "triplet_loss_scale": 0.5,  # the authors' triplet layer: sum / (2 * number of triplets)
    "new_layer_lr_multiplier": 10.0,  # label_fc and W's rate / the rest's (authors: 10)
    "weight_decay": 5e-4,  # on every weight matrix and kernel, W included (authors: 5e-4)
}
NEW_LAYERS = ("label_fc", "class_bit_weights")


class QaDWH(nn.Module):
  """`__call__(images, proposals (ignored), train) -> dict` with ``semantic_features`` [B, q] in
  (0, 1), ``label_logits`` [B, c] and ``class_bit_weights`` W [c, q]."""

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
        "class_bit_weights": class_bit_weights,
    }


def build(context: registry.BuildContext) -> QaDWH:
  options = context.options
  if options.label_loss not in LABEL_LOSSES:
    raise ValueError(
        f"method_options.qadwh.label_loss must be one of {LABEL_LOSSES}, got "
        f"{options.label_loss!r}"
    )
  if options.triplet_weighting not in losses.QADWH_TRIPLET_WEIGHTINGS:
    raise ValueError(
        f"method_options.qadwh.triplet_weighting must be one of "
        f"{losses.QADWH_TRIPLET_WEIGHTINGS}, got {options.triplet_weighting!r}"
    )
  registry.check_optimizer_options("qadwh", options)
  return QaDWH(
      backbone=context.backbone,
      num_classes=context.num_classes,
      semantic_bits=context.semantic_bits,
      weight_init_std=float(options.weight_init_std),
      dtype=context.dtype,
  )


def label_loss(label_logits: jax.Array, labels: jax.Array, kind: str) -> jax.Array:
  """The label loss named by method_options.qadwh.label_loss (see the module docstring)."""
  if kind == "sigmoid":
    return losses.sigmoid_cross_entropy_loss(label_logits, labels)
  return losses.label_probability_loss(label_logits, labels)


def label_probs(label_logits: jax.Array, kind: str) -> jax.Array:
  """p [B, c] as the label loss models it: softmax, or one sigmoid per class."""
  if kind == "sigmoid":
    return jax.nn.sigmoid(label_logits)
  return jax.nn.softmax(label_logits, axis=-1)


def compute_losses(outputs: dict, labels: jax.Array, settings: registry.Settings) -> dict:
  weights, options = settings.loss, settings.options
  label_term = label_loss(outputs["label_logits"], labels, options.label_loss)
  semantic_loss = float(options.triplet_loss_scale) * losses.qadwh_weighted_triplet_loss(
      outputs["semantic_features"],
      labels,
      outputs["class_bit_weights"],
      margin=float(options.triplet_margin),
      weighting=options.triplet_weighting,
  )
  total = weights.label_weight * label_term + weights.semantic_weight * semantic_loss
  return {"loss": total, "label_loss": label_term, "semantic_loss": semantic_loss}


def encode(outputs: dict, settings: registry.Settings) -> dict:
  """Codes 1[bit > 0.5], p (per method_options.qadwh.label_loss) and w = sum_j p_j W_j."""
  probs = label_probs(outputs["label_logits"], settings.options.label_loss)
  return {
      "semantic_codes": binarize(outputs["semantic_features"], "sigmoid"),
      "label_probs": probs,
      "bit_weights": probs @ outputs["class_bit_weights"],
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
        tuned_weights=("loss.label_weight",),  # the label loss against the weighted triplets
        optimizer_settings=registry.new_layer_optimizer_settings(NEW_LAYERS),
    )
)
