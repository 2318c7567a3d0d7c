"""Collapse on a small many-label image list (issue 12): generates one and trains IAH on it.

  python -m benchmarks.small_many_label --workdir runs/small80 [--steps 1500] \
      [--set config.optimizer.learning_rate=0.001 ...]

The set imitates the case that collapsed (about 130 training images, 80 labels, from scratch,
configs/image_list.py): synthetic scenes (iah_jax.data.synthetic_scenes, 20 shape-colour
categories, up to 4 objects on 128 x 128) whose 80 labels are (category, image quadrant of the
object's box centre), written as PNGs with train.txt (130 images) and test.txt (60 queries) under
<workdir>/data. Labels are then content (what and where), not noise, so a model can learn them.

Then the main job (`iah_jax.evaluate.run`, what `python -m iah_jax.main` runs) trains
configs/image_list.py on it with the --set overrides (dotted config paths) and prints the
database code health (distinct codes, mean bit entropy, collapsed or not) and MAP (the run's
results.json holds the rest).
Expected time on 2 idle cores: ~20 s of data, ~0.35 CPU-s per train step (1500 steps ~9 CPU-min).
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags

NUM_TRAIN = 130
NUM_QUERIES = 60
NUM_CATEGORIES = 20
QUADRANTS = ("top_left", "top_right", "bottom_left", "bottom_right")
FLAGS = flags.FLAGS


def quadrant_labels(boxes, categories):
  """80-way multi-hot labels: category * 4 + quadrant of each object's box centre.

  Args:
    boxes: float [K, 4] (x0, y0, x1, y1) in [0, 1].
    categories: int [K].
  Returns:
    uint8 [NUM_CATEGORIES * 4].
  """
  import numpy as np

  labels = np.zeros(NUM_CATEGORIES * len(QUADRANTS), np.uint8)
  for (x0, y0, x1, y1), category in zip(boxes, categories):
    quadrant = 2 * int((y0 + y1) / 2 >= 0.5) + int((x0 + x1) / 2 >= 0.5)
    labels[int(category) * len(QUADRANTS) + quadrant] = 1
  return labels


def write_image_list(directory: str, seed: int = 0) -> dict:
  """Writes the PNGs, train.txt, test.txt and classes.txt under `directory`; returns counts."""
  import numpy as np
  from PIL import Image

  from iah_jax.data import synthetic_scenes

  os.makedirs(os.path.join(directory, "images"), exist_ok=True)
  label_counts = np.zeros(NUM_CATEGORIES * len(QUADRANTS), np.int64)
  for split, count in (("train", NUM_TRAIN), ("test", NUM_QUERIES)):
    lines = []
    for index in range(count):
      rng = synthetic_scenes.example_rng(seed, split, index)
      image, boxes, categories = synthetic_scenes.render_scene(rng, 128, NUM_CATEGORIES, 4)
      labels = quadrant_labels(boxes, categories)
      if split == "train":
        label_counts += labels
      path = f"images/{split}_{index:04d}.png"
      Image.fromarray(image).save(os.path.join(directory, path))
      lines.append(path + " " + " ".join(str(int(v)) for v in labels))
    with open(os.path.join(directory, f"{split}.txt"), "w") as file:
      file.write("\n".join(lines) + "\n")
  with open(os.path.join(directory, "classes.txt"), "w") as file:
    names = synthetic_scenes.class_names(NUM_CATEGORIES)
    file.write("\n".join(f"{name}_{where}" for name in names for where in QUADRANTS) + "\n")
  return {
      "labels_present_in_train": int((label_counts > 0).sum()),
      "mean_labels_per_train_image": float(label_counts.sum() / NUM_TRAIN),
  }


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Where the data and the run go.")
  flags.DEFINE_integer("steps", 1500, "Training steps.")
  flags.DEFINE_multi_string("set", [], "config overrides PATH=VALUE (Python literals).")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  import ast

  from iah_jax import runtime

  runtime.configure_entry_point()
  import importlib.util

  from iah_jax import evaluate
  from iah_jax.comparison import search

  data_dir = os.path.join(FLAGS.workdir, "data")
  counts = write_image_list(data_dir)
  spec = importlib.util.spec_from_file_location(
      "image_list_config",
      os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "image_list.py"),
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.dataset.options.data_path = data_dir
  config.dataset.options.class_names_file = "classes.txt"
  config.dataset.options.proposal_method = "generic"  # cheap; the boxes are not the question
  config.dataset.data_dir = os.path.join(FLAGS.workdir, "tfds")
  config.num_train_steps = FLAGS.steps
  overrides = {}
  for item in FLAGS.set:
    path, _, value = item.partition("=")
    try:
      overrides[path.removeprefix("config.")] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[path.removeprefix("config.")] = value
  config = search.apply_overrides(config, overrides)
  name = "_".join(f"{k.rsplit('.', 1)[-1]}{v}" for k, v in overrides.items()) or "defaults"
  run_dir = os.path.join(FLAGS.workdir, f"run_{name}_{FLAGS.steps}")
  results = evaluate.run(config, run_dir)
  key = next(iter(results["code_health"]))
  health = results["code_health"][key]["semantic"]
  print(json.dumps({"data": counts, "overrides": overrides, "steps": FLAGS.steps}))
  print(
      f"semantic codes: {health['distinct_codes']} distinct of {health.get('num_codes', '?')}, "
      f"mean bit entropy {health['mean_bit_entropy']:.3f}, collapsed {health['collapsed']}; "
      f"MAP {results['semantic'][next(iter(results['semantic']))]['map']:.4f}"
  )


if __name__ == "__main__":
  define_flags()
  app.run(main)
