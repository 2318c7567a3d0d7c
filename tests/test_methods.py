"""The seed methods (one_stage, dsrh, qadwh, category_baseline) through the shared train step:
divide-and-encode's slice structure, one step per method, the encodings, and that each method's
config options reach its loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iah_jax import config as config_lib
from iah_jax import evaluate
from iah_jax import losses
from iah_jax import methods
from iah_jax import train
from iah_jax.methods import one_stage
from iah_jax.models.small_cnn import SmallCNN
from tests.test_train import build, random_batch, tiny_config

NUM_CLASSES = 5
SEED_METHODS = ("one_stage", "dsrh", "qadwh", "category_baseline")


def method_config(name):
  config = tiny_config("unused")
  config.method = name
  return config_lib.validate_config(config)


def test_divide_and_encode_shapes_and_bit_k_depends_only_on_slice_k():
  layer = one_stage.DivideAndEncode(bits=4)
  features = jax.random.normal(jax.random.PRNGKey(0), (3, 12))
  variables = layer.init(jax.random.PRNGKey(1), features)
  assert variables["params"]["kernel"].shape == (4, 3)
  outputs = layer.apply(variables, features)
  assert outputs.shape == (3, 4)
  assert np.all((outputs > 0) & (outputs < 1))
  jacobian = np.asarray(jax.jacobian(lambda x: layer.apply(variables, x))(features[0]))  # [4, 12]
  for bit in range(4):
    inside = np.zeros(12, bool)
    inside[3 * bit : 3 * bit + 3] = True
    assert np.all(jacobian[bit, ~inside] == 0.0), (bit, jacobian[bit])
    assert np.all(jacobian[bit, inside] != 0.0), (bit, jacobian[bit])
  with pytest.raises(ValueError, match="do not split into 5 equal slices"):
    one_stage.DivideAndEncode(bits=5).init(jax.random.PRNGKey(0), features)


@pytest.mark.parametrize("slice_units,channels_to_fc", [(0, None), (3, 8 * 3)])
def test_one_stage_slices_pooled_features_or_an_fc(slice_units, channels_to_fc):
  model = one_stage.OneStageHashing(
      backbone=SmallCNN(widths=(8, 16)), semantic_bits=8, slice_units=slice_units
  )
  images = jnp.zeros((2, 16, 16, 3))
  params = model.init(jax.random.PRNGKey(0), images, None)["params"]
  if channels_to_fc is None:  # 16 pooled channels split into 8 slices of 2
    assert "slice_fc" not in params
    assert params["divide_and_encode"]["kernel"].shape == (8, 2)
  else:
    assert params["slice_fc"]["kernel"].shape == (16, channels_to_fc)
    assert params["divide_and_encode"]["kernel"].shape == (8, 3)


@pytest.fixture(scope="module", params=SEED_METHODS)
def stepped(request):
  """Each method built on the tiny SmallCNN, one train step on a random batch."""
  config = method_config(request.param)
  model, state, step, mesh = build(config, num_classes=NUM_CLASSES)
  before = jax.device_get(state.params)
  batch = random_batch(num_classes=NUM_CLASSES)
  outputs = model.apply(
      {"params": before}, jnp.asarray(batch["image"]), jnp.asarray(batch["proposals"]), train=True
  )
  method = methods.get(config.method)
  expected = method.losses(outputs, batch["labels"], method.settings(config))
  state, terms = step(state, train.to_global(batch, mesh), jax.random.PRNGKey(0))
  return config, model, before, state, terms, expected, batch, step, mesh


def test_one_train_step_gives_the_method_loss_and_changes_every_parameter(stepped):
  _, _, before, state, terms, expected, *_ = stepped
  assert np.isfinite(float(terms["loss"])) and float(terms["loss"]) > 0.0
  np.testing.assert_allclose(float(terms["loss"]), float(expected["loss"]), rtol=1e-5)
  after = jax.device_get(state.params)
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, after)
  assert all(jax.tree.leaves(changed)), changed


def test_encode_gives_binary_codes_of_the_right_shapes(stepped):
  config, model, _, state, _, _, batch, *_ = stepped
  encoded = jax.device_get(
      evaluate.make_encode_step(model, train.make_mesh(), config)(
          state, jnp.asarray(batch["image"]), jnp.asarray(batch["proposals"])
      )
  )
  q, b = config.semantic_bits[0], config.bits_per_category[0]
  codes = encoded["semantic_codes"]
  assert codes.dtype == np.uint8 and set(np.unique(codes)) <= {0, 1}
  if config.method == "category_baseline":
    assert encoded["category_codes"].shape == (8, NUM_CLASSES, b)
    np.testing.assert_array_equal(codes, encoded["category_codes"].reshape(8, -1))
  else:
    assert codes.shape == (8, q)
  if config.method == "qadwh":
    probs = encoded["label_probs"]
    assert probs.shape == (8, NUM_CLASSES)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    weights = np.asarray(state.params["class_bit_weights"])
    np.testing.assert_allclose(encoded["bit_weights"], probs @ weights, rtol=1e-5)


def test_steps_on_one_batch_lower_the_method_loss(stepped):
  _, _, _, state, terms, _, batch, step, mesh = stepped
  # A copy: the step donates its input state, which the other tests still read.
  state = jax.device_put(
      jax.device_get(state), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  )
  batch = train.to_global(batch, mesh)
  history = [float(terms["loss"])]
  for index in range(15):
    state, step_terms = step(state, batch, jax.random.PRNGKey(index + 1))
    history.append(float(step_terms["loss"]))
  assert np.all(np.isfinite(history))
  # At initialisation the bounded outputs are nearly equal across images, so the triplet
  # gradients are small and lr 0.01 moves the loss slowly; the sign of the change is the check.
  assert history[-1] < history[0], history


def build_method(config, num_classes, semantic_bits, bits_per_category, backbone):
  """config.method's network through its registered `build`."""
  method = methods.get(config.method)
  return method.build(
      method.build_context(config, num_classes, semantic_bits, bits_per_category, backbone)
  )


def test_qadwh_class_bit_weights_start_near_one():
  model = build_method(method_config("qadwh"), 20, 32, 4, SmallCNN(widths=(8, 16)))
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), None)["params"]
  weights = np.asarray(params["class_bit_weights"])
  assert weights.shape == (20, 32)
  assert abs(weights.mean() - 1.0) < 0.02 and 0.08 < weights.std() < 0.12


def _losses_for(config, batch):
  model = build_method(
      config,
      NUM_CLASSES,
      config.semantic_bits[0],
      config.bits_per_category[0],
      SmallCNN(widths=(8, 16)),
  )
  images = jnp.asarray(batch["image"])
  variables = model.init(jax.random.PRNGKey(0), images, None)
  outputs = model.apply(variables, images, None, train=True)
  method = methods.get(config.method)
  return outputs, method.losses(outputs, batch["labels"], method.settings(config))


def test_method_options_reach_the_losses():
  batch = random_batch(num_classes=NUM_CLASSES)
  labels = batch["labels"]

  config = method_config("one_stage")
  outputs, terms = _losses_for(config, batch)
  np.testing.assert_allclose(
      terms["loss"],
      losses.weighted_triplet_loss(
          outputs["semantic_features"], labels, config.loss.semantic_margin
      ),
      rtol=1e-6,
  )
  config.method_options.one_stage.loss = "plain"
  outputs, terms = _losses_for(config, batch)
  np.testing.assert_allclose(
      terms["loss"],
      losses.triplet_ranking_loss(
          outputs["semantic_features"], labels, config.loss.semantic_margin
      ),
      rtol=1e-6,
  )
  config.method_options.one_stage.loss = "ranked"
  with pytest.raises(ValueError, match="method_options.one_stage.loss must be one of"):
    _losses_for(config, batch)

  config = method_config("dsrh")
  config.method_options.dsrh.margin = 2.5
  config.method_options.dsrh.bit_balance_weight = 0.3
  outputs, terms = _losses_for(config, batch)
  signed = outputs["semantic_features"]
  assert np.all(np.abs(signed) < 1.0)
  # margin 2.5 at margin_bits 64, tiny config q = 8: the hinge's margin is 2.5 * 8 / 64.
  expected = losses.dsrh_ranking_loss(
      signed, labels, 2.5 * 8 / 64
  ) + 0.3 * losses.bit_balance_penalty(signed)
  np.testing.assert_allclose(terms["loss"], expected, rtol=1e-6)
  config.method_options.dsrh.margin_bits = 0  # the margin as given at every q
  outputs, terms = _losses_for(config, batch)
  expected = losses.dsrh_ranking_loss(
      outputs["semantic_features"], labels, 2.5
  ) + 0.3 * losses.bit_balance_penalty(outputs["semantic_features"])
  np.testing.assert_allclose(terms["loss"], expected, rtol=1e-6)

  config = method_config("qadwh")
  config.method_options.qadwh.triplet_margin = 0.25
  outputs, terms = _losses_for(config, batch)
  # The triplet term is halved (triplet_loss_scale 0.5, the authors' Caffe layer); the default
  # weighting is the anchor's.
  expected = losses.label_probability_loss(
      outputs["label_logits"], labels
  ) + 0.5 * losses.qadwh_weighted_triplet_loss(
      outputs["semantic_features"], labels, outputs["class_bit_weights"], 0.25, "anchor"
  )
  np.testing.assert_allclose(terms["loss"], expected, rtol=1e-6)
  config.method_options.qadwh.label_loss = "sigmoid"
  config.method_options.qadwh.triplet_loss_scale = 1.0
  config.method_options.qadwh.triplet_weighting = "own"  # the authors' layer
  outputs, terms = _losses_for(config, batch)
  expected = losses.sigmoid_cross_entropy_loss(
      outputs["label_logits"], labels
  ) + losses.qadwh_weighted_triplet_loss(
      outputs["semantic_features"], labels, outputs["class_bit_weights"], 0.25, "own"
  )
  np.testing.assert_allclose(terms["loss"], expected, rtol=1e-6)
  config.method_options.qadwh.label_loss = "softmax_loss"
  with pytest.raises(config_lib.ConfigError, match="qadwh.label_loss must be one of"):
    config_lib.validate_config(config)
  config.method_options.qadwh.label_loss = "sigmoid"
  config.method_options.qadwh.triplet_weighting = "anchor"
  outputs, terms = _losses_for(config, batch)
  expected = losses.sigmoid_cross_entropy_loss(
      outputs["label_logits"], labels
  ) + losses.qadwh_weighted_triplet_loss(
      outputs["semantic_features"], labels, outputs["class_bit_weights"], 0.25, "anchor"
  )
  np.testing.assert_allclose(terms["loss"], expected, rtol=1e-6)
  config.method_options.qadwh.triplet_weighting = "query"
  with pytest.raises(config_lib.ConfigError, match="qadwh.triplet_weighting must be one of"):
    config_lib.validate_config(config)


def test_iah_category_loss_mean_option_reaches_the_category_loss():
  batch = random_batch(num_classes=NUM_CLASSES)
  labels, images, proposals = (
      batch["labels"],
      jnp.asarray(batch["image"]),
      jnp.asarray(batch["proposals"]),
  )
  config = method_config("iah")
  assert config.method_options.iah.category_loss_mean == "per_category"  # the paper's reading
  model = build_method(config, NUM_CLASSES, 16, 4, SmallCNN(widths=(8, 16)))
  variables = model.init(jax.random.PRNGKey(0), images, proposals)
  outputs = model.apply(variables, images, proposals, train=True)
  method = methods.get("iah")
  found = {}
  for category_mean in ("per_category", "pooled"):
    config.method_options.iah.category_loss_mean = category_mean
    terms = method.losses(outputs, labels, method.settings(config))
    expected = losses.category_triplet_loss(
        outputs["category_features"], labels, config.loss.category_margin, category_mean
    )
    np.testing.assert_allclose(terms["category_loss"], expected, rtol=1e-6)
    found[category_mean] = float(terms["category_loss"])
  assert abs(found["per_category"] - found["pooled"]) > 1e-6  # the batch tells them apart
  config.method_options.iah.category_loss_mean = "median"
  with pytest.raises(config_lib.ConfigError, match="category_loss_mean must be one of"):
    config_lib.validate_config(config)


@pytest.mark.parametrize("name", ["qadwh", "category_baseline"])
def test_main_job_trains_and_evaluates_a_seed_method(name, tmp_path, tiny_data_dir):
  config = tiny_config(tiny_data_dir, steps=4)
  config.method = name
  results = evaluate.run(config, str(tmp_path / name))
  assert results["method"] == name
  assert 0.0 <= results["semantic"]["8"]["map"] <= 1.0
  if name == "category_baseline":  # category codes are evaluated per category (Fig. 9)
    assert len(results["category_aware"]["2"]["per_category_map"]) == 10
    assert "probability_tables" not in results["category_aware"]["2"]  # no label probabilities
    assert results["query_adaptive"] == {}
  else:  # qadwh: its own ranking, query-adaptive weighted Hamming, beside plain Hamming
    assert results["category_aware"] == {}
    assert 0.0 <= results["query_adaptive"]["8"]["map"] <= 1.0
