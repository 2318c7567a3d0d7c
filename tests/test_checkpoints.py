"""Checkpoint integrity: finite-only saves, seals, verified restores that fall back past damaged
steps (truncated, overwritten or missing files), and the NaN guard of the training loop."""

import json
import logging
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iah_jax import checkpoints
from iah_jax import train
from tests.test_train import tiny_config, train_tiny


def make_state(seed: float) -> dict:
  """A small state with the kinds of leaves a TrainState has (int step, float arrays)."""
  rng = np.random.default_rng(int(seed))
  sharding = jax.sharding.NamedSharding(train.make_mesh(), jax.sharding.PartitionSpec())
  state = {
      "step": np.int32(seed),
      "params": {
          "kernel": rng.standard_normal((64, 48)).astype(np.float32),
          "bias": np.full((48,), seed, np.float32),
      },
      "opt_state": {"trace": rng.standard_normal((64, 48)).astype(np.float32)},
  }
  return jax.device_put(state, sharding)


def save_steps(directory, steps=(2, 4, 6), keep=3):
  config = tiny_config("unused")
  config.keep_checkpoints = keep
  config.checkpoint_every = 2
  saver = checkpoints.Saver(train.checkpoint_manager(str(directory), config))
  for step in steps:
    saver.save(step, make_state(step))
  saver.close()
  return config


def open_manager(directory, config):
  return train.checkpoint_manager(str(directory), config)


def data_file(step_dir) -> str:
  """The largest OCDBT data file of a step (holds the array chunks)."""
  data_dir = os.path.join(step_dir, "default", "ocdbt.process_0", "d")
  paths = [os.path.join(data_dir, name) for name in os.listdir(data_dir)]
  return max(paths, key=os.path.getsize)


def assert_state_equal(restored, expected):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(expected))


def test_saved_steps_are_sealed_and_restore_bit_exactly(tmp_path):
  config = save_steps(tmp_path / "ckpt")
  for step in (2, 4, 6):
    step_dir = tmp_path / "ckpt" / str(step)
    seal = json.loads((step_dir / checkpoints.SEAL_FILE).read_text())["files"]
    on_disk = {
        os.path.relpath(os.path.join(root, name), step_dir)
        for root, _, names in os.walk(step_dir)
        for name in names
        if name != checkpoints.SEAL_FILE
    }
    assert set(seal) == on_disk
    assert "_CHECKPOINT_METADATA" in seal and "default/_METADATA" in seal
    assert checkpoints.check_seal(str(step_dir)) == (True, None)
  restored = checkpoints.restore(open_manager(tmp_path / "ckpt", config), make_state(0))
  assert_state_equal(restored, make_state(6))


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda step_dir: open(data_file(step_dir), "r+b").truncate(
                os.path.getsize(data_file(step_dir)) // 2
            ),
            r"file default/ocdbt.process_0/d/\w+ has \d+ bytes, \d+ when saved",
        ),
        (
            lambda step_dir: overwrite_middle(data_file(step_dir)),
            r"file default/ocdbt.process_0/d/\w+ changed since it was saved",
        ),
        (
            lambda step_dir: os.remove(os.path.join(step_dir, "default", "_METADATA")),
            "file default/_METADATA is missing",
        ),
        (
            lambda step_dir: os.remove(os.path.join(step_dir, "_CHECKPOINT_METADATA")),
            "file _CHECKPOINT_METADATA is missing",
        ),
    ],
    ids=["truncated", "overwritten", "tree_metadata_deleted", "step_metadata_deleted"],
)
def test_damaged_newest_step_falls_back_to_the_previous_with_a_warning(
    tmp_path, caplog, damage, message
):
  config = save_steps(tmp_path / "ckpt")
  damage(str(tmp_path / "ckpt" / "6"))
  manager = open_manager(tmp_path / "ckpt", config)
  with caplog.at_level(logging.WARNING, logger="iah_jax"):
    restored = checkpoints.restore(manager, make_state(0))
  assert_state_equal(restored, make_state(4))
  warnings = "\n".join(record.getMessage() for record in caplog.records)
  assert "checkpoint step 6" in warnings and "is damaged" in warnings
  assert any(re.search(message, record.getMessage()) for record in caplog.records)
  # The damaged step is kept aside (not deleted) and out of the manager's way: training saves
  # step 6 again.
  assert (tmp_path / checkpoints.DAMAGED_DIR / "6" / "default").is_dir()
  assert manager.all_steps() == [2, 4]
  saver = checkpoints.Saver(manager)
  saver.save(6, make_state(60))
  saver.close()
  assert_state_equal(
      checkpoints.restore(open_manager(tmp_path / "ckpt", config), make_state(0)),
      make_state(60),
  )


def overwrite_middle(path: str) -> None:
  with open(path, "r+b") as file:
    file.seek(os.path.getsize(path) // 2)
    file.write(b"\xff" * 64)


def test_no_intact_step_is_a_clear_error_and_nothing_moves(tmp_path):
  config = save_steps(tmp_path / "ckpt", steps=(2, 4))
  for step in (2, 4):
    overwrite_middle(data_file(str(tmp_path / "ckpt" / str(step))))
  with pytest.raises(
      checkpoints.CheckpointError, match=r"no intact checkpoint.*step 4: file.*step 2"
  ):
    checkpoints.restore(open_manager(tmp_path / "ckpt", config), make_state(0))
  assert sorted(os.listdir(tmp_path / "ckpt")) == ["2", "4"]
  assert not (tmp_path / checkpoints.DAMAGED_DIR).exists()


def test_unsealed_step_with_nan_values_falls_back(tmp_path, caplog):
  """A checkpoint without a seal (older versions saved NaN states) is checked for values."""
  config = save_steps(tmp_path / "ckpt", steps=(2,))
  manager = open_manager(tmp_path / "ckpt", config)
  poisoned = make_state(4)
  poisoned["params"]["bias"] = poisoned["params"]["bias"] * jnp.nan
  manager.save(4, args=train.ocp.args.StandardSave(poisoned), force=True)  # no Saver: no seal
  manager.wait_until_finished()
  with caplog.at_level(logging.WARNING, logger="iah_jax"):
    restored = checkpoints.restore(open_manager(tmp_path / "ckpt", config), make_state(0))
  assert_state_equal(restored, make_state(2))
  assert any("NaN or Inf in params.bias" in record.getMessage() for record in caplog.records)


def test_checkpoint_of_another_model_is_a_clear_error_not_damage(tmp_path):
  config = save_steps(tmp_path / "ckpt", steps=(2,))
  other = make_state(0)
  other["params"]["kernel"] = jnp.zeros((64, 32))
  with pytest.raises(
      checkpoints.CheckpointError,
      match=r"different model.*params.kernel is float32\[64, 48\] in the checkpoint, "
      r"float32\[64, 32\] in this model",
  ):
    checkpoints.restore(open_manager(tmp_path / "ckpt", config), other)
  assert os.listdir(tmp_path / "ckpt") == ["2"]


def test_saver_refuses_a_non_finite_state_and_keeps_the_finite_checkpoints(tmp_path):
  config = save_steps(tmp_path / "ckpt", steps=(2, 4), keep=2)
  saver = checkpoints.Saver(open_manager(tmp_path / "ckpt", config))
  diverged = make_state(6)
  diverged["opt_state"]["trace"] = diverged["opt_state"]["trace"].at[3, 5].set(jnp.inf)
  with pytest.raises(
      checkpoints.NonFiniteStateError,
      match=r"state of step 6 holds NaN or Inf in opt_state.trace; it is not saved.*last one is "
      r"step 4",
  ):
    saver.save(6, diverged)
  saver.close()
  assert sorted(os.listdir(tmp_path / "ckpt")) == ["2", "4"]  # nothing rotated out


@pytest.mark.slow
def test_nan_in_training_stops_before_a_save_and_keeps_the_last_finite_checkpoint(
    tmp_path, tiny_data_dir
):
  """Issue 13 case 1: finiteness checked every 60 steps, saves every 10, a learning rate that
  diverges within a few steps. The NaN states must never be saved nor rotate out the good one."""
  config = tiny_config(tiny_data_dir, steps=60)
  config.log_every = 60
  config.checkpoint_every = 10
  config.optimizer.learning_rate = 1e3
  run_dir = tmp_path / "run"
  with pytest.raises(
      train.NonFiniteLossError, match=r"non-finite loss at step \d+.*the last one is step 1 "
  ) as raised:
    train_tiny(config, run_dir)
  bad_step = int(re.search(r"at step (\d+)", str(raised.value)).group(1))
  assert 1 < bad_step <= 10
  # The only checkpoint is step 1 (orbax's initial save), finite and sealed; what a rerun
  # resumes from.
  assert sorted(os.listdir(run_dir / "checkpoints")) == ["1"]
  assert checkpoints.check_seal(str(run_dir / "checkpoints" / "1")) == (True, None)
  schedule = train.learning_rate_schedule(config, 12)
  state = train.create_train_state(
      train.build_model(config, 10, 8, 2),
      train.make_optimizer(config, schedule),
      jax.random.PRNGKey(1),
      train.make_mesh(),
      32,
      100,
  )
  restored = train.restore_latest(open_manager(run_dir / "checkpoints", config), state)
  assert int(restored.step) == 1 and not checkpoints.non_finite_leaves(restored)


def test_damaged_best_step_falls_back_to_the_next_best(tmp_path):
  config = tiny_config("unused")
  config.dataset.validation_split = "train[90%:]"  # best-by-validation checkpoints
  config.eval.every_steps = 2
  config.keep_checkpoints = 3
  saver = checkpoints.Saver(train.checkpoint_manager(str(tmp_path / "ckpt"), config))
  for step, score in ((2, 0.5), (4, 0.9), (6, 0.7)):
    saver.save(step, make_state(step), metrics={train.VALIDATION_METRIC: score})
  saver.close()
  best = train.restore_latest(open_manager(tmp_path / "ckpt", config), make_state(0), best=True)
  assert_state_equal(best, make_state(4))
  overwrite_middle(data_file(str(tmp_path / "ckpt" / "4")))
  manager = open_manager(tmp_path / "ckpt", config)
  assert_state_equal(train.restore_latest(manager, make_state(0), best=True), make_state(6))
  assert sorted(manager.all_steps()) == [2, 6]


def test_best_by_validation_keeps_the_latest_step_for_resuming(tmp_path):
  """Without the latest, a finished run whose last score is not among the best would resume
  from an older step and train its last steps again on every rerun."""
  config = tiny_config("unused")
  config.dataset.validation_split = "train[90%:]"
  config.eval.every_steps = 2
  config.keep_checkpoints = 2
  saver = checkpoints.Saver(train.checkpoint_manager(str(tmp_path / "ckpt"), config))
  for step, score in ((2, 0.9), (4, 0.8), (6, 0.1), (8, 0.2)):
    saver.save(step, make_state(step), metrics={train.VALIDATION_METRIC: score})
  saver.close()
  manager = open_manager(tmp_path / "ckpt", config)
  assert sorted(manager.all_steps()) == [2, 4, 8]  # the two best and the latest
  assert manager.best_step() == 2 and manager.latest_step() == 8
  assert_state_equal(train.restore_latest(manager, make_state(0)), make_state(8))
  assert_state_equal(train.restore_latest(manager, make_state(0), best=True), make_state(2))
