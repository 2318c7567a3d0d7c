"""Encoding and evaluation, and the whole job: `run(config, workdir) -> results`.

The flow of one run (one per (q, b) pair of the config, in `WORKDIR/q<q>_b<b>`):

  iah_jax.methods.get(config.method)   the registry: network, losses, encoder, capabilities
  -> train_and_restore                 train.build_model, train.train (resumes from
                                       run_dir/checkpoints), then the best-on-validation (or
                                       final) checkpoint restored: what a user restoring it gets
  -> encode_and_evaluate               make_encode_step + encode_split of the database and the
                                       query splits, evaluate_codes (what the method's declared
                                       capabilities offer)

`run` writes WORKDIR/results.json; the comparison cells (iah_jax.comparison) and
benchmarks/miml.py call the same two functions for their runs. An encoder of a trained run needs
only `train.build_model`, `train.create_train_state`, `train.checkpoint_manager` /
`train.restore_latest` and `make_encode_step`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Callable

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import ml_collections
import numpy as np
import tqdm

from iah_jax import compilation
from iah_jax import config as config_lib
from iah_jax import methods
from iah_jax import metrics
from iah_jax import phases
from iah_jax import train
from iah_jax.data import features
from iah_jax.data import pipeline
from iah_jax.models.hashing import global_average_pool
from iah_jax.retrieval import category_tables
from iah_jax.retrieval import code_health as code_health_lib

logger = logging.getLogger("iah_jax")

# ----------------------------------------------------------------------------- encode


def make_encode_step(
    model, mesh: Mesh, config: ml_collections.ConfigDict, *, backbone_features: bool = False
) -> Callable:
  """Returns the jit-compiled `(state, images [B,S,S,3], proposals [B,N,4]) -> dict`: what
  `config.method`'s `encode` returns (the keys its capabilities declare; checked when traced),
  and with `backbone_features` also `backbone_features` [B, C], the backbone's feature map of the
  same forward pass, global-average-pooled."""
  method = methods.get(config.method)
  settings = method.settings(config)
  declared = method.capabilities.encoded_keys()

  def encode_step(state: train.TrainState, images: jax.Array, proposals: jax.Array) -> dict:
    variables = {"params": state.params}
    if jax.tree.leaves(state.batch_stats):
      variables["batch_stats"] = state.batch_stats
    if backbone_features:
      outputs, captured = model.apply(
          variables,
          images,
          proposals,
          train=False,
          mutable=["intermediates"],
          capture_intermediates=lambda module, name: (
              name == "__call__" and module.name == "backbone"
          ),
      )
    else:
      outputs = model.apply(variables, images, proposals, train=False)
    codes = method.encode(outputs, settings)
    if set(codes) != declared:
      raise ValueError(
          f"method {method.name!r}: encode returned {sorted(codes)}, its capabilities declare "
          f"{sorted(declared)}"
      )
    if backbone_features:
      (feature_map,) = captured["intermediates"]["backbone"]["__call__"]
      codes["backbone_features"] = global_average_pool(feature_map)
    return codes

  replicated = NamedSharding(mesh, PartitionSpec())
  data = train.batch_sharding(mesh)
  # Codes come back replicated so every process can read the whole batch on the host.
  jitted = jax.jit(encode_step, in_shardings=(replicated, data, data), out_shardings=replicated)
  return compilation.ShapeCompiled(jitted, "encode_step")  # logs and times every compile


@phases.timed("encode")
def encode_split(
    state: train.TrainState,
    encode_step: Callable,
    builder,
    split: str,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
) -> dict:
  """Codes, label probabilities and labels of every image of `split`, ordered by index.

  Rows come in stored order (TFDS slices such as "train[90%:]" included); `index` is the
  example's position in its full split.
  """
  batch_size = config.eval.batch_size
  batch_size += (-batch_size) % mesh.size  # every device gets the same number of rows
  # Every process reads the whole split; each feeds its own slice of every batch.
  rows_per_process = batch_size // jax.process_count()
  own_rows = slice(
      jax.process_index() * rows_per_process, (jax.process_index() + 1) * rows_per_process
  )
  collected: dict[str, list] = {}
  total = pipeline.num_examples(builder, split)
  for batch in tqdm.tqdm(
      pipeline.eval_batches(
          builder, split=split, batch_size=batch_size, image_size=config.dataset.image_size
      ),
      total=math.ceil(total / batch_size),
      desc=f"encode {split}",
      unit="batch",
      dynamic_ncols=True,
      mininterval=2.0,
  ):
    inputs = train.to_global(
        {key: batch[key][own_rows] for key in (features.IMAGE, features.PROPOSALS)},
        mesh,
        keys=(features.IMAGE, features.PROPOSALS),
    )
    outputs = jax.device_get(encode_step(state, inputs[features.IMAGE], inputs[features.PROPOSALS]))
    real = batch["mask"]
    outputs["labels"] = batch[features.LABELS]
    outputs["index"] = batch[features.INDEX]
    for name, value in outputs.items():
      collected.setdefault(name, []).append(np.asarray(value)[real])
  encoded = {name: np.concatenate(parts) for name, parts in collected.items()}
  order = np.argsort(encoded["index"], kind="stable")
  return {name: value[order] for name, value in encoded.items()}


# ----------------------------------------------------------------------------- evaluate


@phases.timed("evaluate")
def evaluate_codes(database: dict, queries: dict, config: ml_collections.ConfigDict) -> dict:
  """The metrics of encoded splits (`encode_split`), as config.method's capabilities declare.

  Always `semantic` (Hamming ranking of the semantic codes); with bit weights
  `query_adaptive` (the same codes ranked by query-adaptive weighted Hamming distance: QaDWH's
  own ranking, a variant for IAH); with category codes `category_aware`, and with label
  probabilities as well its `probability_tables` (IAH section IV retrieval). `code_health`:
  {"semantic": ..., ["category": ...]} the health of the database codes
  (iah_jax.retrieval.code_health: distinct codes, bit balance, entropy, `collapsed`).
  """
  capabilities = methods.get(config.method).capabilities
  ks = tuple(int(k) for k in config.eval.ks)
  semantic = (
      queries["semantic_codes"],
      database["semantic_codes"],
      queries["labels"],
      database["labels"],
  )
  results = {
      "semantic": metrics.retrieval_metrics(*semantic, ks=ks, ties=config.eval.ties),
      "code_health": database_code_health(database, capabilities.category_codes),
  }
  if capabilities.bit_weights:
    results["query_adaptive"] = metrics.retrieval_metrics(
        *semantic, ks=ks, ties=config.eval.ties, query_weights=queries["bit_weights"]
    )
  if capabilities.category_codes:
    by_category = (
        queries["category_codes"],
        database["category_codes"],
        queries["labels"],
        database["labels"],
    )
    results["category_aware"] = metrics.category_aware_metrics(*by_category, ties=config.eval.ties)
    if capabilities.label_probs:
      # IAH section IV: per-category tables of the items with p_j >= the threshold, searched
      # only by queries with p_j >= the threshold (relevant items left out count as missed).
      results["category_aware"]["probability_tables"] = metrics.category_aware_metrics(
          *by_category,
          ties=config.eval.ties,
          query_probs=queries["label_probs"],
          db_probs=database["label_probs"],
          threshold=category_tables.DEFAULT_THRESHOLD,
      )
  return results


def database_code_health(database: dict, category_codes: bool) -> dict:
  """{"semantic": code_health of the database's semantic codes, ["category": category_code_health
  of its category codes]} (iah_jax.retrieval.code_health)."""
  health = {"semantic": code_health_lib.code_health(database["semantic_codes"])}
  if category_codes:
    health["category"] = code_health_lib.category_code_health(database["category_codes"])
  return health


def warn_if_collapsed(health: dict, run_name: str) -> bool:
  """Logs a WARNING naming `run_name` for each collapsed code in `health` ({"semantic": ...,
  "category": ...} as `database_code_health`); returns whether any was collapsed."""
  collapsed = False
  for kind, figures in health.items():
    if figures["collapsed"]:
      collapsed = True
      logger.warning(
          "%s: %s codes collapsed: %s; every Hamming distance is (nearly) 0, so its ranking is "
          "the tie order and its metrics say nothing about the codes",
          run_name,
          kind,
          code_health_lib.describe(figures),
      )
    elif figures.get("collapsed_categories"):
      logger.warning(
          "%s: category codes of categories %s hold a single code each: their category-aware "
          "ranking is the tie order",
          run_name,
          figures["collapsed_categories"],
      )
  return collapsed


# ----------------------------------------------------------------------------- one run


def pair_config(
    config: ml_collections.ConfigDict, semantic_bits: int, bits_per_category: int
) -> ml_collections.ConfigDict:
  """A copy of `config` for the single (q, b) pair of one run."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.semantic_bits, config.bits_per_category = (semantic_bits,), (bits_per_category,)
  return config


def train_and_restore(config: ml_collections.ConfigDict, builder, mesh: Mesh, run_dir: str, rng):
  """Trains (or resumes, or only restores) config.method at config's single (q, b) pair.

  Returns (model, state restored from the best-on-validation or else the final checkpoint, the
  step of that checkpoint, seconds spent training the run: all its sessions up to its final
  checkpoint, `train.train_seconds`).
  """
  if len(config.semantic_bits) != 1 or len(config.bits_per_category) != 1:
    raise ValueError(
        "train_and_restore trains one (q, b) pair: use pair_config, got semantic_bits "
        f"{config.semantic_bits} and bits_per_category {config.bits_per_category}"
    )
  num_classes = builder.info.features[features.LABELS].shape[0]
  q, b = int(config.semantic_bits[0]), int(config.bits_per_category[0])
  model = train.build_model(config, num_classes, q, b)
  state = train.train(config, model=model, builder=builder, run_dir=run_dir, mesh=mesh, rng=rng)
  selecting = bool(config.dataset.validation_split)
  manager = train.checkpoint_manager(os.path.join(run_dir, "checkpoints"), config)
  seconds = train.train_seconds(manager)
  state = train.restore_latest(manager, state, best=selecting) or state
  manager.close()
  return model, state, int(state.step), seconds


def encode_and_evaluate(
    config: ml_collections.ConfigDict,
    model,
    state: train.TrainState,
    builder,
    mesh: Mesh,
    *,
    backbone_features: bool = False,
    run_name: str | None = None,
) -> tuple[dict, dict, dict]:
  """Encodes the database and the query splits with `state` and evaluates them.

  Returns (`evaluate_codes` metrics, encoded database, encoded queries); `backbone_features`
  adds the pooled backbone features to the encoded splits (see `make_encode_step`). Collapsed
  database codes (metrics["code_health"]) are logged as a WARNING naming `run_name` (default
  config.method).
  """
  encode_step = make_encode_step(model, mesh, config, backbone_features=backbone_features)
  database = encode_split(state, encode_step, builder, config.dataset.database_split, config, mesh)
  queries = encode_split(state, encode_step, builder, config.dataset.query_split, config, mesh)
  evaluated = evaluate_codes(database, queries, config)
  warn_if_collapsed(evaluated["code_health"], run_name or config.method)
  return evaluated, database, queries


# ----------------------------------------------------------------------------- the whole job


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains one model per (q, b) pair, evaluates each restored model, writes results.json."""
  config_lib.validate_config(config)
  workdir = train.resolve_path(workdir)
  train.tf_io().gfile.makedirs(workdir)
  mesh = train.make_mesh()
  train.check_batch_size(config.batch_size, mesh)
  builder = train.load_dataset(config)
  results: dict[str, Any] = {
      "method": config.method,
      "semantic": {},
      "query_adaptive": {},
      "category_aware": {},
      "code_health": {},
      "train_seconds": 0.0,
      "config": config.to_dict(),
  }
  rng = jax.random.PRNGKey(config.seed)
  for index, (q, b) in enumerate(zip(config.semantic_bits, config.bits_per_category)):
    run_config = pair_config(config, int(q), int(b))
    model, state, _, seconds = train_and_restore(
        run_config,
        builder,
        mesh,
        os.path.join(workdir, f"q{q}_b{b}"),
        jax.random.fold_in(rng, index),
    )
    results["train_seconds"] += seconds
    run_metrics, _, _ = encode_and_evaluate(
        run_config, model, state, builder, mesh, run_name=f"{config.method} q{q}_b{b}"
    )
    results["semantic"][str(q)] = run_metrics["semantic"]
    results["code_health"][f"q{q}_b{b}"] = run_metrics["code_health"]
    if "query_adaptive" in run_metrics:
      results["query_adaptive"][str(q)] = run_metrics["query_adaptive"]
    logger.info(
        "q%d_b%d: semantic MAP %.4f, wMAP %.4f",
        q,
        b,
        run_metrics["semantic"]["map"],
        run_metrics["semantic"]["wmap"],
    )
    if "category_aware" in run_metrics:
      results["category_aware"][str(b)] = dict(run_metrics["category_aware"], run=f"q{q}_b{b}")
  if jax.process_index() == 0:  # one writer in multi-host runs
    with train.tf_io().gfile.GFile(os.path.join(workdir, "results.json"), "w") as file:
      file.write(json.dumps(results, indent=2, default=json_default))
    print(format_results(results))
  return results


def json_default(value):
  """json.dump(default=...) for NumPy scalars and arrays and tuples."""
  if isinstance(value, (np.integer, np.floating)):
    return value.item()
  if isinstance(value, (tuple, np.ndarray)):
    return list(value)
  raise TypeError(f"not JSON serialisable: {type(value)}")


def format_results(results: dict) -> str:
  """A plain-text table of the semantic and category-aware metrics."""
  lines = ["semantic hashing (queries vs database, Hamming ranking)"]
  names = sorted(
      {
          name
          for row in results["semantic"].values()
          for name in row
          if name in ("map", "wmap") or name.startswith(("ndcg@", "acg@"))
      },
      key=lambda name: (name not in ("map", "wmap"), name),
  )
  lines.append("  bits  " + "  ".join(f"{name:>10}" for name in names))
  for bits, row in results["semantic"].items():
    lines.append(
        f"  {bits:>4}  " + "  ".join(f"{row.get(name, float('nan')):>10.4f}" for name in names)
    )
  for bits, row in results.get("query_adaptive", {}).items():
    lines.append(
        f"  {bits:>4}  query-adaptive weighted Hamming ranking: map={row['map']:.4f}  "
        f"wmap={row['wmap']:.4f}"
    )
  lines.append("category-aware hashing (per-category MAP averaged over categories)")
  for bits, row in results["category_aware"].items():
    tables = row.get("probability_tables")
    lines.append(
        f"  b={bits:>3}  map={row['map']:.4f}"
        + (
            f"  with p >= {category_tables.DEFAULT_THRESHOLD} tables: map={tables['map']:.4f}"
            if tables
            else ""
        )
        + f"  ({row.get('run', '')})"
    )
  for run, health in results.get("code_health", {}).items():
    for kind, figures in health.items():
      if figures["collapsed"]:
        lines.append(
            f"  COLLAPSED {kind} codes of {run}: {code_health_lib.describe(figures)} "
            "(their ranking is the tie order)"
        )
  lines.append(f"train seconds: {results['train_seconds']:.1f}")
  return "\n".join(lines)
