"""Times the IAH train step of a config and the share spent in SPP + fusion + losses.

  python -m benchmarks.train_step --config configs/default.py
  python -m benchmarks.train_step --config configs/default.py --config.batch_size=64

Prints steps/s and images/s of the full jit train step (random inputs of the config's shapes, so
no input pipeline in the timing), and the time of the head alone — SPP of the proposals, the
label and hash branches, Kronecker fusion, the semantic layer and the three losses, forward and
backward from the backbone's feature map — as a share of the step.
"""

from __future__ import annotations

import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from iah_jax import cli
from iah_jax import config as config_lib
from iah_jax import methods
from iah_jax import runtime
from iah_jax import train
from iah_jax.models import iah

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/default.py", "Config file.", lock_config=True)
flags.DEFINE_integer("num_classes", 10, "Categories c.")
flags.DEFINE_integer("num_proposals", 100, "Proposals N per image.")
flags.DEFINE_integer("repeats", 20, "Timed steps (after warm-up).")


def _timed(fn, *args, repeats: int) -> float:
  """Seconds per call of `fn`, after one compiling call; median of `repeats` timed calls."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def random_batch(batch_size, image_size, num_proposals, num_classes, seed=0):
  rng = np.random.default_rng(seed)
  corners = rng.uniform(size=(batch_size, num_proposals, 4))
  boxes = np.concatenate(
      [
          np.minimum(corners[..., :2], corners[..., 2:]),
          np.maximum(corners[..., :2], corners[..., 2:]),
      ],
      -1,
  )
  labels = (rng.uniform(size=(batch_size, num_classes)) < 0.15).astype(np.float32)
  labels[np.arange(batch_size), rng.integers(0, num_classes, batch_size)] = 1.0
  return {
      "image": rng.uniform(size=(batch_size, image_size, image_size, 3)).astype(np.float32),
      "proposals": boxes.astype(np.float32),
      "labels": labels,
  }


def main(argv):
  del argv
  runtime.configure_entry_point()  # before JAX and TensorFlow start their thread pools
  config = config_lib.validate_config(FLAGS.config)
  q, b = int(config.semantic_bits[0]), int(config.bits_per_category[0])
  c, n = FLAGS.num_classes, FLAGS.num_proposals
  size, batch_size = config.dataset.image_size, config.batch_size
  mesh = train.make_mesh()
  model = train.build_model(config, c, q, b)
  schedule = train.learning_rate_schedule(config, steps_per_epoch=100)
  tx = train.make_optimizer(config, schedule)
  state = train.create_train_state(model, tx, jax.random.PRNGKey(0), mesh, size, n)
  step = train.make_train_step(model, tx, schedule, config, mesh)
  batch = train.to_global(random_batch(batch_size, size, n, c), mesh)

  holder = {"state": state}

  def run_step():
    holder["state"], terms = step(holder["state"], batch, jax.random.PRNGKey(0))
    return terms

  step_seconds = _timed(run_step, repeats=FLAGS.repeats)

  # The head alone: the same IAH layers on a feature map of the backbone's output shape.
  feature_map = jax.eval_shape(
      lambda: model.apply(
          {"params": state.params},
          batch["image"],
          batch["proposals"],
          method=lambda module, images, proposals: module.backbone(images),
      )
  )
  head = iah.IAH(
      backbone=_Identity(),
      num_classes=c,
      bits_per_category=b,
      semantic_bits=q,
      reduced_maps=config.model.reduced_maps,
      spp_levels=tuple(config.model.spp_levels),
      output_bound=config.model.output_bound,
  )
  features_in = jnp.asarray(np.random.default_rng(1).normal(size=feature_map.shape), jnp.float32)
  head_params = head.init(jax.random.PRNGKey(0), features_in, batch["proposals"])["params"]
  method = methods.get("iah")
  settings = method.settings(config)

  @jax.jit
  def head_grads(params, features, proposals, labels):
    def loss(params, features):
      outputs = head.apply({"params": params}, features, proposals)
      return method.losses(outputs, labels, settings)["loss"]

    return jax.grad(loss, argnums=(0, 1))(params, features)

  head_seconds = _timed(
      head_grads,
      head_params,
      features_in,
      batch["proposals"],
      batch["labels"],
      repeats=FLAGS.repeats,
  )

  print(
      f"machine: {os.cpu_count()} CPUs, devices {jax.devices()}, load average "
      f"{os.getloadavg()[0]:.2f}"
  )
  print(
      f"config: backbone {config.model.backbone}, image {size}x{size}, batch {batch_size}, "
      f"N={n}, c={c}, b={b}, q={q}, SPP levels {tuple(config.model.spp_levels)}, "
      f"feature map {feature_map.shape[1:]}"
  )
  print(
      f"train step: {step_seconds * 1e3:.1f} ms = {1 / step_seconds:.2f} steps/s = "
      f"{batch_size / step_seconds:.1f} images/s"
  )
  print(
      f"SPP + fusion + losses (fwd + bwd): {head_seconds * 1e3:.1f} ms = "
      f"{100 * head_seconds / step_seconds:.1f}% of the step"
  )


class _Identity(iah.nn.Module):
  """Stands in for the backbone: the head then runs on a given feature map."""

  @iah.nn.compact
  def __call__(self, feature_map, train: bool = False):
    del train
    return feature_map


if __name__ == "__main__":
  cli.run(main)
