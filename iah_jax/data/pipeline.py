"""tf.data input pipeline: TFDS examples (schema of data/features.py) -> host NumPy batches.

Training: per-process split -> shuffle -> repeat -> decode/resize -> batch(drop_remainder)
-> prefetch, decoding after shuffling. A split whose decoded images fit in `CACHE_LIMIT_BYTES`
(fixed image shape in the dataset's features, e.g. the embedded 4000 x 64 x 64) is decoded once
into memory instead: split -> decode -> cache -> shuffle -> repeat -> resize, the same examples
in the same order (for a split of several shards, every epoch reads them in the first epoch's
shard order), without decoding every image again in every epoch. Images already stored at
the model's size are not resized (bilinear resizing to the same size is the identity).
Evaluation: the split in its stored order, every example once, the last batch padded (``mask``
says which rows are real). Batches are dicts of NumPy arrays:

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

from iah_jax import runtime
from iah_jax.data import features

# TensorFlow only feeds data: keep it off the accelerators JAX uses.
tf.config.set_visible_devices([], "GPU")

MODEL_KEYS = (features.IMAGE, features.PROPOSALS, features.LABELS)

# Training splits whose decoded uint8 images take at most this much memory are decoded once.
CACHE_LIMIT_BYTES = 1 << 30


def _decode(example):
  """The stored example -> uint8 image [h, w, 3] and the fields the batches carry."""
  return {
      features.IMAGE: tf.io.decode_image(
          example[features.IMAGE], channels=3, expand_animations=False
      ),
      features.PROPOSALS: tf.cast(example[features.PROPOSALS], tf.float32),
      features.LABELS: tf.cast(example[features.LABELS], tf.float32),
      features.INDEX: example[features.INDEX],
      features.IMAGE_ID: example[features.IMAGE_ID],
  }


def _stored_image_shape(builder: tfds.core.DatasetBuilder):
  """(h, w, channels) when every stored image has that shape, else None."""
  shape = tuple(builder.info.features[features.IMAGE].shape)
  return shape if len(shape) == 3 and all(size is not None for size in shape) else None


def _to_model_input(image_size: int, stored_shape):
  """Decoded example -> float32 image [S, S, 3] in [0, 1], resized unless stored at S x S."""
  resize = stored_shape is None or tuple(stored_shape[:2]) != (image_size, image_size)

  def to_model_input(example):
    image = tf.cast(example[features.IMAGE], tf.float32)
    if resize:
      image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
    return dict(example, **{features.IMAGE: tf.clip_by_value(image / 255.0, 0.0, 1.0)})

  return to_model_input


def _preprocess(image_size: int, stored_shape=None):
  """Stored example -> model input (decode, then `_to_model_input`)."""
  finish = _to_model_input(image_size, stored_shape)
  return lambda example: finish(_decode(example))


def _fits_in_cache(builder: tfds.core.DatasetBuilder, split: str) -> bool:
  shape = _stored_image_shape(builder)
  if shape is None:
    return False
  return num_examples(builder, split) * int(np.prod(shape)) <= CACHE_LIMIT_BYTES


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
  process_split = tfds.split_for_jax_process(split, drop_remainder=True)
  dataset = _read(builder, process_split, shuffle_files=True, seed=seed)
  stored_shape = _stored_image_shape(builder)
  cached = _fits_in_cache(builder, split)  # the whole split: an upper bound of this share
  if cached:  # decode each image once; shuffling the decoded examples gives the same order
    dataset = dataset.map(_decode, num_parallel_calls=tf.data.AUTOTUNE).cache()
  dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
  finish = _to_model_input if cached else _preprocess
  prepare = finish(image_size, stored_shape)
  dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(local_batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  dataset = dataset.with_options(runtime.data_options())
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
  dataset = dataset.map(
      _preprocess(image_size, _stored_image_shape(builder)), num_parallel_calls=tf.data.AUTOTUNE
  )
  dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
  dataset = dataset.with_options(runtime.data_options())
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
