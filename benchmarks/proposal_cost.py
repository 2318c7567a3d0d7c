"""Cost per image (one core) of the two proposal methods, and their recall on the embedded scenes.

    python benchmarks/proposal_cost.py --data_path ../shared/data/miml --num_images 50

For each method ("selective_search", "generic") it decodes ``--num_images`` photos of the MIML
directory (evenly spaced over labels.csv), times the proposal step alone on one core
(OpenCV limited to one thread; decoding is timed separately), and prints CPU seconds per image
(the per-core cost, robust to other processes sharing the cores; wall time is printed too),
images per second and proposals per second per core (N proposals per image). With
``--recall_scenes`` > 0 it also renders that many synthetic scenes (the embedded dataset's
renderer, default settings 64 x 64) and prints the recall at IoU 0.5 of their true object boxes.
Parallel preparation (iah_jax.data.prepare) scales these per-core figures by the number of cores.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from iah_jax.data import images  # pylint: disable=g-import-not-at-top,wrong-import-position
from iah_jax.data import prepare  # pylint: disable=g-import-not-at-top,wrong-import-position

METHODS = ("selective_search", "generic")


def _miml_paths(data_path: str, num_images: int) -> list[str]:
  with open(os.path.join(data_path, "labels.csv"), newline="") as f:
    names = [row["image"] for row in csv.DictReader(f)]
  # Evenly spaced over labels.csv: the file is grouped by scene and by source size.
  picks = np.unique(np.linspace(0, len(names) - 1, num_images).round().astype(int))
  return [os.path.join(data_path, "images", names[i]) for i in picks]


def _settings(method: str, args) -> prepare.ProposalSettings:
  return prepare.ProposalSettings(
      method=method,
      num_proposals=args.num_proposals,
      search_max_side=args.search_max_side,
      mode=args.mode,
  )


def time_method(settings: prepare.ProposalSettings, photos: list[np.ndarray]):
  """-> (wall seconds per image, CPU seconds per image) lists.

  CPU time is the per-core cost even when other processes share the cores (wall time then grows).
  """
  settings.compute(photos[0])  # warm-up: imports, OpenCV initialisation
  wall, cpu = [], []
  for photo in photos:
    start, start_cpu = time.perf_counter(), time.process_time()
    settings.compute(photo)
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return wall, cpu


def scene_recall(settings: prepare.ProposalSettings, num_scenes: int) -> float:
  from iah_jax.data import proposals  # pylint: disable=g-import-not-at-top
  from iah_jax.data import synthetic_scenes  # pylint: disable=g-import-not-at-top

  config = synthetic_scenes.SyntheticScenesConfig(name="recall")
  found, truth = [], []
  for index in range(num_scenes):
    rng = synthetic_scenes.example_rng(config.seed, "test", index)
    image, boxes, _ = synthetic_scenes.render_scene(
        rng, config.image_size, config.num_classes, config.max_objects
    )
    found.append(settings.compute(image))
    truth.append(boxes)
  return proposals.batch_proposal_recall(found, truth, iou_threshold=0.5)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
      "--data_path",
      default=os.path.join(
          os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
          "..",
          "shared",
          "data",
          "miml",
      ),
  )
  parser.add_argument("--num_images", type=int, default=50)
  parser.add_argument("--num_proposals", type=int, default=100)
  parser.add_argument("--search_max_side", type=int, default=256)
  parser.add_argument("--mode", default="fast", choices=("fast", "quality", "single"))
  parser.add_argument("--recall_scenes", type=int, default=200)
  parser.add_argument("--methods", default=",".join(METHODS))
  args = parser.parse_args(argv)

  import cv2  # pylint: disable=g-import-not-at-top

  cv2.setNumThreads(1)  # per-core figures
  paths = _miml_paths(args.data_path, args.num_images)
  start = time.perf_counter()
  photos = [images.read_image(p) for p in paths]
  decode = (time.perf_counter() - start) / len(photos)
  sizes = [p.shape[:2] for p in photos]
  print(
      f"{len(photos)} MIML photos from {args.data_path} (median size "
      f"{int(statistics.median(h for h, _ in sizes))}x{int(statistics.median(w for _, w in sizes))},"
      f" largest {max(max(s) for s in sizes)} px); decoding {decode * 1e3:.1f} ms/image"
  )
  print(
      f"{'method':<18}{'CPU s/img':>10}{'p90':>7}{'wall s/img':>11}{'images/s':>10}"
      f"{'proposals/s':>13}{'recall@0.5':>12}   (per core from CPU time, N={args.num_proposals})"
  )
  for method in args.methods.split(","):
    settings = _settings(method, args)
    wall, cpu = time_method(settings, photos)
    mean = statistics.fmean(cpu)
    p90 = float(np.percentile(cpu, 90))
    recall = scene_recall(settings, args.recall_scenes) if args.recall_scenes else float("nan")
    print(
        f"{method:<18}{mean:>10.3f}{p90:>7.3f}{statistics.fmean(wall):>11.3f}{1 / mean:>10.1f}"
        f"{args.num_proposals / mean:>13.0f}{recall:>12.3f}   ({settings.key()})"
    )


if __name__ == "__main__":
  main()
