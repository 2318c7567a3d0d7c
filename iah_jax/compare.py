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
config.model.pretrained backbone, the paper's setting). Code lengths: --bits (default the
config's semantic_bits); b per category is the config's pairing, else q / 4.

Writes <workdir>/comparison.md (IAH Table II layout: NDCG@k and ACG@k for the config's
eval.ks, MAP, weighted MAP), ndcg_q<q>.png / acg_q<q>.png (Figs. 6-7, m from --curve_ks) and
per_category_map_b<b>.png (Figs. 8-9), covering every cell finished in the workdir (earlier
calls with other bits or methods included). It resumes: each finished (method, bits) cell is kept in
<workdir>/cells/ and not recomputed; deep runs resume from their checkpoints. The workdir must be
a local directory.
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
    "iah",
    "Backbone features for the shallow baselines: a "
    "deep method's trained backbone at the same q, or 'pretrained'.",
)
flags.DEFINE_list(
    "curve_ks",
    ["1", "5", "10", "20", "50", "100", "200", "500", "1000"],
    "m values of the NDCG@m / ACG@m plots.",
)
flags.mark_flags_as_required(["config", "workdir"])


def parse_positive_ints(values, name: str) -> tuple[int, ...]:
  try:
    parsed = tuple(int(value) for value in values)
  except ValueError as err:
    raise app.UsageError(
        f"--{name} must be a comma-separated list of integers, got {values}"
    ) from err
  if not parsed or min(parsed) < 1:
    raise app.UsageError(f"--{name} must list positive integers, got {values}")
  return parsed


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
  check_choices(config, list(FLAGS.methods), FLAGS.features_from)
  bits = parse_positive_ints(FLAGS.bits or config.semantic_bits, "bits")
  curve_ks = parse_positive_ints(FLAGS.curve_ks, "curve_ks")
  # The comparison (training, TensorFlow) loads once the inputs are known to be valid.
  from iah_jax import comparison
  from iah_jax import console

  with console.progress_logging():
    comparison.compare(
        config, FLAGS.workdir, list(FLAGS.methods), bits, FLAGS.features_from, curve_ks
    )
  print(f"wrote {os.path.join(os.path.abspath(FLAGS.workdir), 'comparison.md')}")


if __name__ == "__main__":
  cli.run(main)
