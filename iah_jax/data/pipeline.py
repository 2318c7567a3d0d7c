"""tf.data input pipeline: TFDS examples (schema of data/features.py) -> host NumPy batches.

Training: per-process split -> epochs, each shuffled with a seed drawn from (seed, epoch) ->
decode/resize -> batch(drop_remainder) -> prefetch, decoding after shuffling; the batch of step s
is a pure function of (seed, s), so resumed runs see the batches of an uninterrupted one. A split
whose decoded images fit in `CACHE_LIMIT_BYTES` (fixed image shape in the dataset's features,
e.g. the embedded 4000 x 64 x 64) is decoded once into memory before the first epoch instead,
giving the same examples in the same order without decoding every image again every epoch.
Images already stored at the model's size are not resized (bilinear resizing to the same size is
the identity). Evaluation: the split in its stored order, every example once, the last batch
padded (``mask`` says which rows are real). Batches are dicts of NumPy arrays:

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


def resize_for_model(image: tf.Tensor, image_size: int, resize: bool = True) -> tf.Tensor:
  """uint8 [H, W, 3] -> float32 [S, S, 3] in [0, 1], S = image_size: what the model sees of a
  decoded image (bilinear with antialiasing). Serving applies it to users' photos too.

  `resize=False` (the caller knows the image is S x S already) and an image whose static shape
  is S x S skip the resize, which at the same size is the identity."""
  image = tf.cast(image, tf.float32)
  if resize and tuple(image.shape[:2]) != (image_size, image_size):
    image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
  return tf.clip_by_value(image / 255.0, 0.0, 1.0)


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
    image = resize_for_model(example[features.IMAGE], image_size, resize=resize)
    return dict(example, **{features.IMAGE: image})

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


def _read(builder: tfds.core.DatasetBuilder, split, shuffle_files: bool, seed: int):
  # The file order, when shuffled, is drawn once from `seed` and kept for every pass over the
  # split (not reshuffled per iteration), so that each epoch is a pure function of its number.
  read_config = tfds.ReadConfig(
      shuffle_seed=seed, shuffle_reshuffle_each_iteration=False, try_autocache=False
  )
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


def train_steps_per_epoch(
    builder: tfds.core.DatasetBuilder, split: str, global_batch_size: int
) -> int:
  """Batches per epoch: every process gets its equal share of `split` (the rest is dropped)
  and cuts it into batches of global_batch_size / process_count, dropping the remainder; this
  equals num_examples // global_batch_size. Raises ValueError when the split holds less than
  one batch."""
  if global_batch_size % jax.process_count():
    raise ValueError(
        f"global batch size {global_batch_size} is not divisible by the "
        f"{jax.process_count()} processes"
    )
  local_batch_size = global_batch_size // jax.process_count()
  local_examples = num_examples(builder, tfds.split_for_jax_process(split, drop_remainder=True))
  if local_examples < local_batch_size:
    raise ValueError(
        f"training split {split!r} has {num_examples(builder, split)} examples, fewer than one "
        f"batch of {global_batch_size}: lower batch_size or use a larger split"
    )
  return local_examples // local_batch_size


def _epoch_seed(seed: tf.Tensor, epoch: tf.Tensor) -> tf.Tensor:
  """An int64 shuffle seed drawn from (seed, epoch) by a stateless generator."""
  return tf.random.stateless_uniform(
      [], seed=tf.stack([seed, epoch]), minval=None, maxval=None, dtype=tf.int64
  )


def train_batches(
    builder: tfds.core.DatasetBuilder,
    *,
    split: str,
    global_batch_size: int,
    image_size: int,
    seed: int,
    shuffle_buffer: int = 4096,
    start_step: int = 0,
    num_batches: int | None = None,
) -> Iterator[dict]:
  """Shuffled training batches of this process's share of the global batch, from batch
  `start_step` on: endless, or `num_batches` of them.

  The order is a pure function of (seed, process, step), so a run resumed at step s sees exactly
  the batches an uninterrupted run sees from step s on. Epoch e is this process's share of the
  split (files in one seeded order), shuffled through a `shuffle_buffer` with a seed drawn
  from (seed, e), cut to `train_steps_per_epoch` whole batches (the remainder of each epoch is
  dropped); step s is batch s % steps_per_epoch of epoch s // steps_per_epoch. Starting inside
  an epoch skips its first examples before they are decoded (reading, not decoding, at most
  one epoch of records).

  With `num_batches` the tf.data pipeline itself ends after the last batch a run needs (the
  epochs it reads and the batches it prefetches stop there): an endless pipeline left with
  work in flight when training stops can take tens of seconds to tear down (seen as idle gaps
  of ~33 s after the last train step of the default job).
  """
  if num_batches is not None and (isinstance(num_batches, bool) or num_batches < 0):
    raise ValueError(f"num_batches must be a non-negative integer or None, got {num_batches!r}")
  steps_per_epoch = train_steps_per_epoch(builder, split, global_batch_size)
  local_batch_size = global_batch_size // jax.process_count()
  first_epoch, skipped_batches = divmod(start_step, steps_per_epoch)
  # Each process shuffles its own share with its own seed, so the same images do not keep
  # meeting in one global batch.
  seed = seed + 1_000_003 * jax.process_index()
  examples = _read(
      builder, tfds.split_for_jax_process(split, drop_remainder=True), shuffle_files=True, seed=seed
  )
  stored_shape = _stored_image_shape(builder)
  cached = _fits_in_cache(builder, split)  # the whole split: an upper bound of this share
  if cached:
    # Decode each image once: one full pass fills the in-memory cache before the first epoch
    # (an epoch stops early at its last whole batch, and a cache left unfinished is dropped),
    # and every epoch then shuffles the decoded examples, in the order of the encoded ones.
    examples = examples.map(_decode, num_parallel_calls=tf.data.AUTOTUNE).cache()
    examples.reduce(np.int64(0), lambda count, _: count + 1)
  epoch_examples = steps_per_epoch * local_batch_size

  def epoch(number):
    shuffled = examples.shuffle(
        shuffle_buffer,
        seed=_epoch_seed(tf.constant(seed, tf.int64), number),
        reshuffle_each_iteration=False,
    ).take(epoch_examples)
    skipped = tf.constant(skipped_batches * local_batch_size, tf.int64)
    return shuffled.skip(tf.where(number == first_epoch, skipped, tf.constant(0, tf.int64)))

  if num_batches is None:
    last_epoch = np.iinfo(np.int64).max
  else:  # the epoch after the one holding batch start_step + num_batches - 1
    last_epoch = (start_step + num_batches + steps_per_epoch - 1) // steps_per_epoch
  dataset = tf.data.Dataset.range(first_epoch, max(last_epoch, first_epoch)).flat_map(epoch)
  # Every epoch holds whole batches, so batching after the epochs are joined keeps batches
  # inside epochs while the decoding runs on across epoch boundaries.
  prepare = (_to_model_input if cached else _preprocess)(image_size, stored_shape)
  dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(local_batch_size, drop_remainder=True)
  if num_batches is not None:
    dataset = dataset.take(num_batches)
  dataset = dataset.prefetch(tf.data.AUTOTUNE)
  # The order above is the resume guarantee: data_options keeps the parallel map ordered.
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
