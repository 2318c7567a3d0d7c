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
per_category_map_b<b>.png (Figs. 8-9). It resumes: each finished (method, bits) cell is kept in
<workdir>/cells/ and not recomputed; deep runs resume from their checkpoints. The workdir must be
a local directory.
"""

from __future__ import annotations

import logging
import os

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags
from tqdm.contrib.logging import logging_redirect_tqdm

from iah_jax import config as config_lib
from iah_jax import train
from iah_jax.comparison import cells as cell_lib
from iah_jax.comparison import report
from iah_jax.data import features

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for runs, cells, comparison.md and plots.")
flags.DEFINE_list("methods", list(cell_lib.ALL_METHODS), "Methods to compare.")
flags.DEFINE_list("bits", None, "Code lengths q (default: the config's semantic_bits).")
flags.DEFINE_string("features_from", "iah", "Backbone features for the shallow baselines: a "
                    "deep method's trained backbone at the same q, or 'pretrained'.")
flags.DEFINE_list("curve_ks", ["1", "5", "10", "20", "50", "100", "200", "500", "1000"],
                  "m values of the NDCG@m / ACG@m plots.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_positive_ints(values, name: str) -> tuple[int, ...]:
  try:
    parsed = tuple(int(value) for value in values)
  except ValueError as err:
    raise app.UsageError(f"--{name} must be a comma-separated list of integers, got "
                         f"{values}") from err
  if not parsed or min(parsed) < 1:
    raise app.UsageError(f"--{name} must list positive integers, got {values}")
  return parsed


def compare(config, workdir: str, methods, bits, features_from: str = "iah",
            curve_ks=(1, 5, 10, 20, 50, 100, 200, 500, 1000)) -> list[dict]:
  """Runs (or reloads) every (method, bits) cell and writes the report; returns the cells."""
  unknown = [method for method in methods if method not in cell_lib.ALL_METHODS]
  if unknown:
    raise ValueError(f"unknown method(s) {unknown}; known: {list(cell_lib.ALL_METHODS)}")
  if features_from not in cell_lib.DEEP_METHODS + (cell_lib.PRETRAINED,):
    raise ValueError(f"features_from must be one of "
                     f"{list(cell_lib.DEEP_METHODS) + [cell_lib.PRETRAINED]}, got "
                     f"{features_from!r}")
  config_lib.validate_config(config)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  builder = train.load_dataset(config)
  mesh = train.make_mesh()
  ks = tuple(sorted({int(k) for k in config.eval.ks} | {int(k) for k in curve_ks}))
  results = [cell_lib.run_cell(config, method, int(q), builder, mesh, workdir, ks,
                               features_from)
             for q in bits for method in methods]
  results.sort(key=lambda cell: (methods.index(cell["method"]), cell["bits"]))
  num_classes = builder.info.features[features.LABELS].shape[0]
  class_names = list(getattr(builder.builder_config, "class_names", None) or
                     [f"category {index}" for index in range(num_classes)])
  notes = [f"config: method-independent settings of {config.dataset.name!r} "
           f"(backbone {config.model.backbone}, {config.num_train_steps} steps, batch "
           f"{config.batch_size}); shallow baselines on pooled backbone features from "
           f"{features_from!r}"]
  report.write_report(results, workdir, dataset=config.dataset.name,
                      table_ks=tuple(int(k) for k in config.eval.ks), class_names=class_names,
                      ties=config.eval.ties, notes=notes)
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  absl_logging.set_verbosity(absl_logging.WARNING)
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  logger = logging.getLogger("iah_jax")
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False
  config = FLAGS.config
  bits = parse_positive_ints(FLAGS.bits or config.semantic_bits, "bits")
  curve_ks = parse_positive_ints(FLAGS.curve_ks, "curve_ks")
  with logging_redirect_tqdm(loggers=[logger]):
    compare(config, FLAGS.workdir, list(FLAGS.methods), bits, FLAGS.features_from, curve_ks)
  print(f"wrote {os.path.join(os.path.abspath(FLAGS.workdir), 'comparison.md')}")


if __name__ == "__main__":
  app.run(main)
