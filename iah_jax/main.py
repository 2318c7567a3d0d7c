"""Trains, checkpoints, encodes and evaluates `config.method` (evaluate.run).

  python -m iah_jax.main --config configs/default.py --workdir runs/default
  python -m iah_jax.main --config configs/default.py --workdir runs/x --config.num_train_steps=100

Resumes automatically from the checkpoints in --workdir.
"""

from absl import app
import jax
from absl import flags
from ml_collections import config_flags

from iah_jax import checkpoints
from iah_jax import console
from iah_jax import evaluate
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
  if FLAGS.distributed:
    jax.distributed.initialize()  # coordinator and process ids from SLURM / TPU metadata
  try:
    with console.progress_logging():
      evaluate.run(FLAGS.config, FLAGS.workdir)
  except (
      checkpoints.CheckpointError,
      checkpoints.NonFiniteStateError,
      train.NonFiniteLossError,
  ) as error:  # their messages say what happened and what to do: no traceback
    raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
  app.run(main)
