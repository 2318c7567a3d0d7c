"""One comparison cell: a method trained (deep) or fitted (shallow) at one code length with one
seed, evaluated.

A cell's result is a JSON-ready dict written to `<workdir>/cells/<method>_q<bits>.json` for the
config's own seed (the name cells had before seeds existed, so older workdirs stay valid) and
`<workdir>/cells/<method>_q<bits>_s<seed>.json` for every other seed; a cell whose file exists is
finished and is never recomputed (delete the file to redo it). The methods are the registered
ones: deep methods from `iah_jax.methods` (their capabilities say how a cell ranks and what it
reports), shallow baselines from `iah_jax.baselines`. Deep methods train with config.seed = the
cell's seed and are evaluated through `iah_jax.evaluate` (`train_and_restore`,
`encode_and_evaluate`, the same run as the main job) in `<workdir>/<method>/q<q>_b<b>` (the
config's seed) or `<workdir>/<method>/q<q>_b<b>_s<seed>` (checkpoints resume there, so an
interrupted cell continues where it stopped); shallow baselines are fitted with the cell's seed on
the pooled backbone features of the same seed's trained deep method (or of the supplied
pretrained backbone, the same for every seed), cached in `<workdir>/features/<source>_q<q>.npz`
(`..._s<seed>.npz` for other seeds; `pretrained.npz`).

Every one of these files and directories records the seed it was made with (cells: "seed"; run
directories: run_manifest.json's config; features: a `seed` array); a file under the config
seed's name that records another seed (the config's seed changed between calls) is left alone and
the seed-suffixed name is used instead. Files written before seeds existed record none: they
count as the config's seed.

Cell dict:
  {"method", "kind": "deep" | "shallow", "bits", "bits_per_category",
   "ranking": "hamming" | "query_adaptive_weighted_hamming",
   "metrics": retrieval_metrics at ks = table ks + curve ks (semantic codes),
   "variants": {name: metrics} the same codes ranked the other way (qadwh: "plain Hamming";
   iah: "query-adaptive weighted Hamming" with W from its semantic FC),
   ["category_aware": {"map", "per_category_map"}] (methods with category codes: every query
   carrying category j ranks the whole database by piece j, IAH Figs. 8-9),
   ["category_aware_tables": the same with IAH section IV's p_j >= threshold tables (methods
   with label probabilities)],
   "semantic_table": whether the semantic rows belong in the tables (the method's declared
   capability; not for category_baseline, whose "semantic" code is its c * b category bits),
   "seed", "code_health": {"semantic": ..., ["category": ...]} of the database codes
   (iah_jax.retrieval.code_health; a collapsed code is logged as a WARNING and marked in the
   report), "features_from" (shallow), "best_step", "train_seconds", "eval_seconds"}
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import ml_collections
import numpy as np

from iah_jax import baselines
from iah_jax import config as config_lib
from iah_jax import evaluate
from iah_jax import methods
from iah_jax import metrics
from iah_jax import run_manifest
from iah_jax import train
from iah_jax.baselines import features as feature_lib
from iah_jax.comparison import search
from iah_jax.data import features
from iah_jax.retrieval import code_health

logger = logging.getLogger("iah_jax")

# Features for the shallow baselines from a supplied backbone (config.model.pretrained).
PRETRAINED = "pretrained"
QUERY_ADAPTIVE = "query_adaptive_weighted_hamming"


def deep_methods() -> tuple[str, ...]:
  """The registered deep methods (iah_jax.methods), in table order."""
  return methods.names()


def shallow_methods() -> tuple[str, ...]:
  """The shallow baselines (iah_jax.baselines), in table order."""
  return tuple(baselines.TITLES)


def all_methods() -> tuple[str, ...]:
  """Every method a comparison can hold: the deep ones, then the shallow ones."""
  return deep_methods() + shallow_methods()


def bits_per_category(config: ml_collections.ConfigDict, bits: int) -> int:
  """b paired with q in the config (semantic_bits[i] -> bits_per_category[i]), else q // 4."""
  for q, b in zip(config.semantic_bits, config.bits_per_category):
    if int(q) == bits:
      return int(b)
  return max(1, bits // 4)


def method_config(
    config: ml_collections.ConfigDict,
    method: str,
    bits: int,
    category_bits: int,
    seed: int | None = None,
    overrides: dict | None = None,
) -> ml_collections.ConfigDict:
  """A copy of `config` for one method, one (q, b) pair and one seed (default config.seed),
  with `overrides` (dotted config path -> value) applied, validated."""
  config = evaluate.pair_config(config, bits, category_bits)
  with config.unlocked():
    config.method = method
    if seed is not None:
      config.seed = int(seed)
  if overrides:
    config = search.apply_overrides(config, overrides)
  return config_lib.validate_config(config)


def seeded_path(unsuffixed: str, suffixed: str, seed: int, config_seed: int, recorded_seed) -> str:
  """The file or directory of `seed`: `suffixed` if it exists; else `unsuffixed` if it exists and
  `recorded_seed(unsuffixed)` (None: recorded none, counts as the config's seed) is `seed`, or if
  it does not exist and `seed` is the config's own; else `suffixed` (see the module docstring)."""
  if os.path.exists(suffixed):
    return suffixed
  if os.path.exists(unsuffixed):
    recorded = recorded_seed(unsuffixed)
    return unsuffixed if (config_seed if recorded is None else recorded) == seed else suffixed
  return unsuffixed if seed == config_seed else suffixed


def recorded_run_seed(run_dir: str) -> int | None:
  """The seed a run directory's run_manifest.json records (None: no manifest)."""
  path = run_manifest.manifest_path(run_dir)
  if not os.path.exists(path):
    return None
  with open(path) as file:
    return json.load(file).get("config", {}).get("seed")


def _cell_seed(path: str) -> int | None:
  with open(path) as file:
    return json.load(file).get("seed")


def _features_seed(path: str) -> int | None:
  with np.load(path, allow_pickle=False) as cached:
    return int(cached["seed"]) if "seed" in cached.files else None


def run_directory(
    workdir: str,
    method: str,
    bits: int,
    category_bits: int,
    seed: int | None = None,
    config_seed: int | None = None,
) -> str:
  """Where a deep method's run at (q, b) with `seed` trains and keeps its checkpoints:
  <workdir>/<method>/q<q>_b<b> for the config's seed, else ..._s<seed> (`seeded_path`)."""
  unsuffixed = os.path.join(workdir, method, f"q{bits}_b{category_bits}")
  if seed is None or config_seed is None:
    return unsuffixed
  return seeded_path(unsuffixed, f"{unsuffixed}_s{seed}", seed, config_seed, recorded_run_seed)


def cell_path(
    workdir: str, method: str, bits: int, seed: int | None = None, config_seed: int | None = None
) -> str:
  """The cell file of (method, bits, seed): cells/<method>_q<bits>.json for the config's seed
  (`seed` None: that one), else cells/<method>_q<bits>_s<seed>.json (`seeded_path`)."""
  unsuffixed = os.path.join(workdir, "cells", f"{method}_q{bits}.json")
  if seed is None or config_seed is None:
    return unsuffixed
  suffixed = os.path.join(workdir, "cells", f"{method}_q{bits}_s{seed}.json")
  return seeded_path(unsuffixed, suffixed, seed, config_seed, _cell_seed)


def load_cell(
    workdir: str, method: str, bits: int, seed: int | None = None, config_seed: int | None = None
) -> dict | None:
  path = cell_path(workdir, method, bits, seed, config_seed)
  if not os.path.exists(path):
    return None
  with open(path) as file:
    cell = json.load(file)
  cell.setdefault("seed", config_seed if seed is None else seed)
  return cell


def finished_cells(workdir: str, config_seed: int | None = None) -> list[dict]:
  """Every cell saved in `workdir`, ordered by method (`all_methods` order; methods no longer
  registered last), then bits, then seed. A cell that records no seed (written before seeds
  existed) gets `config_seed`; one (method, bits, seed) appears once."""
  directory = os.path.join(workdir, "cells")
  found = {}
  for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
    if name.endswith(".json"):
      with open(os.path.join(directory, name)) as file:
        cell = json.load(file)
      cell.setdefault("seed", config_seed)
      found.setdefault((cell["method"], cell["bits"], cell["seed"]), cell)
  order = {method: index for index, method in enumerate(all_methods())}
  return sorted(
      found.values(),
      key=lambda cell: (
          order.get(cell["method"], len(order)),
          cell["bits"],
          -1 if cell["seed"] is None else cell["seed"],
      ),
  )


def save_cell(workdir: str, cell: dict, config_seed: int | None = None) -> None:
  path = cell_path(workdir, cell["method"], cell["bits"], cell.get("seed"), config_seed)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  partial = path + ".partial"  # a cell file is either complete or absent
  with open(partial, "w") as file:
    json.dump(cell, file, indent=2, default=evaluate.json_default)
  os.replace(partial, path)


def check_run_overrides(run_dir: str, overrides: dict) -> None:
  """ValueError if `run_dir` was started with other values at the paths of `overrides` (its
  run_manifest.json's config): resuming it would mix two settings in one run."""
  path = run_manifest.manifest_path(run_dir)
  if not overrides or not os.path.exists(path):
    return
  with open(path) as file:
    recorded = json.load(file).get("config", {})
  for key, value in overrides.items():
    node = recorded
    for part in key.split("."):
      node = node.get(part, {}) if isinstance(node, dict) else {}
    if node != {} and not np.isclose(float(node), float(value)):
      raise ValueError(
          f"{run_dir} was trained with {key} = {node}, not the search's {value}: delete it or "
          "use another workdir (one run never mixes two settings)"
      )


def trained_state(config: ml_collections.ConfigDict, builder, mesh, run_dir: str):
  """Trains (or resumes, or just restores) config.method at config's single (q, b) pair.

  Returns (model, state restored from the best-on-validation or final checkpoint, best step,
  training seconds of the run over all its sessions, which its checkpoints record).
  """
  return evaluate.train_and_restore(config, builder, mesh, run_dir, jax.random.PRNGKey(config.seed))


def cell_name(method: str, bits: int, seed: int) -> str:
  """How logs name a cell."""
  return f"{method} q={bits} seed={seed}"


def run_deep_cell(
    config: ml_collections.ConfigDict,
    method: str,
    bits: int,
    builder,
    mesh,
    workdir: str,
    ks: tuple[int, ...],
    seed: int | None = None,
    overrides: dict | None = None,
) -> dict:
  """Trains `method` at q = bits (b paired by `bits_per_category`) with config.seed = `seed`
  (default the config's) and `overrides` (dotted path -> value, the validation search's
  selection) and evaluates its codes."""
  capabilities = methods.get(method).capabilities
  category_bits = bits_per_category(config, bits)
  seed = int(config.seed if seed is None else seed)
  overrides = dict(overrides or {})
  run_dir = run_directory(workdir, method, bits, category_bits, seed, int(config.seed))
  config = method_config(config, method, bits, category_bits, seed, overrides)
  check_run_overrides(run_dir, overrides)
  model, state, best_step, train_seconds = trained_state(config, builder, mesh, run_dir)

  started = time.perf_counter()
  with config.unlocked():
    config.eval.ks = ks
  evaluated, database, queries = evaluate.encode_and_evaluate(
      config, model, state, builder, mesh, run_name=cell_name(method, bits, seed)
  )
  cell = {
      "method": method,
      "kind": "deep",
      "bits": bits,
      "bits_per_category": category_bits,
      "seed": seed,
      "tuned": overrides,
      "ranking": "hamming",
      "metrics": evaluated["semantic"],
      "variants": {},
      "semantic_table": capabilities.semantic_table,
      "code_health": evaluated["code_health"],
      "best_step": best_step,
      "train_seconds": train_seconds,
      "num_queries": len(queries["labels"]),
      "num_database": len(database["labels"]),
  }
  if capabilities.bit_weights:
    if capabilities.query_adaptive_ranking:  # the method's own; plain Hamming as the variant
      cell["ranking"] = QUERY_ADAPTIVE
      cell["metrics"], cell["variants"]["plain Hamming"] = (
          evaluated["query_adaptive"],
          evaluated["semantic"],
      )
    else:
      cell["variants"]["query-adaptive weighted Hamming"] = evaluated["query_adaptive"]
  if capabilities.category_codes:
    category = evaluated["category_aware"]
    cell["category_aware"] = {key: category[key] for key in ("map", "per_category_map")}
    if capabilities.label_probs:  # IAH's own section IV retrieval
      cell["category_aware_tables"] = {
          key: category["probability_tables"][key] for key in ("map", "per_category_map")
      }
  cell["eval_seconds"] = time.perf_counter() - started
  return cell


def backbone_features(
    config: ml_collections.ConfigDict,
    source: str,
    bits: int,
    builder,
    mesh,
    workdir: str,
    seed: int | None = None,
    overrides: dict | None = None,
) -> dict:
  """Pooled backbone features {fit, database, query} x {features, labels} for the shallow
  baselines, cached in <workdir>/features/<source>_q<bits>.npz (`..._s<seed>.npz` for a seed
  other than the config's, see the module docstring).

  `source` is a deep method (its trained backbone at q = bits with `seed`, default the config's,
  and `overrides`, its search selection; trained first if needed) or "pretrained" (config.model.pretrained, untouched by training;
  independent of bits and seed). `fit` is config.dataset.train_split: the baselines never see the
  validation carve or the queries.
  """
  seed = int(config.seed if seed is None else seed)
  if source == PRETRAINED:
    path = os.path.join(workdir, "features", f"{PRETRAINED}.npz")
  else:
    unsuffixed = os.path.join(workdir, "features", f"{source}_q{bits}.npz")
    path = seeded_path(
        unsuffixed,
        unsuffixed[: -len(".npz")] + f"_s{seed}.npz",
        seed,
        int(config.seed),
        _features_seed,
    )
  splits = {
      "fit": config.dataset.train_split,
      "database": config.dataset.database_split,
      "query": config.dataset.query_split,
  }
  if os.path.exists(path):
    with np.load(path, allow_pickle=False) as cached:
      return {key: cached[key] for key in cached.files if key != "seed"}

  category_bits = bits_per_category(config, bits)
  if source == PRETRAINED:
    if not config.model.pretrained:
      raise ValueError(
          "features_from='pretrained' needs config.model.pretrained (converted "
          "backbone weights, see iah_jax.convert)"
      )
    source_config = method_config(config, "iah", bits, category_bits)
    num_classes = builder.info.features[features.LABELS].shape[0]
    model = train.build_model(source_config, num_classes, bits, category_bits)
    num_proposals = builder.info.features[features.PROPOSALS].shape[0]
    tx = train.make_optimizer(source_config, train.learning_rate_schedule(source_config, 1))
    state = train.create_train_state(
        model, tx, jax.random.PRNGKey(config.seed), mesh, config.dataset.image_size, num_proposals
    )
    state = train.load_pretrained(state, source_config)
  else:
    if source not in deep_methods():
      raise ValueError(
          f"features_from must be one of {deep_methods() + (PRETRAINED,)}, got {source!r}"
      )
    run_dir = run_directory(workdir, source, bits, category_bits, seed, int(config.seed))
    source_config = method_config(config, source, bits, category_bits, seed, overrides)
    check_run_overrides(run_dir, dict(overrides or {}))
    model, state, _, _ = trained_state(source_config, builder, mesh, run_dir)
  variables = feature_lib.backbone_variables(
      {"params": state.params, "batch_stats": state.batch_stats}
  )
  arrays = {}
  for key, split in splits.items():
    arrays[f"{key}_features"], arrays[f"{key}_labels"] = feature_lib.extract_features(
        model.backbone,
        variables,
        builder,
        split,
        config.dataset.image_size,
        batch_size=config.eval.batch_size,
    )
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".partial", "wb") as file:
    np.savez(file, **arrays, **({} if source == PRETRAINED else {"seed": np.asarray(seed)}))
  os.replace(path + ".partial", path)
  return arrays


def run_shallow_cell(
    config: ml_collections.ConfigDict,
    method: str,
    bits: int,
    builder,
    mesh,
    workdir: str,
    ks: tuple[int, ...],
    features_from: str,
    seed: int | None = None,
    source_overrides: dict | None = None,
) -> dict:
  """Fits a shallow baseline with `seed` (default the config's) on backbone features of the fit
  split (of the same seed's trained backbone, trained with `source_overrides`) and evaluates
  it."""
  seed = int(config.seed if seed is None else seed)
  arrays = backbone_features(
      config, features_from, bits, builder, mesh, workdir, seed, source_overrides
  )
  started = time.perf_counter()
  hasher = baselines.fit(
      method, arrays["fit_features"], bits, labels=arrays["fit_labels"], seed=seed
  )
  fit_seconds = time.perf_counter() - started
  started = time.perf_counter()
  database_codes = hasher.encode(arrays["database_features"])
  health = {"semantic": code_health.code_health(database_codes)}
  evaluate.warn_if_collapsed(health, cell_name(method, bits, seed))
  scores = metrics.retrieval_metrics(
      hasher.encode(arrays["query_features"]),
      database_codes,
      arrays["query_labels"],
      arrays["database_labels"],
      ks=ks,
      ties=config.eval.ties,
  )
  return {
      "method": method,
      "kind": "shallow",
      "bits": bits,
      "bits_per_category": None,
      "seed": seed,
      "ranking": "hamming",
      "semantic_table": True,
      "code_health": health,
      "features_from": features_from,
      "best_step": None,
      "train_seconds": fit_seconds,
      "eval_seconds": time.perf_counter() - started,
      "metrics": scores,
      "variants": {},
      "num_queries": len(arrays["query_labels"]),
      "num_database": len(arrays["database_labels"]),
  }


def run_cell(
    config: ml_collections.ConfigDict,
    method: str,
    bits: int,
    builder,
    mesh,
    workdir: str,
    ks: tuple[int, ...],
    features_from: str,
    seed: int | None = None,
    tuned: dict | None = None,
) -> dict:
  """The finished cell of (method, bits, seed) (seed default: the config's) from disk, or the
  cell computed now and saved. `tuned`: {deep method: overrides at this q} from the validation
  search (a deep cell trains with its own; a shallow one fits on its source's backbone trained
  with the source's)."""
  tuned = tuned or {}
  seed = int(config.seed if seed is None else seed)
  config_seed = int(config.seed)
  path = cell_path(workdir, method, bits, seed, config_seed)
  cell = load_cell(workdir, method, bits, seed, config_seed)
  if cell is not None and cell.get("features_from", features_from) != features_from:
    raise ValueError(
        f"{path} was fitted on features from "
        f"{cell['features_from']!r}, not {features_from!r}: delete it (or use another workdir) "
        f"to refit, or pass --features_from {cell['features_from']} (without the flag, "
        "`pretrained` is the default when config.model.pretrained is set); one report never "
        "mixes feature sources silently"
    )
  if (
      cell is not None
      and method in deep_methods()
      and cell.get("tuned", {}) != tuned.get(method, {})
  ):
    raise ValueError(
        f"{path} was trained with {cell.get('tuned') or 'the config values'}, not "
        f"{tuned.get(method) or 'the config values'} (--search's selection): delete it or use "
        "another workdir; one report never mixes settings silently"
    )
  if cell is not None:
    logger.info("%s: finished earlier (%s)", cell_name(method, bits, seed), path)
    return cell
  if method in deep_methods():
    cell = run_deep_cell(config, method, bits, builder, mesh, workdir, ks, seed, tuned.get(method))
  elif method in shallow_methods():
    cell = run_shallow_cell(
        config,
        method,
        bits,
        builder,
        mesh,
        workdir,
        ks,
        features_from,
        seed,
        tuned.get(features_from),
    )
  else:
    raise ValueError(f"unknown method {method!r}; known: {all_methods()}")
  if jax.process_index() == 0:
    save_cell(workdir, cell, config_seed)
  logger.info(
      "%s: MAP %.4f (%.0f s training, %.0f s evaluation)",
      cell_name(method, bits, seed),
      cell["metrics"]["map"],
      cell["train_seconds"],
      cell["eval_seconds"],
  )
  return cell
