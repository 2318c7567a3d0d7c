"""The optimiser's per-parameter settings (train.make_optimizer with a method's
OptimizerSettings): new-layer learning-rate multipliers and weight decay on weight matrices,
against a hand-written loop of the SGD-with-momentum update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from iah_jax import config as config_lib
from iah_jax import methods
from iah_jax import train

LEARNING_RATE, MOMENTUM = 0.1, 0.9


def solver_config(method, **options):
  config = config_lib.base_config()
  config.method = method
  config.optimizer.momentum = MOMENTUM
  for option, value in options.items():
    config.method_options[method][option] = value
  return config


def toy_params(new_layer):
  rng = np.random.default_rng(0)
  params = {
      "backbone": {"kernel": rng.normal(size=(3, 2)), "bias": rng.normal(size=(2,))},
      new_layer: {"kernel": rng.normal(size=(2, 4)), "bias": rng.normal(size=(4,))},
  }
  return jax.tree.map(lambda value: value.astype(np.float32), params)


def toy_gradients(params, steps=3):
  rng = np.random.default_rng(1)
  return [jax.tree.map(lambda p: rng.normal(size=p.shape), params) for _ in range(steps)]


def run_optimizer(config, params, gradients):
  tx = train.make_optimizer(config, optax.constant_schedule(LEARNING_RATE))
  params = jax.tree.map(jnp.asarray, params)
  state = tx.init(params)
  for grads in gradients:
    updates, state = tx.update(jax.tree.map(jnp.asarray, grads), state, params)
    params = optax.apply_updates(params, updates)
  return jax.device_get(params)


def reference_sgd(params, gradients, multipliers, weight_decay):
  """v <- momentum v + g + wd * w (weights with ndim >= 2 only); w <- w - lr * m * v, one
  parameter array at a time."""
  result = {}
  for layer, arrays in params.items():
    result[layer] = {}
    for name, value in arrays.items():
      w, v = np.array(value, np.float64), np.zeros_like(value)
      for grads in gradients:
        decay = weight_decay * w if w.ndim >= 2 else 0.0
        v = MOMENTUM * v + grads[layer][name] + decay
        w = w - LEARNING_RATE * multipliers.get(layer, 1.0) * v
      result[layer][name] = w
  return result


@pytest.mark.parametrize("method,new_layer", [("dsrh", "hash_fc"), ("qadwh", "label_fc")])
@pytest.mark.parametrize("multiplier,weight_decay", [(10.0, 0.0), (10.0, 5e-4), (1.0, 5e-4)])
def test_new_layer_multiplier_and_weight_decay_match_the_loop(
    method, new_layer, multiplier, weight_decay
):
  config = solver_config(method, new_layer_lr_multiplier=multiplier, weight_decay=weight_decay)
  params = toy_params(new_layer)
  if method == "qadwh":  # its other new layer, a bare parameter
    params["class_bit_weights"] = np.random.default_rng(2).normal(1.0, 0.1, size=(3, 4))
  gradients = toy_gradients(params)
  got = run_optimizer(config, params, gradients)
  multipliers = {layer: multiplier for layer in methods.get(method).optimizer(config).new_layers}
  if method == "qadwh":  # reference_sgd walks {layer: {name: array}}
    params = dict(params, class_bit_weights={"w": params["class_bit_weights"]})
    gradients = [dict(g, class_bit_weights={"w": g["class_bit_weights"]}) for g in gradients]
    got = dict(got, class_bit_weights={"w": got["class_bit_weights"]})
  expected = reference_sgd(params, gradients, multipliers, weight_decay)
  for layer in expected:
    for name in expected[layer]:
      np.testing.assert_allclose(
          got[layer][name], expected[layer][name], rtol=1e-5, atol=1e-6, err_msg=layer
      )


def test_multiplier_ten_moves_the_new_layers_ten_times_as_far_and_the_rest_the_same():
  params = toy_params("hash_fc")
  gradients = toy_gradients(params, steps=1)
  moved = {}
  for multiplier in (1.0, 10.0):
    config = solver_config("dsrh", new_layer_lr_multiplier=multiplier, weight_decay=0.0)
    after = run_optimizer(config, params, gradients)
    moved[multiplier] = jax.tree.map(lambda a, b: np.asarray(a) - b, after, params)
  for name in ("kernel", "bias"):
    np.testing.assert_allclose(
        moved[10.0]["hash_fc"][name], 10 * moved[1.0]["hash_fc"][name], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(moved[10.0]["backbone"][name], moved[1.0]["backbone"][name])
    # one step from zero momentum: -lr * g
    np.testing.assert_allclose(
        moved[1.0]["backbone"][name],
        -LEARNING_RATE * gradients[0]["backbone"][name],
        rtol=1e-5,
        atol=1e-6,
    )


def test_paper_defaults_of_the_solver_settings():
  config = config_lib.base_config()
  assert methods.get("dsrh").optimizer(config) == methods.OptimizerSettings(
      new_layers=("hash_fc",), new_layer_lr_multiplier=10.0, weight_decay=5e-4
  )
  assert methods.get("qadwh").optimizer(config) == methods.OptimizerSettings(
      new_layers=("label_fc", "class_bit_weights"), new_layer_lr_multiplier=10.0, weight_decay=5e-4
  )
  assert methods.get("iah").optimizer(config) == methods.OptimizerSettings()


@pytest.mark.parametrize("method", ["iah", "dsrh", "qadwh"])
def test_the_optimiser_state_is_plain_sgd_whatever_the_method_settings(method):
  """Checkpoints keep one layout: the method's parts add no state."""
  config = solver_config(method)
  params = jax.tree.map(jnp.asarray, toy_params("hash_fc"))
  params["label_fc"] = params["class_bit_weights"] = jnp.ones((2, 2))
  state = train.make_optimizer(config, optax.constant_schedule(0.1)).init(params)
  schedule = optax.constant_schedule(0.1)
  plain = optax.chain(optax.sgd(schedule, momentum=config.optimizer.momentum)).init(params)
  assert jax.tree.structure(state) == jax.tree.structure(plain)


def test_a_new_layer_missing_from_the_params_is_named():
  config = solver_config("dsrh")
  tx = train.make_optimizer(config, optax.constant_schedule(0.1))
  with pytest.raises(ValueError, match=r"new layers \['hash_fc'\] are not in the parameters"):
    tx.init({"backbone": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones((2, 2))}})


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("new_layer_lr_multiplier", 0.0, "new_layer_lr_multiplier must be > 0"),
        ("weight_decay", -1e-4, "weight_decay must be >= 0"),
    ],
)
def test_bad_solver_options_are_config_errors(option, value, message):
  config = solver_config("qadwh", **{option: value})
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate_config(config)
