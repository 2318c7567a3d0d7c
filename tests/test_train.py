"""The train step, the loop, checkpoints and resume, and the main job end to end (tiny configs)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from iah_jax import config as config_lib
from iah_jax import evaluate
from iah_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir: str, steps: int = 8):
  config = config_lib.base_config()
  config.dataset.data_dir = data_dir
  config.dataset.config = "tiny"
  config.dataset.shuffle_buffer = 64
  config.dataset.image_size = 32
  config.model.backbone_options.widths = (8, 16)
  config.model.spp_levels = (2, 1)  # keeps compile times short; SPP itself is tested elsewhere
  config.semantic_bits = (8,)
  config.bits_per_category = (2,)
  config.batch_size = 8
  config.num_train_steps = steps
  config.optimizer.learning_rate = 0.01
  config.log_every = 4
  config.checkpoint_every = 4
  config.eval.batch_size = 16
  config.eval.ks = (10,)
  return config


def train_tiny(config, run_dir):
  """train.train on the tiny dataset's 10 classes (config from tiny_config); the final state."""
  model = train.build_model(config, 10, config.semantic_bits[0], config.bits_per_category[0])
  return train.train(
      config,
      model=model,
      builder=train.load_dataset(config),
      run_dir=str(run_dir),
      mesh=train.make_mesh(),
      rng=jax.random.PRNGKey(0),
  )


def random_batch(batch_size=8, num_classes=5, image_size=16, num_proposals=6, seed=0):
  rng = np.random.default_rng(seed)
  corners = rng.uniform(size=(batch_size, num_proposals, 4))
  boxes = np.concatenate(
      [
          np.minimum(corners[..., :2], corners[..., 2:]),
          np.maximum(corners[..., :2], corners[..., 2:]),
      ],
      -1,
  )
  labels = (rng.uniform(size=(batch_size, num_classes)) < 0.35).astype(np.float32)
  labels[np.arange(batch_size), rng.integers(0, num_classes, batch_size)] = 1.0
  return {
      "image": rng.uniform(size=(batch_size, image_size, image_size, 3)).astype(np.float32),
      "proposals": boxes.astype(np.float32),
      "labels": labels,
  }


def build(config, num_classes=5, image_size=16, num_proposals=6, mesh=None, seed=0):
  mesh = mesh or train.make_mesh()
  model = train.build_model(
      config, num_classes, config.semantic_bits[0], config.bits_per_category[0]
  )
  schedule = train.learning_rate_schedule(config, steps_per_epoch=10)
  tx = train.make_optimizer(config, schedule)
  state = train.create_train_state(
      model, tx, jax.random.PRNGKey(seed), mesh, image_size, num_proposals
  )
  step = train.make_train_step(model, tx, schedule, config, mesh)
  return model, state, step, mesh


@pytest.fixture(scope="module")
def compiled():
  """One compiled step for the single-device tests; `fresh()` gives a new initial state."""
  config = tiny_config("unused")
  _, state, step, mesh = build(config)
  initial = jax.device_get(state)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  fresh = lambda: jax.device_put(initial, sharding)
  return config, fresh, step, mesh


def test_few_steps_on_one_batch_lower_the_loss(compiled):
  _, fresh, step, mesh = compiled
  state = fresh()
  batch = train.to_global(random_batch(), mesh)
  losses = []
  for index in range(20):
    state, terms = step(state, batch, jax.random.PRNGKey(index))
    losses.append(float(terms["loss"]))
  assert int(state.step) == 20
  assert all(np.isfinite(losses))
  assert losses[-1] < 0.95 * losses[0], losses
  assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses


def test_one_step_changes_every_parameter_and_reports_terms(compiled):
  _, fresh, step, mesh = compiled
  state = fresh()
  before = jax.device_get(state.params)
  state, terms = step(state, train.to_global(random_batch(), mesh), jax.random.PRNGKey(0))
  after = jax.device_get(state.params)
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, after)
  assert all(jax.tree.leaves(changed)), changed
  assert set(terms) >= {"loss", "label_loss", "semantic_loss", "category_loss", "learning_rate"}
  total = terms["label_loss"] + terms["semantic_loss"] + terms["category_loss"]
  np.testing.assert_allclose(float(terms["loss"]), float(total), rtol=1e-6)


def test_learning_rate_follows_the_step_schedule():
  config = tiny_config("unused")
  config.optimizer.learning_rate = 0.1
  config.optimizer.decay_every_epochs = 2.0
  schedule = train.learning_rate_schedule(config, steps_per_epoch=5)  # lr / 10 every 10 steps
  np.testing.assert_allclose(
      [float(schedule(s)) for s in (0, 9, 10, 19, 20)], [0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-6
  )


def test_sharded_step_on_8_devices_equals_one_device():
  script = textwrap.dedent("""
      import os, sys
      sys.path.insert(0, %r)
      import jax, numpy as np
      assert jax.device_count() == 8, jax.devices()
      from tests.test_train import build, random_batch, tiny_config
      from iah_jax import train
      config = tiny_config("unused")
      results = []
      for devices in (jax.devices()[:1], jax.devices()):
        _, state, step, mesh = build(config, mesh=train.make_mesh(devices))
        for index in range(2):
          batch = train.to_global(random_batch(seed=index), mesh)
          state, terms = step(state, batch, jax.random.PRNGKey(index))
        results.append((jax.device_get(state.params), float(terms["loss"])))
      (one, loss_one), (eight, loss_eight) = results
      np.testing.assert_allclose(loss_one, loss_eight, rtol=1e-5)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), one, eight)
      print("SHARDED_OK", loss_one, loss_eight)
  """ % REPO)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "SHARDED_OK" in result.stdout


def test_batch_size_not_divisible_by_devices_is_a_clear_error():
  class EightDeviceMesh:  # check_batch_size reads only the device count
    size = 8

  train.check_batch_size(16, EightDeviceMesh())
  with pytest.raises(ValueError, match="batch size 12 is not divisible by the 8 devices"):
    train.check_batch_size(12, EightDeviceMesh())


def test_non_finite_loss_stops_with_the_step_named():
  terms = {"loss": np.float32(1.0)}
  with pytest.raises(train.NonFiniteLossError, match="step 7"):
    train._check_finite(
        [(6, terms), (7, {"loss": np.float32(np.nan)}), (8, {"loss": np.float32(np.inf)})]
    )


def test_unknown_config_key_is_rejected():
  config = tiny_config("unused")
  config.optimizer.learnig_rate = 0.1
  with pytest.raises(ValueError, match="unknown config key.*optimizer.learnig_rate"):
    config_lib.validate_config(config)


def test_main_job_end_to_end_writes_results_and_resumes(tmp_path, tiny_data_dir):
  config = tiny_config(tiny_data_dir, steps=8)
  workdir = tmp_path / "run"
  results = evaluate.run(config, str(workdir))
  written = json.loads((workdir / "results.json").read_text())
  assert set(written) == {
      "method",
      "semantic",
      "query_adaptive",
      "category_aware",
      "code_health",
      "train_seconds",
      "config",
  }
  # The database codes' health (iah_jax.retrieval.code_health), semantic and category-aware.
  health = written["code_health"]["q8_b2"]
  assert health["semantic"]["num_codes"] == 96 and health["semantic"]["bits"] == 8
  assert 1 <= health["semantic"]["distinct_codes"] <= 96
  assert health["category"]["bits"] == 10 * 2
  semantic = written["semantic"]["8"]
  assert {"map", "wmap", "ndcg@10", "acg@10"} <= set(semantic)
  assert 0.0 <= semantic["map"] <= 1.0
  # The same IAH codes ranked by query-adaptive weighted Hamming distance (w = p @ W).
  assert set(written["query_adaptive"]["8"]) == set(semantic)
  assert 0.0 <= written["query_adaptive"]["8"]["map"] <= 1.0
  category = written["category_aware"]["2"]
  assert len(category["per_category_map"]) == 10
  # IAH's section IV retrieval (p_j >= 0.2 tables) beside the whole-database ranking.
  assert len(category["probability_tables"]["per_category_map"]) == 10
  assert written["config"]["num_train_steps"] == 8
  assert results["semantic"]["8"]["map"] == semantic["map"]
  checkpoints = workdir / "q8_b2" / "checkpoints"
  assert sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())[-1] == 8
  # results.json reports the training seconds the run's final checkpoint records.
  first_seconds = train.train_seconds(train.checkpoint_manager(str(checkpoints), config))
  assert first_seconds > 0 and written["train_seconds"] == pytest.approx(first_seconds)

  # Resume: a longer run continues from step 8 rather than starting again.
  config.num_train_steps = 12
  state = train_tiny(config, workdir / "q8_b2")
  assert int(state.step) == 12
  steps = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
  assert steps[-1] == 12 and 8 in steps
  # The second session's seconds add to the first's.
  assert train.train_seconds(train.checkpoint_manager(str(checkpoints), config)) > first_seconds


def test_checkpoint_round_trip(tmp_path, compiled):
  config, fresh, step, mesh = compiled
  state, _ = step(fresh(), train.to_global(random_batch(), mesh), jax.random.PRNGKey(0))
  manager = train.checkpoint_manager(str(tmp_path / "ckpt"), config)
  manager.save(int(state.step), args=train.ocp.args.StandardSave(state), force=True)
  manager.wait_until_finished()
  restored = train.restore_latest(train.checkpoint_manager(str(tmp_path / "ckpt"), config), fresh())
  assert int(restored.step) == 1
  jax.tree.map(
      np.testing.assert_array_equal, jax.device_get(restored.params), jax.device_get(state.params)
  )
  jax.tree.map(
      np.testing.assert_array_equal,
      jax.device_get(restored.opt_state),
      jax.device_get(state.opt_state),
  )


def test_decay_every_steps_ignores_the_epoch_length_and_a_vanishing_rate_is_warned(caplog):
  config = tiny_config("unused", steps=100)
  config.optimizer.decay_every_epochs = 2.0
  by_epochs = train.learning_rate_schedule(config, steps_per_epoch=4)  # decays every 8 steps
  config.optimizer.decay_every_steps = 30
  by_steps = train.learning_rate_schedule(config, steps_per_epoch=4)
  for step in (0, 7, 8, 29, 30, 59, 60, 99):
    assert float(by_epochs(step)) == pytest.approx(0.01 * 0.1 ** (step // 8), rel=1e-5)
    assert float(by_steps(step)) == pytest.approx(0.01 * 0.1 ** (step // 30), rel=1e-5)
  with caplog.at_level("WARNING", logger="iah_jax"):
    assert not train.warn_if_rate_vanishes(config, steps_per_epoch=4)  # 3 decays: lr / 1000
    config.optimizer.decay_every_steps = 0
    assert train.warn_if_rate_vanishes(config, steps_per_epoch=4)  # 12 decays
  assert "decays 12 times in 100 steps (every 8 steps = 2 epochs of 4 steps)" in caplog.text
  assert "decay_every_steps" in caplog.text
