"""Training, shared by every method: the state, the optimiser and its schedule, one jit train
step over a device mesh, the loop with its checkpoints (and model selection on a validation
split).

The flow: iah_jax.methods (the registry: what `config.method` builds, minimises and encodes) ->
train.py (`build_model`, `create_train_state`, `make_train_step`, `train`, `checkpoint_manager`,
`restore_latest`) -> iah_jax.evaluate (restore the best-or-final checkpoint, encode, evaluate;
`evaluate.run(config, workdir)` is the whole job). The pieces are small top-level functions so
tests and other scripts reuse them.
"""

from __future__ import annotations

import math
import os
import threading
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

from iah_jax import checkpoints
from iah_jax import compilation
from iah_jax import methods
from iah_jax import metrics
from iah_jax import phases
from iah_jax import run_manifest
from iah_jax import summaries
from iah_jax.errors import RunError
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
  method = methods.get(config.method)
  backbone = backbones.build_backbone(
      config.model.backbone,
      config.model.backbone_options.to_dict(),
      dtype=jnp.dtype(config.model.dtype),
  )
  return method.build(
      method.build_context(config, num_classes, semantic_bits, bits_per_category, backbone)
  )


def decay_interval(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """Steps between two learning-rate decays: optimizer.decay_every_steps when set, else
  optimizer.decay_every_epochs epochs of `steps_per_epoch`."""
  opt = config.optimizer
  if opt.decay_every_steps:
    return int(opt.decay_every_steps)
  return max(1, int(round(opt.decay_every_epochs * steps_per_epoch)))


def warn_if_rate_vanishes(config: ml_collections.ConfigDict, steps_per_epoch: int) -> bool:
  """Logs a WARNING (returns True) when the schedule divides the rate by more than 1000 before
  the last step: an epoch-based decay on a small training set (a few steps per epoch) that
  leaves most steps with a rate near 0."""
  opt = config.optimizer
  interval = decay_interval(config, steps_per_epoch)
  decays = max(0, int(config.num_train_steps) - 1) // interval
  final = float(opt.learning_rate) * float(opt.decay_factor) ** decays
  if opt.decay_factor >= 1.0 or final >= float(opt.learning_rate) * 1e-3:
    return False
  logger.warning(
      "the learning rate decays %d times in %d steps (every %d steps = %g epochs of %d steps): "
      "%.3g at step %d, %.3g at the end, so most steps barely train. Set "
      "config.optimizer.decay_every_steps (e.g. %d) or a larger decay_every_epochs.",
      decays,
      config.num_train_steps,
      interval,
      interval / steps_per_epoch,
      steps_per_epoch,
      float(opt.learning_rate) * float(opt.decay_factor) ** min(decays, 3),
      min(decays, 3) * interval,
      final,
      int(round(0.84 * int(config.num_train_steps))),
  )
  return True


def learning_rate_schedule(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.Schedule:
  """Step schedule: lr * decay_factor ** floor(step / decay_steps), decay_steps =
  optimizer.decay_every_steps or else decay_every_epochs * steps_per_epoch (`decay_interval`)."""
  opt = config.optimizer
  decay_steps = decay_interval(config, steps_per_epoch)
  schedule = optax.exponential_decay(
      opt.learning_rate, transition_steps=decay_steps, decay_rate=opt.decay_factor, staircase=True
  )
  if opt.warmup_steps:
    warmup = optax.linear_schedule(0.0, opt.learning_rate, opt.warmup_steps)
    schedule = optax.join_schedules([warmup, schedule], [opt.warmup_steps])
  return schedule


def make_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule):
  """SGD with momentum (the paper's solver) and the method's per-parameter settings.

  Per step, for parameter w with gradient g (Caffe's solver with lr_mult m and weight decay):
    v <- momentum * v + g + wd_all * w + wd_method * w * [w.ndim >= 2]
    w <- w - schedule(step) * m(w) * v
  with wd_all = config.optimizer.weight_decay (every parameter), and wd_method and m (the new
  layers' `new_layer_lr_multiplier`, 1 elsewhere) from the method's `OptimizerSettings`
  (`Method.optimizer`). m is applied to the update after momentum, which equals scaling the
  rate inside it (v is linear in the gradients). The method's parts are stateless and wrap the
  SGD without changing its state: the optimiser state (and so every checkpoint's layout) is
  the same whatever the method's settings.
  """
  settings = methods.get(config.method).optimizer(config)
  parts = []
  if config.optimizer.weight_decay:
    parts.append(optax.add_decayed_weights(config.optimizer.weight_decay))
  before, after = [], []
  if settings.weight_decay:
    before.append(optax.add_decayed_weights(settings.weight_decay, mask=weight_matrices))
  if settings.new_layers and settings.new_layer_lr_multiplier != 1.0:
    after.append(
        optax.multi_transform(
            {
                NEW_LAYERS: optax.scale(settings.new_layer_lr_multiplier),
                OTHER_LAYERS: optax.identity(),
            },
            new_layer_labels(settings.new_layers),
        )
    )
  sgd = optax.sgd(schedule, momentum=config.optimizer.momentum)
  parts.append(with_stateless_parts(sgd, before, after) if before or after else sgd)
  return optax.chain(*parts)


def with_stateless_parts(
    inner: optax.GradientTransformation,
    before: list[optax.GradientTransformation],
    after: list[optax.GradientTransformation],
) -> optax.GradientTransformation:
  """`inner` with stateless transformations applied to the updates before and after it; the
  state is `inner`'s own (the stateless parts' empty states are rebuilt at each update)."""

  def apply(parts, updates, params):
    for part in parts:
      updates, _ = part.update(updates, part.init(params), params)
    return updates

  def init(params):
    for part in before + after:
      part.init(params)  # their own checks (e.g. new_layer_labels) fail here, not mid-run
    return inner.init(params)

  def update(updates, state, params=None):
    updates, state = inner.update(apply(before, updates, params), state, params)
    return apply(after, updates, params), state

  return optax.GradientTransformation(init, update)


NEW_LAYERS, OTHER_LAYERS = "new_layers", "other_layers"


def weight_matrices(params):
  """True for every weight matrix / kernel (ndim >= 2), False for biases and scales."""
  return jax.tree.map(lambda value: jnp.ndim(value) >= 2, params)


def new_layer_labels(new_layers: tuple[str, ...]) -> Callable:
  """params -> the same tree of NEW_LAYERS (under a top-level name in `new_layers`) or
  OTHER_LAYERS labels; ValueError when a name is not a top-level key of the params."""

  def labels(params):
    missing = sorted(set(new_layers) - set(params.keys()))
    if missing:
      raise ValueError(
          f"new layers {missing} are not in the parameters (top-level names: "
          f"{sorted(params.keys())})"
      )
    return jax.tree_util.tree_map_with_path(
        lambda path, _: NEW_LAYERS if path[0].key in new_layers else OTHER_LAYERS, params
    )

  return labels


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
  method = methods.get(config.method)
  settings = method.settings(config)

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
      terms = method.losses(outputs, batch["labels"], settings)
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
      in_shardings=(replicated, batch_sharding(mesh), replicated),
      out_shardings=(replicated, replicated),
  )
  return compilation.ShapeCompiled(jitted, "train_step")  # logs and times every compile


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Arrays split along the mesh's `data` axis (batches, encoder inputs)."""
  return NamedSharding(mesh, PartitionSpec("data"))


def to_global(batch: dict, mesh: Mesh, keys=pipeline.MODEL_KEYS) -> dict:
  """Host batches (this process's rows) -> global arrays sharded along `data`."""
  sharding = batch_sharding(mesh)
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
  """Keeps the latest checkpoints, or with a validation split the best by validation MAP and
  the latest (which a rerun resumes from: without it a finished run whose last step is not
  among the best would train its last steps again)."""
  selecting = bool(config.dataset.validation_split)
  best_fn = (lambda saved: saved[VALIDATION_METRIC]) if selecting else None
  policies = ocp.checkpoint_managers
  options = ocp.CheckpointManagerOptions(
      max_to_keep=None if selecting else config.keep_checkpoints,
      save_interval_steps=_validation_interval(config) if selecting else config.checkpoint_every,
      best_fn=best_fn,
      best_mode="max",
      preservation_policy=(
          policies.AnyPreservationPolicy(
              [
                  policies.LatestN(n=1),
                  policies.BestN(get_metric_fn=best_fn, n=config.keep_checkpoints),
              ]
          )
          if selecting
          else None
      ),
      create=True,
      # save() copies the state to host memory and returns; a background thread writes it while
      # training goes on. The loop waits for it before it returns (and so before any restore).
      enable_async_checkpointing=True,
  )
  return ocp.CheckpointManager(resolve_path(directory), options=options)


def restore_latest(
    manager: ocp.CheckpointManager, state: TrainState, best: bool = False
) -> TrainState | None:
  """The latest (or, with `best`, the best-by-validation) intact checkpoint restored into
  `state`'s structure and shardings, or None when there is none.

  Each candidate is verified (checksums, shapes, finite values) and damaged steps are passed
  over with a warning (`iah_jax.checkpoints.restore`); CheckpointError when none is intact.
  """
  with phases.phase("checkpoints"):
    return checkpoints.restore(manager, state, metric=VALIDATION_METRIC if best else None)


TRAIN_SECONDS = "train_seconds"  # custom metadata of every checkpoint step


def train_seconds(manager: ocp.CheckpointManager, step: int | None = None) -> float:
  """Seconds spent training the run up to checkpoint `step` (default: the latest), summed over
  every session that trained it (steps redone after a kill count once); 0 without one."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return 0.0
  try:
    custom = manager.metadata(step).custom_metadata or {}
  except Exception:  # pylint: disable=broad-except  a step without readable metadata
    return 0.0
  return float(custom.get(TRAIN_SECONDS, 0.0))


# ----------------------------------------------------------------------------- training loop


VALIDATION_METRIC = "validation_map"


def _validation_interval(config: ml_collections.ConfigDict) -> int:
  return config.eval.every_steps or config.num_train_steps


class NonFiniteLossError(RunError, FloatingPointError):
  """The loss became NaN or Inf; the message names the step."""


def _check_finite(window: list[tuple[int, dict]], last_checkpoint: str = "") -> None:
  """Raises NonFiniteLossError at the first (step number as logged, loss terms) of `window`
  with a NaN/Inf term; `last_checkpoint` (a sentence naming the last checkpoint) ends the
  message."""
  for step, terms in window:
    values = {name: float(value) for name, value in jax.device_get(terms).items()}
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if bad:
      raise NonFiniteLossError(
          f"non-finite loss at step {step}: {bad} (all terms: {values}). Lower the learning "
          f"rate or check the inputs of that batch. {last_checkpoint}".rstrip()
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

  Resuming is exact: the newest intact checkpoint is restored (damaged ones are passed over,
  see iah_jax.checkpoints), the batches are those an uninterrupted run sees from that step on
  (pipeline.train_batches) and the dropout key of step s is fold_in(key, s), so the losses
  after a resume equal an uninterrupted run's. The loss terms are checked for NaN/Inf at every
  log and before every save, and no non-finite state is saved. TensorBoard events of steps
  after the restored one (logged by a killed session) are dropped before this session logs
  them again; every checkpoint records the training seconds of the run so far (`train_seconds`).
  """
  session_start = time.perf_counter()
  check_batch_size(config.batch_size, mesh)
  num_train = pipeline.num_examples(builder, config.dataset.train_split)
  steps_per_epoch = max(1, num_train // config.batch_size)
  schedule = learning_rate_schedule(config, steps_per_epoch)
  warn_if_rate_vanishes(config, steps_per_epoch)
  tx = make_optimizer(config, schedule)
  num_proposals = builder.info.features[features.PROPOSALS].shape[0]
  init_rng, train_rng = jax.random.split(rng)
  state = create_train_state(model, tx, init_rng, mesh, config.dataset.image_size, num_proposals)
  if config.model.pretrained:
    state = load_pretrained(state, config)

  manager = checkpoint_manager(os.path.join(run_dir, "checkpoints"), config)
  run_manifest.write(run_dir, config, builder, model)  # what serving needs (process 0 only)
  restored = restore_latest(manager, state)
  if restored is not None:
    state = restored
    logger.info("resumed from %s at step %d", run_dir, int(state.step))
  start_step = int(state.step)
  seconds_before = train_seconds(manager, start_step) if restored is not None else 0.0
  if start_step >= config.num_train_steps:
    manager.close()
    return state

  train_step = make_train_step(model, tx, schedule, config, mesh)
  validate = _validator(config, model, builder, mesh) if config.dataset.validation_split else None
  # The batch of step s depends on (seed, s) only: a resumed run continues the same sequence.
  batches = pipeline.train_batches(
      builder,
      split=config.dataset.train_split,
      global_batch_size=config.batch_size,
      image_size=config.dataset.image_size,
      seed=config.seed,
      shuffle_buffer=config.dataset.shuffle_buffer,
      start_step=start_step,
      num_batches=config.num_train_steps - start_step,
  )
  writer = _summary_writer(run_dir, start_step)
  saver = checkpoints.Saver(manager)
  window: list[tuple[int, dict]] = []  # (step number as logged, loss terms) since the last log
  checked = 0  # window[:checked] was checked for NaN/Inf (before a save)
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
  try:
    for step in range(start_step, config.num_train_steps):
      with timer.phase("input pipeline"):
        batch = to_global(next(batches), mesh)
      with timer.phase("train steps"):
        state, terms = train_step(state, batch, jax.random.fold_in(train_rng, step))
        # Waiting for each step charges its CPU time to this phase (it costs no overlap worth
        # having: tf.data prepares the next batches in its own threads meanwhile).
        jax.block_until_ready(terms)
      window.append((step + 1, terms))
      progress.update(1)
      saver.seal_finished()
      last_step = step + 1 == config.num_train_steps
      if validate is None:
        saving = last_step or manager.should_save(step + 1)
      else:
        saving = last_step or (step + 1) % _validation_interval(config) == 0
      logging_now = len(window) >= config.log_every or last_step
      if saving or logging_now:
        _check_finite(window[checked:], checkpoints.last_checkpoint_note(saver))
        checked = len(window)
      if logging_now:
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
        window, checked, window_start = [], 0, time.perf_counter()
      if saving:
        score = None
        if validate is not None:
          with timer.phase("validation"):
            score = validate(state)
          logger.info("step %d: %s=%.4f", step + 1, VALIDATION_METRIC, score)
          _write_scalars(writer, step + 1, {VALIDATION_METRIC: score})
        with timer.phase("checkpoints"):
          saver.save(
              step + 1,
              state,
              metrics=None if score is None else {VALIDATION_METRIC: score},
              custom_metadata={TRAIN_SECONDS: seconds_before + time.perf_counter() - session_start},
          )
  finally:
    progress.close()
    # Tearing down tf.data's iterator sometimes blocks for ~30 s (idle: its threads wind down
    # the work in flight); a non-daemon thread does it while the job goes on (encoding), and
    # the interpreter joins it at exit.
    threading.Thread(target=batches.close, name="close_train_batches").start()
    with timer.phase("checkpoints"):  # the last asynchronous save finishes (and is sealed) even
      saver.close()  # when training stopped
  return state


def _validator(
    config: ml_collections.ConfigDict, model: nn.Module, builder, mesh: Mesh
) -> Callable[[TrainState], float]:
  """state -> semantic MAP of the validation split (queries) against the training split."""
  # Model selection encodes exactly as the final evaluation does; evaluate.py builds on this
  # module, hence the late import.
  from iah_jax import evaluate

  encode_step = evaluate.make_encode_step(model, mesh, config)

  def validate(state: TrainState) -> float:
    database = evaluate.encode_split(
        state, encode_step, builder, config.dataset.train_split, config, mesh
    )
    queries = evaluate.encode_split(
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
      backbone=config.model.backbone,
  )
  return state.replace(params=variables["params"], batch_stats=variables["batch_stats"])


def _summary_writer(run_dir: str, start_step: int = 0):
  """TensorBoard event files, written by process 0 only (None elsewhere). Events of steps
  after `start_step` (logged by a session killed after its last checkpoint) are dropped first,
  so the steps this session replays keep one value each."""
  if jax.process_index() != 0:
    return None
  import tensorflow as tf  # TensorBoard event files; TF is already the data dependency

  directory = os.path.join(run_dir, "tensorboard")
  summaries.drop_events_after(directory, start_step)
  return tf.summary.create_file_writer(directory)


def _write_scalars(writer, step: int, values: dict) -> None:
  if writer is None:
    return
  import tensorflow as tf

  with writer.as_default(step=step):
    for name, value in values.items():
      tf.summary.scalar(name, value)
  writer.flush()


# ----------------------------------------------------------------------------- data


@phases.timed("data")
def load_dataset(config: ml_collections.ConfigDict):
  """The TFDS builder named by the config, prepared (generated on first use) in data_dir."""
  from iah_jax.data import registry

  options = config.dataset.options.to_dict()
  if config.dataset.name == registry.SYNTHETIC_SCENES:
    options["config"] = config.dataset.config  # a named config; the options replace its fields
  return registry.get_builder(config.dataset.name, resolve_path(config.dataset.data_dir), **options)
