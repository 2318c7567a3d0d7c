"""GoogLeNet train-step speed on CPU: Flax (one jit) vs PyTorch (torchvision), same network.

Both sides run the classifier as torchvision builds it (aux_logits=False, train-mode BatchNorm,
dropout 0.2), softmax cross-entropy on random labels, SGD with momentum 0.9, on a random batch
(default 8 x 224 x 224). Each measurement is the median over ``--rounds`` rounds of
``--steps`` steps, after ``--warmup`` steps; the frameworks alternate round by round so that
load from other processes on a shared machine hits both alike.

    python benchmarks/googlenet_train_step.py                        # default: torch threads default and 2
    python benchmarks/googlenet_train_step.py --xla_flags="--xla_cpu_use_onednn=true"
    python benchmarks/googlenet_train_step.py --flax_dtype=bfloat16  # mixed precision (not the fair pair)

Prints images/s of both and the ratio flax / torch (> 1 means Flax is faster).

Idle, 2026-12-03 (2-core Xeon, AVX-512), 5 rounds x 3 steps: flax 12.35 images/s, torch NCHW
12.57 (default threads) / 12.72 (2) -> 0.98 / 0.97; torch channels_last 16.9 -> 0.73. Batch 16:
flax 11.6, torch 14.2 -> 0.82.
Earlier, on a 2-core Xeon shared with other jobs (load ~7), jax
0.10.2 / torch 2.14.1, 5 rounds x 3 steps, torch OMP_WAIT_POLICY=PASSIVE:
  2 cores:  flax 6.2 images/s; torch (NCHW, default = 2 threads) 7.1 -> flax/torch 0.87;
            torch channels_last 10.0 -> 0.62.
  1 core (taskset -c 0, torch 1 thread): flax 6.2; torch 7.6 -> 0.82; channels_last 10.4 -> 0.60.
Flax is slower. What was tried on the Flax side (single-core A/B in one process):
  - max-pool as strided views with custom tangent/VJP rules instead of reduce_window
    (select_and_scatter): train step ~3.9 s -> ~2.7 s under heavy load (~30%);
  - conv_impl="gemm_grads" (1x1 convs as dots, stride-1 kernel gradients as one im2col GEMM):
    a further ~15% (0.19 -> 0.16 CPU s/image);
  - XLA flags --xla_cpu_use_xnnpack, --xla_cpu_use_onednn, --xla_cpu_experimental_onednn_custom_call,
    disabling YNNPACK fusions: no gain (0.16-0.17 CPU s/image either way, or worse);
  - donate_argnums on the state: within noise; the whole step is already one jit;
  - bfloat16 compute: slower on this CPU (0.28 CPU s/image).
The remaining gap is XLA:CPU's convolution backward passes versus oneDNN's (torch with
channels_last is fastest). With OpenMP's default ACTIVE wait policy torch collapses to
~1 image/s on this loaded machine (flax/torch ~3.4): a scheduling artefact, not a fair figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# Runnable as a plain script from the repository root or anywhere else.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument(
      "--torch_threads",
      default="default,2",
      help="comma list of torch thread settings to measure; 'default' leaves torch's choice",
  )
  parser.add_argument(
      "--torch_channels_last",
      action="store_true",
      help="also measure torch with channels_last memory format",
  )
  parser.add_argument("--flax_dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument(
      "--conv_impl",
      default="auto",
      choices=["auto", "xla", "gemm_grads"],
      help="GoogLeNet conv gradient implementation (auto = gemm_grads on CPU)",
  )
  parser.add_argument("--no_donate", action="store_true", help="jit without donate_argnums")
  parser.add_argument("--xla_flags", default="", help="appended to XLA_FLAGS before jax loads")
  parser.add_argument(
      "--torch_omp_wait_policy",
      default="PASSIVE",
      help="OMP_WAIT_POLICY for torch's OpenMP threads, set before torch loads unless already "
      "in the environment ('' leaves it unset). ACTIVE (spinning, OpenMP's default) "
      "collapses torch 4-6x when other processes share the cores, which would flatter "
      "Flax; PASSIVE costs torch little on an idle machine.",
  )
  return parser.parse_args()


def make_flax_step(batch, size, dtype_name, donate, conv_impl="auto"):
  import jax
  import jax.numpy as jnp
  import optax

  from iah_jax.models.googlenet import GoogLeNet

  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype_name]
  model = GoogLeNet(num_classes=1000, dtype=dtype, conv_impl=conv_impl)
  optimizer = optax.sgd(learning_rate=0.01, momentum=0.9)
  images = jax.random.normal(jax.random.PRNGKey(1), (batch, size, size, 3), jnp.float32)
  labels = jax.random.randint(jax.random.PRNGKey(2), (batch,), 0, 1000)

  variables = jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])
  state = {
      "params": variables["params"],
      "batch_stats": variables["batch_stats"],
      "opt_state": optimizer.init(variables["params"]),
      "rng": jax.random.PRNGKey(3),
  }

  def train_step(state, images, labels):
    rng, dropout_rng = jax.random.split(state["rng"])

    def loss_fn(params):
      logits, updates = model.apply(
          {"params": params, "batch_stats": state["batch_stats"]},
          images,
          train=True,
          mutable=["batch_stats"],
          rngs={"dropout": dropout_rng},
      )
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = {"params": params, "batch_stats": batch_stats, "opt_state": opt_state, "rng": rng}
    return new_state, loss

  step = jax.jit(train_step, donate_argnums=() if not donate else (0,))
  holder = {"state": state}

  def run(n):
    for _ in range(n):
      holder["state"], loss = step(holder["state"], images, labels)
    return float(jax.block_until_ready(loss))

  return run


def make_torch_step(batch, size, channels_last):
  import torch
  import torchvision

  torch.manual_seed(0)
  model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
  model.train()
  images = torch.randn(batch, 3, size, size)
  labels = torch.randint(0, 1000, (batch,))
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

  def run(n):
    for _ in range(n):
      optimizer.zero_grad(set_to_none=True)
      loss = torch.nn.functional.cross_entropy(model(images), labels)
      loss.backward()
      optimizer.step()
    return loss.item()

  return run


def timed(run, steps):
  """-> (wall seconds per step, process CPU seconds per step)."""
  start, cpu_start = time.perf_counter(), time.process_time()
  loss = run(steps)
  elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  if loss != loss:  # NaN
    raise RuntimeError("train step produced NaN loss")
  return elapsed / steps, cpu / steps


def main():
  args = parse_args()
  if args.xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
  if args.torch_omp_wait_policy:
    os.environ.setdefault("OMP_WAIT_POLICY", args.torch_omp_wait_policy)

  import jax
  import torch

  default_threads = torch.get_num_threads()
  flax_run = make_flax_step(
      args.batch, args.size, args.flax_dtype, not args.no_donate, args.conv_impl
  )
  compile_start = time.perf_counter()
  flax_run(1)
  print(f"flax first step (compile + run): {time.perf_counter() - compile_start:.1f} s")
  flax_run(args.warmup)

  # label -> (run, torch thread count or None for Flax)
  runs = {"flax": (flax_run, None)}
  for threads in filter(None, args.torch_threads.split(",")):  # "" measures Flax only
    thread_count = default_threads if threads == "default" else int(threads)
    for channels_last in [False, True] if args.torch_channels_last else [False]:
      label = f"torch threads={threads}" + (" channels_last" if channels_last else "")
      torch.set_num_threads(thread_count)
      run = make_torch_step(args.batch, args.size, channels_last)
      run(args.warmup)
      runs[label] = (run, thread_count)

  seconds = {label: [] for label in runs}
  for _ in range(args.rounds):
    for label, (run, thread_count) in runs.items():
      if thread_count is not None:  # torch's thread count is process-wide
        torch.set_num_threads(thread_count)
      seconds[label].append(timed(run, args.steps))

  print(
      f"batch {args.batch} x {args.size}x{args.size}, {args.steps} steps x {args.rounds} rounds "
      f"(median), jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
      f"(default threads {default_threads}), flax dtype {args.flax_dtype}, "
      f"conv_impl {args.conv_impl}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
      f"donate={not args.no_donate}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
  )
  # CPU seconds per image are less sensitive to other processes' load than wall time, but
  # count spin-waiting threads as work.
  rates = {}
  for label in runs:
    walls = [wall for wall, _ in seconds[label]]
    cpus = [cpu for _, cpu in seconds[label]]
    rates[label] = args.batch / statistics.median(walls)
    ratio = "" if label == "flax" else f"   flax/torch = {rates['flax'] / rates[label]:.2f}"
    print(
        f"  {label:32s} {rates[label]:7.2f} images/s   "
        f"{statistics.median(cpus) / args.batch:6.2f} CPU s/image   rounds (images/s): "
        + " ".join(f"{args.batch / wall:.2f}" for wall in walls)
        + ratio
    )


if __name__ == "__main__":
  main()
