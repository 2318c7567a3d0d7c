"""The configuration schema: every key a config may set, its default, and validation.

Config files (configs/*.py) start from `base_config()` and change fields. `validate_config` checks
the whole config before any work starts and raises one `ConfigError` listing every problem, each
naming the field, the value and what it accepts (the choices, or the known keys):

- no key outside the schema (`base_config()`, each method's declared options);
- every field's type and range (`FIELD_CHECKS`): integers are integers (not 16.5 or "abc"),
  tuples hold positive integers, intervals are positive, strings are one of their choices,
  splits parse as TFDS split strings and name splits the dataset has;
- `dataset.options` against the chosen dataset's option schema (`iah_jax.data.registry`:
  the builder config's fields), `model.backbone_options` against the backbone's fields, and
  `method_options.<method>` against the method's declared options; the selected method and its
  backbone are built once (no weights) so their own checks run too;
- with `check_inputs=True`, the files the run will read: the image lists and image root of an
  `image_list` dataset, `model.pretrained`.

The command-line entry points (iah_jax.cli) apply `--config.dataset.options.*` and
`--config.model.backbone_options.*` against the same schemas, so every option of the selected
dataset or backbone can be set from the command line.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from typing import Any, Callable

import ml_collections

from iah_jax.errors import UserInputError

# Sub-dicts whose keys depend on another setting, checked against that setting's schema.
FREE_FORM = ("dataset.options", "model.backbone_options")
OUTPUT_BOUNDS = ("tanh", "sigmoid")
DTYPES = ("float32", "bfloat16")


class ConfigError(UserInputError):
  """Config fields with bad values or unknown keys; one line per problem."""


def base_config() -> ml_collections.ConfigDict:
  """All keys with their defaults (the embedded synthetic dataset, small CPU backbone)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.method = "iah"  # a registered method, see iah_jax.methods
  # Each method's own options, `method_options.<method>.<option>` with the defaults the method
  # declares (iah_jax.methods: e.g. method_options.dsrh.margin); margins and weights shared by
  # the methods (semantic/category margins, label/semantic/category weights) stay in config.loss.
  config.method_options = method_options()

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "synthetic_scenes"  # see iah_jax.data.registry
  config.dataset.data_dir = "~/tensorflow_datasets"  # TFDS data_dir, prepared on first use
  config.dataset.config = "default"  # builder config name
  config.dataset.options = ml_collections.ConfigDict()  # builder-specific options
  config.dataset.train_split = "train"
  config.dataset.database_split = "train"  # paper protocol: the training images are the database
  config.dataset.query_split = "test"  # held-out queries
  # Model selection: e.g. train_split "train[:90%]", validation_split "train[90%:]" (queries
  # against train_split); "" = no selection, the final checkpoint is evaluated.
  config.dataset.validation_split = ""
  config.dataset.image_size = 64  # images are resized to image_size x image_size
  config.dataset.shuffle_buffer = 4096

  config.model = ml_collections.ConfigDict()
  config.model.backbone = "small_cnn"  # "small_cnn" | "googlenet"
  config.model.backbone_options = ml_collections.ConfigDict()
  config.model.pretrained = ""  # converted backbone weights (convert/), "" = none
  config.model.reduced_maps = 32  # conv after the backbone (paper: 32)
  config.model.spp_levels = (4, 3, 2, 1)  # paper: 4 levels, 30 bins, d = 960
  config.model.output_bound = "tanh"  # "tanh" (codes: > 0) | "sigmoid" (codes: > 0.5)
  config.model.dtype = "float32"  # "bfloat16": mixed precision for GPU/TPU

  # One model is trained per pair (semantic_bits[i], bits_per_category[i]).
  config.semantic_bits = (16, 32, 48, 64)  # q
  config.bits_per_category = (4, 8, 12, 16)  # b

  config.loss = ml_collections.ConfigDict()
  config.loss.label_weight = 1.0  # eq. 3
  config.loss.semantic_weight = 1.0  # eq. 9
  config.loss.category_weight = 1.0  # eq. 7
  config.loss.semantic_margin = 1.0
  config.loss.category_margin = 1.0

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-4  # paper: 1e-4
  config.optimizer.momentum = 0.9
  # L2 decay on every parameter of every method; methods with their papers' per-layer solver
  # settings (dsrh, qadwh: method_options.<m>.weight_decay on weights and
  # new_layer_lr_multiplier on their new layers) add those (train.make_optimizer).
  config.optimizer.weight_decay = 0.0
  config.optimizer.decay_every_epochs = 30.0  # paper: lr / 10 every 30 epochs
  # > 0: decay every this many steps instead, whatever the training set's size (an epoch-based
  # decay on a 130-image list decays every 120 steps at batch 32).
  config.optimizer.decay_every_steps = 0
  config.optimizer.decay_factor = 0.1
  config.optimizer.warmup_steps = 0

  config.batch_size = 32  # global batch (paper: 32)
  config.num_train_steps = 15_000  # paper: 15,000 iterations
  config.log_every = 50
  config.checkpoint_every = 1000
  config.keep_checkpoints = 2

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 128
  config.eval.ks = (100,)  # NDCG@k / ACG@k cut-offs
  config.eval.ties = "stable"  # Hamming ties by database index
  config.eval.every_steps = 0  # validation interval (0: only at the end)

  # The validation-selected search of `iah_jax.compare --search` (iah_jax.comparison.search):
  # per deep method and code length, trials scored by their best validation MAP (the validation
  # carve only, never the queries): first optimizer.learning_rate x each learning_rate_scale,
  # then, at the best rate, each of the method's tuned loss weights (its registry entry) x each
  # weight_scale in turn, kept where it beats the best so far. Scale 1.0 (the config's own value)
  # is always tried, so the search never selects below the config's validation MAP. Budget per
  # (method, q): (len(learning_rate_scales) + len(weight_scales) * weights) trials of
  # num_train_steps steps (0: config.num_train_steps; the schedule's decay and warm-up scale
  # with it). Needs dataset.validation_split.
  config.search = ml_collections.ConfigDict()
  config.search.learning_rate_scales = (0.3, 1.0, 3.0)
  config.search.weight_scales = (0.3, 3.0)
  config.search.num_train_steps = 0
  return config


def method_options() -> ml_collections.ConfigDict:
  """{method name: {option: default}} for every registered method."""
  from iah_jax import methods  # late: methods import the models (Flax)

  return ml_collections.ConfigDict(
      {name: dict(methods.get(name).options) for name in methods.names()}
  )


# ----------------------------------------------------------------------------- field checks
# Each check takes a value and returns None when it fits, else what the value must be.
Check = Callable[[Any], "str | None"]


def _is_integer(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer(minimum: int | None = None) -> Check:
  wanted = "an integer" + (f" >= {minimum}" if minimum is not None else "")

  def check(value):
    fits = _is_integer(value) and (minimum is None or value >= minimum)
    return None if fits else f"must be {wanted}"

  return check


def number(minimum: float = 0.0, *, strict: bool = False, below: float | None = None) -> Check:
  wanted = f"a number {'>' if strict else '>='} {minimum:g}" + (
      f" and < {below:g}" if below is not None else ""
  )

  def check(value):
    fits = (
        _is_number(value)
        and (value > minimum if strict else value >= minimum)
        and (below is None or value < below)
    )
    return None if fits else f"must be {wanted}"

  return check


def choice(choices: tuple[str, ...] | Callable[[], tuple[str, ...]]) -> Check:
  def check(value):
    known = choices() if callable(choices) else choices
    return None if value in known else "must be one of " + ", ".join(repr(c) for c in known)

  return check


def string(allow_empty: bool = True) -> Check:
  def check(value):
    if not isinstance(value, str):
      return "must be a string"
    return None if value or allow_empty else "must not be empty"

  return check


def integer_tuple(minimum: int = 1, allow_empty: bool = False) -> Check:
  def check(value):
    fits = (
        isinstance(value, (tuple, list))
        and (allow_empty or len(value) > 0)
        and all(_is_integer(item) and item >= minimum for item in value)
    )
    if fits:
      return None
    empty = "" if allow_empty else "non-empty "
    return f"must be a {empty}tuple of integers >= {minimum}, e.g. '(16, 32)'"

  return check


def number_tuple(minimum: float = 0.0, *, strict: bool = False) -> Check:
  wanted = f"a non-empty tuple of numbers {'>' if strict else '>='} {minimum:g}, e.g. '(0.3, 3.0)'"

  def check(value):
    fits = (
        isinstance(value, (tuple, list))
        and len(value) > 0
        and all(
            _is_number(item) and (item > minimum if strict else item >= minimum) for item in value
        )
    )
    return None if fits else f"must be {wanted}"

  return check


def split(allow_empty: bool = False) -> Check:
  """A TFDS split string ("train", "train[:90%]", "train+unlabelled"); its names are checked
  against the dataset's splits in `validate_config`."""

  def check(value):
    if not isinstance(value, str):
      return "must be a TFDS split string such as 'train' or 'train[:90%]'"
    if not value:
      return None if allow_empty else "must name a split, e.g. 'train'"
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    try:
      tfds.core.ReadInstruction.from_spec(value)
    except (ValueError, AssertionError):
      return "is not a TFDS split string; examples: 'train', 'train[:90%]', 'train[100:]', 'a+b'"
    return None

  return check


def _method_names() -> tuple[str, ...]:
  from iah_jax import methods  # pylint: disable=g-import-not-at-top

  return methods.names()


def _dataset_names() -> tuple[str, ...]:
  from iah_jax.data import registry  # pylint: disable=g-import-not-at-top

  return registry.DATASET_NAMES


def _backbone_names() -> tuple[str, ...]:
  from iah_jax.models import backbones  # pylint: disable=g-import-not-at-top

  return backbones.NAMES


def _ties() -> tuple[str, ...]:
  from iah_jax import metrics  # pylint: disable=g-import-not-at-top

  return metrics.TIES


# Every field of base_config() outside method_options and FREE_FORM (a test keeps this complete).
FIELD_CHECKS: dict[str, Check] = {
    "seed": integer(0),
    "method": choice(_method_names),
    "dataset.name": choice(_dataset_names),
    "dataset.data_dir": string(allow_empty=False),
    "dataset.config": string(),
    "dataset.train_split": split(),
    "dataset.database_split": split(),
    "dataset.query_split": split(),
    "dataset.validation_split": split(allow_empty=True),
    "dataset.image_size": integer(1),
    "dataset.shuffle_buffer": integer(1),
    "model.backbone": choice(_backbone_names),
    "model.pretrained": string(),
    "model.reduced_maps": integer(1),
    "model.spp_levels": integer_tuple(1),
    "model.output_bound": choice(OUTPUT_BOUNDS),
    "model.dtype": choice(DTYPES),
    "semantic_bits": integer_tuple(1),
    "bits_per_category": integer_tuple(1),
    "loss.label_weight": number(0.0),
    "loss.semantic_weight": number(0.0),
    "loss.category_weight": number(0.0),
    "loss.semantic_margin": number(0.0),
    "loss.category_margin": number(0.0),
    "optimizer.learning_rate": number(0.0),
    "optimizer.momentum": number(0.0, below=1.0),
    "optimizer.weight_decay": number(0.0),
    "optimizer.decay_every_epochs": number(0.0, strict=True),
    "optimizer.decay_every_steps": integer(0),
    "optimizer.decay_factor": number(0.0, strict=True),
    "optimizer.warmup_steps": integer(0),
    "batch_size": integer(2),  # triplets need two images
    "num_train_steps": integer(0),
    "log_every": integer(1),
    "checkpoint_every": integer(1),
    "keep_checkpoints": integer(1),
    "eval.batch_size": integer(1),
    "eval.ks": integer_tuple(1, allow_empty=True),
    "eval.ties": choice(_ties),
    "eval.every_steps": integer(0),
    "search.learning_rate_scales": number_tuple(0.0, strict=True),
    "search.weight_scales": number_tuple(0.0),
    "search.num_train_steps": integer(0),
}


# ----------------------------------------------------------------------------- validation


def _keys(config: ml_collections.ConfigDict, prefix: str = ""):
  for key, value in config.items():
    path = f"{prefix}{key}"
    yield path
    if isinstance(value, ml_collections.ConfigDict) and path not in FREE_FORM:
      yield from _keys(value, path + ".")


def _get(config: ml_collections.ConfigDict, path: str):
  for part in path.split("."):
    config = config[part]
  return config


def known_keys(path: str) -> list[str]:
  """The keys the schema knows directly under `path` ("" for the top level)."""
  node = _get(base_config(), path) if path else base_config()
  return sorted(node.keys())


def _unknown_key_problems(config: ml_collections.ConfigDict) -> list[str]:
  known = set(_keys(base_config()))
  problems = []
  reported = set()
  for path in sorted(set(_keys(config)) - known):
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    if parent in reported or any(path.startswith(f"{r}.") for r in reported):
      continue  # children of an unknown key
    reported.add(path)
    where = f"config.{parent}" if parent else "config"
    problems.append(
        f"unknown config key config.{path}; known keys of {where}: " + ", ".join(known_keys(parent))
    )
  return problems


def backbone_option_schema(name: str) -> dict[str, Any]:
  """{option: default} of backbone `name`: its Flax module fields (not dtype, set by the
  config's model.dtype)."""
  from iah_jax.models import backbones  # pylint: disable=g-import-not-at-top

  module = backbones.build_backbone(name)
  return {
      field.name: getattr(module, field.name)
      for field in dataclasses.fields(module)
      if field.name not in ("parent", "name", "dtype")
  }


def _free_form_problems(path: str, options: dict, schema: dict, owner: str) -> list[str]:
  from iah_jax.data import registry  # pylint: disable=g-import-not-at-top

  problems = []
  for key in sorted(options):
    value = options[key]
    if key not in schema:
      problems.append(
          f"config.{path}.{key} = {value!r}: no such option for {owner}; known options: "
          + ", ".join(sorted(schema))
      )
    elif (problem := registry.type_problem(value, schema[key])) is not None:
      problems.append(f"config.{path}.{key} = {value!r}: {problem} (default {schema[key]!r})")
  return problems


def _split_problems(config: ml_collections.ConfigDict, splits: tuple[str, ...]) -> list[str]:
  problems = []
  for field in ("train_split", "database_split", "query_split", "validation_split"):
    value = config.dataset[field]
    if not isinstance(value, str):
      continue  # reported by its field check
    for part in filter(None, value.split("+")):
      name = part.split("[", 1)[0].strip()
      if name not in splits and name != "all":
        problems.append(
            f"config.dataset.{field} = {value!r}: dataset {config.dataset.name!r} has no split "
            f"{name!r}; its splits: " + ", ".join(splits)
        )
  return problems


def _dataset_problems(config: ml_collections.ConfigDict, check_inputs: bool) -> list[str]:
  from iah_jax.data import registry  # pylint: disable=g-import-not-at-top

  name, options = config.dataset.name, config.dataset.options.to_dict()
  synthetic = name == registry.SYNTHETIC_SCENES
  try:
    if synthetic:
      registry.synthetic_named_config(config.dataset.config)
    registry.check_options(name, options, config.dataset.config if synthetic else "default")
    if check_inputs:
      registry.check_sources(name, options)
  except UserInputError as error:
    return str(error).splitlines()
  return _split_problems(config, registry.split_names(name, options))


def _model_problems(config: ml_collections.ConfigDict, check_inputs: bool) -> list[str]:
  model = config.model
  problems = _free_form_problems(
      "model.backbone_options",
      model.backbone_options.to_dict(),
      backbone_option_schema(model.backbone),
      f"backbone {model.backbone!r}",
  )
  if model.pretrained and check_inputs and "://" not in model.pretrained:
    if not os.path.isfile(model.pretrained):
      problems.append(f"config.model.pretrained = {model.pretrained!r}: no such file")
    else:
      from iah_jax.models import pretrained  # pylint: disable=g-import-not-at-top

      try:  # reads the whole file: a truncated or foreign one is named now, not after hours
        file_backbone = pretrained.backbone_of(model.pretrained)
      except UserInputError as error:
        problems.append(f"config.model.pretrained = {model.pretrained!r}: {error}")
      else:
        if file_backbone != model.backbone:
          problems.append(
              f"config.model.pretrained = {model.pretrained!r}: the file holds "
              f"{file_backbone!r} variables; set config.model.backbone={file_backbone!r} "
              f"(it is {model.backbone!r})"
          )
  return problems


def _method_option_problems(config: ml_collections.ConfigDict) -> list[str]:
  from iah_jax import methods  # pylint: disable=g-import-not-at-top
  from iah_jax.data import registry  # pylint: disable=g-import-not-at-top

  problems = []
  for name in methods.names():
    declared = methods.get(name).options
    for option, default in declared.items():
      value = config.method_options[name][option]
      if (problem := registry.type_problem(value, default)) is not None:
        problems.append(
            f"config.method_options.{name}.{option} = {value!r}: {problem} (default {default!r})"
        )
  return problems


def _build_problems(config: ml_collections.ConfigDict) -> list[str]:
  """Builds config.method's network on its backbone, as train.build_model does but without
  importing the training stack (no weights): the method's and backbone's own checks run."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from iah_jax import methods  # pylint: disable=g-import-not-at-top
  from iah_jax.models import backbones  # pylint: disable=g-import-not-at-top

  method = methods.get(config.method)
  try:
    backbone = backbones.build_backbone(
        config.model.backbone,
        config.model.backbone_options.to_dict(),
        jnp.dtype(config.model.dtype),
    )
    method.build(
        method.build_context(
            config, 2, int(config.semantic_bits[0]), int(config.bits_per_category[0]), backbone
        )
    )
  except (TypeError, ValueError) as error:
    return [f"config (method {config.method!r}, backbone {config.model.backbone!r}): {error}"]
  return []


def validate_config(
    config: ml_collections.ConfigDict, *, check_inputs: bool = False
) -> ml_collections.ConfigDict:
  """Raises ConfigError listing every bad field (see the module docstring); returns the config.

  Args:
    config: a config built on `base_config()`.
    check_inputs: also check that the files the run reads exist (image lists and image root of
      an image_list dataset, model.pretrained); the command-line entry points set it.
  """
  problems = _unknown_key_problems(config)
  if problems:
    raise ConfigError("\n".join(problems))
  for path, check in FIELD_CHECKS.items():
    value = _get(config, path)
    if (problem := check(value)) is not None:
      problems.append(f"config.{path} = {value!r}: {problem}")
  problems += _method_option_problems(config)
  if not problems and len(config.semantic_bits) != len(config.bits_per_category):
    problems.append(
        f"config.semantic_bits = {tuple(config.semantic_bits)} and config.bits_per_category = "
        f"{tuple(config.bits_per_category)}: must have the same length (one model per pair)"
    )
  failed = {problem.split(" ", 1)[0] for problem in problems}
  if "config.dataset.name" not in failed and "config.dataset.config" not in failed:
    problems += _dataset_problems(config, check_inputs)
  if "config.model.backbone" not in failed:
    problems += _model_problems(config, check_inputs)
  if not problems:
    problems += _build_problems(config)
  if problems:
    raise ConfigError("\n".join(problems))
  return config
