"""Pieces every hashing method shares: global-average pooling of a backbone's feature map, the
output bounds and their code thresholds, binarisation.

A method's hash layer passes through a bound ("tanh": codes 1[x > 0]; "sigmoid": codes
1[x > 0.5]); `binarize(features, bound)` turns bounded outputs into {0, 1} codes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

OUTPUT_BOUNDS = {"tanh": (jnp.tanh, 0.0), "sigmoid": (jax.nn.sigmoid, 0.5)}


def global_average_pool(feature_map: jax.Array) -> jax.Array:
  """[B, h, w, C] -> [B, C] float32, the mean over the spatial positions."""
  if feature_map.ndim != 4:
    raise ValueError(
        f"a backbone must return a feature map [B, h, w, C], got shape {feature_map.shape}"
    )
  return jnp.mean(feature_map.astype(jnp.float32), axis=(1, 2))


def bound(output_bound: str):
  """(squashing function, code threshold) of "tanh" or "sigmoid"."""
  if output_bound not in OUTPUT_BOUNDS:
    raise ValueError(f"output_bound must be one of {sorted(OUTPUT_BOUNDS)}, got {output_bound!r}")
  return OUTPUT_BOUNDS[output_bound]


def code_threshold(output_bound: str) -> float:
  """The value at which a bounded output turns into bit 1 (exclusive)."""
  return bound(output_bound)[1]


def binarize(features: jax.Array, output_bound: str = "tanh") -> jax.Array:
  """Hash codes {0, 1} (uint8) from bounded features: 1 where feature > threshold."""
  return (features > code_threshold(output_bound)).astype(jnp.uint8)
