"""The IAH recipe: build the model, train with one jit step over a device mesh, checkpoint,
encode the database and the queries with the restored model, evaluate.

`train_and_evaluate(config, workdir)` runs it all; the pieces are small top-level functions so
tests and other scripts can reuse them (`create_train_state`, `make_train_step`,
`make_encode_step`, `train`, `encode_split`, `evaluate_run`).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable

import logging

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm

from iah_jax import compilation
from iah_jax import config as config_lib
from iah_jax import methods
from iah_jax import metrics
from iah_jax import phases
from iah_jax.data import features
from iah_jax.data import pipeline
from iah_jax.models import backbones

logger = logging.getLogger("iah_jax")


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; saved and restored whole by orbax."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


# ----------------------------------------------------------------------------- model, optimiser


def build_model(
    config: ml_collections.ConfigDict, num_classes: int, semantic_bits: int, bits_per_category: int
) -> nn.Module:
  """The network of `config.method` on the configured backbone."""
  backbone = backbones.build_backbone(
      config.model.backbone,
      config.model.backbone_options.to_dict(),
      dtype=jnp.dtype(config.model.dtype),
  )
  return methods.get_method(config.method).build_model(
      config, num_classes, semantic_bits, bits_per_category, backbone
  )


def learning_rate_schedule(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.Schedule:
  """Step schedule: lr * decay_factor ** floor(step / (decay_every_epochs * steps_per_epoch))."""
  opt = config.optimizer
  decay_steps = max(1, int(round(opt.decay_every_epochs * steps_per_epoch)))
  schedule = optax.exponential_decay(
      opt.learning_rate, transition_steps=decay_steps, decay_rate=opt.decay_factor, staircase=True
  )
  if opt.warmup_steps:
    warmup = optax.linear_schedule(0.0, opt.learning_rate, opt.warmup_steps)
    schedule = optax.join_schedules([warmup, schedule], [opt.warmup_steps])
  return schedule


def make_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule):
  """SGD with momentum (the paper's solver), optional decoupled weight decay."""
  parts = []
  if config.optimizer.weight_decay:
    parts.append(optax.add_decayed_weights(config.optimizer.weight_decay))
  parts.append(optax.sgd(schedule, momentum=config.optimizer.momentum))
  return optax.chain(*parts)


def resolve_path(path: str) -> str:
  """Local paths made absolute (with ~ expanded); URLs such as gs://bucket/dir left as they are."""
  path = os.fspath(path)
  return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def tf_io():
  """TensorFlow's file API (gfile), which also writes to gs:// and other remote file systems."""
  import tensorflow as tf  # the data dependency already; imported late to keep startup light

  return tf.io


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices: the batch is split along `data`, parameters replicated."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices, ("data",))


def _dummy_inputs(batch_size: int, image_size: int, num_proposals: int):
  images = jnp.zeros((batch_size, image_size, image_size, 3), jnp.float32)
  proposals = jnp.tile(jnp.asarray([0.0, 0.0, 1.0, 1.0]), (batch_size, num_proposals, 1))
  return images, proposals


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    mesh: Mesh,
    image_size: int,
    num_proposals: int,
) -> TrainState:
  """Initialises the state shape-first, then materialises it replicated over the mesh."""

  def init(rng):
    images, proposals = _dummy_inputs(1, image_size, num_proposals)
    variables = model.init(rng, images, proposals, train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
    )

  abstract = jax.eval_shape(init, rng)
  replicated = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), abstract)
  return jax.jit(init, out_shardings=replicated)(rng)


# ----------------------------------------------------------------------------- steps


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
) -> Callable:
  """Returns the jit-compiled `(state, batch, rng) -> (state, metrics)` over `mesh`.

  `batch` holds `image` [B, S, S, 3], `proposals` [B, N, 4], `labels` [B, c], sharded along the
  mesh's `data` axis; the state is replicated and donated. The triplet losses see the whole global
  batch (XLA inserts the cross-device communication), so the result does not depend on the
  number of devices.
  """
  compute_losses = methods.get_method(config.method).compute_losses
  loss_config = config.loss

  def train_step(state: TrainState, batch: dict, rng: jax.Array):
    has_batch_stats = bool(jax.tree.leaves(state.batch_stats))

    def loss_fn(params):
      variables = {"params": params}
      if has_batch_stats:
        variables["batch_stats"] = state.batch_stats
      outputs, updates = model.apply(
          variables,
          batch["image"],
          batch["proposals"],
          train=True,
          mutable=["batch_stats"] if has_batch_stats else [],
          rngs={"dropout": rng},
      )
      terms = compute_losses(outputs, batch["labels"], loss_config)
      return terms["loss"], (terms, updates)

    grads, (terms, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
    param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, param_updates),
        opt_state=opt_state,
        batch_stats=updates["batch_stats"] if has_batch_stats else state.batch_stats,
    )
    terms["learning_rate"] = schedule(state.step)
    terms["grad_norm"] = optax.global_norm(grads)
    return new_state, terms

  replicated = NamedSharding(mesh, PartitionSpec())
  jitted = jax.jit(
      train_step,
      donate_argnums=0,
      in_shardings=(replicated, _batch_sharding(mesh), replicated),
      out_shardings=(replicated, replicated),
  )
  return compilation.ShapeCompiled(jitted, "train_step")  # logs and times every compile


def make_encode_step(model: nn.Module, mesh: Mesh, config: ml_collections.ConfigDict) -> Callable:
  """Returns the jit-compiled `(state, images, proposals) -> dict` of codes and probabilities
  (what `config.method`'s `encode` returns)."""
  encode = methods.get_method(config.method).encode

  def encode_step(state: TrainState, images: jax.Array, proposals: jax.Array) -> dict:
    variables = {"params": state.params}
    if jax.tree.leaves(state.batch_stats):
      variables["batch_stats"] = state.batch_stats
    return encode(model.apply(variables, images, proposals, train=False), config)

  replicated = NamedSharding(mesh, PartitionSpec())
  data = _batch_sharding(mesh)
  # Codes come back replicated so every process can read the whole batch on the host.
  jitted = jax.jit(encode_step, in_shardings=(replicated, data, data), out_shardings=replicated)
  return compilation.ShapeCompiled(jitted, "encode_step")  # logs and times every compile


def _batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec("data"))


def to_global(batch: dict, mesh: Mesh, keys=pipeline.MODEL_KEYS) -> dict:
  """Host batches (this process's rows) -> global arrays sharded along `data`."""
  sharding = _batch_sharding(mesh)
  return {
      key: jax.make_array_from_process_local_data(sharding, np.asarray(batch[key])) for key in keys
  }


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  if batch_size % mesh.size:
    raise ValueError(
        f"batch size {batch_size} is not divisible by the {mesh.size} devices of "
        "the mesh; choose a multiple of the device count"
    )


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_manager(directory: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """Keeps the latest checkpoints, or with a validation split the best by validation MAP."""
  selecting = bool(config.dataset.validation_split)
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints,
      save_interval_steps=_validation_interval(config) if selecting else config.checkpoint_every,
      best_fn=(lambda saved: saved[VALIDATION_METRIC]) if selecting else None,
      best_mode="max",
      create=True,
      # save() copies the state to host memory and returns; a background thread writes it while
      # training goes on. The loop waits for it before it returns (and so before any restore).
      enable_async_checkpointing=True,
  )
  return ocp.CheckpointManager(resolve_path(directory), options=options)


def restore_latest(
    manager: ocp.CheckpointManager, state: TrainState, best: bool = False
) -> TrainState | None:
  """The latest (or, with `best`, the best-by-validation) checkpoint restored into `state`'s
  structure and shardings, or None when there is none."""
  step = (manager.best_step() if best else None) or manager.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  with phases.phase("checkpoints"):
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))


# ----------------------------------------------------------------------------- training loop


VALIDATION_METRIC = "validation_map"
CATEGORY_TABLE_THRESHOLD = 0.2  # IAH section IV: a piece enters table j when p_j >= 0.2


def _validation_interval(config: ml_collections.ConfigDict) -> int:
  return config.eval.every_steps or config.num_train_steps


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the message names the step."""


def _check_finite(window: list[tuple[int, dict]]) -> None:
  for step, terms in window:
    values = {name: float(value) for name, value in jax.device_get(terms).items()}
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if bad:
      raise NonFiniteLossError(
          f"non-finite loss at step {step}: {bad} (all terms: {values}). Lower the learning "
          "rate, check the inputs of that batch, or resume from the last checkpoint."
      )


def train(
    config: ml_collections.ConfigDict,
    *,
    model: nn.Module,
    builder,
    run_dir: str,
    mesh: Mesh,
    rng: jax.Array,
) -> TrainState:
  """Trains `model` for config.num_train_steps (resuming from `run_dir`); returns the state.

  With `config.dataset.validation_split` set, every `config.eval.every_steps` (and at the end)
  the validation images are encoded as queries against the training split as database; the
  checkpoints kept are the best by that semantic MAP (model selection never sees the queries).
  """
  check_batch_size(config.batch_size, mesh)
  num_train = pipeline.num_examples(builder, config.dataset.train_split)
  steps_per_epoch = max(1, num_train // config.batch_size)
  schedule = learning_rate_schedule(config, steps_per_epoch)
  tx = make_optimizer(config, schedule)
  num_proposals = builder.info.features[features.PROPOSALS].shape[0]
  init_rng, train_rng = jax.random.split(rng)
  state = create_train_state(model, tx, init_rng, mesh, config.dataset.image_size, num_proposals)
  if config.model.pretrained:
    state = load_pretrained(state, config)

  manager = checkpoint_manager(os.path.join(run_dir, "checkpoints"), config)
  restored = restore_latest(manager, state)
  if restored is not None:
    state = restored
    logger.info("resumed from %s at step %d", run_dir, int(state.step))
  start_step = int(state.step)
  if start_step >= config.num_train_steps:
    manager.close()
    return state

  train_step = make_train_step(model, tx, schedule, config, mesh)
  validate = _validator(config, model, builder, mesh) if config.dataset.validation_split else None
  # A resumed run reshuffles with a seed derived from its start step (not bit-identical to an
  # uninterrupted run, but never replays the same order).
  batches = pipeline.train_batches(
      builder,
      split=config.dataset.train_split,
      global_batch_size=config.batch_size,
      image_size=config.dataset.image_size,
      seed=config.seed + start_step,
      shuffle_buffer=config.dataset.shuffle_buffer,
  )
  writer = _summary_writer(run_dir)
  window: list[tuple[int, dict]] = []
  progress = tqdm.tqdm(
      total=config.num_train_steps,
      initial=start_step,
      desc=os.path.basename(run_dir),
      unit="step",
      dynamic_ncols=True,
      mininterval=2.0,
  )
  window_start = time.perf_counter()
  timer = phases.default_timer()
  for step in range(start_step, config.num_train_steps):
    with timer.phase("input pipeline"):
      batch = to_global(next(batches), mesh)
    with timer.phase("train steps"):
      state, terms = train_step(state, batch, jax.random.fold_in(train_rng, step))
      # Waiting for each step charges its CPU time to this phase (it costs no overlap worth
      # having: tf.data prepares the next batches in its own threads meanwhile).
      jax.block_until_ready(terms)
    window.append((step, terms))
    progress.update(1)
    last_step = step + 1 == config.num_train_steps
    if len(window) >= config.log_every or last_step:
      _check_finite(window)
      values = {name: float(value) for name, value in jax.device_get(window[-1][1]).items()}
      elapsed = time.perf_counter() - window_start
      values["steps_per_second"] = len(window) / max(elapsed, 1e-9)
      progress.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['learning_rate']:.2g}")
      logger.info(
          "step %d: %s",
          step + 1,
          ", ".join(f"{name}={value:.4g}" for name, value in sorted(values.items())),
      )
      _write_scalars(writer, step + 1, values)
      window, window_start = [], time.perf_counter()
    if validate is None:
      if manager.should_save(step + 1) or last_step:
        with timer.phase("checkpoints"):
          manager.save(step + 1, args=ocp.args.StandardSave(state), force=last_step)
    elif (step + 1) % _validation_interval(config) == 0 or last_step:
      with timer.phase("validation"):
        score = validate(state)
      logger.info("step %d: %s=%.4f", step + 1, VALIDATION_METRIC, score)
      _write_scalars(writer, step + 1, {VALIDATION_METRIC: score})
      with timer.phase("checkpoints"):
        manager.save(
            step + 1,
            args=ocp.args.StandardSave(state),
            metrics={VALIDATION_METRIC: score},
            force=True,
        )
  progress.close()
  with timer.phase("checkpoints"):  # the last asynchronous save finishes before we return
    manager.wait_until_finished()
    manager.close()
  return state


def _validator(
    config: ml_collections.ConfigDict, model: nn.Module, builder, mesh: Mesh
) -> Callable[[TrainState], float]:
  """state -> semantic MAP of the validation split (queries) against the training split."""
  encode_step = make_encode_step(model, mesh, config)

  def validate(state: TrainState) -> float:
    database = encode_split(state, encode_step, builder, config.dataset.train_split, config, mesh)
    queries = encode_split(
        state, encode_step, builder, config.dataset.validation_split, config, mesh
    )
    return metrics.retrieval_metrics(
        queries["semantic_codes"],
        database["semantic_codes"],
        queries["labels"],
        database["labels"],
        ks=(),
        ties=config.eval.ties,
    )["map"]

  return validate


def load_pretrained(state: TrainState, config: ml_collections.ConfigDict) -> TrainState:
  """`state` with its backbone variables replaced by config.model.pretrained (strict merge)."""
  from iah_jax.models import pretrained

  variables = pretrained.load(
      {"params": state.params, "batch_stats": state.batch_stats},
      config.model.pretrained,
      prefix="backbone",
  )
  return state.replace(params=variables["params"], batch_stats=variables["batch_stats"])


def _summary_writer(run_dir: str):
  """TensorBoard event files, written by process 0 only (None elsewhere)."""
  if jax.process_index() != 0:
    return None
  import tensorflow as tf  # TensorBoard event files; TF is already the data dependency

  return tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard"))


def _write_scalars(writer, step: int, values: dict) -> None:
  if writer is None:
    return
  import tensorflow as tf

  with writer.as_default(step=step):
    for name, value in values.items():
      tf.summary.scalar(name, value)
  writer.flush()


# ----------------------------------------------------------------------------- encode, evaluate


@phases.timed("encode")
def encode_split(
    state: TrainState,
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
    inputs = to_global(
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


@phases.timed("evaluate")
def evaluate_run(database: dict, queries: dict, config: ml_collections.ConfigDict) -> dict:
  """Semantic Hamming-ranking metrics, and where the method has them, the same codes ranked by
  query-adaptive weighted Hamming distance (`query_adaptive`: QaDWH's ranking, also on IAH's codes)
  and the category-aware metrics."""
  ks = tuple(int(k) for k in config.eval.ks)
  results = {
      "semantic": metrics.retrieval_metrics(
          queries["semantic_codes"],
          database["semantic_codes"],
          queries["labels"],
          database["labels"],
          ks=ks,
          ties=config.eval.ties,
      )
  }
  if "bit_weights" in queries:
    results["query_adaptive"] = metrics.retrieval_metrics(
        queries["semantic_codes"],
        database["semantic_codes"],
        queries["labels"],
        database["labels"],
        ks=ks,
        ties=config.eval.ties,
        query_weights=queries["bit_weights"],
    )
  if "category_codes" in queries:
    results["category_aware"] = metrics.category_aware_metrics(
        queries["category_codes"],
        database["category_codes"],
        queries["labels"],
        database["labels"],
        ties=config.eval.ties,
    )
    if "label_probs" in queries:
      # IAH section IV retrieval: per-category tables of the items with p_j >= 0.2, searched
      # only by queries with p_j >= 0.2 (relevant items left out count as missed).
      results["category_aware"]["probability_tables"] = metrics.category_aware_metrics(
          queries["category_codes"],
          database["category_codes"],
          queries["labels"],
          database["labels"],
          ties=config.eval.ties,
          query_probs=queries["label_probs"],
          db_probs=database["label_probs"],
          threshold=CATEGORY_TABLE_THRESHOLD,
      )
  return results


# ----------------------------------------------------------------------------- the whole job


@phases.timed("data")
def load_dataset(config: ml_collections.ConfigDict):
  """The TFDS builder named by the config, prepared (generated on first use) in data_dir."""
  from iah_jax.data import registry

  options = config.dataset.options.to_dict()
  if config.dataset.name == registry.SYNTHETIC_SCENES and not options:
    options["config"] = config.dataset.config  # the embedded dataset's named configs
  return registry.get_builder(config.dataset.name, resolve_path(config.dataset.data_dir), **options)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains one model per (q, b) pair, evaluates each restored model, writes results.json."""
  config_lib.validate_config(config)
  workdir = resolve_path(workdir)
  tf_io().gfile.makedirs(workdir)
  mesh = make_mesh()
  check_batch_size(config.batch_size, mesh)
  builder = load_dataset(config)
  num_classes = builder.info.features[features.LABELS].shape[0]
  results: dict[str, Any] = {
      "method": config.method,
      "semantic": {},
      "query_adaptive": {},
      "category_aware": {},
      "train_seconds": 0.0,
      "config": config.to_dict(),
  }
  rng = jax.random.PRNGKey(config.seed)
  for run, (q, b) in enumerate(zip(config.semantic_bits, config.bits_per_category)):
    run_dir = os.path.join(workdir, f"q{q}_b{b}")
    model = build_model(config, num_classes, int(q), int(b))
    started = time.perf_counter()
    state = train(
        config,
        model=model,
        builder=builder,
        run_dir=run_dir,
        mesh=mesh,
        rng=jax.random.fold_in(rng, run),
    )
    results["train_seconds"] += time.perf_counter() - started
    # Evaluate the restored checkpoint (the final one, or the best on the validation split),
    # exactly what a user restoring it would get.
    state = (
        restore_latest(
            checkpoint_manager(os.path.join(run_dir, "checkpoints"), config),
            state,
            best=bool(config.dataset.validation_split),
        )
        or state
    )
    encode_step = make_encode_step(model, mesh, config)
    database = encode_split(
        state, encode_step, builder, config.dataset.database_split, config, mesh
    )
    queries = encode_split(state, encode_step, builder, config.dataset.query_split, config, mesh)
    run_metrics = evaluate_run(database, queries, config)
    results["semantic"][str(q)] = run_metrics["semantic"]
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
    with tf_io().gfile.GFile(os.path.join(workdir, "results.json"), "w") as file:
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
            f"  with p >= {CATEGORY_TABLE_THRESHOLD} tables: map={tables['map']:.4f}"
            if tables
            else ""
        )
        + f"  ({row.get('run', '')})"
    )
  lines.append(f"train seconds: {results['train_seconds']:.1f}")
  return "\n".join(lines)
