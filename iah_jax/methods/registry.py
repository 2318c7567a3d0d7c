"""The method contract and the registry every part of the code reads.

A `Method` describes itself completely: its network (`build`), what it minimises (`losses`), how
its outputs become codes (`encode`), what its codes can be evaluated on (`capabilities`), its own
options with their defaults (`config.method_options.<name>`), the per-layer solver settings its
papers train with (`optimizer_settings`, optional) and its display title. Training
(train.py), evaluation (evaluate.py), the config schema (config.py) and the comparison
(comparison/) look a method up here by name and keep no list of methods of their own, so a new
method is one module that calls `register`.

The three functions:
- `build(context: BuildContext) -> nn.Module`, called as `model.apply(variables, images,
  proposals, train=...)` (methods that do not read proposals ignore them) and returning a dict
  of arrays holding at least `semantic_features`.
- `losses(outputs, labels [B, c], settings: Settings) -> {"loss": scalar, ...named terms}`.
- `encode(outputs, settings: Settings) -> {"semantic_codes": {0,1} uint8 [B, q], ...}` plus,
  exactly as `capabilities` declares, `category_codes` [B, c, b], `label_probs` [B, c] and
  `bit_weights` [B, q].
And optionally `optimizer_settings(options: config.method_options.<name>) -> OptimizerSettings`
(train.make_optimizer applies it on top of config.optimizer).
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax.numpy as jnp
import ml_collections


@dataclasses.dataclass(frozen=True)
class Capabilities:
  """What a method's codes offer; evaluation and the comparison follow these, never output keys.

  Attributes:
    category_codes: `encode` gives `category_codes` [B, c, b]: category-aware retrieval (IAH
      Figs. 8-9) is evaluated.
    label_probs: `encode` gives `label_probs` [B, c]; with category codes, IAH section IV's
      probability tables are evaluated too.
    bit_weights: `encode` gives query-adaptive `bit_weights` [B, q]: the semantic codes are
      also ranked by weighted Hamming distance.
    query_adaptive_ranking: that weighted ranking is the method's own (QaDWH); the plain
      Hamming ranking is then the variant.
    semantic_table: its semantic codes belong in the semantic (Table II) comparison; False for
      a method whose `semantic_codes` only stand in for its category codes.
    proposals: the network reads the region proposals (the others ignore them).
  """

  category_codes: bool = False
  label_probs: bool = False
  bit_weights: bool = False
  query_adaptive_ranking: bool = False
  semantic_table: bool = True
  proposals: bool = False

  def encoded_keys(self) -> frozenset[str]:
    """The keys `encode` returns."""
    optional = {
        "category_codes": self.category_codes,
        "label_probs": self.label_probs,
        "bit_weights": self.bit_weights,
    }
    return frozenset({"semantic_codes"} | {key for key, present in optional.items() if present})


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a method's `losses` and `encode` read.

  Attributes:
    loss: config.loss, the weights and margins the methods share (label / semantic / category).
    model: config.model (e.g. `output_bound`).
    options: config.method_options.<name>, the method's own options.
  """

  loss: ml_collections.ConfigDict
  model: ml_collections.ConfigDict
  options: ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
  """Per-parameter solver settings of a method (its authors' Caffe / cuda-convnet solvers set
  them per layer); train.make_optimizer applies them on top of config.optimizer.

  Attributes:
    new_layers: top-level names in the method's params (Flax submodule or parameter names, e.g.
      "hash_fc") of the layers trained with `new_layer_lr_multiplier`; every other parameter
      (the backbone, ...) keeps the schedule's rate. A name missing from the params is an error.
    new_layer_lr_multiplier: the new layers' learning rate is this times the schedule's (Caffe's
      lr_mult); 1.0 = one rate for all.
    weight_decay: L2 weight decay (added to the gradient before momentum, as Caffe's
      weight_decay with decay_mult 1 on weights and 0 on biases) on every weight matrix and
      kernel: parameters with ndim >= 2 (not biases, nor normalisation scales). Added to
      config.optimizer.weight_decay, which applies to every parameter of every method.
  """

  new_layers: tuple[str, ...] = ()
  new_layer_lr_multiplier: float = 1.0
  weight_decay: float = 0.0


def new_layer_optimizer_settings(
    new_layers: tuple[str, ...],
) -> Callable[[ml_collections.ConfigDict], OptimizerSettings]:
  """`optimizer_settings` of a method whose options hold `new_layer_lr_multiplier` and
  `weight_decay` (for the parameters under the top-level names `new_layers`)."""

  def settings(options: ml_collections.ConfigDict) -> OptimizerSettings:
    return OptimizerSettings(
        new_layers=tuple(new_layers),
        new_layer_lr_multiplier=float(options.new_layer_lr_multiplier),
        weight_decay=float(options.weight_decay),
    )

  return settings


def check_optimizer_options(name: str, options: ml_collections.ConfigDict) -> None:
  """ValueError unless method `name`'s new_layer_lr_multiplier > 0 and weight_decay >= 0 (for
  the methods that declare these options; called by their `build`)."""
  if not options.new_layer_lr_multiplier > 0:
    raise ValueError(
        f"method_options.{name}.new_layer_lr_multiplier must be > 0, got "
        f"{options.new_layer_lr_multiplier}"
    )
  if not options.weight_decay >= 0:
    raise ValueError(f"method_options.{name}.weight_decay must be >= 0, got {options.weight_decay}")


@dataclasses.dataclass(frozen=True)
class BuildContext:
  """What a method's `build` reads: the sizes of this run, the backbone and the settings.

  Attributes:
    num_classes: c.
    semantic_bits: q.
    bits_per_category: b.
    backbone: images [B, H, W, 3] -> feature map [B, h, w, C]; the network keeps it as its
      `backbone` attribute (the shallow baselines and the pretrained loader find it there).
    model: config.model.
    options: config.method_options.<name>.
  """

  num_classes: int
  semantic_bits: int
  bits_per_category: int
  backbone: nn.Module
  model: ml_collections.ConfigDict
  options: ml_collections.ConfigDict

  @property
  def dtype(self) -> jnp.dtype:
    """Computation dtype of the head (config.model.dtype)."""
    return jnp.dtype(self.model.dtype)


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered hashing method (see the module docstring for the three functions).

  Attributes:
    name: the `config.method` value.
    title: display title (reports, tables).
    build: BuildContext -> the Flax module.
    losses: (outputs, labels, Settings) -> {"loss", ...}.
    encode: (outputs, Settings) -> codes.
    capabilities: see `Capabilities`.
    options: defaults of config.method_options.<name> (name -> value; the config schema).
    optimizer_settings: config.method_options.<name> -> OptimizerSettings, or None (the
      config.optimizer solver for every parameter).
    tuned_weights: the method's one or two main loss weights (or margins), as dotted config
      paths ("loss.category_weight", "method_options.dsrh.bit_balance_weight"), that the
      validation-selected search (`iah_jax.compare --search`) scales after the learning rate.
  """

  name: str
  title: str
  build: Callable[[BuildContext], nn.Module]
  losses: Callable[[dict, Any, Settings], dict]
  encode: Callable[[dict, Settings], dict]
  capabilities: Capabilities = Capabilities()
  options: Mapping[str, Any] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))
  optimizer_settings: Callable[[ml_collections.ConfigDict], OptimizerSettings] | None = None
  tuned_weights: tuple[str, ...] = ()

  def method_options(self, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """config.method_options.<name>."""
    return config.method_options[self.name]

  def settings(self, config: ml_collections.ConfigDict) -> Settings:
    return Settings(loss=config.loss, model=config.model, options=self.method_options(config))

  def optimizer(self, config: ml_collections.ConfigDict) -> OptimizerSettings:
    """This run's per-parameter solver settings (the defaults when the method declares none)."""
    if self.optimizer_settings is None:
      return OptimizerSettings()
    return self.optimizer_settings(self.method_options(config))

  def build_context(
      self,
      config: ml_collections.ConfigDict,
      num_classes: int,
      semantic_bits: int,
      bits_per_category: int,
      backbone: nn.Module,
  ) -> BuildContext:
    """What `build` reads for one run, from the config and the run's sizes."""
    return BuildContext(
        num_classes=num_classes,
        semantic_bits=semantic_bits,
        bits_per_category=bits_per_category,
        backbone=backbone,
        model=config.model,
        options=self.method_options(config),
    )


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
  """Adds `method` (its name must be new); returns it. Registration order is table order."""
  if method.name in _REGISTRY:
    raise ValueError(f"method {method.name!r} is already registered")
  _REGISTRY[method.name] = method
  return method


def unregister(name: str) -> None:
  """Removes a registered method (tests that register a toy method clean up with this)."""
  _REGISTRY.pop(name)


def get(name: str) -> Method:
  """The registered method called `name`; ValueError naming the known ones otherwise."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown method {name!r}; known: {list(_REGISTRY)}")
  return _REGISTRY[name]


def names() -> tuple[str, ...]:
  """Every registered method, in registration (table) order."""
  return tuple(_REGISTRY)
