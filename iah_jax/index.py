"""Indexes a photo collection with a trained run: codes, label probabilities, proposals.

  python -m iah_jax.index --run runs/default/q16_b4 --images photos/ --out photo_index/

--images is a folder (walked recursively for .jpg, .jpeg, .png, .webp), a text file listing one
image per line, or one image. Re-running on a grown folder encodes only the new images; an
interrupted run (even kill -9) leaves the last committed index loadable. Images that cannot be
read are counted, listed and left out (retried next time). Writes --out (see
iah_jax/serving/photo_index.py): the semantic HammingIndex, the category-aware codes, the image
paths and the proposal cache; search it with `python -m iah_jax.search`.
"""

from absl import app
from absl import flags

from iah_jax import cli
from iah_jax import console
from iah_jax import runtime

FLAGS = flags.FLAGS
flags.DEFINE_string("run", None, "Trained run directory (WORKDIR/q<q>_b<b> of iah_jax.main).")
flags.DEFINE_string("images", None, "Folder of images, a text file listing images, or one image.")
flags.DEFINE_string("out", None, "Index directory (created, or grown when it exists).")
flags.DEFINE_integer(
    "commit_every", 2048, "Commit the index after this many newly encoded images.", lower_bound=1
)
flags.DEFINE_integer(
    "workers",
    -1,
    "Processes computing region proposals; -1: every core when there are at least "
    "500 new images, else this process; 0: this process.",
)
flags.mark_flags_as_required(["run", "images", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.configure_entry_point()  # before JAX and TensorFlow start their thread pools
  from iah_jax.serving import indexing  # light: JAX is imported only after the input checks

  with console.progress_logging() as logger:
    report = indexing.index_photos(
        FLAGS.run,
        FLAGS.images,
        FLAGS.out,
        commit_every=FLAGS.commit_every,
        num_workers=None if FLAGS.workers < 0 else FLAGS.workers,
        log=logger.info,
    )
  print(report.format(), flush=True)


if __name__ == "__main__":
  cli.run(main)
