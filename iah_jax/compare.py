"""Trains / fits every method at every code length and writes the paper's comparison.

  python -m iah_jax.compare --config configs/miml.py --workdir runs/compare_miml \
      --config.dataset.options.data_path=../shared/data/miml --bits 32
  python -m iah_jax.compare --config configs/voc07.py --workdir runs/compare_voc07 \
      --methods iah,one_stage,itq_cca,itq,sh,lsh --features_from pretrained \
      --config.model.pretrained=googlenet.npz

Methods (--methods, default all): deep `iah`, `one_stage`, `dsrh`, `qadwh`,
`category_baseline` (trained with the config's data, backbone, optimiser and schedule; only
config.method and the bit lengths change) and shallow `itq_cca`, `itq`, `sh`, `lsh` (fitted on
the pooled backbone features of the config's train split; --features_from names the deep method
whose trained backbone at the same code length gives them, or `pretrained` for the untouched
config.model.pretrained backbone, the paper's setting; default `pretrained` when the config sets
config.model.pretrained, else `iah`). Code lengths: --bits (default the config's semantic_bits);
b per category is the config's pairing, else q / 4. Seeds: --seeds (default the config's seed
only): every (method, bits) cell is trained / fitted once per seed with config.seed = that seed
(a shallow baseline on the backbone its feature source trained with the same seed), and the
report gives mean ± std over the seeds (sample std), claiming a column's best only where its
interval overlaps no other row's.

Writes <workdir>/comparison.md (IAH Table II layout: NDCG@k and ACG@k for the config's
eval.ks, MAP, weighted MAP), ndcg_q<q>.png / acg_q<q>.png (Figs. 6-7, m from --curve_ks) and
per_category_map_b<b>.png (Figs. 8-9), covering every cell finished in the workdir (earlier
calls with other bits, methods or seeds included). It resumes: each finished (method, bits,
seed) cell is kept in <workdir>/cells/ (<method>_q<q>.json for the config's seed, as before seeds
existed, <method>_q<q>_s<seed>.json for the others) and not recomputed; deep runs resume from their
checkpoints (<workdir>/<method>/q<q>_b<b>, ..._s<seed> for other seeds). Cells whose database
codes collapsed (a handful of distinct codes: the ranking is the tie order) are logged as a
WARNING and marked † in the report, never bold. The workdir must be a local directory.

--search: before its cells, each deep method (and the deep feature source of the shallow
baselines) gets a small search at each q, scored on the validation carve only (never the
queries): the learning rate, then the method's one or two main loss weights, within the budget
config.search gives (iah_jax.comparison.search); its cells (every seed) then train with the
selection. Trials resume; <workdir>/search.md lists them and comparison.md notes the selection.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from iah_jax import baselines
from iah_jax import cli
from iah_jax import config as config_lib
from iah_jax import methods as method_registry
from iah_jax import runtime

PRETRAINED = "pretrained"  # iah_jax.comparison.cells.PRETRAINED, without importing the comparison
FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the command's flags in absl's global FLAGS: called when run as a command only, so
  importing this module (its helpers, in tests or other code) defines no global flag."""
  config_flags.DEFINE_config_file(
      "config", None, "Path to an ml_collections config file.", lock_config=True
  )
  flags.DEFINE_string("workdir", None, "Directory for runs, cells, comparison.md and plots.")
  flags.DEFINE_list(
      "methods",
      list(method_registry.names()) + list(baselines.TITLES),
      "Methods to compare.",
  )
  flags.DEFINE_list("bits", None, "Code lengths q (default: the config's semantic_bits).")
  flags.DEFINE_string(
      "features_from",
      None,
      "Backbone features for the shallow baselines: a deep method's trained backbone at the same q "
      "(and seed), or 'pretrained' (default: 'pretrained' when config.model.pretrained is set, "
      "the paper's setting, else 'iah').",
  )
  flags.DEFINE_list(
      "seeds", None, "Seeds: each cell is trained / fitted once per seed (default: config.seed)."
  )
  flags.DEFINE_bool(
      "search",
      False,
      "First give each deep method the validation-selected search over its learning rate and "
      "main loss weights (budget: config.search; trials in <workdir>/search.md) and train its "
      "cells with the selection.",
  )
  flags.DEFINE_list(
      "curve_ks",
      ["1", "5", "10", "20", "50", "100", "200", "500", "1000"],
      "m values of the NDCG@m / ACG@m plots.",
  )
  flags.mark_flags_as_required(["config", "workdir"])


def parse_ints(values, name: str) -> tuple[int, ...]:
  """--name's comma-separated values as integers, or a usage error naming the flag."""
  try:
    return tuple(int(value) for value in values)
  except ValueError as err:
    raise app.UsageError(
        f"--{name} must be a comma-separated list of integers, got {values}"
    ) from err


def parse_positive_ints(values, name: str) -> tuple[int, ...]:
  parsed = parse_ints(values, name)
  if not parsed or min(parsed) < 1:
    raise app.UsageError(f"--{name} must list positive integers, got {values}")
  return parsed


def resolve_features_from(features_from: str | None, config) -> str:
  """--features_from as given, else `pretrained` when the config supplies pretrained backbone
  weights (the paper's shallow baselines hash ImageNet features), else `iah`."""
  if features_from:
    return features_from
  return PRETRAINED if config.model.pretrained else "iah"


def parse_seeds(values, config) -> tuple[int, ...]:
  """--seeds as distinct non-negative integers; default (config.seed,)."""
  if not values:
    return (int(config.seed),)
  seeds = parse_ints(values, "seeds")
  if min(seeds) < 0 or len(set(seeds)) != len(seeds):
    raise app.UsageError(f"--seeds must list distinct non-negative integers, got {values}")
  return seeds


def check_choices(config, methods: list[str], features_from: str) -> None:
  """--methods and --features_from name known things, and the config is valid for every deep
  method compared (each cell trains with config.method set to it): checked before any work."""
  deep = list(method_registry.names())
  known = deep + list(baselines.TITLES)
  unknown = [method for method in methods if method not in known]
  if unknown:
    raise app.UsageError(f"--methods: unknown method(s) {unknown}; known: {', '.join(known)}")
  if features_from not in deep + [PRETRAINED]:
    raise app.UsageError(
        f"--features_from={features_from}: must be one of {', '.join(deep + [PRETRAINED])}"
    )
  config_lib.validate_config(config, check_inputs=True)
  for method in methods:
    if method in deep and method != config.method:
      variant = config.copy_and_resolve_references()
      with variant.unlocked():
        variant.method = method
      config_lib.validate_config(variant)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.configure_entry_point()  # before JAX and TensorFlow start their thread pools
  config = FLAGS.config
  features_from = resolve_features_from(FLAGS.features_from, config)
  check_choices(config, list(FLAGS.methods), features_from)
  if FLAGS.search and not config.dataset.validation_split:
    raise app.UsageError(
        "--search selects on the validation carve: set config.dataset.validation_split (e.g. "
        "--config.dataset.train_split='train[:90%]' --config.dataset.validation_split='train[90%:]')"
    )
  bits = parse_positive_ints(FLAGS.bits or config.semantic_bits, "bits")
  curve_ks = parse_positive_ints(FLAGS.curve_ks, "curve_ks")
  seeds = parse_seeds(FLAGS.seeds, config)
  # The comparison (training, TensorFlow) loads once the inputs are known to be valid.
  from iah_jax import comparison
  from iah_jax import console

  with console.progress_logging():
    comparison.compare(
        config,
        FLAGS.workdir,
        list(FLAGS.methods),
        bits,
        features_from,
        curve_ks,
        seeds,
        search=FLAGS.search,
    )
  print(f"wrote {os.path.join(os.path.abspath(FLAGS.workdir), 'comparison.md')}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
