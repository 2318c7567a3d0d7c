"""Trains, checkpoints, encodes and evaluates `config.method` (evaluate.run).

  python -m iah_jax.main --config configs/default.py --workdir runs/default
  python -m iah_jax.main --config configs/default.py --workdir runs/x --config.num_train_steps=100

Resumes automatically from the checkpoints in --workdir. The config is validated before anything
else is loaded; a mistake in it or in the flags ends in one message (iah_jax.cli), exit code 2.
Ends with the job's wall and CPU time by phase. Thread pools and the allocator are set up by
`iah_jax.runtime` (IAH_JAX_THREADS, IAH_JAX_COMPILATION_CACHE, IAH_JAX_RUNTIME=default override it).
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from iah_jax import cli
from iah_jax import config as config_lib
from iah_jax import runtime

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
  config = config_lib.validate_config(FLAGS.config, check_inputs=True)
  import jax  # the training stack (JAX, TensorFlow) loads once the config is known to be valid

  from iah_jax import console
  from iah_jax import evaluate
  from iah_jax import phases

  if FLAGS.distributed:
    jax.distributed.initialize()  # coordinator and process ids from SLURM / TPU metadata
  with console.progress_logging():
    evaluate.run(config, FLAGS.workdir)
  if jax.process_index() == 0:
    print(phases.report("time of the job by phase (CPU = user + system, all threads)"))


if __name__ == "__main__":
  cli.run(main)
