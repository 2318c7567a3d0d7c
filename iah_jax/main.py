"""Trains, checkpoints, encodes and evaluates IAH.

  python -m iah_jax.main --config configs/default.py --workdir runs/default
  python -m iah_jax.main --config configs/default.py --workdir runs/x --config.num_train_steps=100

Resumes automatically from the checkpoints in --workdir. Ends with the job's wall and CPU time
by phase. Thread pools and the allocator are set up by `iah_jax.runtime` (IAH_JAX_THREADS,
IAH_JAX_COMPILATION_CACHE, IAH_JAX_RUNTIME=default override it).
"""

from absl import app
import jax
from absl import flags
from ml_collections import config_flags

from iah_jax import console
from iah_jax import phases
from iah_jax import runtime
from iah_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_bool(
    "distributed",
    False,
    "Call jax.distributed.initialize() first (multi-host "
    "GPU/TPU: one process per host; see launch/).",
)
flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, TensorBoard logs and results.json."
)
config_flags.DEFINE_config_file(
    "config", None, "Path to an ml_collections config file.", lock_config=True
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.configure_entry_point()  # before JAX and TensorFlow start their thread pools
  if FLAGS.distributed:
    jax.distributed.initialize()  # coordinator and process ids from SLURM / TPU metadata
  with console.progress_logging():
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  if jax.process_index() == 0:
    print(phases.report("time of the job by phase (CPU = user + system, all threads)"))


if __name__ == "__main__":
  app.run(main)
