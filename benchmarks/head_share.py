"""What the IAH head adds to a GoogLeNet train step at paper scale (target: at most 15%).

    python benchmarks/head_share.py                      # batch 8 x 224 x 224, N = 100, c = 20, b = q = 48
    python benchmarks/head_share.py --rounds 9 --steps 3
    python benchmarks/head_share.py --dtype bfloat16     # mixed precision (GPU/TPU setting)

Two jitted train steps on the same random batch, same GoogLeNet backbone (train-mode BatchNorm),
same optimiser (configs/voc07.py's SGD with momentum), both donating their state:

- IAH: `train.make_train_step` as training runs it, on `train.build_model` from configs/voc07.py
  with c = 20, b = q = 48: backbone -> 1x1 conv to 32 maps -> SPP (4, 3, 2, 1) of N = 100
  proposals (d = 960) -> label and hash branches -> Kronecker fusion -> semantic layer, and the
  three losses (label, weighted triplet over all B^3 triples, category-aware triplet).
- backbone only: GoogLeNet's feature map, global average pooled, loss = mean of squares.

The head's share is (t_IAH - t_backbone) / t_backbone. The two steps alternate round by round
and the share is the median of the per-round ratios, so load from other processes on a shared
machine hits both alike; wall and process CPU time are both reported (CPU time counts XLA's
worker threads, including spin-waiting), with the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import runpy
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # runnable as a plain script from anywhere


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--num_proposals", type=int, default=100)
  parser.add_argument("--num_classes", type=int, default=20)
  parser.add_argument("--bits", type=int, default=48, help="b (bits per category) and q")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
  parser.add_argument("--rounds", type=int, default=7)
  return parser.parse_args()


def random_batch(batch_size: int, image_size: int, num_proposals: int, num_classes: int) -> dict:
  import numpy as np

  rng = np.random.default_rng(0)
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


def make_iah_runner(config, args, mesh, batch):
  """-> run(n): n IAH train steps exactly as iah_jax.train runs them; returns the last loss."""
  import jax
  from iah_jax import train

  model = train.build_model(config, args.num_classes, args.bits, args.bits)
  schedule = train.learning_rate_schedule(config, steps_per_epoch=248)
  tx = train.make_optimizer(config, schedule)
  state = train.create_train_state(
      model, tx, jax.random.PRNGKey(0), mesh, args.size, args.num_proposals
  )
  step = train.make_train_step(model, tx, schedule, config, mesh)
  batch = train.to_global(batch, mesh)
  holder = {"state": state}

  def run(n):
    for index in range(n):
      holder["state"], terms = step(holder["state"], batch, jax.random.PRNGKey(index))
    return float(jax.block_until_ready(terms["loss"]))

  return run


def make_backbone_runner(config, args, mesh, batch):
  """-> run(n): the same backbone and optimiser, loss = mean square of the pooled features."""
  import jax
  import jax.numpy as jnp
  import optax
  from jax.sharding import NamedSharding, PartitionSpec
  from iah_jax import train
  from iah_jax.models import backbones

  backbone = backbones.build_backbone(
      config.model.backbone,
      config.model.backbone_options.to_dict(),
      dtype=jnp.dtype(config.model.dtype),
  )
  schedule = train.learning_rate_schedule(config, steps_per_epoch=248)
  tx = train.make_optimizer(config, schedule)
  replicated = NamedSharding(mesh, PartitionSpec())
  data = NamedSharding(mesh, PartitionSpec("data"))

  def init(rng):
    variables = backbone.init(rng, jnp.zeros((1, args.size, args.size, 3), jnp.float32))
    return train.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(variables["params"]),
    )

  state = jax.jit(init, out_shardings=replicated)(jax.random.PRNGKey(0))

  def train_step(state, images):
    def loss_fn(params):
      feature_map, updates = backbone.apply(
          {"params": params, "batch_stats": state.batch_stats},
          images,
          train=True,
          mutable=["batch_stats"],
      )
      pooled = jnp.mean(feature_map.astype(jnp.float32), axis=(1, 2))
      return jnp.mean(pooled**2), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, param_updates),
        opt_state=opt_state,
        batch_stats=updates["batch_stats"],
    )
    return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}  # as train's step

  step = jax.jit(
      train_step,
      donate_argnums=0,
      in_shardings=(replicated, data),
      out_shardings=(replicated, replicated),
  )
  images = train.to_global(batch, mesh, keys=("image",))["image"]
  holder = {"state": state}

  def run(n):
    for _ in range(n):
      holder["state"], terms = step(holder["state"], images)
    return float(jax.block_until_ready(terms["loss"]))

  return run


def timed(run, steps):
  """-> (wall seconds per step, process CPU seconds per step)."""
  start, cpu_start = time.perf_counter(), time.process_time()
  loss = run(steps)
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  if loss != loss:
    raise RuntimeError("a train step produced a NaN loss")
  return wall / steps, cpu / steps


def main():
  args = parse_args()
  load_before = os.getloadavg()
  import jax
  from iah_jax import config as config_lib
  from iah_jax import train

  config = runpy.run_path(os.path.join(REPO, "configs", "voc07.py"))["get_config"]()
  config.model.dtype = args.dtype
  config.semantic_bits, config.bits_per_category = (args.bits,), (args.bits,)
  config.batch_size = args.batch
  config.dataset.image_size = args.size
  config_lib.validate_config(config)
  mesh = train.make_mesh()
  batch = random_batch(args.batch, args.size, args.num_proposals, args.num_classes)

  runs = {}
  for name, make in (("IAH", make_iah_runner), ("backbone only", make_backbone_runner)):
    started = time.perf_counter()
    run = make(config, args, mesh, batch)
    run(1)
    print(f"{name}: init + compile + first step {time.perf_counter() - started:.1f} s", flush=True)
    run(args.warmup)
    runs[name] = run

  seconds = {name: [] for name in runs}
  for _ in range(args.rounds):
    for name, run in runs.items():
      seconds[name].append(timed(run, args.steps))
  load_after = os.getloadavg()

  print(
      f"\nbatch {args.batch} x {args.size}x{args.size}, N = {args.num_proposals} proposals, "
      f"SPP {tuple(config.model.spp_levels)} (d = {config.model.reduced_maps * 30}), "
      f"c = {args.num_classes}, b = q = {args.bits}, dtype {args.dtype}; jax {jax.__version__} "
      f"on {len(jax.devices())} {jax.devices()[0].platform} device(s), {os.cpu_count()} cores; "
      f"{args.rounds} rounds x {args.steps} steps (medians)"
  )
  print(
      f"load average (1, 5, 15 min): before {tuple(round(x, 2) for x in load_before)}, "
      f"after {tuple(round(x, 2) for x in load_after)}"
  )
  for name in runs:
    walls = [wall for wall, _ in seconds[name]]
    cpus = [cpu for _, cpu in seconds[name]]
    print(
        f"  {name:14s} {statistics.median(walls):7.3f} s/step wall "
        f"({args.batch / statistics.median(walls):5.2f} images/s)  "
        f"{statistics.median(cpus):7.3f} CPU s/step   rounds (s/step wall): "
        + " ".join(f"{wall:.3f}" for wall in walls)
    )
  for label, column in (("wall", 0), ("CPU", 1)):
    shares = [
        iah[column] / backbone[column] - 1.0
        for iah, backbone in zip(seconds["IAH"], seconds["backbone only"])
    ]
    print(
        f"head share ({label} time): {100 * statistics.median(shares):+.1f}% "
        f"(per round: {' '.join(f'{100 * s:+.1f}' for s in shares)}; target <= +15%)"
    )


if __name__ == "__main__":
  main()
