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


@pytest.mark.parametrize("margin", [1.0, 0.3])
def test_qadwh_anchor_weighting_matches_loops(margin):
  """The default weighting (method_options.qadwh.triplet_weighting = "anchor")."""
  features, labels, rng = random_problem(seed=8)
  bits = (features + 1) / 2
  weights = rng.normal(1.0, 0.5, size=(labels.shape[1], bits.shape[1])).astype(np.float32)
  mean_rows = (
      lambda n: sum(weights[j] for j in range(labels.shape[1]) if labels[n, j]) / labels[n].sum()
  )
  total, count = 0.0, 0
  for i in range(len(bits)):
    w_i = mean_rows(i)  # the anchor's weights, on both of its pairs
    for j in range(len(bits)):
      for k in range(len(bits)):
        if labels[i] @ labels[j] > labels[i] @ labels[k]:
          d_ij = np.sum((w_i * (bits[i] - bits[j])) ** 2)
          d_ik = np.sum((w_i * (bits[i] - bits[k])) ** 2)
          total += max(0.0, margin + d_ij - d_ik)
          count += 1
  got = losses.qadwh_weighted_triplet_loss(bits, labels, weights, margin, weighting="anchor")
  np.testing.assert_allclose(float(got), total / count, rtol=1e-5)
  method, settings = _settings("qadwh", triplet_margin=margin)
  assert settings.options.triplet_weighting == "anchor"
  outputs = {
      "semantic_features": jnp.asarray(bits),
      "label_logits": jnp.zeros(labels.shape),
      "class_bit_weights": jnp.asarray(weights),
  }
  terms = method.losses(outputs, labels, settings)
  np.testing.assert_allclose(float(terms["semantic_loss"]), 0.5 * total / count, rtol=1e-5)


def test_qadwh_own_weighting_is_met_by_class_weights_alone_anchor_is_not():
  """Constant bits: with each image's own weights, W that differs by class separates images of
  different labels by itself (the loss is 0, no gradient reaches the bits); with the anchor's
  weights equal bits are at distance 0 and every triple costs the margin."""
  labels = np.eye(3, dtype=np.float32)[[0, 0, 1, 1, 2, 2]]
  bits = np.ones((6, 4), np.float32)
  weights = np.array([[3, 0, 0, 0], [0, 3, 0, 0], [0, 0, 3, 0]], np.float32)
  own, own_grad = jax.value_and_grad(losses.qadwh_weighted_triplet_loss)(
      jnp.asarray(bits), labels, weights, 1.0, "own"
  )
  anchor = losses.qadwh_weighted_triplet_loss(bits, labels, weights, 1.0, weighting="anchor")
  assert float(own) == 0.0 and not np.any(np.asarray(own_grad))
  np.testing.assert_allclose(float(anchor), 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match="weighting must be one of"):
    losses.qadwh_weighted_triplet_loss(bits, labels, weights, 1.0, weighting="query")


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


# ----------------------------------------------------------------------------- method losses
# Each method's `losses` on hand-made outputs, against loops over the batch.


def _settings(name, **changes):
  from iah_jax import config as config_lib
  from iah_jax import methods

  config = config_lib.base_config()
  config.method = name
  for option, value in changes.items():
    config.method_options[name][option] = value
  return methods.get(name), methods.get(name).settings(config)


def reference_sigmoid_cross_entropy(logits, labels):
  total = 0.0
  for n in range(len(logits)):
    for j in range(logits.shape[1]):
      p = 1.0 / (1.0 + math.exp(-logits[n, j]))
      total -= math.log(p) if labels[n, j] else math.log(1.0 - p)
  return total / len(logits)


def reference_softmax_label_loss(logits, labels):
  total = 0.0
  for n in range(len(logits)):
    normaliser = sum(math.exp(z) for z in logits[n])
    positives = [j for j in range(logits.shape[1]) if labels[n, j]]
    total -= sum(math.log(math.exp(logits[n, j]) / normaliser) for j in positives) / len(positives)
  return total / len(logits)


def test_sigmoid_cross_entropy_loss_matches_loops_and_its_gradient_is_sigmoid_minus_labels():
  logits = np.array([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]], np.float32)
  labels = np.array([[1, 0, 1], [0, 0, 1]], np.float32)
  got = losses.sigmoid_cross_entropy_loss(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(float(got), reference_sigmoid_cross_entropy(logits, labels), rtol=1e-6)
  # The gradient of the authors' MultiLabelSoftmaxWithLoss layer: (sigmoid(z) - y) / B.
  grad = jax.grad(losses.sigmoid_cross_entropy_loss)(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(
      np.asarray(grad), (1.0 / (1.0 + np.exp(-logits)) - labels) / 2, rtol=1e-5, atol=1e-7
  )


def _qadwh_batch():
  """Hand-made QaDWH outputs: 5 images, 3 classes, 4 bits."""
  rng = np.random.default_rng(11)
  labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1]], np.float32)
  outputs = {
      "semantic_features": rng.uniform(0.05, 0.95, size=(5, 4)).astype(np.float32),
      "label_logits": rng.normal(size=(5, 3)).astype(np.float32),
      "class_bit_weights": rng.normal(1.0, 0.3, size=(3, 4)).astype(np.float32),
  }
  return outputs, labels


@pytest.mark.parametrize("label_loss", ["softmax", "sigmoid"])
def test_qadwh_losses_are_the_authors_label_loss_plus_half_the_weighted_triplet(label_loss):
  method, settings = _settings("qadwh", label_loss=label_loss, triplet_weighting="own")
  assert settings.options.triplet_loss_scale == 0.5  # the authors' Caffe triplet layer
  outputs, labels = _qadwh_batch()
  terms = method.losses({k: jnp.asarray(v) for k, v in outputs.items()}, labels, settings)
  bits, weights = outputs["semantic_features"], outputs["class_bit_weights"]
  weighted = np.stack(
      [
          bits[n] * sum(weights[j] for j in range(3) if labels[n, j]) / labels[n].sum()
          for n in range(len(bits))
      ]
  )
  triplet = 0.5 * reference_triplet(weighted, labels, 1.0)
  if label_loss == "sigmoid":
    label_term = reference_sigmoid_cross_entropy(outputs["label_logits"], labels)
  else:
    label_term = reference_softmax_label_loss(outputs["label_logits"], labels)
  np.testing.assert_allclose(float(terms["semantic_loss"]), triplet, rtol=1e-5)
  np.testing.assert_allclose(float(terms["label_loss"]), label_term, rtol=1e-5)
  np.testing.assert_allclose(float(terms["loss"]), label_term + triplet, rtol=1e-5)


@pytest.mark.parametrize("label_loss", ["softmax", "sigmoid"])
def test_qadwh_query_weights_use_the_label_loss_probabilities(label_loss):
  method, settings = _settings("qadwh", label_loss=label_loss)
  outputs, _ = _qadwh_batch()
  encoded = method.encode({k: jnp.asarray(v) for k, v in outputs.items()}, settings)
  logits = outputs["label_logits"]
  if label_loss == "sigmoid":
    probs = 1.0 / (1.0 + np.exp(-logits))
  else:
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(encoded["label_probs"]), probs, rtol=1e-5)
  for n in range(len(probs)):
    expected = sum(probs[n, j] * outputs["class_bit_weights"][j] for j in range(3))
    np.testing.assert_allclose(np.asarray(encoded["bit_weights"][n]), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "bits,margin_bits,margin",
    [(32, 64, 2.5), (64, 64, 5.0), (16, 64, 1.25), (32, 0, 5.0)],
)
def test_dsrh_margin_scales_with_the_code_length(bits, margin_bits, margin):
  method, settings = _settings("dsrh", margin_bits=margin_bits)
  assert settings.options.margin == 5.0  # the authors' value, for 64 bits
  rng = np.random.default_rng(bits + margin_bits)
  labels = (rng.uniform(size=(6, 3)) < 0.5).astype(np.float32)
  labels[np.arange(6), rng.integers(0, 3, 6)] = 1.0
  signed = rng.uniform(-1, 1, size=(6, bits)).astype(np.float32)
  terms = method.losses({"semantic_features": jnp.asarray(signed)}, labels, settings)
  ranking = reference_dsrh(signed, labels, margin)
  balance = sum((signed[:, k].mean()) ** 2 for k in range(bits))
  np.testing.assert_allclose(float(terms["semantic_loss"]), ranking, rtol=1e-5)
  np.testing.assert_allclose(float(terms["loss"]), ranking + 1.0 * balance, rtol=1e-5)
