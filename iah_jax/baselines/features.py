"""Backbone features for the shallow baselines: a TFDS split -> pooled features and labels.

IAH Table II hashes the backbone's globally average-pooled output (1024-d for GoogLeNet). The
backbone is either a Flax module with its variables (called as
`module.apply(variables, images, train=False)`, the interface of `iah_jax.models.backbones`) or
any function images [B, S, S, 3] in [0, 1] -> feature map [B, h, w, C]. For a trained IAH model,
`backbone_variables(model_variables)` picks the backbone's share of its variables.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from iah_jax.data import pipeline
from iah_jax.models.hashing import global_average_pool

# The attribute name every method's model gives its backbone (iah_jax.models.iah.IAH.backbone).
BACKBONE_SCOPE = "backbone"


def backbone_variables(model_variables: Mapping[str, Any], scope: str = BACKBONE_SCOPE) -> dict:
  """The backbone's variables inside a whole model's: {collection: tree[scope]}.

  E.g. {"params": {"backbone": P, "hash": H}, "batch_stats": {"backbone": S}} ->
  {"params": P, "batch_stats": S}. Raises ValueError when there are no backbone parameters.
  """
  picked = {
      collection: tree[scope]
      for collection, tree in model_variables.items()
      if isinstance(tree, Mapping) and scope in tree
  }
  if "params" not in picked:
    raise ValueError(
        f"the model variables have no params[{scope!r}] (top-level params: "
        f"{sorted(model_variables.get('params', {}))})"
    )
  return picked


def _pooled_features_fn(backbone, variables) -> Callable[[np.ndarray], jax.Array]:
  if isinstance(backbone, nn.Module):
    if variables is None:
      raise ValueError(
          "a Flax backbone module needs its variables: "
          "extract_features(backbone, variables, builder, ...)"
      )
    apply = jax.jit(lambda v, images: global_average_pool(backbone.apply(v, images, train=False)))
    return lambda images: apply(variables, images)
  if callable(backbone):
    if variables is not None:
      raise ValueError(
          "variables are only for a Flax module backbone; a plain function "
          "images -> feature map must close over its own parameters"
      )
    return jax.jit(lambda images: global_average_pool(backbone(images)))
  raise ValueError(
      f"backbone must be a flax.linen.Module or a function images -> feature map, "
      f"got {type(backbone).__name__}"
  )


def extract_features(
    backbone: nn.Module | Callable,
    variables: Mapping[str, Any] | None,
    builder,
    split: str,
    image_size: int,
    batch_size: int = 128,
) -> tuple[np.ndarray, np.ndarray]:
  """Runs the backbone over every image of a TFDS split and average-pools its feature map.

  Args:
    backbone: a Flax module (with `variables`) or a function images -> feature map [B, h, w, C].
    variables: the module's variables ({"params": ..., ["batch_stats": ...]}); None for a
      function. For a trained model use `backbone_variables(state_variables)`.
    builder: a prepared TFDS builder of the project's schema (iah_jax/data/features.py).
    split: e.g. "train" or "test" (sub-splits like "train[:100]" work too).
    image_size: side S the images are resized to (as for training).
    batch_size: images per backbone call; the last batch is padded (one compilation).

  Returns:
    (features float32 [n, C], labels uint8 [n, c]) in the split's stored order (ascending
    example `index`).
  """
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  pooled_features = _pooled_features_fn(backbone, variables)
  feature_chunks, label_chunks, index_chunks = [], [], []
  for batch in pipeline.eval_batches(
      builder, split=split, batch_size=batch_size, image_size=image_size
  ):
    try:
      pooled = np.asarray(pooled_features(batch["image"]))
    except Exception as err:  # noqa: BLE001 - re-raised unless it is the common mix-up below
      if (
          isinstance(variables, Mapping)
          and BACKBONE_SCOPE in variables.get("params", {})
          and isinstance(backbone, nn.Module)
      ):
        raise ValueError(
            "the backbone rejected these variables, which look like a whole "
            "model's (they hold params['backbone']): pass "
            "backbone_variables(model_variables)"
        ) from err
      raise
    real = batch["mask"]
    feature_chunks.append(pooled[real])
    label_chunks.append(batch["labels"][real])
    index_chunks.append(batch["index"][real])
  if not index_chunks:
    raise ValueError(f"split {split!r} has no examples")
  features = np.concatenate(feature_chunks)
  indices = np.concatenate(index_chunks)
  order = np.argsort(indices, kind="stable")
  if np.any(np.diff(indices[order]) == 0):
    raise ValueError(f"split {split!r} yields duplicate example indices")
  bad_rows = ~np.all(np.isfinite(features), axis=1)
  if bad_rows.any():
    raise ValueError(
        f"the backbone produced non-finite features for {int(bad_rows.sum())} "
        f"image(s) of split {split!r}, e.g. index {int(indices[bad_rows][0])}"
    )
  labels = np.concatenate(label_chunks)
  return features[order], labels[order].astype(np.uint8)
