"""Retrieval as a product: restore a trained run, index a photo collection, search it.

    encoder = serving.load_model("runs/default/q16_b4")      # checkpoint + run manifest
    outputs = encoder.encode(images)                         # codes, probabilities, proposals
    serving.saliency_map(boxes, probs, height, width)        # IAH Fig. 5

The command lines are `python -m iah_jax.index` and `python -m iah_jax.search`. Submodules are
imported on first use (``serving.load_model`` imports JAX and the model; ``serving.saliency``
only JAX), so importing the package itself is cheap.
"""

from __future__ import annotations

import importlib

# public name -> submodule defining it
_EXPORTS = {
    "ServingError": "errors",
    "saliency_map": "saliency",
    "REDUCTIONS": "saliency",
}


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
  return getattr(module, name)


def __dir__():
  return sorted(list(globals()) + list(_EXPORTS))
