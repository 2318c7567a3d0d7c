"""A small, fast CNN backbone for CPU configs (the paper uses GoogLeNet: models/googlenet.py)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class SmallCNN(nn.Module):
  """Stacks of 3x3 conv + ReLU with 2x2 max-pools between stages.

  Backbone interface shared by all backbones: images float32 [B, H, W, 3] RGB in [0, 1] ->
  feature map [B, H / 2**(len(widths) - 1), W / 2**(len(widths) - 1), widths[-1]].

  Attributes:
    widths: output channels of each stage; every stage but the last ends with a 2x2 max-pool.
    convs_per_stage: 3x3 convolutions in each stage.
    dtype: computation dtype (parameters stay float32).
  """

  widths: Sequence[int] = (32, 64, 128)
  convs_per_stage: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    del train  # no batch norm or dropout: train and eval are the same function
    features = (images.astype(self.dtype) - 0.5) * 2.0  # centre the [0, 1] pixels
    for stage, width in enumerate(self.widths):
      for _ in range(self.convs_per_stage):
        features = nn.relu(nn.Conv(width, (3, 3), dtype=self.dtype)(features))
      if stage < len(self.widths) - 1:
        features = max_pool_2x2(features)
    return features


def max_pool_2x2(features: jax.Array) -> jax.Array:
  """2 x 2 max-pool with stride 2 (odd trailing rows / columns dropped, as VALID padding does):
  [B, H, W, C] -> [B, H // 2, W // 2, C].

  A reshape and a max rather than `nn.max_pool`: XLA:CPU computes reduce-window's gradient as a
  variadic reduce-window over index arrays, which was a quarter of the default config's train step;
  the reshape's gradient is elementwise. Same forward values; on exact ties between positive
  values the gradient is shared among them instead of going to the first.
  """
  batch, height, width, channels = features.shape
  rows, cols = height // 2, width // 2
  features = features[:, : 2 * rows, : 2 * cols]
  return features.reshape(batch, rows, 2, cols, 2, channels).max(axis=(2, 4))
