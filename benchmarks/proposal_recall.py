"""Embedded synthetic scenes: preparation time, label statistics, proposal recall and speed.

    python benchmarks/proposal_recall.py                  # default config, fresh tmp data_dir
    python benchmarks/proposal_recall.py --data_dir DIR   # reuse / prepare DIR

Prints:
- the time to prepare the default config (4000 train + 500 test images with 100 proposals each)
  when the data_dir does not hold it yet (wall and CPU seconds of this process);
- label statistics and the MAP of a random ranking (test split as queries, train split as
  database, relevant = sharing >= 1 label): the exact expectation over random permutations,
  E[AP] = (R-1)/(n-1) + H_n (n-R) / (n (n-1)) for R relevant among n, averaged over queries,
  and the MAP reached by codes that are the label vectors themselves (Hamming ranking);
- recall of the stored `generic_proposals` against the true object boxes at IoU 0.5 and 0.7,
  keeping the best N = 10, 50, 100 proposals, on both splits;
- generator speed in images/s per core (CPU time of this single-threaded process) on 64x64
  scenes and on the same scenes upscaled to 384x256 (bilinear), as a stand-in for photos.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

# Runnable as a plain script from the repository root or anywhere else.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position


def random_ranking_map(query_labels: np.ndarray, db_labels: np.ndarray) -> float:
  """Expected MAP of a uniformly random ranking; queries without relevant items are skipped."""
  n = db_labels.shape[0]
  relevant = (query_labels.astype(np.int64) @ db_labels.T.astype(np.int64) > 0).sum(1)
  relevant = relevant[relevant > 0]
  harmonic = np.sum(1.0 / np.arange(1, n + 1))
  expected_ap = (relevant - 1) / (n - 1) + harmonic * (n - relevant) / (n * (n - 1))
  return float(expected_ap.mean())


def shuffled_map(query_labels, db_labels, rng) -> float:
  """MAP of one random permutation of the database (a Monte Carlo check of the formula)."""
  order = rng.permutation(db_labels.shape[0])
  relevant = (query_labels.astype(np.int64) @ db_labels[order].T.astype(np.int64)) > 0
  hits = np.cumsum(relevant, 1)
  precision = hits / np.arange(1, relevant.shape[1] + 1)
  counts = relevant.sum(1)
  ap = (precision * relevant).sum(1)[counts > 0] / counts[counts > 0]
  return float(ap.mean())


def label_code_map(query_labels, db_labels) -> float:
  """MAP when the codes are the label vectors themselves, ranked by Hamming distance (ties by
  database index): what a hash that only copies the labels would reach."""
  query = query_labels.astype(np.int64)
  db = db_labels.astype(np.int64)
  # Hamming distance between 0/1 vectors: |a| + |b| - 2 a.b.
  distance = query.sum(1)[:, None] + db.sum(1)[None, :] - 2 * query @ db.T
  order = np.argsort(distance, axis=1, kind="stable")
  relevant = ((query @ db.T) > 0)[np.arange(len(query))[:, None], order]
  precision = np.cumsum(relevant, 1) / np.arange(1, relevant.shape[1] + 1)
  counts = relevant.sum(1)
  ap = (precision * relevant).sum(1)[counts > 0] / counts[counts > 0]
  return float(ap.mean())


def images_per_second(images, proposals_lib) -> tuple[float, float]:
  proposals_lib.generic_proposals(images[0])  # warm-up: builds the cached window grid
  cpu, wall = time.process_time(), time.perf_counter()
  for image in images:
    proposals_lib.generic_proposals(image)
  cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
  return len(images) / cpu, len(images) / wall


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", default=None, help="default: a fresh temporary directory")
  parser.add_argument("--speed_images", type=int, default=200)
  args = parser.parse_args(argv)

  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from iah_jax.data import proposals  # pylint: disable=g-import-not-at-top
  from iah_jax.data import synthetic_scenes  # pylint: disable=g-import-not-at-top

  data_dir = args.data_dir or tempfile.mkdtemp(prefix="iah_synthetic_")
  builder = synthetic_scenes.SyntheticScenes(config="default", data_dir=data_dir)
  was_prepared = builder.is_prepared()
  cpu, wall = time.process_time(), time.perf_counter()
  builder = synthetic_scenes.load_builder(data_dir, "default")
  cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
  config = builder.builder_config
  print(f"data_dir: {builder.data_dir}")
  if was_prepared:
    print("prepare: already prepared (not timed)")
  else:
    print(
        f"prepare default config ({config.num_train} + {config.num_test} images, "
        f"{config.num_proposals} proposals each): {wall:.1f} s wall, {cpu:.1f} s CPU "
        "(includes TensorFlow start-up)"
    )

  splits = {
      split: list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
      for split in ("train", "test")
  }
  labels = {split: np.stack([e["labels"] for e in examples]) for split, examples in splits.items()}
  print("\nlabels")
  for split, examples in splits.items():
    objects = np.mean([len(e["object_labels"]) for e in examples])
    distinct = labels[split].sum(1)
    print(
        f"  {split}: {len(examples)} images, {objects:.2f} objects/image, "
        f"{distinct.mean():.2f} distinct labels/image (min {distinct.min()}, "
        f"max {distinct.max()}), per-category frequency "
        f"{np.round(labels[split].mean(0), 3).tolist()}"
    )
  expected = random_ranking_map(labels["test"], labels["train"])
  sampled = np.mean(
      [shuffled_map(labels["test"], labels["train"], np.random.default_rng(s)) for s in range(3)]
  )
  print(
      f"  random-ranking MAP (test queries vs train database): {expected:.4f} expected, "
      f"{sampled:.4f} over 3 random permutations"
  )
  print(
      f"  MAP of the label vectors themselves as codes (Hamming ranking): "
      f"{label_code_map(labels['test'], labels['train']):.4f}"
  )

  print("\nproposal recall of the stored generic_proposals against the true boxes")
  print("  split      N   IoU>=0.5  IoU>=0.7")
  for split, examples in splits.items():
    truth = [e["object_boxes"] for e in examples]
    for n in (10, 50, 100):
      kept = [e["proposals"][:n] for e in examples]
      print(
          f"  {split:6s} {n:5d}   {proposals.batch_proposal_recall(kept, truth, 0.5):8.4f}"
          f"  {proposals.batch_proposal_recall(kept, truth, 0.7):8.4f}"
      )

  scenes = [e["image"] for e in splits["test"][: args.speed_images]]
  photos = [
      np.asarray(Image.fromarray(image).resize((384, 256), Image.BILINEAR)) for image in scenes
  ]
  print("\ngeneric_proposals speed (N=100, one thread)")
  for name, images in (("64x64", scenes), ("384x256", photos)):
    per_cpu_second, per_wall_second = images_per_second(images, proposals)
    print(
        f"  {name:8s} {per_cpu_second:7.1f} images/s per core (CPU time), "
        f"{1e3 / per_cpu_second:6.2f} ms/image; {per_wall_second:7.1f} images/s wall"
    )


if __name__ == "__main__":
  main()
