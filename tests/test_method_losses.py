"""The seed methods' losses (losses.py) against loop-based NumPy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iah_jax import losses


def random_problem(batch=7, bits=5, classes=4, seed=0):
  rng = np.random.default_rng(seed)
  labels = (rng.uniform(size=(batch, classes)) < 0.4).astype(np.float32)
  labels[np.arange(batch), rng.integers(0, classes, batch)] = 1.0
  features = rng.uniform(-1, 1, size=(batch, bits)).astype(np.float32)
  return features, labels, rng


def reference_triplet(features, labels, margin):
  total, count = 0.0, 0
  n = len(features)
  for i in range(n):
    for j in range(n):
      for k in range(n):
        sim_ij, sim_ik = labels[i] @ labels[j], labels[i] @ labels[k]
        if sim_ij > sim_ik:
          d_ij = np.sum((features[i] - features[j]) ** 2)
          d_ik = np.sum((features[i] - features[k]) ** 2)
          total += max(0.0, margin + d_ij - d_ik)
          count += 1
  return total / max(count, 1)


def reference_dsrh(signed, labels, margin):
  total, count = 0.0, 0
  n = len(signed)
  for a in range(n):
    for i in range(n):
      for j in range(n):
        r_i, r_j = labels[a] @ labels[i], labels[a] @ labels[j]
        if r_i > r_j:
          z = (2.0**r_i - 1) / math.log(2) + (2.0**r_j - 1) / math.log(3)
          weight = (2.0**r_i - 2.0**r_j) / z
          hinge = max(0.0, 0.5 * (signed[a] @ signed[j] - signed[a] @ signed[i]) + margin)
          total += weight * hinge
          count += 1
  return total / max(count, 1)


@pytest.mark.parametrize("margin", [0.0, 1.0, 3.0])
def test_plain_triplet_ranking_loss_matches_loops(margin):
  features, labels, _ = random_problem(seed=1)
  got = losses.triplet_ranking_loss(jnp.asarray(features), jnp.asarray(labels), margin)
  np.testing.assert_allclose(float(got), reference_triplet(features, labels, margin), rtol=1e-5)


@pytest.mark.parametrize("margin,seed", [(5.0, 0), (0.5, 1), (0.0, 2)])
def test_dsrh_ranking_loss_matches_loops(margin, seed):
  signed, labels, _ = random_problem(bits=6, seed=seed)
  got = losses.dsrh_ranking_loss(jnp.asarray(signed), jnp.asarray(labels), margin)
  np.testing.assert_allclose(float(got), reference_dsrh(signed, labels, margin), rtol=1e-5)


def test_dsrh_gain_weights_match_ndcg_formula():
  shared = jnp.asarray([[3.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
  weights = np.asarray(losses.dsrh_gain_weights(shared))
  # query 0, item 0 (r = 3) above item 2 (r = 0): (8 - 1) / (7 / ln 2 + 0)
  np.testing.assert_allclose(weights[0, 0, 2], 7.0 / (7.0 / math.log(2)), rtol=1e-6)
  # query 0, item 0 (r = 3) above item 1 (r = 1): (8 - 2) / (7 / ln 2 + 1 / ln 3)
  np.testing.assert_allclose(
      weights[0, 0, 1], 6.0 / (7.0 / math.log(2) + 1.0 / math.log(3)), rtol=1e-6
  )


def test_dsrh_loss_grows_with_the_margin_by_the_mean_gain_weight():
  signed, labels, _ = random_problem(seed=3)
  # A large margin keeps every hinge active: the loss is then linear in the margin with slope
  # mean(weight) over the valid triples.
  low = float(losses.dsrh_ranking_loss(signed, labels, 10.0))
  high = float(losses.dsrh_ranking_loss(signed, labels, 11.0))
  shared = labels @ labels.T
  valid = shared[:, :, None] > shared[:, None, :]
  mean_weight = np.asarray(losses.dsrh_gain_weights(jnp.asarray(shared)))[valid].mean()
  np.testing.assert_allclose(high - low, mean_weight, rtol=1e-4)


def test_bit_balance_penalty_matches_loops_and_is_zero_when_balanced():
  signed, _, _ = random_problem(seed=4)
  expected = sum(
      (sum(signed[n, k] for n in range(len(signed))) / len(signed)) ** 2
      for k in range(signed.shape[1])
  )
  np.testing.assert_allclose(float(losses.bit_balance_penalty(signed)), expected, rtol=1e-5)
  balanced = np.array([[1.0, -1.0], [-1.0, 1.0], [0.5, 0.2], [-0.5, -0.2]], np.float32)
  assert float(losses.bit_balance_penalty(balanced)) == 0.0


def test_sample_bit_weights_average_the_classes_rows():
  _, labels, rng = random_problem(seed=5)
  weights = rng.normal(1.0, 0.1, size=(labels.shape[1], 5)).astype(np.float32)
  got = np.asarray(losses.sample_bit_weights(labels, weights))
  for n in range(len(labels)):
    rows = [weights[j] for j in range(labels.shape[1]) if labels[n, j]]
    np.testing.assert_allclose(got[n], np.mean(rows, axis=0), rtol=1e-6)


@pytest.mark.parametrize("margin", [1.0, 0.3])
def test_qadwh_loss_matches_loops_with_class_wise_weighting(margin):
  features, labels, rng = random_problem(seed=6)
  bits = (features + 1) / 2  # sigmoid-like range
  weights = rng.normal(1.0, 0.5, size=(labels.shape[1], bits.shape[1])).astype(np.float32)
  weighted = np.stack(
      [
          bits[n]
          * sum(weights[j] for j in range(labels.shape[1]) if labels[n, j])
          / labels[n].sum()
          for n in range(len(bits))
      ]
  )
  got = losses.qadwh_weighted_triplet_loss(bits, labels, weights, margin)
  np.testing.assert_allclose(float(got), reference_triplet(weighted, labels, margin), rtol=1e-5)
  # The weighting matters: all-ones W gives the plain loss, this W does not.
  plain = float(losses.triplet_ranking_loss(bits, labels, margin))
  ones = losses.qadwh_weighted_triplet_loss(bits, labels, np.ones_like(weights), margin)
  np.testing.assert_allclose(float(ones), plain, rtol=1e-6)
  assert abs(float(got) - plain) > 1e-3


def test_no_valid_triple_gives_zero_loss_and_zero_gradient():
  features, _, _ = random_problem(seed=7)
  labels = np.ones((len(features), 3), np.float32)  # every pair shares the same labels
  for loss in (
      lambda f: losses.triplet_ranking_loss(f, labels, 1.0),
      lambda f: losses.dsrh_ranking_loss(f, labels, 5.0),
      lambda f: losses.qadwh_weighted_triplet_loss(f, labels, np.ones((3, 5)), 1.0),
  ):
    value, grad = jax.value_and_grad(loss)(jnp.asarray(features))
    assert float(value) == 0.0
    assert np.all(np.asarray(grad) == 0.0)


def test_mismatched_shapes_are_clear_errors():
  features, labels, _ = random_problem()
  with pytest.raises(ValueError, match="same B"):
    losses.dsrh_ranking_loss(features[:3], labels, 5.0)
  with pytest.raises(ValueError, match=r"W \[c, q\]"):
    losses.sample_bit_weights(labels, np.ones((labels.shape[1] + 1, 5)))
