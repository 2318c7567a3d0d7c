"""Training killed with SIGKILL mid-run and resumed equals an uninterrupted run, step for step."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from iah_jax import checkpoints
from iah_jax import summaries
from iah_jax import train
from tests.test_train import REPO, tiny_config, train_tiny

STEPS = 12
CHECKPOINT_EVERY = 4


def resume_config(data_dir):
  config = tiny_config(data_dir, steps=STEPS)
  config.log_every = 1  # every step's loss terms in TensorBoard: what the test compares
  config.checkpoint_every = CHECKPOINT_EVERY
  return config


# Trains in a subprocess that stops (sleeps) before step 7, when steps 5 and 6 are logged after
# checkpoint 4, until the test kills it. Seals are written as soon as a save completes (instead
# of at the next step that finds it complete), so the test knows when checkpoint 4 is sealed.
KILLED_RUN = """
import functools, os, sys, time
sys.path.insert(0, {repo!r})
from iah_jax import checkpoints, train
from tests.test_resume import resume_config
from tests.test_train import train_tiny

checkpoints.Saver.seal_finished = functools.partialmethod(
    checkpoints.Saver.seal_finished, wait=True
)
to_global, calls = train.to_global, []

def to_global_stopping_at_step_7(batch, mesh, **kwargs):
  calls.append(1)
  if len(calls) == 7:
    print("STOPPED", flush=True)
    time.sleep(600)
  return to_global(batch, mesh, **kwargs)

train.to_global = to_global_stopping_at_step_7
train_tiny(resume_config({data_dir!r}), {run_dir!r})
"""


def wait_for(condition, process, timeout=300.0):
  deadline = time.monotonic() + timeout
  while not condition():
    if process.poll() is not None:
      raise AssertionError(f"training exited early:\n{process.stderr.read()[-3000:]}")
    if time.monotonic() > deadline:
      process.kill()
      raise AssertionError("timed out waiting for the killed run's checkpoint")
    time.sleep(0.1)


def logged(run_dir) -> dict[str, list[tuple[int, float]]]:
  scalars = summaries.read_scalars(os.path.join(run_dir, "tensorboard"))
  scalars.pop("steps_per_second")  # wall-clock, differs by nature
  return scalars


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_data_dir):
  killed_dir = str(tmp_path / "killed")
  script = textwrap.dedent(KILLED_RUN).format(repo=REPO, data_dir=tiny_data_dir, run_dir=killed_dir)
  process = subprocess.Popen(
      [sys.executable, "-c", script],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  seal = os.path.join(killed_dir, "checkpoints", str(CHECKPOINT_EVERY), checkpoints.SEAL_FILE)
  wait_for(
      lambda: os.path.exists(seal)
      and [step for step, _ in logged(killed_dir).get("loss", [])][-1:] == [6],
      process,
  )
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=60)
  assert process.returncode == -signal.SIGKILL
  process.stdout.close()
  process.stderr.close()

  config = resume_config(tiny_data_dir)
  manager = train.checkpoint_manager(os.path.join(killed_dir, "checkpoints"), config)
  assert manager.latest_step() == CHECKPOINT_EVERY
  seconds_at_kill = train.train_seconds(manager)
  manager.close()
  assert seconds_at_kill > 0
  # The killed session logged steps 5 and 6, which the resumed session trains again.
  assert [step for step, _ in logged(killed_dir)["loss"]] == [1, 2, 3, 4, 5, 6]

  started = time.perf_counter()
  resumed = train_tiny(config, killed_dir)
  resume_seconds = time.perf_counter() - started
  uninterrupted = train_tiny(config, tmp_path / "uninterrupted")

  expected, got = logged(tmp_path / "uninterrupted"), logged(killed_dir)
  assert set(got) == set(expected) >= {"loss", "label_loss", "semantic_loss", "category_loss"}
  for tag in expected:
    assert [step for step, _ in expected[tag]] == list(range(1, STEPS + 1)), tag
    # One value per step (the replayed 5 and 6 not twice), equal to the last bit: the same
    # batches, dropout keys and restored state give the same float32 computation on CPU.
    assert got[tag] == expected[tag], tag
  jax.tree.map(
      np.testing.assert_array_equal, jax.device_get(resumed), jax.device_get(uninterrupted)
  )

  # Training time adds up over the sessions: the killed one up to checkpoint 4, then this one.
  manager = train.checkpoint_manager(os.path.join(killed_dir, "checkpoints"), config)
  total = train.train_seconds(manager)
  manager.close()
  assert seconds_at_kill < total <= seconds_at_kill + resume_seconds
