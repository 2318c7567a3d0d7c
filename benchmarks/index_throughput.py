"""Indexing speed of a trained run: encoding throughput (proposals excluded), proposal cost per
image, and the wall time to index a folder of N photos with `iah_jax.index`'s code.

    python benchmarks/index_throughput.py --run runs/default/q16_b4            # 10,000 photos
    python benchmarks/index_throughput.py --run runs/default/q16_b4 --num_images 2000

The photos are the embedded synthetic scenes (64 x 64 PNG, `iah_jax.sample_photos`), written
to --work_dir first (kept, so a second call reuses them). Prints, with the load average:

1. proposal cost: CPU ms per image of the run's proposal method, one process (--proposal_sample
   images);
2. encoding throughput, proposals excluded: the index's encode loop (read PNG, the evaluation's
   resize in tf.data, the jit encode step in batches of eval.batch_size) over --num_images
   images whose proposals are already cached, after a warm-up batch (compilation excluded);
   and the model step alone on prepared batches, to say what limits it (target: >= 200
   images/s on the 2-core CPU for the default small CNN);
3. the whole `index_photos` call on a fresh index of --num_images photos (proposals in worker
   processes, then encoding), run loaded once beforehand (its load time printed too).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_average() -> str:
  with open("/proc/loadavg") as file:
    return " ".join(file.read().split()[:3])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--run", default="runs/default/q16_b4")
  parser.add_argument("--num_images", type=int, default=10_000)
  parser.add_argument("--proposal_sample", type=int, default=300)
  parser.add_argument("--work_dir", default="/tmp/iah_jax_index_throughput")
  args = parser.parse_args()

  from iah_jax import sample_photos
  from iah_jax.data import prepare
  from iah_jax.data import synthetic_scenes
  from iah_jax.serving import encoder as encoder_lib
  from iah_jax.serving import image_files
  from iah_jax.serving import indexing
  from iah_jax.serving import photo_index
  from iah_jax.serving import preprocess

  print(f"load average before: {load_average()}")
  photos = os.path.join(args.work_dir, f"photos_{args.num_images}")
  if not os.path.isdir(photos) or len(os.listdir(photos)) != args.num_images:
    scenes = synthetic_scenes.SyntheticScenes.builder_configs["default"]
    sample_photos.write_photos(photos, scenes, "train", 0, args.num_images)
  paths = image_files.list_images(photos)

  started = time.perf_counter()
  encoder = encoder_lib.load_model(args.run)
  print(
      f"run {args.run}: {encoder.method}, q={encoder.semantic_bits}, restored in "
      f"{time.perf_counter() - started:.1f} s; batch {encoder.batch_size}"
  )

  # 1. Proposal cost, one process.
  settings = encoder.preparation.proposal_settings
  sample = [preprocess.read_photo(path) for path in paths[: args.proposal_sample]]
  start_cpu = time.process_time()
  for image in sample:
    settings.compute(image)
  proposal_ms = 1000 * (time.process_time() - start_cpu) / len(sample)
  print(
      f"proposals ({settings.method}, N={settings.num_proposals}): {proposal_ms:.2f} CPU ms "
      f"per image (one process, {len(sample)} images)"
  )

  # 2. Encoding throughput with the proposals cached (the index's own loop), after warm-up.
  index_dir = os.path.join(args.work_dir, "index")
  shutil.rmtree(index_dir, ignore_errors=True)
  cache_dir = os.path.join(index_dir, photo_index.PROPOSAL_CACHE)
  prepare.prepare_proposals(
      [(path, path) for path in paths], cache_dir, settings, progress=True, verbose=False
  )
  writer = photo_index.IndexWriter(
      index_dir, photo_index.run_info(encoder), dataclasses.asdict(settings)
  )
  report = indexing.IndexReport(index_dir, len(paths), 0)
  warm = paths[: encoder.batch_size]
  indexing.encode_and_commit(
      encoder, writer, warm, cache_dir, settings, {}, 10**9, False, print, report
  )
  writer = photo_index.IndexWriter(
      index_dir, photo_index.run_info(encoder), dataclasses.asdict(settings)
  )
  start, start_cpu = time.perf_counter(), time.process_time()
  indexing.encode_and_commit(
      encoder, writer, paths, cache_dir, settings, {}, 10**9, True, print, report
  )
  seconds = time.perf_counter() - start
  print(
      f"encoding, proposals excluded: {len(paths) / seconds:.0f} images/s ({len(paths)} "
      f"images in {seconds:.1f} s wall, {time.process_time() - start_cpu:.1f} s CPU over all "
      f"threads); load average {load_average()}"
  )

  # The model step alone on prepared inputs: the ceiling of the loop above.
  batch = encoder.model_inputs(sample[: encoder.batch_size])
  boxes = np.stack([settings.compute(image) for image in sample[: encoder.batch_size]])
  encoder.encode_inputs(batch, boxes)
  rounds = max(1, 2000 // encoder.batch_size)
  start = time.perf_counter()
  for _ in range(rounds):
    encoder.encode_inputs(batch, boxes)
  model_rate = rounds * encoder.batch_size / (time.perf_counter() - start)
  start = time.perf_counter()
  encoder.model_inputs(sample[: encoder.batch_size])
  prep_ms = 1000 * (time.perf_counter() - start) / encoder.batch_size
  print(
      f"model step alone: {model_rate:.0f} images/s; eager resize of single photos: "
      f"{prep_ms:.2f} ms per image (queries; indexing uses tf.data)"
  )

  # 3. The whole index_photos call on a fresh index.
  shutil.rmtree(index_dir, ignore_errors=True)
  start = time.perf_counter()
  report = indexing.index_photos(args.run, photos, index_dir, encoder=encoder, log=print)
  total = time.perf_counter() - start
  print(report.format())
  print(
      f"indexing {report.num_images} photos: {total:.1f} s wall (run restored beforehand); "
      f"load average after: {load_average()}"
  )


if __name__ == "__main__":
  main()
