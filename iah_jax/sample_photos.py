"""Writes the embedded synthetic scenes as PNG files: a photo folder to try `iah_jax.index` on.

  python -m iah_jax.sample_photos --out photos --split train --count 4000
  python -m iah_jax.sample_photos --out queries --split test --count 20

Image i of a split is exactly example i of the dataset the default config trains and evaluates
on (`--dataset_config`: "default", or "tiny" for the tests), rendered from its own seed; the
files are named <split>_<index>.png. Nothing is downloaded.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags

from iah_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Folder to write the PNG files into (created).")
flags.DEFINE_enum("split", "train", ["train", "test"], "Which split's images.")
flags.DEFINE_integer("count", None, "How many images (default: the whole split).", lower_bound=1)
flags.DEFINE_integer("start", 0, "Index of the first image.", lower_bound=0)
flags.DEFINE_string("dataset_config", "default", "Synthetic-scenes config name.")
flags.mark_flags_as_required(["out"])


def scene_config(name: str):
  """The named SyntheticScenesConfig (UsageError naming the choices otherwise)."""
  from iah_jax.data import synthetic_scenes

  known = {config.name: config for config in synthetic_scenes.SyntheticScenes.BUILDER_CONFIGS}
  if name not in known:
    raise app.UsageError(f"--dataset_config must be one of {sorted(known)}, got {name!r}")
  return known[name]


def write_photos(out: str, config, split: str, start: int, count: int, progress: bool = True):
  """Writes images start .. start + count - 1 of `split`; returns their paths."""
  import PIL.Image
  import tqdm

  from iah_jax.data import synthetic_scenes

  os.makedirs(out, exist_ok=True)
  paths = []
  for index in tqdm.trange(start, start + count, desc="photos", unit="img", disable=not progress):
    image, _, _ = synthetic_scenes.render_scene(
        synthetic_scenes.example_rng(config.seed, split, index),
        config.image_size,
        config.num_classes,
        config.max_objects,
    )
    path = os.path.join(out, f"{split}_{index:06d}.png")
    PIL.Image.fromarray(image).save(path, format="PNG")
    paths.append(path)
  return paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = scene_config(FLAGS.dataset_config)
  size = config.num_train if FLAGS.split == "train" else config.num_test
  if FLAGS.start >= size:
    raise app.UsageError(f"--start {FLAGS.start} is past the {size} images of split {FLAGS.split}")
  count = min(FLAGS.count or size, size - FLAGS.start)
  paths = write_photos(FLAGS.out, config, FLAGS.split, FLAGS.start, count)
  print(f"wrote {len(paths)} PNG images of split {FLAGS.split!r} to {os.path.abspath(FLAGS.out)}")


if __name__ == "__main__":
  cli.run(main)
