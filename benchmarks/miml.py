"""MIML benchmark: IAH semantic hashing vs random-hyperplane LSH on the same trained backbone.

  python -m benchmarks.miml --bits 32 --workdir runs/miml_bench
  python -m benchmarks.miml --data_path ../shared/data/miml --bits 16,32,48,64 \
      --workdir runs/miml_bench --data_dir ~/tensorflow_datasets

Protocol (../shared/data/miml/README.md): for each bit length q, IAH (configs/miml.py, b = q / 4
bits per category) is trained on the 1500 `database` images only — 90% train, the last 10% a
validation carve used to keep the best checkpoint (validation images as queries against the 90%);
the 500 `query` images are never used to select anything. The restored best checkpoint then
encodes the 500 queries and the 1500 database images, ranked by Hamming distance (ties by
database index); relevance = at least one shared label, graded by the number of shared labels.

Baseline on the same trained network: the backbone's feature map of each image, global-average-
pooled, centred on the database mean, projected on q random Gaussian hyperplanes (seed fixed),
bit = 1 where the projection is positive (random-hyperplane LSH, Charikar 2002). Only the
database split is used to centre.

Prints MAP / wMAP / NDCG@100 / ACG@100 per bit length and method, with wall time, process CPU
time (user + system, all threads: the machine is shared, so CPU time is the figure that compares
across loads) and the load average, and writes them to <workdir>/miml_results.json. Runs resume
from <workdir>/q<q>_b<b> (delete it to retrain). Any config field can be overridden, e.g.
--config.num_train_steps=500 (the dataset and bit-length fields are set from the flags).

--seeds 0,1,2 (default: the config's seed only, the output as before) trains IAH once per seed
with config.seed = that seed, in <workdir>/q<q>_b<b> for the config's seed and
<workdir>/q<q>_b<b>_s<seed> for the others (a directory whose run_manifest.json records another
seed is not reused), hashes LSH with hyperplane seed lsh_seed + (seed - config.seed), keeps every
seed's figures in miml_results.json's "seed_runs" and prints mean ± std over the seeds (sample
std, ddof = 1; "summary"). Each run's database codes are checked for collapse
(iah_jax.retrieval.code_health: a WARNING naming the run, "code_health" in the results, COLLAPSED
in the table).

The first run prepares the TFDS files under --data_dir (selective search on 2000 images, ~0.13
CPU-s each, a few minutes on 2 cores; later runs reuse them).
"""

from __future__ import annotations

import json
import os
import resource
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from iah_jax import cli
from iah_jax import config as config_lib
from iah_jax import console
from iah_jax import evaluate
from iah_jax import metrics
from iah_jax import runtime
from iah_jax import train
from iah_jax.comparison import cells as cell_lib
from iah_jax.retrieval import code_health

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the benchmark's flags in absl's global FLAGS, when run as a script only (the tests
  import this module beside other commands that define --config)."""
  config_flags.DEFINE_config_file(
      "config",
      os.path.join(REPO, "configs", "miml.py"),
      "IAH config (configs/miml.py).",
      lock_config=True,
  )
  flags.DEFINE_string(
      "data_path",
      os.path.join(REPO, "..", "shared", "data", "miml"),
      "MIML directory (labels.csv, split.csv, images/).",
  )
  flags.DEFINE_list("bits", ["16", "32", "48", "64"], "Semantic bit lengths q (b = q / 4).")
  flags.DEFINE_string(
      "workdir",
      os.path.join(REPO, "runs", "miml_bench"),
      "Checkpoints, logs and miml_results.json.",
  )
  flags.DEFINE_string(
      "data_dir",
      None,
      "TFDS data_dir for the prepared MIML files "
      "(default: the config's, ~/tensorflow_datasets).",
  )
  flags.DEFINE_integer("lsh_seed", 0, "Seed of the random hyperplanes.")
  flags.DEFINE_list("seeds", None, "Training seeds (default: the config's seed).")


METRIC_NAMES = ("map", "wmap", "ndcg@100", "acg@100")


def cpu_seconds() -> float:
  """User + system CPU seconds of this process (all its threads) and its finished children."""
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def lsh_codes(
    database_features: np.ndarray, query_features: np.ndarray, bits: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Random-hyperplane LSH: ([n_db, C], [n_q, C]) -> {0,1} uint8 codes ([n_db, bits], [n_q, bits]).

  Centred on the database mean (the queries are not looked at), hyperplane normals ~ N(0, I).
  """
  mean = database_features.mean(axis=0, keepdims=True)
  normals = np.random.default_rng(seed).standard_normal((database_features.shape[1], bits))
  return (
      ((database_features - mean) @ normals > 0).astype(np.uint8),
      ((query_features - mean) @ normals > 0).astype(np.uint8),
  )


def run_directory(workdir: str, q: int, b: int, seed: int, config_seed: int) -> str:
  """<workdir>/q<q>_b<b> for the config's seed (as before seeds), else ..._s<seed>."""
  unsuffixed = os.path.join(workdir, f"q{q}_b{b}")
  return cell_lib.seeded_path(
      unsuffixed, f"{unsuffixed}_s{seed}", seed, config_seed, cell_lib.recorded_run_seed
  )


def run_bits(
    config, builder, mesh, workdir: str, q: int, lsh_seed: int, seed: int | None = None
) -> dict:
  """Trains (or resumes) IAH for q semantic bits with config.seed = `seed` (default the
  config's), returns both methods' metrics and times."""
  b = max(1, q // 4)
  config_seed = int(config.seed)
  seed = config_seed if seed is None else int(seed)
  config = evaluate.pair_config(config, q, b)
  with config.unlocked():
    config.seed = seed
  config = config_lib.validate_config(config)
  lsh_seed += seed - config_seed  # the config's seed hashes with lsh_seed itself, as before
  cpu = cpu_seconds()
  model, state, best_step, train_wall = evaluate.train_and_restore(
      config,
      builder,
      mesh,
      run_directory(workdir, q, b, seed, config_seed),
      jax.random.PRNGKey(config.seed),
  )
  train_cpu = cpu_seconds() - cpu

  wall, cpu = time.perf_counter(), cpu_seconds()
  # One forward pass gives the IAH codes and the pooled backbone features LSH hashes.
  evaluated, database, queries = evaluate.encode_and_evaluate(
      config, model, state, builder, mesh, backbone_features=True, run_name=f"iah q{q} seed {seed}"
  )
  ks = tuple(int(k) for k in config.eval.ks)
  lsh_database, lsh_queries = lsh_codes(
      database["backbone_features"], queries["backbone_features"], q, lsh_seed
  )
  lsh_metrics = metrics.retrieval_metrics(
      lsh_queries, lsh_database, queries["labels"], database["labels"], ks=ks, ties=config.eval.ties
  )
  lsh_health = {"semantic": code_health.code_health(lsh_database)}
  evaluate.warn_if_collapsed(lsh_health, f"lsh_backbone q{q} seed {seed}")
  return {
      "iah": {name: float(evaluated["semantic"][name]) for name in METRIC_NAMES},
      "lsh_backbone": {name: float(lsh_metrics[name]) for name in METRIC_NAMES},
      "code_health": {"iah": evaluated["code_health"], "lsh_backbone": lsh_health},
      "seed": seed,
      "lsh_seed": lsh_seed,
      "bits_per_category": b,
      "best_step": best_step,
      "num_train_steps": config.num_train_steps,
      "train_wall_seconds": train_wall,
      "train_cpu_seconds": train_cpu,
      "eval_wall_seconds": time.perf_counter() - wall,
      "eval_cpu_seconds": cpu_seconds() - cpu,
      "num_queries": int(len(queries["labels"])),
      "num_database": int(len(database["labels"])),
  }


METHODS = (("iah", "IAH semantic"), ("lsh_backbone", "LSH on backbone GAP"))


def summarize(seed_runs: dict) -> dict:
  """{q: {method: {metric: {"mean", "std"}}}} over the seeds of `seed_runs` ({seed: {q: row}});
  std is the sample standard deviation (ddof = 1)."""
  summary: dict = {}
  seeds = list(seed_runs)
  for q in seed_runs[seeds[0]]:
    summary[q] = {}
    for method, _ in METHODS:
      summary[q][method] = {}
      for name in METRIC_NAMES:
        values = np.asarray([seed_runs[seed][q][method][name] for seed in seeds], np.float64)
        summary[q][method][name] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else None,
        }
  return summary


def collapsed_runs(seed_runs: dict) -> list[str]:
  """'method q=.. seed ..: description' of every collapsed code of `seed_runs`."""
  found = []
  for seed, runs in seed_runs.items():
    for q, row in runs.items():
      for method, health in row.get("code_health", {}).items():
        for kind, figures in health.items():
          if figures["collapsed"]:
            found.append(f"{method} q={q} seed {seed} ({kind}): {code_health.describe(figures)}")
  return found


def format_table(results: dict) -> str:
  lines = [
      f"MIML: {results['num_queries']} queries vs {results['num_database']} database "
      "images, Hamming ranking (ties by database index)",
      f"{'method':<26}{'bits':>5}" + "".join(f"{name:>10}" for name in METRIC_NAMES),
  ]
  if "summary" in results:
    lines[0] += (
        f"; mean ± std (sample, ddof = 1) over {len(results['seed_runs'])} seeds "
        f"({', '.join(results['seed_runs'])})"
    )
    for method, title in METHODS:
      for q, row in results["summary"].items():
        lines.append(
            f"{title:<26}{q:>5}"
            + "".join(
                f"  {row[method][name]['mean']:.4f}±{row[method][name]['std']:.4f}"
                for name in METRIC_NAMES
            )
        )
  else:
    for method, title in METHODS:
      for q, row in results["runs"].items():
        lines.append(
            f"{title:<26}{q:>5}" + "".join(f"{row[method][name]:>10.4f}" for name in METRIC_NAMES)
        )
  for description in collapsed_runs(results.get("seed_runs") or {"-": results["runs"]}):
    lines.append(f"COLLAPSED {description}: its ranking is the tie order")
  for q, row in (
      (f"{q} seed {seed}" if "summary" in results else q, row)
      for seed, runs in (results.get("seed_runs") or {"-": results["runs"]}).items()
      for q, row in runs.items()
  ):
    lines.append(
        f"q={q}: best step {row['best_step']} of {row['num_train_steps']}; train "
        f"{row['train_wall_seconds'] / 60:.1f} min wall, "
        f"{row['train_cpu_seconds'] / 60:.1f} min CPU; evaluation "
        f"{row['eval_wall_seconds']:.0f} s wall, {row['eval_cpu_seconds']:.0f} s CPU"
    )
  lines.append(
      f"total {results['wall_seconds'] / 60:.1f} min wall, "
      f"{results['cpu_seconds'] / 60:.1f} min CPU on {results['cpus']} CPUs, load "
      f"average {results['load_average_start']:.2f} at start, "
      f"{results['load_average_end']:.2f} at end"
  )
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.configure_entry_point()  # before JAX and TensorFlow start their thread pools
  if not all(value.isdigit() and int(value) > 0 for value in FLAGS.bits):
    raise app.UsageError(f"--bits must be positive integers, got {FLAGS.bits}")
  bits = [int(value) for value in FLAGS.bits]
  seed_values = FLAGS.seeds or [str(FLAGS.config.seed)]
  if not all(value.isdigit() for value in seed_values) or len(set(seed_values)) != len(seed_values):
    raise app.UsageError(f"--seeds must be distinct non-negative integers, got {FLAGS.seeds}")
  seeds = [int(value) for value in seed_values]
  if not os.path.isfile(os.path.join(FLAGS.data_path, "labels.csv")):
    raise app.UsageError(
        f"--data_path {FLAGS.data_path!r} holds no labels.csv (expected the "
        "MIML layout of ../shared/data/miml)"
    )
  config = FLAGS.config
  with config.unlocked():
    config.dataset.options.data_path = os.path.abspath(FLAGS.data_path)
    if FLAGS.data_dir:
      config.dataset.data_dir = FLAGS.data_dir
  config_lib.validate_config(config, check_inputs=True)  # before any work
  workdir = os.path.abspath(os.path.expanduser(FLAGS.workdir))
  os.makedirs(workdir, exist_ok=True)

  wall, cpu, load_start = time.perf_counter(), cpu_seconds(), os.getloadavg()[0]
  with console.progress_logging() as logger:
    builder = train.load_dataset(config)
    mesh = train.make_mesh()
    seed_runs = {}
    for seed in seeds:
      runs = seed_runs[str(seed)] = {}
      for q in bits:
        runs[str(q)] = run_bits(config, builder, mesh, workdir, q, FLAGS.lsh_seed, seed)
        logger.info("q=%d seed %d: IAH %s", q, seed, runs[str(q)]["iah"])
        logger.info("q=%d seed %d: LSH %s", q, seed, runs[str(q)]["lsh_backbone"])
  first = next(iter(seed_runs.values()))
  results = {
      "dataset": "miml",
      "data_path": config.dataset.options.data_path,
      # One seed: as before seeds existed; several: every seed's runs and their mean ± std.
      **(
          {"runs": first}
          if len(seeds) == 1
          else {"seed_runs": seed_runs, "summary": summarize(seed_runs)}
      ),
      "num_queries": next(iter(first.values()))["num_queries"],
      "num_database": next(iter(first.values()))["num_database"],
      "wall_seconds": time.perf_counter() - wall,
      "cpu_seconds": cpu_seconds() - cpu,
      "cpus": os.cpu_count(),
      "load_average_start": load_start,
      "load_average_end": os.getloadavg()[0],
      "config": config.to_dict(),
  }
  with open(os.path.join(workdir, "miml_results.json"), "w") as file:
    json.dump(results, file, indent=2, default=evaluate.json_default)
  print(format_table(results))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
