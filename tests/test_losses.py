"""Tests of `iah_jax.losses` against brute-force loop references of the IAH paper.

References: eq. 3 (label-probability loss) and its gradient eq. 4; eq. 7 (category triplet), eq. 8
(its sub-gradients), eq. 9 (weighted triplet) with triples enumerated by the paper's Algorithm 1:
every ordered (i, j, k) of the batch, j == i included. Conventions from the losses.py docstring:
each triplet loss is the mean over its valid triples and exactly 0 when there is none; the category
loss is either the mean over categories of each category's mean ("per_category", the default)
or one mean over all valid (category, triple) pairs ("pooled").
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from iah_jax.losses import category_triplet_loss, label_probability_loss, weighted_triplet_loss

# ------------------------------------------------------------------------------------------------
# Naive references (float64, loops).
# ------------------------------------------------------------------------------------------------


def reference_label_probability_loss(label_logits, labels):
  """Mean over the batch of -(1/|c+|) sum_{j in c+} log softmax(m)_j (eqs. 2-3)."""
  logits = np.asarray(label_logits, np.float64)
  batch, num_categories = logits.shape
  total = 0.0
  for b in range(batch):
    largest = max(logits[b])
    log_normaliser = largest + math.log(sum(math.exp(v - largest) for v in logits[b]))
    positives = [j for j in range(num_categories) if labels[b][j]]
    if positives:
      total += -sum(logits[b, j] - log_normaliser for j in positives) / len(positives)
  return total / batch


def reference_label_probability_gradient(label_logits, labels):
  """Eq. 4 per image (p_j - 1/|c+| for positives, p_j otherwise), divided by B (batch mean)."""
  logits = np.asarray(label_logits, np.float64)
  batch, num_categories = logits.shape
  gradient = np.zeros_like(logits)
  for b in range(batch):
    exps = [math.exp(v - max(logits[b])) for v in logits[b]]
    probs = [e / sum(exps) for e in exps]
    num_positive = sum(int(v) for v in labels[b])
    for j in range(num_categories):
      gradient[b, j] = probs[j] - (1.0 / num_positive if labels[b][j] else 0.0)
  return gradient / batch


def shared_labels(labels, a, b):
  return sum(int(labels[a][t]) * int(labels[b][t]) for t in range(len(labels[a])))


def squared_distance(x, y):
  return sum((float(u) - float(v)) ** 2 for u, v in zip(x, y))


def weighted_triples(labels):
  """Algorithm 1: all ordered (i, j, k) with SharedLabels(i, j) > SharedLabels(i, k)."""
  batch = len(labels)
  for i in range(batch):
    for j in range(batch):
      for k in range(batch):
        sim_positive, sim_negative = shared_labels(labels, i, j), shared_labels(labels, i, k)
        if sim_positive > sim_negative:
          yield i, j, k, 2.0**sim_positive - 2.0**sim_negative


def category_triples(labels):
  """For every category: all ordered (i, p, n) with i, p holding it and n not."""
  batch, num_categories = len(labels), len(labels[0])
  for category in range(num_categories):
    for i in range(batch):
      for p in range(batch):
        for n in range(batch):
          if labels[i][category] and labels[p][category] and not labels[n][category]:
            yield category, i, p, n


def reference_weighted_triplet(semantic, labels, margin):
  """Eq. 9 averaged over the valid triples, and its gradient from eq. 8 (times the weight)."""
  semantic = np.asarray(semantic, np.float64)
  total, count = 0.0, 0
  gradient = np.zeros_like(semantic)
  for i, j, k, weight in weighted_triples(labels):
    argument = (
        margin
        - squared_distance(semantic[i], semantic[k])
        + squared_distance(semantic[i], semantic[j])
    )
    count += 1
    if argument > 0:
      total += weight * argument
      gradient[i] += weight * 2 * (semantic[k] - semantic[j])
      gradient[j] += weight * 2 * (semantic[j] - semantic[i])
      gradient[k] += weight * 2 * (semantic[i] - semantic[k])
  if count == 0:
    return 0.0, gradient
  return total / count, gradient / count


def reference_category_triplet(features, labels, margin, category_mean="per_category"):
  """Eq. 7 and its gradient from eq. 8: "pooled" averages over every valid (category, triple)
  pair; "per_category" averages each category's triples, then the categories that have any."""
  features = np.asarray(features, np.float64)
  totals, counts, gradients = {}, {}, {}
  for category, i, p, n in category_triples(labels):
    anchor, positive, negative = (
        features[i, category],
        features[p, category],
        features[n, category],
    )
    argument = margin - squared_distance(anchor, negative) + squared_distance(anchor, positive)
    counts[category] = counts.get(category, 0) + 1
    totals.setdefault(category, 0.0)
    gradient = gradients.setdefault(category, np.zeros_like(features))
    if argument > 0:
      totals[category] += argument
      gradient[i, category] += 2 * (negative - positive)
      gradient[p, category] += 2 * (positive - anchor)
      gradient[n, category] += 2 * (anchor - negative)
  if not counts:
    return 0.0, np.zeros_like(features)
  if category_mean == "pooled":
    count = sum(counts.values())
    return sum(totals.values()) / count, sum(gradients.values()) / count
  assert category_mean == "per_category"
  loss = sum(totals[c] / counts[c] for c in counts) / len(counts)
  gradient = sum(gradients[c] / counts[c] for c in counts) / len(counts)
  return loss, gradient


def weighted_hinge_arguments(semantic, labels, margin):
  semantic = np.asarray(semantic, np.float64)
  return [
      margin
      - squared_distance(semantic[i], semantic[k])
      + squared_distance(semantic[i], semantic[j])
      for i, j, k, _ in weighted_triples(labels)
  ]


def category_hinge_arguments(features, labels, margin):
  features = np.asarray(features, np.float64)
  return [
      margin
      - squared_distance(features[i, c], features[n, c])
      + squared_distance(features[i, c], features[p, c])
      for c, i, p, n in category_triples(labels)
  ]


# Every call goes through jit: on this JAX version eager op-by-op dispatch costs seconds per test,
# a compilation well under one. The margin is traced, so margins share a compilation.
label_loss = jax.jit(label_probability_loss)
label_loss_and_grad = jax.jit(jax.value_and_grad(label_probability_loss))
weighted_loss = jax.jit(weighted_triplet_loss)
weighted_loss_and_grad = jax.jit(jax.value_and_grad(weighted_triplet_loss))
category_loss = jax.jit(category_triplet_loss, static_argnames="category_mean")
category_loss_and_grad = jax.jit(
    jax.value_and_grad(category_triplet_loss), static_argnames="category_mean"
)


# ------------------------------------------------------------------------------------------------
# Fixtures.
# ------------------------------------------------------------------------------------------------


def random_labels(
    rng: np.random.Generator, batch: int, num_categories: int, every_image_labelled: bool = True
) -> np.ndarray:
  """Multi-hot uint8 [B, c] (the dataset schema's dtype)."""
  labels = (rng.uniform(size=(batch, num_categories)) < 0.4).astype(np.uint8)
  if every_image_labelled:
    for b in range(batch):
      if not labels[b].any():
        labels[b, rng.integers(num_categories)] = 1
  return labels


def away_from_kinks(arguments, gap: float = 0.05) -> bool:
  return all(abs(a) > gap for a in arguments)


# ------------------------------------------------------------------------------------------------
# Label-probability loss (eqs. 3-4).
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch,num_categories", [(1, 2), (4, 5), (7, 20)])
def test_label_probability_loss_matches_loops_and_eq4_gradient(batch, num_categories):
  rng = np.random.default_rng(batch * 31 + num_categories)
  logits = (3.0 * rng.normal(size=(batch, num_categories))).astype(np.float32)
  labels = random_labels(rng, batch, num_categories)
  loss, gradient = label_loss_and_grad(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(loss, reference_label_probability_loss(logits, labels), rtol=1e-5)
  np.testing.assert_allclose(
      gradient, reference_label_probability_gradient(logits, labels), rtol=1e-4, atol=1e-6
  )


def test_label_probability_loss_by_hand():
  # Uniform logits over c = 4: p_j = 1/4 and the loss is log 4 whatever the positives.
  labels = np.asarray([[1, 0, 0, 0], [1, 1, 0, 1]], np.uint8)
  loss = label_loss(jnp.zeros((2, 4)), jnp.asarray(labels))
  np.testing.assert_allclose(loss, math.log(4.0), rtol=1e-6)
  # Shifting all logits of an image leaves the softmax, hence the loss, unchanged.
  logits = np.asarray([[1.0, -2.0, 0.5, 3.0], [0.0, 0.1, -0.3, 2.0]], np.float32)
  np.testing.assert_allclose(
      label_loss(jnp.asarray(logits), labels),
      label_loss(jnp.asarray(logits + 7.0), labels),
      rtol=1e-5,
  )


def test_label_probability_loss_unlabelled_image_contributes_zero():
  rng = np.random.default_rng(5)
  logits = rng.normal(size=(3, 4)).astype(np.float32)
  labels = np.asarray([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], np.uint8)
  loss, gradient = label_loss_and_grad(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(loss, reference_label_probability_loss(logits, labels), rtol=1e-5)
  np.testing.assert_array_equal(gradient[1], np.zeros(4))
  assert np.isfinite(np.asarray(gradient)).all()


# ------------------------------------------------------------------------------------------------
# Weighted triplet loss (eq. 9).
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "batch,num_categories,bits,margin",
    [(2, 2, 1, 1.0), (5, 3, 4, 1.0), (6, 4, 3, 0.5), (8, 5, 6, 2.0), (7, 2, 2, 1.0)],
)
def test_weighted_triplet_loss_matches_algorithm_1(batch, num_categories, bits, margin):
  rng = np.random.default_rng(batch * 1000 + num_categories * 10 + bits)
  semantic = np.tanh(rng.normal(size=(batch, bits))).astype(np.float32)
  labels = random_labels(rng, batch, num_categories, every_image_labelled=False)
  if batch == 2:
    labels = np.asarray([[1, 0], [0, 1]], np.uint8)  # every valid triple has j == i
  assert list(weighted_triples(labels)), "fixture must hold valid triples"
  expected_loss, expected_gradient = reference_weighted_triplet(semantic, labels, margin)
  loss, gradient = weighted_loss_and_grad(jnp.asarray(semantic), jnp.asarray(labels), margin)
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-5, atol=1e-6)
  # The eq. 8 gradient is the derivative only away from the hinge kinks (true of these fixtures).
  assert away_from_kinks(weighted_hinge_arguments(semantic, labels, margin), gap=1e-3)
  np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-4, atol=1e-5)
  if margin == 1.0:  # the documented default margin
    np.testing.assert_allclose(weighted_loss(semantic, labels), loss, rtol=1e-6)


def test_weighted_triplet_loss_counts_j_equal_i_by_hand():
  # Image 0 has {0}, image 1 has {1}: sim(0,0) = 1 > sim(0,1) = 0, so the only valid triples are
  # (0, 0, 1) and (1, 1, 0), both with j == i (Algorithm 1 does not exclude it). Weight 2^1 - 2^0 = 1;
  # hinge = margin - ||s0 - s1||^2 + 0 = 1 - 0.25.
  semantic = jnp.asarray([[0.5, 0.0], [0.0, 0.0]], jnp.float32)
  labels = jnp.asarray([[1, 0], [0, 1]], jnp.uint8)
  np.testing.assert_allclose(weighted_loss(semantic, labels, 1.0), 0.75, rtol=1e-6)
  # Three images, weights 2^2 - 2^1 etc.: image 2 shares both labels of image 0.
  labels = np.asarray([[1, 1, 0], [1, 0, 0], [1, 1, 1]], np.uint8)
  semantic = np.asarray([[0.1, 0.2], [0.3, -0.4], [-0.2, 0.5]], np.float32)
  np.testing.assert_allclose(
      weighted_loss(jnp.asarray(semantic), labels, 1.0),
      reference_weighted_triplet(semantic, labels, 1.0)[0],
      rtol=1e-5,
  )
  triples = list(weighted_triples(labels))
  assert (0, 0, 1, 2.0) in triples and (2, 2, 1, 6.0) in triples and len(triples) == 5


@pytest.mark.parametrize("batch,num_categories,bits,margin", [(5, 3, 3, 1.0), (6, 4, 2, 0.5)])
def test_weighted_triplet_loss_check_grads_away_from_kinks(batch, num_categories, bits, margin):
  rng = np.random.default_rng(batch * 7 + bits)
  for _ in range(200):
    semantic = np.tanh(rng.normal(size=(batch, bits)))
    labels = random_labels(rng, batch, num_categories)
    arguments = weighted_hinge_arguments(semantic, labels, margin)
    if arguments and away_from_kinks(arguments) and any(a > 0 for a in arguments):
      break
  else:
    pytest.fail("no fixture away from the hinge kinks")
  with jax.enable_x64(True):
    check_grads(
        jax.jit(lambda s: weighted_triplet_loss(s, jnp.asarray(labels), margin)),
        (jnp.asarray(semantic, jnp.float64),),
        order=1,
        modes=("rev",),
        eps=1e-4,
    )


@pytest.mark.parametrize(
    "labels",
    [
        np.asarray([[1, 0, 1]] * 4, np.uint8),  # identical label sets
        np.asarray([[0, 0, 0]] * 3, np.uint8),  # nobody labelled
        np.asarray([[1, 1, 0]], np.uint8),  # a single image
    ],
    ids=["identical", "unlabelled", "single"],
)
def test_weighted_triplet_loss_without_valid_triple_is_zero_with_zero_gradient(labels):
  semantic = jnp.asarray(np.random.default_rng(3).normal(size=(len(labels), 4)), jnp.float32)
  assert not list(weighted_triples(labels))
  loss, gradient = weighted_loss_and_grad(semantic, jnp.asarray(labels), 1.0)
  assert float(loss) == 0.0
  assert np.isfinite(np.asarray(gradient)).all()
  np.testing.assert_array_equal(gradient, np.zeros(semantic.shape))


# ------------------------------------------------------------------------------------------------
# Category-aware triplet loss (eq. 7).
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("category_mean", ["per_category", "pooled"])
@pytest.mark.parametrize(
    "batch,num_categories,bits,margin",
    [(2, 2, 1, 1.0), (4, 3, 2, 1.0), (6, 4, 3, 0.5), (7, 5, 2, 2.0)],
)
def test_category_triplet_loss_matches_brute_force(
    batch, num_categories, bits, margin, category_mean
):
  rng = np.random.default_rng(batch * 100 + num_categories * 10 + bits + 1)
  features = (0.7 * rng.normal(size=(batch, num_categories, bits))).astype(np.float32)
  labels = random_labels(rng, batch, num_categories, every_image_labelled=False)
  if batch == 2:
    labels = np.asarray([[1, 0], [0, 1]], np.uint8)  # every valid triple has p == i
  assert list(category_triples(labels)), "fixture must hold valid triples"
  expected_loss, expected_gradient = reference_category_triplet(
      features, labels, margin, category_mean
  )
  loss, gradient = category_loss_and_grad(
      jnp.asarray(features), jnp.asarray(labels), margin, category_mean=category_mean
  )
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-5, atol=1e-6)
  assert away_from_kinks(category_hinge_arguments(features, labels, margin), gap=1e-3)
  np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-4, atol=1e-5)
  if margin == 1.0 and category_mean == "per_category":  # the documented defaults
    np.testing.assert_allclose(category_loss(features, labels), loss, rtol=1e-6)


def test_category_triplet_loss_by_hand():  # one triple per category: both means agree
  # c = 2, image 0 has {0}, image 1 has {1}: category 0 -> triple (0, 0, 1), category 1 -> (1, 1, 0).
  features = np.zeros((2, 2, 1), np.float32)
  features[0, 0, 0], features[1, 0, 0] = 0.5, 0.0  # category 0: ||f0 - f1||^2 = 0.25
  features[0, 1, 0], features[1, 1, 0] = 0.0, 2.0  # category 1: 4.0, hinge inactive
  labels = np.asarray([[1, 0], [0, 1]], np.uint8)
  np.testing.assert_allclose(
      category_loss(jnp.asarray(features), labels, 1.0), (0.75 + 0.0) / 2, rtol=1e-6
  )


def test_category_triplet_loss_per_category_or_pooled_by_hand():
  # Category 0 in images 0, 1 (negative 2): 2 * 2 * 1 = 4 triples; category 1 only in image 2
  # (negatives 0, 1): 1 * 1 * 2 = 2 triples. All features zero: every hinge equals the margin,
  # so both means are the margin. Put category 1's features apart to make only its 2 triples
  # inactive: the per-category mean is (1 + 0) / 2, the pooled one 4 / 6 of the margin.
  labels = np.asarray([[1, 0], [1, 0], [0, 1]], np.uint8)
  features = np.zeros((3, 2, 2), np.float32)
  for category_mean in ("per_category", "pooled"):
    np.testing.assert_allclose(
        category_loss(jnp.asarray(features), labels, 1.0, category_mean=category_mean),
        1.0,
        rtol=1e-6,
    )
  features[2, 1] = [3.0, 0.0]
  np.testing.assert_allclose(
      category_loss(jnp.asarray(features), labels, 1.0, category_mean="per_category"),
      0.5,
      rtol=1e-6,
  )
  np.testing.assert_allclose(
      category_loss(jnp.asarray(features), labels, 1.0, category_mean="pooled"), 4 / 6, rtol=1e-6
  )
  assert len(list(category_triples(labels))) == 6


def test_category_triplet_loss_per_category_skips_categories_without_triples():
  # Category 2 is in no image and category 0 in every one: neither has a valid triple, so the
  # per-category mean is over categories 1 and 3 only (not divided by c = 4).
  labels = np.asarray([[1, 1, 0, 0], [1, 0, 0, 1], [1, 0, 0, 0]], np.uint8)
  features = np.zeros((3, 4, 2), np.float32)
  np.testing.assert_allclose(
      category_loss(jnp.asarray(features), labels, 1.0, category_mean="per_category"),
      1.0,
      rtol=1e-6,
  )


def test_category_triplet_loss_rejects_an_unknown_mean():
  with pytest.raises(ValueError, match="category_mean must be one of"):
    category_triplet_loss(jnp.zeros((2, 2, 1)), jnp.asarray([[1, 0], [0, 1]]), 1.0, "median")


@pytest.mark.parametrize("category_mean", ["per_category", "pooled"])
@pytest.mark.parametrize("batch,num_categories,bits,margin", [(5, 3, 2, 1.0), (4, 4, 3, 0.5)])
def test_category_triplet_loss_check_grads_away_from_kinks(
    batch, num_categories, bits, margin, category_mean
):
  rng = np.random.default_rng(batch * 13 + bits)
  for _ in range(200):
    features = 0.7 * rng.normal(size=(batch, num_categories, bits))
    labels = random_labels(rng, batch, num_categories)
    arguments = category_hinge_arguments(features, labels, margin)
    if arguments and away_from_kinks(arguments) and any(a > 0 for a in arguments):
      break
  else:
    pytest.fail("no fixture away from the hinge kinks")
  with jax.enable_x64(True):
    check_grads(
        jax.jit(lambda f: category_triplet_loss(f, jnp.asarray(labels), margin, category_mean)),
        (jnp.asarray(features, jnp.float64),),
        order=1,
        modes=("rev",),
        eps=1e-4,
    )


@pytest.mark.parametrize(
    "labels",
    [
        np.asarray([[1, 0, 1]] * 4, np.uint8),  # identical: each category in all or none
        np.asarray([[1, 0], [1, 0], [1, 0]], np.uint8),  # category 0 in every image, 1 in none
        np.asarray([[0, 0], [0, 0]], np.uint8),  # nobody labelled
    ],
    ids=["identical", "category-in-all-images", "unlabelled"],
)
@pytest.mark.parametrize("category_mean", ["per_category", "pooled"])
def test_category_triplet_loss_without_valid_triple_is_zero_with_zero_gradient(
    labels, category_mean
):
  features = jnp.asarray(
      np.random.default_rng(4).normal(size=(len(labels), labels.shape[1], 3)), jnp.float32
  )
  assert not list(category_triples(labels))
  loss, gradient = category_loss_and_grad(
      features, jnp.asarray(labels), 1.0, category_mean=category_mean
  )
  assert float(loss) == 0.0
  assert np.isfinite(np.asarray(gradient)).all()
  np.testing.assert_array_equal(gradient, np.zeros(features.shape))


@pytest.mark.parametrize("category_mean", ["per_category", "pooled"])
def test_category_in_every_image_adds_no_triple(category_mean):
  # Category 0 is in every image: it has no negative, so the loss equals the loss computed with
  # category 0 removed altogether.
  rng = np.random.default_rng(9)
  labels = np.asarray([[1, 1, 0], [1, 0, 1], [1, 1, 1], [1, 0, 0]], np.uint8)
  features = rng.normal(size=(4, 3, 2)).astype(np.float32)
  full = category_loss(jnp.asarray(features), labels, 1.0, category_mean=category_mean)
  without = category_loss(
      jnp.asarray(features[:, 1:]), labels[:, 1:], 1.0, category_mean=category_mean
  )
  np.testing.assert_allclose(full, without, rtol=1e-6)
  np.testing.assert_allclose(
      full, reference_category_triplet(features, labels, 1.0, category_mean)[0], rtol=1e-5
  )
