"""tf.data input pipeline: TFDS examples (schema of data/features.py) -> host NumPy batches.

Training: per-process split -> shuffle -> repeat -> decode/resize -> batch(drop_remainder)
-> prefetch, decoding after shuffling. Evaluation: the split in its stored order, every example
once, the last batch padded (``mask`` says which rows are real). Batches are dicts of NumPy arrays:

- ``image``: float32 [b, S, S, 3] in [0, 1] (resized to S = image_size; proposals are image
  fractions, so resizing leaves them valid),
- ``proposals``: float32 [b, N, 4], ``labels``: float32 [b, c], ``index``: int64 [b],
- ``image_id``: bytes [b] (host only, for error messages).

Every batch is validated on the host before it reaches the model: an image without labels or a
proposal outside [0, 1] / with x1 < x0 stops with an error naming the image.
"""

from __future__ import annotations

from typing import Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from iah_jax.data import features

# TensorFlow only feeds data: keep it off the accelerators JAX uses.
tf.config.set_visible_devices([], "GPU")

MODEL_KEYS = (features.IMAGE, features.PROPOSALS, features.LABELS)


def resize_for_model(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """uint8 [H, W, 3] -> float32 [S, S, 3] in [0, 1], S = image_size: what the model sees of a
  decoded image (bilinear with antialiasing). Serving applies it to users' photos too."""
  image = (
      tf.image.resize(
          tf.cast(image, tf.float32), (image_size, image_size), method="bilinear", antialias=True
      )
      / 255.0
  )
  return tf.clip_by_value(image, 0.0, 1.0)


def _preprocess(image_size: int):
  def preprocess(example):
    image = tf.io.decode_image(example[features.IMAGE], channels=3, expand_animations=False)
    return {
        features.IMAGE: resize_for_model(image, image_size),
        features.PROPOSALS: tf.cast(example[features.PROPOSALS], tf.float32),
        features.LABELS: tf.cast(example[features.LABELS], tf.float32),
        features.INDEX: example[features.INDEX],
        features.IMAGE_ID: example[features.IMAGE_ID],
    }

  return preprocess


def _read(builder: tfds.core.DatasetBuilder, split: str, shuffle_files: bool, seed: int):
  read_config = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False)
  # Ordered datasets (disable_shuffling) refuse file shuffling; the example shuffle still mixes.
  shuffle_files = shuffle_files and not builder.info.disable_shuffling
  return builder.as_dataset(
      split=split,
      shuffle_files=shuffle_files,
      read_config=read_config,
      decoders={features.IMAGE: tfds.decode.SkipDecoding()},
  )


def validate_batch(batch: dict, require_labels: bool = True) -> dict:
  """Raises ValueError naming the image when labels (if required) or proposals are unusable."""
  image_ids = batch.get(features.IMAGE_ID)

  def name(row):
    return image_ids[row].decode() if image_ids is not None else f"row {row}"

  labels = batch[features.LABELS]
  empty = labels.sum(-1) == 0
  if require_labels and empty.any():
    raise ValueError(
        f"image {name(int(np.argmax(empty)))!r} has no label; IAH's label loss "
        "(eq. 3) needs at least one positive category per training image"
    )
  proposals = batch[features.PROPOSALS]
  for row in range(proposals.shape[0]):
    try:
      features.check_boxes(proposals[row], what="proposals")
    except ValueError as error:
      raise ValueError(f"image {name(row)!r}: {error}") from None
  return batch


def train_batches(
    builder: tfds.core.DatasetBuilder,
    *,
    split: str,
    global_batch_size: int,
    image_size: int,
    seed: int,
    shuffle_buffer: int = 4096,
) -> Iterator[dict]:
  """Endless, shuffled training batches of this process's share of the global batch."""
  if global_batch_size % jax.process_count():
    raise ValueError(
        f"global batch size {global_batch_size} is not divisible by the "
        f"{jax.process_count()} processes"
    )
  local_batch_size = global_batch_size // jax.process_count()
  # Each process shuffles its own share with its own seed, so the same images do not keep
  # meeting in one global batch.
  seed = seed + 1_000_003 * jax.process_index()
  dataset = _read(
      builder, tfds.split_for_jax_process(split, drop_remainder=True), shuffle_files=True, seed=seed
  )
  dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
  dataset = dataset.map(_preprocess(image_size), num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(local_batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  for batch in tfds.as_numpy(dataset):
    yield validate_batch(batch)


def eval_batches(
    builder: tfds.core.DatasetBuilder, *, split: str, batch_size: int, image_size: int
) -> Iterator[dict]:
  """Every example of `split` once, in stored order; the last batch is padded to `batch_size`.

  Adds ``mask`` (bool [batch_size]) marking real rows. Evaluation labels are not validated:
  unlabelled queries are the metrics' business (see metrics.py).
  """
  dataset = _read(builder, split, shuffle_files=False, seed=0)
  dataset = dataset.map(_preprocess(image_size), num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
  for batch in tfds.as_numpy(dataset):
    real = batch[features.LABELS].shape[0]
    batch["mask"] = np.arange(batch_size) < real
    if real < batch_size:
      batch = {
          key: (
              value
              if key == "mask"
              else np.concatenate([value, np.repeat(value[-1:], batch_size - real, axis=0)])
          )
          for key, value in batch.items()
      }
    yield validate_batch(batch, require_labels=False)


def num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
  return builder.info.splits[split].num_examples
