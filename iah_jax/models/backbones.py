"""Backbone registry: a config names a backbone, this builds the Flax module.

Every backbone maps images float32 [B, H, W, 3] RGB in [0, 1] to a feature map [B, h, w, C] and
takes `train: bool`; it may keep BatchNorm statistics in the `batch_stats` collection.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

NAMES = ("small_cnn", "googlenet")


def build_backbone(
    name: str, options: Mapping[str, Any] | None = None, dtype: jnp.dtype = jnp.float32
) -> nn.Module:
  """Returns the backbone module called `name` ("small_cnn" or "googlenet")."""
  options = dict(options or {})
  if name == "small_cnn":
    from iah_jax.models.small_cnn import SmallCNN

    return SmallCNN(dtype=dtype, **options)
  if name == "googlenet":
    from iah_jax.models.googlenet import GoogLeNetBackbone

    return GoogLeNetBackbone(dtype=dtype, **options)
  raise ValueError(f"unknown backbone {name!r}; known: {', '.join(NAMES)}")
