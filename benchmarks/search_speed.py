"""Hamming search speed: JAX backend vs faiss IndexBinaryFlat, same process, same data.

    python benchmarks/search_speed.py                  # 1M x 64-bit database, 1000 queries, top-100
    python benchmarks/search_speed.py --cpu_devices 1  # JAX on one CPU device (one core)
    python benchmarks/search_speed.py --num_db 100000  # smaller

Prints both times (best of --repeats, after one warm-up search that includes compilation), the
ratio faiss_time / jax_time (> 1 means JAX is faster), checks that distances and ids are
identical, and reports the memory the JAX index holds (packed codes must be 8 MB for 1M x 64 bits).

faiss runs one OpenMP thread per core. XLA:CPU runs this search on one core per device, so by
default the script exposes one CPU device per core (--cpu_devices, i.e.
XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX starts) and the JAX backend
shards the database over them, as it would over GPUs: both libraries then use every core.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def best_time(fn, repeats: int):
  """(best wall seconds, best process CPU seconds over all threads, last output)."""
  walls, cpus = [], []
  out = None
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    out = fn()
    walls.append(time.perf_counter() - start)
    cpus.append(time.process_time() - start_cpu)
  return min(walls), min(cpus), out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_db", type=int, default=1_000_000)
  parser.add_argument("--num_queries", type=int, default=1000)
  parser.add_argument("--bits", type=int, default=64)
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
      "--cpu_devices",
      type=int,
      default=os.cpu_count(),
      help="CPU devices for JAX (ignored if XLA_FLAGS already sets a count)",
  )
  args = parser.parse_args()

  if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
        f"device_count={args.cpu_devices}"
    ).strip()
  import faiss
  import jax  # imported only now: XLA_FLAGS must be set first

  from iah_jax.retrieval import HammingIndex

  rng = np.random.default_rng(args.seed)
  db_codes = rng.integers(0, 2, (args.num_db, args.bits), dtype=np.uint8)
  query_codes = rng.integers(0, 2, (args.num_queries, args.bits), dtype=np.uint8)

  start = time.perf_counter()
  jax_index = HammingIndex(db_codes, backend="jax")
  jax_build = time.perf_counter() - start
  start = time.perf_counter()
  faiss_index = HammingIndex(db_codes, backend="faiss")
  faiss_build = time.perf_counter() - start
  del db_codes  # neither index keeps an unpacked copy

  start = time.perf_counter()
  jax_index.search(query_codes, args.k)  # compiles
  warmup = time.perf_counter() - start
  jax_time, jax_cpu, (jax_dist, jax_ids) = best_time(
      lambda: jax_index.search(query_codes, args.k), args.repeats
  )
  faiss_threads = faiss.omp_get_max_threads()
  faiss_time, faiss_cpu, (faiss_dist, faiss_ids) = best_time(
      lambda: faiss_index.search(query_codes, args.k), args.repeats
  )
  # On a shared machine OpenMP threads spin while waiting for a core; one thread shows faiss's
  # own cost without that.
  faiss.omp_set_num_threads(1)
  faiss1_time, faiss1_cpu, _ = best_time(
      lambda: faiss_index.search(query_codes, args.k), args.repeats
  )
  faiss.omp_set_num_threads(faiss_threads)

  same_dist = np.array_equal(jax_dist, faiss_dist)
  same_ids = np.array_equal(jax_ids, faiss_ids)
  memory = jax_index.memory_bytes
  expected_codes = args.num_db * args.bits // 8
  print(
      f"devices: {jax.device_count()} x {jax.devices()[0].platform}, "
      f"faiss threads: {faiss_threads}, cpu cores: {os.cpu_count()}, "
      f"load average: {os.getloadavg()[0]:.1f}"
  )
  print(f"database {args.num_db} x {args.bits} bits, {args.num_queries} queries, top-{args.k}")
  print(
      f"build: jax {jax_build:.3f} s, faiss {faiss_build:.3f} s; jax first search (compile) "
      f"{warmup:.3f} s"
  )
  print(
      f"jax   search: {jax_time:.3f} s wall ({1e3 * jax_time / args.num_queries:.3f} ms/query), "
      f"{jax_cpu:.3f} s CPU"
  )
  print(
      f"faiss search: {faiss_time:.3f} s wall ({1e3 * faiss_time / args.num_queries:.3f} "
      f"ms/query), {faiss_cpu:.3f} s CPU  [{faiss_threads} threads]"
  )
  print(f"faiss search: {faiss1_time:.3f} s wall, {faiss1_cpu:.3f} s CPU  [1 thread]")
  print(
      f"ratio faiss_time / jax_time = {faiss_time / jax_time:.2f} (wall, default threads); "
      f"{faiss1_time / jax_time:.2f} vs 1-thread faiss; CPU-time ratio "
      f"{faiss1_cpu / jax_cpu:.2f} (1-thread faiss CPU / jax CPU)"
  )
  print(f"identical distances: {same_dist}, identical ids: {same_ids}")
  print(
      f"jax index memory: packed codes {memory['codes'] / 1e6:.3f} MB (unpadded "
      f"{expected_codes / 1e6:.3f} MB), ids {memory['ids'] / 1e6:.3f} MB"
  )
  assert same_dist, "JAX and faiss distances differ"
  assert same_ids, "JAX and faiss ids differ"
  # Padding is < chunk * group items per device, so the packed codes stay within 1% of bits/8 each.
  assert memory["codes"] <= expected_codes * 1.01 + 65536, memory


if __name__ == "__main__":
  main()
