"""Query latency against a large photo index: load, search alone, whole query.

    python benchmarks/query_latency.py --run runs/default/q16_b4                # 100,000 codes
    python benchmarks/query_latency.py --run runs/default/q16_b4 --backend faiss

Builds (once, in --work_dir) an index of --num_items entries holding random codes of the run's
shape (semantic q bits, c x b category bits, label probabilities drawn from a Dirichlet), as
`iah_jax.index` writes it; exact search time does not depend on the code values. Then, as
`iah_jax.search` does:

- load: the run restored (batch of 1 query) and the index read (`PhotoIndex.load`), the
  category tables of IAH section IV built;
- search alone: `HammingIndex.search` of one query code, top --k (median of --repeats), and the
  category-table search of one query;
- whole query: `Searcher.search` = read and decode the query PNG, proposals with the run's
  method, the jit encode step, semantic search and the per-category search (median over
  --repeats different query images; the first, compiling call excluded). Writing the page
  (thumbnails, saliency maps, HTML) is timed separately.
Targets: whole query < 50 ms after load, search alone < 5 ms, at 100k codes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_average() -> str:
  with open("/proc/loadavg") as file:
    return " ".join(file.read().split()[:3])


def median_ms(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))


def build_index(directory: str, encoder, num_items: int, seed: int = 0) -> None:
  """An index of random codes shaped like `encoder`'s outputs (paths point at fake files)."""
  import dataclasses

  from iah_jax.serving import photo_index

  rng = np.random.default_rng(seed)
  writer = photo_index.IndexWriter(
      directory,
      photo_index.run_info(encoder),
      dataclasses.asdict(encoder.preparation.proposal_settings),
  )
  outputs = {"semantic_codes": rng.integers(0, 2, (num_items, encoder.semantic_bits))}
  if "category_codes" in encoder.outputs:
    outputs["category_codes"] = rng.integers(
        0, 2, (num_items, encoder.num_classes, encoder.bits_per_category)
    )
  if "label_probs" in encoder.outputs:
    outputs["label_probs"] = rng.dirichlet(np.full(encoder.num_classes, 0.3), num_items)
  writer.add([f"/nonexistent/photo_{i:07d}.png" for i in range(num_items)], outputs)
  writer.commit([])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--run", default="runs/default/q16_b4")
  parser.add_argument("--num_items", type=int, default=100_000)
  parser.add_argument("--k", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=50)
  parser.add_argument("--backend", default="jax", choices=["jax", "faiss"])
  parser.add_argument("--work_dir", default="/tmp/iah_jax_query_latency")
  args = parser.parse_args()

  from iah_jax import sample_photos
  from iah_jax.data import synthetic_scenes
  from iah_jax.serving import encoder as encoder_lib
  from iah_jax.serving import page
  from iah_jax.serving import photo_index
  from iah_jax.serving import querying

  print(f"load average before: {load_average()}")
  start = time.perf_counter()
  encoder = encoder_lib.load_model(args.run, batch_size=1)
  restore_s = time.perf_counter() - start
  index_dir = os.path.join(args.work_dir, f"index_{args.num_items}_q{encoder.semantic_bits}")
  if not os.path.isdir(index_dir) or photo_index.read_header(index_dir) is None:
    build_index(index_dir, encoder, args.num_items)
  queries = os.path.join(args.work_dir, "queries")
  scenes = synthetic_scenes.SyntheticScenes.builder_configs["default"]
  query_paths = sample_photos.write_photos(queries, scenes, "test", 0, args.repeats + 1, False)

  start = time.perf_counter()
  index = photo_index.PhotoIndex.load(index_dir, backend=args.backend)
  index_s = time.perf_counter() - start
  searcher = querying.Searcher(index, encoder, args.backend)
  start = time.perf_counter()
  tables = searcher.category_tables(querying.DEFAULT_THRESHOLD)
  tables_s = time.perf_counter() - start
  print(
      f"load: run {restore_s:.1f} s, index of {index.num_images} codes "
      f"({index.semantic.bits} bits) {1000 * index_s:.0f} ms, category tables "
      f"{1000 * tables_s:.0f} ms; backend {args.backend}"
  )

  first = searcher.search(query_paths[0], k=args.k, by_category=True)  # compiles
  outputs = first.query_outputs
  codes = outputs["semantic_codes"]
  index.semantic.search(codes, args.k)
  search_ms = median_ms(lambda: index.semantic.search(codes, args.k), args.repeats)
  print(f"search alone (top {args.k} of {index.num_images}): {search_ms:.2f} ms median")
  if tables is not None:
    tables.search(outputs["category_codes"], outputs["label_probs"], args.k)
    group_ms = median_ms(
        lambda: tables.search(outputs["category_codes"], outputs["label_probs"], args.k),
        args.repeats,
    )
    print(f"category-table search ({len(first.groups)} groups): {group_ms:.2f} ms median")

  timings = []
  for path in query_paths[1:]:
    start = time.perf_counter()
    result = searcher.search(path, k=args.k, by_category=True)
    timings.append((1000 * (time.perf_counter() - start), result.timing_ms))
  whole = float(np.median([t for t, _ in timings]))
  parts = {name: float(np.median([parts[name] for _, parts in timings])) for name in timings[0][1]}
  print(
      f"whole query (read, proposals, encode, search, groups): {whole:.1f} ms median over "
      f"{len(timings)} queries; of which encode {parts['encode_query']:.1f} ms, search "
      f"{parts['search']:.2f} ms, category search {parts['category_search']:.2f} ms"
  )
  start = time.perf_counter()
  visuals = page.Visuals(result, searcher)
  html = page.render_html(result, visuals)
  print(
      f"page (thumbnails + saliency of {len(visuals.items) - 1} results, HTML of "
      f"{len(html) // 1024} KB): {1000 * (time.perf_counter() - start):.0f} ms "
      "(results here are fake files: placeholders)"
  )
  print(f"load average after: {load_average()}")


if __name__ == "__main__":
  main()
