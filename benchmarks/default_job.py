"""The default main job against its speed targets (issue 13): <= 5 min wall on an idle 2-core
CPU and <= 600 CPU-s (user + system, every thread), MAP as in the README.

  python -m benchmarks.default_job --workdir /tmp/default_job
  python -m benchmarks.default_job --workdir /tmp/default_job --data_dir /tmp/tfds  # reuse data

Runs exactly what `python -m iah_jax.main --config configs/default.py` runs (the dataset is
generated first when --data_dir has none, and that counts), in a fresh --workdir (an existing
one would resume), then prints the time by phase, the semantic MAP per bit length and whether
the targets are met. Wall time is only meaningful on an idle machine: the load average is
printed with it; CPU time is the figure to compare on a shared one.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Fresh directory for the job's runs (must not exist).")
flags.DEFINE_string("data_dir", "", "TFDS data_dir (default: the config's).")
flags.mark_flag_as_required("workdir")

WALL_TARGET_SECONDS = 300.0
CPU_TARGET_SECONDS = 600.0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _default_config():
  spec = importlib.util.spec_from_file_location("default", os.path.join(REPO, "configs/default.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from iah_jax import runtime

  runtime.configure_entry_point()
  if os.path.exists(FLAGS.workdir):
    raise app.UsageError(f"--workdir {FLAGS.workdir} exists; the benchmark needs a fresh one")
  from iah_jax import console
  from iah_jax import evaluate
  from iah_jax import phases

  config = _default_config()
  if FLAGS.data_dir:
    config.dataset.data_dir = FLAGS.data_dir
  timer = phases.default_timer()
  with console.progress_logging():
    results = evaluate.run(config, FLAGS.workdir)
  total = timer.elapsed()
  print(timer.report("default job by phase (CPU = user + system, all threads)"))
  print(
      "semantic MAP: "
      + ", ".join(f"q{q} {row['map']:.4f}" for q, row in results["semantic"].items())
  )
  wall_ok = total.wall <= WALL_TARGET_SECONDS
  cpu_ok = total.cpu <= CPU_TARGET_SECONDS
  print(
      f"wall {total.wall:.0f} s (target <= {WALL_TARGET_SECONDS:.0f} s on an idle machine: "
      f"{'met' if wall_ok else 'not met'}; load average {os.getloadavg()[0]:.2f}), "
      f"CPU {total.cpu:.0f} s (target <= {CPU_TARGET_SECONDS:.0f} s: {'met' if cpu_ok else 'not met'}), "
      f"{runtime.applied().threads} threads"
  )
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
