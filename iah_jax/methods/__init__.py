"""Hashing methods selectable by `config.method`: each says how to build its network, what it
minimises and how its outputs become codes. The training loop (train.py) is shared.

A method's network is called as `model.apply(variables, images, proposals, train=...)` (methods
that do not use proposals ignore them) and returns a dict holding at least `semantic_features`.
`encode(outputs, config)` returns `semantic_codes` {0,1} [B, q] and, where the method has them,
`category_codes` [B, c, b], `label_probs` [B, c] and `bit_weights` [B, q] (query-adaptive
weighted Hamming ranking).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

# name -> module implementing build_model / compute_losses / encode
_METHODS = {
    "iah": "iah_jax.methods.iah",
    "one_stage": "iah_jax.methods.one_stage",
    "dsrh": "iah_jax.methods.dsrh",
    "qadwh": "iah_jax.methods.qadwh",
    "category_baseline": "iah_jax.methods.category_baseline",
}


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  build_model: Callable  # (config, num_classes, semantic_bits, bits_per_category, backbone)
  compute_losses: Callable  # (outputs, labels, loss_config) -> {"loss": scalar, ...terms}
  encode: Callable  # (outputs, config) -> {"semantic_codes": ..., ...}


def get_method(name: str) -> Method:
  if name not in _METHODS:
    raise ValueError(f"unknown method {name!r}; known: {sorted(_METHODS)}")
  module = importlib.import_module(_METHODS[name])
  return Method(
      name=name,
      build_model=module.build_model,
      compute_losses=module.compute_losses,
      encode=module.encode,
  )


def method_names() -> tuple[str, ...]:
  return tuple(_METHODS)
