"""IAH losses: label-probability loss (eq. 3), weighted triplet loss (eq. 9), category-aware
triplet loss (eq. 7).

Triplets follow the paper's Algorithm 1: every ordered triple (i, j, k) of the batch that meets the
condition is used, enumerated at once as a [B, B, B] mask (no Python loops, no sampling). As in
Algorithm 1, j == i is not excluded: such a triple has a zero positive distance and only pushes the
negative away. Each loss is the mean over its valid triples and is exactly 0 (with zero gradient,
no NaN) when the batch holds no valid triple.
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


def category_triplet_loss(
    category_features: jax.Array, labels: jax.Array, margin: float = 1.0
) -> jax.Array:
  """Category-aware triplet loss (IAH eq. 7) for every category over all triples of the batch.

  For category j and every ordered triple (i, p, n) where images i and p carry label j and n does
  not: max(0, margin - ||f_j(i) - f_j(n)||^2 + ||f_j(i) - f_j(p)||^2).

  Args:
    category_features: f, [B, c, b] fused per-category features (eq. 6).
    labels: [B, c] multi-hot {0, 1}.
    margin: hinge margin (1 in the paper).
  Returns:
    scalar: mean over all valid (category, triple) pairs (0 when there is none). Every valid
    triple counts once, so frequent categories weigh more than rare ones, as when triples are
    drawn uniformly from the batch.
  """
  labels = labels.astype(category_features.dtype)
  per_category = jnp.swapaxes(category_features, 0, 1)  # [c, B, b]
  distances = pairwise_squared_distances(per_category)  # [c, B, B]
  has = labels.T  # [c, B]
  valid = has[:, :, None, None] * has[:, None, :, None] * (1.0 - has)[:, None, None, :]
  hinge = jax.nn.relu(margin - distances[:, :, None, :] + distances[:, :, :, None])
  return _masked_mean(hinge, valid)
