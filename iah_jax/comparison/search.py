"""The validation-selected hyperparameter search of `iah_jax.compare --search`.

For one deep method at one code length, trials differ from the config in a few values
(`overrides`: dotted config path -> value) and each is scored by the best validation MAP its
training reached (the training loop's model selection: `config.dataset.validation_split` queried
against the training split). The queries and the database are never encoded here, so no choice
sees them. The budget is `config.search` (see iah_jax.config.base_config):

1. the learning rate: config.optimizer.learning_rate x each of search.learning_rate_scales;
2. at the best rate, each of the method's `tuned_weights` (its registry entry) in turn: its value
   x each of search.weight_scales, kept where a trial beats the best validation MAP so far.

Scale 1.0 is always tried first, so ties keep the config's values and the selection is never below
the config's own validation MAP. Trials train for search.num_train_steps (0: the config's own),
with the schedule's decay and warm-up scaled by the same factor.

Resumable: the record `<workdir>/search/<method>_q<q>.json` gains each trial when it finishes (a
finished trial is never retrained; trial runs live in `<workdir>/search/<method>_q<q>/<name>`,
where an interrupted trial resumes from its checkpoints). The record keeps the budget it was made
with; a record whose budget differs from the config's is an error (delete it to search again).

Record: {"method", "bits", "seed", "budget": {...}, "trials": [{"name", "overrides",
"validation_map", "best_step", "train_seconds"}], "selected": overrides of the best trial,
"selected_validation_map"}.
"""

from __future__ import annotations

import json
import logging
import os

import jax
import ml_collections

from iah_jax import checkpoints
from iah_jax import config as config_lib
from iah_jax import evaluate
from iah_jax import methods
from iah_jax import train

logger = logging.getLogger("iah_jax")

LEARNING_RATE = "optimizer.learning_rate"


class SearchError(ValueError):
  """The search cannot run (no validation split) or its record belongs to another budget."""


def get_value(config: ml_collections.ConfigDict, path: str):
  node = config
  for part in path.split("."):
    node = node[part]
  return node


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: dict
) -> ml_collections.ConfigDict:
  """A copy of `config` with each dotted path of `overrides` set to its value (paths must
  exist)."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for path, value in overrides.items():
      *parents, leaf = path.split(".")
      node = config
      for part in parents:
        node = node[part]
      if leaf not in node:
        raise KeyError(f"config has no field {path!r}")
      node[leaf] = type(node[leaf])(value) if isinstance(node[leaf], float) else value
  return config


def budget(config: ml_collections.ConfigDict, method: str) -> dict:
  """What the search of `method` tries under `config.search` (written into its record)."""
  search = config.search
  return {
      "learning_rate_scales": sorted({1.0, *(float(s) for s in search.learning_rate_scales)}),
      "weight_scales": sorted({float(s) for s in search.weight_scales} - {1.0}),
      "tuned_weights": list(methods.get(method).tuned_weights),
      "num_train_steps": trial_steps(config),
  }


def trial_steps(config: ml_collections.ConfigDict) -> int:
  return int(config.search.num_train_steps or config.num_train_steps)


def trial_config(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """`config` (one method, one (q, b) pair) with `overrides` applied and the trial's shorter
  schedule: num_train_steps = search.num_train_steps, decay interval and warm-up scaled with it."""
  config = apply_overrides(config, overrides)
  steps = trial_steps(config)
  factor = steps / max(1, int(config.num_train_steps))
  with config.unlocked():
    config.num_train_steps = steps
    config.optimizer.decay_every_epochs = float(config.optimizer.decay_every_epochs) * factor
    if config.optimizer.decay_every_steps:
      config.optimizer.decay_every_steps = max(
          1, int(round(int(config.optimizer.decay_every_steps) * factor))
      )
    config.optimizer.warmup_steps = int(round(int(config.optimizer.warmup_steps) * factor))
  return config


def trial_name(overrides: dict) -> str:
  """A directory name for a trial: `lr0.01` or `lr0.01_category_weight3` (last path parts)."""
  parts = []
  for path, value in overrides.items():
    label = "lr" if path == LEARNING_RATE else path.rsplit(".", 1)[-1]
    parts.append(f"{label}{float(value):g}")
  return "_".join(parts) or "config"


def best_validation_map(run_dir: str, config: ml_collections.ConfigDict) -> tuple[float, int]:
  """(best validation MAP, its step) over the checkpoints of a finished trial run."""
  manager = train.checkpoint_manager(os.path.join(run_dir, "checkpoints"), config)
  try:
    scored = [
        ((manager.metrics(step) or {}).get(train.VALIDATION_METRIC), step)
        for step in manager.all_steps()
    ]
  finally:
    manager.close()
  scored = [(float(value), int(step)) for value, step in scored if value is not None]
  if not scored:
    raise checkpoints.CheckpointError(f"{run_dir}: no checkpoint records a validation MAP")
  return max(scored, key=lambda item: (item[0], -item[1]))


def record_path(workdir: str, method: str, bits: int) -> str:
  return os.path.join(workdir, "search", f"{method}_q{bits}.json")


def load_record(workdir: str, method: str, bits: int) -> dict | None:
  path = record_path(workdir, method, bits)
  if not os.path.exists(path):
    return None
  with open(path) as file:
    return json.load(file)


def _save_record(workdir: str, record: dict) -> None:
  if jax.process_index() != 0:
    return
  path = record_path(workdir, record["method"], record["bits"])
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".partial", "w") as file:
    json.dump(record, file, indent=2, default=evaluate.json_default)
  os.replace(path + ".partial", path)


def run_trial(config, overrides: dict, builder, mesh, run_dir: str) -> dict:
  """Trains one trial (or resumes / reloads it) and scores it on the validation carve."""
  trial = config_lib.validate_config(trial_config(config, overrides))
  num_classes = builder.info.features["labels"].shape[0]
  q, b = int(trial.semantic_bits[0]), int(trial.bits_per_category[0])
  model = train.build_model(trial, num_classes, q, b)
  train.train(
      trial,
      model=model,
      builder=builder,
      run_dir=run_dir,
      mesh=mesh,
      rng=jax.random.PRNGKey(trial.seed),
  )
  validation_map, best_step = best_validation_map(run_dir, trial)
  manager = train.checkpoint_manager(os.path.join(run_dir, "checkpoints"), trial)
  seconds = train.train_seconds(manager)
  manager.close()
  return {
      "name": trial_name(overrides),
      "overrides": dict(overrides),
      "validation_map": validation_map,
      "best_step": best_step,
      "train_seconds": seconds,
  }


def search(
    config,
    method: str,
    bits: int,
    category_bits: int,
    builder,
    mesh,
    workdir: str,
    run_trial_fn=run_trial,
) -> dict:
  """The record of the search of `method` at (q, b) = (bits, category_bits) (see the module
  docstring); `config` is the comparison's config (its seed is the search's). `run_trial_fn`
  (config, overrides, builder, mesh, run_dir) -> trial dict is the trainer (tests replace it)."""
  if not config.dataset.validation_split:
    raise SearchError(
        "--search selects on the validation carve: set config.dataset.validation_split "
        "(e.g. train_split 'train[:90%]', validation_split 'train[90%:]')"
    )
  method_config = evaluate.pair_config(config, bits, category_bits)
  with method_config.unlocked():
    method_config.method = method
  wanted = budget(method_config, method)
  record = load_record(workdir, method, bits)
  if record is not None and record["budget"] != wanted:
    raise SearchError(
        f"{record_path(workdir, method, bits)} was searched with budget {record['budget']}, "
        f"not config.search's {wanted}: delete it (and its trial runs) or use another workdir"
    )
  if record is None:
    record = {
        "method": method,
        "bits": bits,
        "seed": int(config.seed),
        "budget": wanted,
        "trials": [],
    }
  done = {trial["name"]: trial for trial in record["trials"]}
  trial_root = os.path.join(workdir, "search", f"{method}_q{bits}")

  def score(overrides: dict) -> dict:
    name = trial_name(overrides)
    if name not in done:
      logger.info("search %s q=%d: trial %s", method, bits, name)
      trial = run_trial_fn(method_config, overrides, builder, mesh, os.path.join(trial_root, name))
      done[name] = trial
      record["trials"].append(trial)
      _save_record(workdir, record)
      logger.info(
          "search %s q=%d: %s validation MAP %.4f", method, bits, name, trial["validation_map"]
      )
    return done[name]

  base_rate = float(method_config.optimizer.learning_rate)
  rates = [1.0] + [scale for scale in wanted["learning_rate_scales"] if scale != 1.0]
  best = None
  for scale in rates:  # 1.0 first: ties keep the config's rate
    trial = score({LEARNING_RATE: base_rate * scale})
    if best is None or trial["validation_map"] > best["validation_map"]:
      best = trial
  for path in wanted["tuned_weights"]:
    value = float(get_value(method_config, path))
    if value == 0.0:  # a switched-off term: scaling it changes nothing
      continue
    current = dict(best["overrides"])
    for scale in wanted["weight_scales"]:
      trial = score({**current, path: value * scale})
      if trial["validation_map"] > best["validation_map"]:
        best = trial
  record["selected"] = best["overrides"]
  record["selected_validation_map"] = best["validation_map"]
  _save_record(workdir, record)
  logger.info(
      "search %s q=%d: selected %s (validation MAP %.4f, %d trials)",
      method,
      bits,
      best["name"],
      best["validation_map"],
      len(record["trials"]),
  )
  return record


def load_records(workdir: str) -> list[dict]:
  """Every search record of `workdir`, by method (registry order) then bits."""
  directory = os.path.join(workdir, "search")
  records = []
  for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
    if name.endswith(".json"):
      with open(os.path.join(directory, name)) as file:
        records.append(json.load(file))
  order = {name: index for index, name in enumerate(methods.names())}
  return sorted(records, key=lambda r: (order.get(r["method"], len(order)), r["bits"]))


def _format_overrides(overrides: dict) -> str:
  return ", ".join(f"{path} = {float(value):g}" for path, value in overrides.items())


def selection_notes(workdir: str) -> list[str]:
  """One report note per finished search: what the cells of that (method, q) trained with."""
  return [
      f"{record['method']} q={record['bits']}: validation search (seed {record['seed']}, "
      f"{len(record['trials'])} trials of {record['budget']['num_train_steps']} steps) selected "
      f"{_format_overrides(record['selected'])} (validation MAP "
      f"{record['selected_validation_map']:.4f}; <workdir>/search.md)"
      for record in load_records(workdir)
      if "selected" in record
  ]


def format_summary(records: list[dict]) -> str:
  """Markdown: per (method, q) every trial with its validation MAP, the selected one marked."""
  lines = ["# Validation-selected search", ""]
  for record in records:
    budget_ = record["budget"]
    lines += [
        f"## {record['method']}, q = {record['bits']} (seed {record['seed']})",
        "",
        f"Budget: learning-rate scales {budget_['learning_rate_scales']}, then "
        f"{budget_['tuned_weights'] or 'no weights'} x {budget_['weight_scales']}; "
        f"{budget_['num_train_steps']} steps per trial.",
        "",
        "| trial | settings | validation MAP | best step | train s |",
        "|---|---|---|---|---|",
    ]
    for trial in record["trials"]:
      selected = trial["overrides"] == record.get("selected")
      name = f"**{trial['name']}** (selected)" if selected else trial["name"]
      lines.append(
          f"| {name} | {_format_overrides(trial['overrides'])} | {trial['validation_map']:.4f} "
          f"| {trial['best_step']} | {trial['train_seconds']:.0f} |"
      )
    lines.append("")
  return "\n".join(lines)


def write_summary(workdir: str) -> str:
  """Writes <workdir>/search.md from every record there; returns its path."""
  path = os.path.join(workdir, "search.md")
  if jax.process_index() == 0:
    with open(path, "w") as file:
      file.write(format_summary(load_records(workdir)))
  return path
