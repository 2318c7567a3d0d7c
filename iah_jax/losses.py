"""Every pure loss of the methods (METHODS.md sections 1-4), as functions of arrays:

- IAH: label-probability loss (eq. 3), weighted triplet loss (eq. 9), category-aware triplet
  loss (eq. 7);
- DNNH's own plain triplet ranking loss; DSRH's NDCG-weighted ranking hinge and bit-balance
  penalty; QaDWH's class-wise weighted triplet loss and per-class sigmoid cross-entropy.

Each method's `losses` (iah_jax.methods) combines these with its weights and options.

Triplets follow the paper's Algorithm 1: every ordered triple (i, j, k) of the batch that meets the
condition is used, enumerated at once as a [B, B, B] mask (no Python loops, no sampling). As in
Algorithm 1, j == i is not excluded: such a triple has a zero positive distance and only pushes the
negative away. Each loss is the mean over its valid triples (the category loss: by default the
mean over categories of each category's mean) and is exactly 0 (with zero gradient, no NaN) when
the batch holds no valid triple.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def label_probability_loss(label_logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Softmax loss over the image's positive labels (IAH eq. 3), mean over the batch.

  l_C = -(1 / |c+|) sum_{j in c+} log p_j with p = softmax(m) (eq. 2).

  Args:
    label_logits: m, [B, c] cross-hypothesis-pooled scores (eq. 1).
    labels: [B, c] multi-hot {0, 1}. An image without labels contributes 0 (the input pipeline
      rejects such images before they get here).
  Returns:
    scalar.
  """
  labels = labels.astype(label_logits.dtype)
  log_probs = jax.nn.log_softmax(label_logits, axis=-1)
  num_positive = jnp.maximum(labels.sum(-1), 1.0)
  return jnp.mean(-(labels * log_probs).sum(-1) / num_positive)


def sigmoid_cross_entropy_loss(label_logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-class sigmoid cross-entropy summed over the classes, mean over the batch.

  -(1 / B) sum_n sum_j [y_nj log sigmoid(z_nj) + (1 - y_nj) log(1 - sigmoid(z_nj))]; its
  gradient is (sigmoid(z) - y) / B, that of QaDWH's MultiLabelSoftmaxWithLoss layer.

  Args:
    label_logits: z, [B, c] class scores.
    labels: y, [B, c] multi-hot {0, 1}.
  Returns:
    scalar.
  """
  labels = labels.astype(label_logits.dtype)
  log_p, log_not_p = jax.nn.log_sigmoid(label_logits), jax.nn.log_sigmoid(-label_logits)
  return jnp.mean(-(labels * log_p + (1.0 - labels) * log_not_p).sum(-1))


def pairwise_squared_distances(features: jax.Array) -> jax.Array:
  """||x_i - x_j||^2 for all pairs: [..., B, d] -> [..., B, B] (exactly 0 on the diagonal)."""
  differences = features[..., :, None, :] - features[..., None, :, :]
  return jnp.sum(differences * differences, axis=-1)


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  mask = mask.astype(values.dtype)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def weighted_triplet_loss(
    semantic_features: jax.Array, labels: jax.Array, margin: float = 1.0
) -> jax.Array:
  """Weighted triplet loss for semantic hashing (IAH eq. 9) over all triples of the batch.

  For every ordered triple (i, j, k) with sim(i, j) > sim(i, k), sim = number of shared labels:
    (2^sim(i,j) - 2^sim(i,k)) * max(0, margin - ||s_i - s_k||^2 + ||s_i - s_j||^2).

  Args:
    semantic_features: s, [B, q] (bounded hash-layer outputs).
    labels: [B, c] multi-hot {0, 1}.
    margin: hinge margin (1 in the paper).
  Returns:
    scalar: sum over valid triples divided by their number (0 when there is none).
  """
  labels = labels.astype(semantic_features.dtype)
  shared = labels @ labels.T  # sim, [B, B]
  distances = pairwise_squared_distances(semantic_features)  # [B, B]
  valid = shared[:, :, None] > shared[:, None, :]  # [i, j, k]
  weight = jnp.exp2(shared)[:, :, None] - jnp.exp2(shared)[:, None, :]
  hinge = jax.nn.relu(margin - distances[:, None, :] + distances[:, :, None])
  return _masked_mean(weight * hinge, valid)


CATEGORY_LOSS_MEANS = ("per_category", "pooled")


def category_triplet_loss(
    category_features: jax.Array,
    labels: jax.Array,
    margin: float = 1.0,
    category_mean: str = "per_category",
) -> jax.Array:
  """Category-aware triplet loss (IAH eq. 7) for every category over all triples of the batch.

  For category j and every ordered triple (i, p, n) where images i and p carry label j and n does
  not: max(0, margin - ||f_j(i) - f_j(n)||^2 + ||f_j(i) - f_j(p)||^2).

  Args:
    category_features: f, [B, c, b] fused per-category features (eq. 6).
    labels: [B, c] multi-hot {0, 1}.
    margin: hinge margin (1 in the paper).
    category_mean: how the (category, triple) hinges become one number (0 when there is no valid
      triple at all):
      - "per_category" (the paper's "c triplet losses, one per category"): the mean over each
        category's valid triples, then the mean over the categories that have a valid triple in
        the batch, so every such category weighs the same whatever its frequency;
      - "pooled": one mean over all valid (category, triple) pairs: every valid triple counts
        once, so frequent categories weigh more, as when triples are drawn uniformly from the
        batch.
  Returns:
    scalar.
  """
  if category_mean not in CATEGORY_LOSS_MEANS:
    raise ValueError(
        f"category_triplet_loss: category_mean must be one of {CATEGORY_LOSS_MEANS}, "
        f"got {category_mean!r}"
    )
  labels = labels.astype(category_features.dtype)
  per_category = jnp.swapaxes(category_features, 0, 1)  # [c, B, b]
  distances = pairwise_squared_distances(per_category)  # [c, B, B]
  has = labels.T  # [c, B]
  valid = has[:, :, None, None] * has[:, None, :, None] * (1.0 - has)[:, None, None, :]
  hinge = jax.nn.relu(margin - distances[:, :, None, :] + distances[:, :, :, None])
  if category_mean == "pooled":
    return _masked_mean(hinge, valid)
  sums = jnp.sum(hinge * valid, axis=(1, 2, 3))  # [c]
  counts = jnp.sum(valid, axis=(1, 2, 3))  # [c]
  present = (counts > 0).astype(hinge.dtype)  # categories with a valid triple in the batch
  return _masked_mean(sums / jnp.maximum(counts, 1.0), present)


# ----------------------------------------------------------------------------- other seed methods


def _shared_labels(labels: jax.Array, dtype) -> jax.Array:
  labels = labels.astype(dtype)
  return labels @ labels.T  # [B, B]


def _more_similar_mask(shared: jax.Array) -> jax.Array:
  """valid[a, i, j] = sim(a, i) > sim(a, j): i should rank above j for query a."""
  return shared[:, :, None] > shared[:, None, :]


def _check_batch(features: jax.Array, labels: jax.Array, name: str) -> None:
  if features.ndim != 2 or labels.ndim != 2 or features.shape[0] != labels.shape[0]:
    raise ValueError(
        f"{name}: expected features [B, q] and labels [B, c] with the same B, got "
        f"{features.shape} and {labels.shape}"
    )


def triplet_ranking_loss(
    semantic_features: jax.Array, labels: jax.Array, margin: float = 1.0
) -> jax.Array:
  """Plain (unweighted) triplet ranking hinge, DNNH's own loss (METHODS.md section 2).

  For every ordered triple (i, j, k) with sim(i, j) > sim(i, k), sim = number of shared labels:
    max(0, margin + ||F_i - F_j||^2 - ||F_i - F_k||^2).

  Args:
    semantic_features: F, [B, q].
    labels: [B, c] multi-hot {0, 1}.
    margin: hinge margin.
  Returns:
    scalar: mean over valid triples (0 when there is none).
  """
  _check_batch(semantic_features, labels, "triplet_ranking_loss")
  return _ranking_hinge_mean(pairwise_squared_distances(semantic_features), labels, margin)


def _ranking_hinge_mean(distances: jax.Array, labels: jax.Array, margin: float) -> jax.Array:
  """Mean of max(0, margin + d[i, j] - d[i, k]) over triples with sim(i, j) > sim(i, k);
  distances d [B, B] (row i: from anchor i)."""
  shared = _shared_labels(labels, distances.dtype)
  hinge = jax.nn.relu(margin + distances[:, :, None] - distances[:, None, :])
  return _masked_mean(hinge, _more_similar_mask(shared))


def dsrh_gain_weights(shared: jax.Array) -> jax.Array:
  """DSRH's NDCG-gain weight of each triple (a, i, j): [B, B] -> [B, B, B].

  (2^{r_i} - 2^{r_j}) / Z with Z = (2^{r_i} - 1) / log(2) + (2^{r_j} - 1) / log(3), r = shared
  labels with the query a, log the natural logarithm (as written in METHODS.md section 3; the
  authors' CUDA code calls the C `log`). Only meaningful where r_i > r_j (then Z >= 1 / log 2).
  """
  gain_i = jnp.exp2(shared)[:, :, None]
  gain_j = jnp.exp2(shared)[:, None, :]
  normaliser = (gain_i - 1.0) / jnp.log(2.0) + (gain_j - 1.0) / jnp.log(3.0)
  return (gain_i - gain_j) / jnp.maximum(normaliser, 1e-12)


def dsrh_ranking_loss(
    signed_outputs: jax.Array, labels: jax.Array, margin: float = 5.0
) -> jax.Array:
  """DSRH's NDCG-weighted triplet hinge (METHODS.md section 3).

  For every ordered triple (a, i, j) with r_i > r_j (r = shared labels with a):
    w_aij * max(0, 0.5 * (h_a . h_j - h_a . h_i) + margin),  w = dsrh_gain_weights.
  For +-1 codes d_H(x, y) = (q - x . y) / 2, so 0.5 * (h_a . h_j - h_a . h_i) is exactly the
  Hamming-distance difference d_H(a, i) - d_H(a, j) (in [-q, q]): the hinge asks the more
  similar item i to be at least `margin` bits closer to a than j.

  Args:
    signed_outputs: h = 2 sigmoid(.) - 1, [B, q] in (-1, 1).
    labels: [B, c] multi-hot {0, 1}.
    margin: hinge margin in bits (5.0 for 64 bits in the authors' code; the DSRH method scales
      it with q, see iah_jax.methods.dsrh).
  Returns:
    scalar: sum over valid triples divided by their number (0 when there is none).
  """
  _check_batch(signed_outputs, labels, "dsrh_ranking_loss")
  shared = _shared_labels(labels, signed_outputs.dtype)
  similarity = signed_outputs @ signed_outputs.T  # h_a . h_i, [B, B]
  hinge = jax.nn.relu(0.5 * (similarity[:, None, :] - similarity[:, :, None]) + margin)
  return _masked_mean(dsrh_gain_weights(shared) * hinge, _more_similar_mask(shared))


def bit_balance_penalty(signed_outputs: jax.Array) -> jax.Array:
  """sum_k (mean over the batch of h_k)^2 for h [B, q] in (-1, 1): 0 when every bit is +1 for
  half of the batch and -1 for the other half. (Multiply by rho, DSRH's weight, outside.)"""
  if signed_outputs.ndim != 2:
    raise ValueError(f"bit_balance_penalty: expected [B, q], got {signed_outputs.shape}")
  return jnp.sum(jnp.square(jnp.mean(signed_outputs, axis=0)))


def sample_bit_weights(labels: jax.Array, class_bit_weights: jax.Array) -> jax.Array:
  """QaDWH training-time bit weights: each image's classes' rows of W averaged.

  Args:
    labels: [B, c] multi-hot {0, 1} (an image without labels gets all-zero weights).
    class_bit_weights: W, [c, q].
  Returns:
    [B, q]: (labels @ W) / number of labels.
  """
  if (
      labels.ndim != 2
      or class_bit_weights.ndim != 2
      or labels.shape[1] != class_bit_weights.shape[0]
  ):
    raise ValueError(
        f"sample_bit_weights: expected labels [B, c] and W [c, q], got "
        f"{labels.shape} and {class_bit_weights.shape}"
    )
  labels = labels.astype(class_bit_weights.dtype)
  return (labels @ class_bit_weights) / jnp.maximum(labels.sum(-1, keepdims=True), 1.0)


QADWH_TRIPLET_WEIGHTINGS = ("own", "anchor")


def qadwh_weighted_triplet_loss(
    bit_outputs: jax.Array,
    labels: jax.Array,
    class_bit_weights: jax.Array,
    margin: float = 1.0,
    weighting: str = "own",
) -> jax.Array:
  """QaDWH's triplet loss on class-wise weighted bits (METHODS.md section 4).

  w_n = sample_bit_weights(labels, W)_n; for every ordered triple (i, j, k) with
  sim(i, j) > sim(i, k): max(0, margin + d(i, j) - d(i, k)), where d is
  - "own" (the authors' ClassWiseProduct layer): u_n = bit_outputs_n * w_n and
    d(i, j) = ||u_i - u_j||^2, each image weighted by its own labels' weights;
  - "anchor": d(i, j) = ||w_i * (bit_outputs_i - bit_outputs_j)||^2, both images weighted by the
    anchor's weights, as the query-adaptive ranking weighs a database code by the query's
    weights only. With "own", two images of different labels are apart through W alone, even
    with equal bits, so the triplets can be met by W while bits stay constant; with "anchor"
    only differing bits make a distance.

  Args:
    bit_outputs: [B, q] sigmoid outputs.
    labels: [B, c] multi-hot {0, 1}.
    class_bit_weights: W, [c, q].
    margin: hinge margin (1 in the authors' code).
    weighting: "own" or "anchor" (above).
  Returns:
    scalar: mean over valid triples (0 when there is none). (The authors' Caffe layer halves
    it; the QaDWH method multiplies by method_options.qadwh.triplet_loss_scale = 0.5.)
  """
  _check_batch(bit_outputs, labels, "qadwh_weighted_triplet_loss")
  if weighting not in QADWH_TRIPLET_WEIGHTINGS:
    raise ValueError(
        f"qadwh_weighted_triplet_loss: weighting must be one of {QADWH_TRIPLET_WEIGHTINGS}, "
        f"got {weighting!r}"
    )
  sample_weights = sample_bit_weights(labels, class_bit_weights)  # [B, q]
  if weighting == "own":
    return triplet_ranking_loss(bit_outputs * sample_weights, labels, margin)
  differences = bit_outputs[:, None, :] - bit_outputs[None, :, :]  # [anchor, other, q]
  distances = jnp.sum(jnp.square(sample_weights[:, None, :] * differences), axis=-1)
  return _ranking_hinge_mean(distances, labels, margin)
