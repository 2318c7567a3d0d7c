"""The one example schema that every iah_jax dataset yields.

Every builder (embedded synthetic scenes, VOC, COCO, MIRFLICKR, NUS-WIDE, image lists, MIML) stores
examples with these features, so one input pipeline serves them all:

- ``image``: uint8 [H, W, 3] RGB (stored encoded; grayscale/CMYK sources are converted to RGB).
- ``labels``: uint8 [c] multi-hot, 1 where the image contains the category.
- ``proposals``: float32 [N, 4] region proposals (x0, y0, x1, y1) as fractions of the image
  width / height in [0, 1], x0 <= x1 and y0 <= y1, best first. Computed once while the dataset is
  prepared, never in the train step.
- ``object_boxes``: float32 [K, 4] ground-truth object boxes, same convention (K may be 0 where
  the source has no boxes).
- ``object_labels``: int32 [K] category index of each ground-truth box.
- ``index``: int64, the example's position inside its split (0..n-1). Retrieval ranks ties by
  database index, so evaluation reads splits in this order.
- ``image_id``: str, the source's identifier (file name or id), for tracing results back.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

IMAGE = "image"
LABELS = "labels"
PROPOSALS = "proposals"
OBJECT_BOXES = "object_boxes"
OBJECT_LABELS = "object_labels"
INDEX = "index"
IMAGE_ID = "image_id"


def example_features(
    num_classes: int, num_proposals: int, image_shape=(None, None, 3), encoding_format: str = "jpeg"
) -> tfds.features.FeaturesDict:
  """The TFDS FeaturesDict of the shared schema (see the module docstring)."""
  return tfds.features.FeaturesDict(
      {
          IMAGE: tfds.features.Image(shape=image_shape, encoding_format=encoding_format),
          LABELS: tfds.features.Tensor(shape=(num_classes,), dtype=np.uint8),
          PROPOSALS: tfds.features.Tensor(shape=(num_proposals, 4), dtype=np.float32),
          OBJECT_BOXES: tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
          OBJECT_LABELS: tfds.features.Tensor(shape=(None,), dtype=np.int32),
          INDEX: tfds.features.Scalar(dtype=np.int64),
          IMAGE_ID: tfds.features.Text(),
      }
  )


def check_boxes(boxes: np.ndarray, what: str = "boxes") -> np.ndarray:
  """Validates (x0, y0, x1, y1) boxes in [0, 1]; returns them as float32 [n, 4].

  Raises ValueError naming the first offending row, so bad data never reaches the model.
  """
  boxes = np.asarray(boxes, dtype=np.float32)
  if boxes.ndim != 2 or boxes.shape[-1] != 4:
    raise ValueError(f"{what} must have shape [n, 4] (x0, y0, x1, y1), got {boxes.shape}")
  if not np.all(np.isfinite(boxes)):
    row = int(np.argwhere(~np.isfinite(boxes))[0, 0])
    raise ValueError(f"{what}: row {row} is not finite: {boxes[row].tolist()}")
  outside = np.any((boxes < 0.0) | (boxes > 1.0), axis=-1)
  if outside.any():
    row = int(np.argmax(outside))
    raise ValueError(
        f"{what}: row {row} = {boxes[row].tolist()} lies outside [0, 1]; boxes are "
        "(x0, y0, x1, y1) fractions of the image width/height"
    )
  flipped = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
  if flipped.any():
    row = int(np.argmax(flipped))
    raise ValueError(
        f"{what}: row {row} = {boxes[row].tolist()} has x1 < x0 or y1 < y0; boxes "
        "are (x0, y0, x1, y1)"
    )
  return boxes


def check_labels(labels: np.ndarray, what: str = "labels") -> np.ndarray:
  """Validates multi-hot labels [..., c] in {0, 1} with at least one positive per image."""
  labels = np.asarray(labels)
  if labels.ndim < 1 or labels.shape[-1] == 0:
    raise ValueError(f"{what} must be multi-hot with shape [..., c], got {labels.shape}")
  if not np.all((labels == 0) | (labels == 1)):
    raise ValueError(f"{what} must be multi-hot in {{0, 1}}")
  empty = labels.reshape(-1, labels.shape[-1]).sum(-1) == 0
  if empty.any():
    row = int(np.argmax(empty))
    raise ValueError(
        f"{what}: image {row} has no label; IAH's label loss (eq. 3) needs at least "
        "one positive category per training image"
    )
  return labels
