"""`compare(config, workdir, methods, bits, ...)`: every (method, bits, seed) cell, then the report.

The work behind `python -m iah_jax.compare` (see that module for the command and its flags).
"""

from __future__ import annotations

import os

from iah_jax import config as config_lib
from iah_jax import train
from iah_jax.comparison import cells as cell_lib
from iah_jax.comparison import report
from iah_jax.comparison import search as search_lib
from iah_jax.data import features


def compare(
    config,
    workdir: str,
    methods,
    bits,
    features_from: str = "iah",
    curve_ks=(1, 5, 10, 20, 50, 100, 200, 500, 1000),
    seeds=None,
    search: bool = False,
) -> list[dict]:
  """Runs (or reloads) every (method, bits, seed) cell (`seeds` default: (config.seed,)),
  returns them, and writes the report of every cell finished in `workdir` (see iah_jax.compare
  for the arguments). With `search`, each deep method compared (and the deep feature source of
  the shallow baselines) is first given the validation-selected search at each q
  (iah_jax.comparison.search, with config.seed) and its cells train with the selection; the
  trials are listed in <workdir>/search.md."""
  unknown = [method for method in methods if method not in cell_lib.all_methods()]
  if unknown:
    raise ValueError(f"unknown method(s) {unknown}; known: {list(cell_lib.all_methods())}")
  sources = list(cell_lib.deep_methods()) + [cell_lib.PRETRAINED]
  if features_from not in sources:
    raise ValueError(f"features_from must be one of {sources}, got {features_from!r}")
  config_lib.validate_config(config)
  seeds = [int(config.seed)] if seeds is None else [int(seed) for seed in seeds]
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  builder = train.load_dataset(config)
  mesh = train.make_mesh()
  ks = tuple(sorted({int(k) for k in config.eval.ks} | {int(k) for k in curve_ks}))
  tuned = {int(q): {} for q in bits}
  if search:
    searched = [method for method in methods if method in cell_lib.deep_methods()]
    if (
        features_from in cell_lib.deep_methods()
        and features_from not in searched
        and any(method in cell_lib.shallow_methods() for method in methods)
    ):
      searched.append(features_from)
    for q in bits:
      for method in searched:
        record = search_lib.search(
            config,
            method,
            int(q),
            cell_lib.bits_per_category(config, int(q)),
            builder,
            mesh,
            workdir,
        )
        tuned[int(q)][method] = record["selected"]
    search_lib.write_summary(workdir)
  results = [
      cell_lib.run_cell(
          config, method, int(q), builder, mesh, workdir, ks, features_from, seed, tuned[int(q)]
      )
      for seed in seeds
      for q in bits
      for method in methods
  ]
  results.sort(key=lambda cell: (methods.index(cell["method"]), cell["bits"], cell["seed"]))
  # The report covers every cell finished in this workdir, by earlier calls too (other bits,
  # methods or seeds), so a comparison can be built up over several runs.
  finished = cell_lib.finished_cells(workdir, int(config.seed))
  num_classes = builder.info.features[features.LABELS].shape[0]
  class_names = list(
      getattr(builder.builder_config, "class_names", None)
      or [f"category {index}" for index in range(num_classes)]
  )
  start = (
      f"fine-tuned from config.model.pretrained = {config.model.pretrained}"
      if config.model.pretrained
      else "from scratch"
  )
  notes = [
      f"deep methods: the config's data, backbone ({config.model.backbone}, {start}), schedule "
      f"({config.num_train_steps} steps, batch {config.batch_size}) and model selection; "
      "shallow baselines: fitted on pooled backbone features of the training split (the "
      "source is in the last table)"
  ]
  notes += search_lib.selection_notes(workdir)
  report.write_report(
      finished,
      workdir,
      dataset=config.dataset.name,
      table_ks=tuple(int(k) for k in config.eval.ks),
      class_names=class_names,
      ties=config.eval.ties,
      notes=notes,
  )
  return results
