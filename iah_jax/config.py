"""The configuration schema: every key a config may set, its default, and validation.

Config files (configs/*.py) start from `base_config()` and change fields, so a typo in a config
file (a key the schema does not know) is caught by `validate_config` with the list of known keys,
and `--config.x=...` overrides are checked by ml_collections' locked config.
"""

from __future__ import annotations

import ml_collections

# Sub-dicts whose keys depend on another setting (builder or backbone options): not checked.
FREE_FORM = ("dataset.options", "model.backbone_options")


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
  config.optimizer.weight_decay = 0.0
  config.optimizer.decay_every_epochs = 30.0  # paper: lr / 10 every 30 epochs
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
  return config


def method_options() -> ml_collections.ConfigDict:
  """{method name: {option: default}} for every registered method."""
  from iah_jax import methods  # late: methods import the models (Flax)

  return ml_collections.ConfigDict(
      {name: dict(methods.get(name).options) for name in methods.names()}
  )


def _keys(config: ml_collections.ConfigDict, prefix: str = ""):
  for key, value in config.items():
    path = f"{prefix}{key}"
    yield path
    if isinstance(value, ml_collections.ConfigDict) and path not in FREE_FORM:
      yield from _keys(value, path + ".")


def validate_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ValueError for unknown keys or inconsistent values; returns the config."""
  known = set(_keys(base_config()))
  unknown = sorted(set(_keys(config)) - known)
  if unknown:
    raise ValueError(f"unknown config key(s) {unknown}; known keys: {sorted(known)}")
  from iah_jax import methods  # late: methods import the models

  if config.method not in methods.names():
    raise ValueError(f"unknown method {config.method!r}; known: {list(methods.names())}")
  if len(config.semantic_bits) != len(config.bits_per_category):
    raise ValueError(
        "semantic_bits and bits_per_category must have the same length (one model "
        f"per pair), got {config.semantic_bits} and {config.bits_per_category}"
    )
  if any(int(bits) < 1 for bits in (*config.semantic_bits, *config.bits_per_category)):
    raise ValueError("bit lengths must be positive")
  if config.batch_size < 2:
    raise ValueError(f"batch_size must be at least 2 for triplets, got {config.batch_size}")
  if config.num_train_steps < 0:
    raise ValueError(f"num_train_steps must be >= 0, got {config.num_train_steps}")
  if config.model.output_bound not in ("tanh", "sigmoid"):
    raise ValueError(
        f"model.output_bound must be 'tanh' or 'sigmoid', got " f"{config.model.output_bound!r}"
    )
  if config.model.dtype not in ("float32", "bfloat16"):
    raise ValueError(f"model.dtype must be 'float32' or 'bfloat16', got {config.model.dtype!r}")
  return config
