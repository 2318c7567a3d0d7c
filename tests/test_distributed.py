"""Multi-process training with jax.distributed: 2 CPU processes on localhost == 1 process.

Each worker is this file run as a script (`python tests/test_distributed.py --process_id i ...`):
it joins a 2-process JAX cluster (`jax.distributed.initialize` with a localhost coordinator, CPU
collectives over gloo, 2 CPU devices per process, so the mesh has 4 devices over 2 hosts), builds
a tiny IAH model with iah_jax.train and

1. runs two train steps on fixed global batches of 8 rows, feeding only its own 4 rows through
   `train.to_global` (jax.make_array_from_process_local_data), exactly as the training loop does;
2. reads a few training batches through `pipeline.train_batches` on the tiny embedded dataset,
   which gives each process its own half of the split (tfds.split_for_jax_process), and again
   from step 1 (a resume), which must continue the same order;
3. encodes the tiny dataset's test split with the trained state through `evaluate.encode_split`
   (the evaluation path of evaluate.run).

The tests compare the workers' parameters after the two steps and their codes with a
single-process run on the full global batches (this pytest process, 1 device), and check that
the processes' data halves are disjoint and cover the split's two halves. The workers run once
per module (~30-40 s on 2 shared cores).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2
GLOBAL_BATCH = 8
NUM_PROPOSALS = 6
IMAGE_SIZE = 32
NUM_STEPS = 2
PIPELINE_BATCHES = 3
WORKER_TIMEOUT = (
    600  # seconds; compile takes a few seconds per process idle, minutes on a loaded machine
)
STARTED = "DISTRIBUTED_STARTED"


def tiny_config(data_dir: str = "unused"):
  from iah_jax import config as config_lib

  config = config_lib.base_config()
  config.dataset.data_dir = data_dir
  config.dataset.config = "tiny"
  config.dataset.image_size = IMAGE_SIZE
  config.dataset.shuffle_buffer = 64
  config.model.backbone_options.widths = (8, 16)
  config.model.spp_levels = (2, 1)
  config.semantic_bits = (8,)
  config.bits_per_category = (2,)
  config.batch_size = GLOBAL_BATCH
  config.optimizer.learning_rate = 0.01
  return config


def global_batch(step: int, num_classes: int) -> dict:
  """The same global batch in every process: float32 images, proposals, multi-hot labels."""
  rng = np.random.default_rng(100 + step)
  corners = rng.uniform(size=(GLOBAL_BATCH, NUM_PROPOSALS, 4))
  boxes = np.concatenate(
      [
          np.minimum(corners[..., :2], corners[..., 2:]),
          np.maximum(corners[..., :2], corners[..., 2:]),
      ],
      -1,
  )
  labels = (rng.uniform(size=(GLOBAL_BATCH, num_classes)) < 0.3).astype(np.float32)
  labels[np.arange(GLOBAL_BATCH), rng.integers(0, num_classes, GLOBAL_BATCH)] = 1.0
  return {
      "image": rng.uniform(size=(GLOBAL_BATCH, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32),
      "proposals": boxes.astype(np.float32),
      "labels": labels,
  }


def train_two_steps(num_classes: int, rows: slice):
  """Two train steps over all devices of all processes, this process feeding `rows` of each
  global batch. Returns (state, model, mesh, losses)."""
  import jax
  from iah_jax import train

  config = tiny_config()
  mesh = train.make_mesh()
  model = train.build_model(
      config, num_classes, config.semantic_bits[0], config.bits_per_category[0]
  )
  schedule = train.learning_rate_schedule(config, steps_per_epoch=10)
  tx = train.make_optimizer(config, schedule)
  state = train.create_train_state(
      model, tx, jax.random.PRNGKey(0), mesh, IMAGE_SIZE, NUM_PROPOSALS
  )
  step = train.make_train_step(model, tx, schedule, config, mesh)
  losses = []
  for index in range(NUM_STEPS):
    full = global_batch(index, num_classes)
    batch = train.to_global({key: value[rows] for key, value in full.items()}, mesh)
    for shard in batch["labels"].addressable_shards:  # this process's rows, where they belong
      np.testing.assert_array_equal(np.asarray(shard.data), full["labels"][shard.index])
    state, terms = step(state, batch, jax.random.PRNGKey(index))
    losses.append(float(terms["loss"]))
  return state, model, mesh, losses


def flat_params(state) -> dict:
  import flax
  import jax

  params = flax.traverse_util.flatten_dict(jax.device_get(state.params), sep="/")
  return {name: np.asarray(value) for name, value in params.items()}


def encode_test_split(state, model, mesh, builder) -> dict:
  """evaluate.encode_split of the tiny test split: codes, label_probs, labels, index."""
  from iah_jax import evaluate

  config = tiny_config()
  config.eval.batch_size = 12  # 32 test images: the last batch is padded
  encode_step = evaluate.make_encode_step(model, mesh, config)
  return evaluate.encode_split(state, encode_step, builder, "test", config, mesh)


# ----------------------------------------------------------------------------- worker process


def worker(args) -> None:
  import jax

  jax.distributed.initialize(
      coordinator_address=f"127.0.0.1:{args.port}",
      num_processes=NUM_PROCESSES,
      process_id=args.process_id,
      initialization_timeout=60,
  )
  print(STARTED, flush=True)
  assert jax.process_count() == NUM_PROCESSES, jax.process_count()
  assert jax.local_device_count() == DEVICES_PER_PROCESS, jax.local_devices()
  assert jax.device_count() == NUM_PROCESSES * DEVICES_PER_PROCESS, jax.devices()

  from iah_jax.data import features
  from iah_jax.data import pipeline
  from iah_jax.data import synthetic_scenes

  builder = synthetic_scenes.load_builder(args.data_dir, "tiny")
  num_classes = builder.info.features[features.LABELS].shape[0]

  local = GLOBAL_BATCH // NUM_PROCESSES
  rows = slice(args.process_id * local, (args.process_id + 1) * local)
  state, model, mesh, losses = train_two_steps(num_classes, rows)

  batches = pipeline.train_batches(
      builder,
      split="train",
      global_batch_size=GLOBAL_BATCH,
      image_size=IMAGE_SIZE,
      seed=0,
      shuffle_buffer=64,
  )
  indices = np.stack([next(batches)[features.INDEX] for _ in range(PIPELINE_BATCHES)])
  resumed = pipeline.train_batches(  # a resume at step 1 continues each process's own order
      builder,
      split="train",
      global_batch_size=GLOBAL_BATCH,
      image_size=IMAGE_SIZE,
      seed=0,
      shuffle_buffer=64,
      start_step=1,
  )
  results = {
      "losses": np.asarray(losses),
      "pipeline_indices": indices,
      "pipeline_resumed_indices": np.stack(
          [next(resumed)[features.INDEX] for _ in range(PIPELINE_BATCHES - 1)]
      ),
  }
  results.update({"param/" + name: value for name, value in flat_params(state).items()})
  try:
    encoded = encode_test_split(state, model, mesh, builder)
    results.update({"encoded/" + name: value for name, value in encoded.items()})
  except Exception as error:  # reported by the encode test, after the training test has run
    results["encode_error"] = np.asarray(f"{type(error).__name__}: {error}")
  np.savez(args.out, **results)
  print("WORKER_DONE", args.process_id, flush=True)


def _parse_worker_args(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--process_id", type=int, required=True)
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--out", required=True)
  return parser.parse_args(argv)


# ----------------------------------------------------------------------------- the test


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def run_workers(tmp_path, data_dir: str) -> list[dict]:
  """Starts the 2 workers, waits (with a timeout) and returns their saved results."""
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      PYTHONPATH=REPO,
      XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}",
  )
  env.pop("JAX_NUM_CPU_DEVICES", None)
  port = _free_port()
  outputs = [tmp_path / f"worker{i}.npz" for i in range(NUM_PROCESSES)]
  logs = [open(tmp_path / f"worker{i}.log", "w+") for i in range(NUM_PROCESSES)]
  processes = [
      subprocess.Popen(
          [
              sys.executable,
              os.path.abspath(__file__),
              "--process_id",
              str(i),
              "--port",
              str(port),
              "--data_dir",
              data_dir,
              "--out",
              str(outputs[i]),
          ],
          stdout=logs[i],
          stderr=subprocess.STDOUT,
          env=env,
          cwd=REPO,
      )
      for i in range(NUM_PROCESSES)
  ]
  try:
    for process in processes:
      process.wait(timeout=WORKER_TIMEOUT)
  except subprocess.TimeoutExpired:
    pass
  finally:
    for process in processes:  # a worker left waiting for a dead peer
      if process.poll() is None:
        process.kill()
        process.wait()
  texts = []
  for log in logs:
    log.seek(0)
    texts.append(log.read())
    log.close()
  if not all(STARTED in text for text in texts):
    pytest.skip(
        "jax.distributed could not start 2 CPU processes on localhost here:\n"
        + "\n".join(text[-1500:] for text in texts)
    )
  for i, (process, text) in enumerate(zip(processes, texts)):
    assert process.returncode == 0, f"worker {i} (exit {process.returncode}):\n{text[-4000:]}"
  return [dict(np.load(path)) for path in outputs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data_dir):
  """(worker results, single-process reference) for the tiny dataset."""
  from iah_jax.data import features
  from iah_jax.data import synthetic_scenes

  results = run_workers(tmp_path_factory.mktemp("workers"), tiny_data_dir)
  builder = synthetic_scenes.load_builder(tiny_data_dir, "tiny")
  num_classes = builder.info.features[features.LABELS].shape[0]
  # Single process, one device, the full global batches.
  state, model, mesh, losses = train_two_steps(num_classes, slice(None))
  reference = {
      "losses": losses,
      "params": flat_params(state),
      "state": state,
      "model": model,
      "mesh": mesh,
      "builder": builder,
  }
  return results, reference


def test_two_processes_train_like_one(runs):
  results, reference = runs
  for process_id, result in enumerate(results):
    np.testing.assert_allclose(result["losses"], reference["losses"], rtol=1e-5)
    params = {
        name[len("param/") :]: value for name, value in result.items() if name.startswith("param/")
    }
    assert sorted(params) == sorted(reference["params"])
    for name, value in reference["params"].items():
      np.testing.assert_allclose(
          params[name], value, rtol=1e-5, atol=1e-6, err_msg=f"process {process_id}: {name}"
      )
  # The two steps moved the parameters (the comparison is not between two initial states).
  assert reference["losses"][1] != reference["losses"][0]


def test_each_process_reads_its_own_half_of_the_split(runs):
  from iah_jax.data import pipeline

  results, reference = runs
  half = pipeline.num_examples(reference["builder"], "train") // NUM_PROCESSES
  for process_id, result in enumerate(results):
    indices = result["pipeline_indices"]
    assert indices.shape == (PIPELINE_BATCHES, GLOBAL_BATCH // NUM_PROCESSES)
    assert np.all((indices >= process_id * half) & (indices < (process_id + 1) * half)), indices
    np.testing.assert_array_equal(result["pipeline_resumed_indices"], indices[1:])
  first, second = (set(result["pipeline_indices"].ravel()) for result in results)
  assert not first & second


def test_two_processes_encode_like_one(runs):
  """Evaluation after multi-host training: every process gets the codes of the whole split,
  equal to the single-process ones."""
  results, reference = runs
  expected = encode_test_split(
      reference["state"], reference["model"], reference["mesh"], reference["builder"]
  )
  assert len(expected["index"]) == 32
  for process_id, result in enumerate(results):
    if "encode_error" in result:
      pytest.fail(
          f"process {process_id}: evaluate.encode_split failed with 2 processes: "
          f"{result['encode_error']}"
      )
    for name, value in expected.items():
      np.testing.assert_allclose(
          result["encoded/" + name],
          value,
          rtol=1e-5,
          atol=1e-6,
          err_msg=f"process {process_id}: {name}",
      )


if __name__ == "__main__":
  sys.path.insert(0, REPO)
  worker(_parse_worker_args(sys.argv[1:]))
