"""Evaluation speed: every metric for 2000 queries against 20k database items at 48 bits.

    python benchmarks/eval_speed.py
    python benchmarks/eval_speed.py --num_queries 10000 --num_db 1000000   # memory stays bounded

Times `retrieval_metrics` (MAP, wMAP, NDCG@100/1000, ACG@100/1000, MAP@5000, wMAP@5000,
precision/recall within radius 2) for each tie mode and for a weighted Hamming ranking (random
per-query bit weights, as QaDWH), plus the PR curve and the category-aware per-category MAP (20
categories of 4 bits, as IAH Fig. 8 on VOC). Target: under 5 s for the default tie mode on CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from iah_jax import metrics  # noqa: E402


def timed(fn):
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_queries", type=int, default=2000)
  parser.add_argument("--num_db", type=int, default=20000)
  parser.add_argument("--bits", type=int, default=48)
  parser.add_argument("--num_labels", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  rng = np.random.default_rng(args.seed)
  nq, nd, c = args.num_queries, args.num_db, args.num_labels
  # Correlate codes with labels a little so the metrics are not all at chance level.
  projection = rng.normal(size=(c, args.bits))
  query_labels = (rng.random((nq, c)) < 0.12).astype(np.uint8)
  db_labels = (rng.random((nd, c)) < 0.12).astype(np.uint8)
  query_codes = (query_labels @ projection + rng.normal(size=(nq, args.bits)) > 0).astype(np.uint8)
  db_codes = (db_labels @ projection + rng.normal(size=(nd, args.bits)) > 0).astype(np.uint8)

  print(f"{nq} queries x {nd} database items, {args.bits} bits, {c} labels")
  results = {}
  for ties in ("stable", "expected", "random"):
    seconds, results[ties] = timed(
        lambda: metrics.retrieval_metrics(
            query_codes, db_codes, query_labels, db_labels, ks=(100, 1000), ties=ties, map_at=5000
        )
    )
    m = results[ties]
    print(
        f"retrieval_metrics ties={ties:8s}: {seconds:6.2f} s   map {m['map']:.4f}  "
        f"wmap {m['wmap']:.4f}  ndcg@1000 {m['ndcg@1000']:.4f}  acg@1000 {m['acg@1000']:.4f}  "
        f"map@5000 {m['map@5000']:.4f}  p@r2 {m['precision@r2']:.4f}"
    )
    if ties == "stable":
      stable_seconds = seconds

  # Own generator, so the data of the other timings stays as it was.
  query_weights = np.random.default_rng(args.seed + 1).random((nq, args.bits)).astype(np.float32)
  seconds, weighted = timed(
      lambda: metrics.retrieval_metrics(
          query_codes,
          db_codes,
          query_labels,
          db_labels,
          ks=(100, 1000),
          map_at=5000,
          query_weights=query_weights,
      )
  )
  print(
      f"retrieval_metrics query_weights (QaDWH ranking): {seconds:.2f} s   map {weighted['map']:.4f}"
  )

  seconds, _ = timed(
      lambda: metrics.hamming_pr_curve(query_codes, db_codes, query_labels, db_labels)
  )
  print(f"hamming_pr_curve: {seconds:.2f} s")

  pieces = 4
  query_pieces = rng.integers(0, 2, (nq, c, pieces))
  db_pieces = rng.integers(0, 2, (nd, c, pieces))
  seconds, cat = timed(
      lambda: metrics.category_aware_metrics(query_pieces, db_pieces, query_labels, db_labels)
  )
  print(f"category_aware_metrics ({c} x {pieces} bits): {seconds:.2f} s   map {cat['map']:.4f}")
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"peak resident memory: {peak_mb:.0f} MB")
  print(
      f"target: all metrics (ties=stable) under 5 s -> {stable_seconds:.2f} s "
      f"{'OK' if stable_seconds < 5 else 'MISSED'}"
  )


if __name__ == "__main__":
  main()
