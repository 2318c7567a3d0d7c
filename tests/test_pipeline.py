"""The tf.data pipeline: batches, order, padding, and clear errors for bad examples."""

import numpy as np
import pytest

from iah_jax.data import pipeline
from iah_jax.data import synthetic_scenes


def good_batch():
  return {
      "labels": np.array([[1, 0], [0, 1]], np.float32),
      "proposals": np.array([[[0, 0, 1, 1]], [[0.2, 0.2, 0.5, 0.9]]], np.float32),
      "image_id": np.array([b"a.jpg", b"b.jpg"]),
  }


def test_image_without_labels_is_a_clear_error_naming_it():
  batch = good_batch()
  batch["labels"][1] = 0
  with pytest.raises(ValueError, match="'b.jpg' has no label"):
    pipeline.validate_batch(batch)
  pipeline.validate_batch(batch, require_labels=False)  # queries may be unlabelled


@pytest.mark.parametrize(
    "box, message",
    [
        ([0.1, 0.1, 1.2, 0.5], "outside"),
        ([-0.1, 0.1, 0.5, 0.5], "outside"),
        ([0.6, 0.1, 0.5, 0.5], "x1 < x0"),
        ([0.1, 0.6, 0.5, 0.5], "x1 < x0"),
    ],
)
def test_bad_proposals_are_a_clear_error_naming_the_image(box, message):
  batch = good_batch()
  batch["proposals"][0, 0] = box
  with pytest.raises(ValueError, match=f"'a.jpg'.*{message}"):
    pipeline.validate_batch(batch)


def test_train_batches_are_deterministic_for_a_seed(tiny_data_dir):
  builder = synthetic_scenes.load_builder(tiny_data_dir, "tiny")

  def first_batches(seed):
    batches = pipeline.train_batches(
        builder, split="train", global_batch_size=8, image_size=32, seed=seed, shuffle_buffer=64
    )
    return [next(batches) for _ in range(3)]

  first, again, other = first_batches(1), first_batches(1), first_batches(2)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_array_equal(a["image"], b["image"])
  assert any(not np.array_equal(a["index"], b["index"]) for a, b in zip(first, other))
  batch = first[0]
  assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert batch["proposals"].shape == (8, 100, 4)
  assert np.all(batch["labels"].sum(-1) >= 1)


def test_eval_batches_cover_the_split_once_in_order_with_padding(tiny_data_dir):
  builder = synthetic_scenes.load_builder(tiny_data_dir, "tiny")
  batches = list(pipeline.eval_batches(builder, split="test", batch_size=12, image_size=32))
  assert [len(b["mask"]) for b in batches] == [12, 12, 12]
  indices = np.concatenate([b["index"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(np.sort(indices), np.arange(32))
  assert batches[-1]["mask"].sum() == 32 - 24
  assert batches[-1]["image"].shape[0] == 12


def batch_indices(builder, start_step, count, batch_size=8, seed=3):
  batches = pipeline.train_batches(
      builder,
      split="train",
      global_batch_size=batch_size,
      image_size=32,
      seed=seed,
      shuffle_buffer=64,
      start_step=start_step,
  )
  return [next(batches)["index"] for _ in range(count)]


def test_train_batches_from_any_step_are_those_of_an_uninterrupted_run(tiny_data_dir):
  builder = synthetic_scenes.load_builder(tiny_data_dir, "tiny")
  assert pipeline.train_steps_per_epoch(builder, "train", 8) == 12  # 96 images
  uninterrupted = batch_indices(builder, 0, 30)
  for start_step in (5, 12, 17):  # inside the first epoch, at the second's start, inside it
    resumed = batch_indices(builder, start_step, 30 - start_step)
    for step, (expected, got) in enumerate(zip(uninterrupted[start_step:], resumed), start_step):
      np.testing.assert_array_equal(got, expected, err_msg=f"step {step}")


def test_every_epoch_is_a_new_permutation_dropping_the_remainder(tiny_data_dir):
  builder = synthetic_scenes.load_builder(tiny_data_dir, "tiny")
  # 96 images in batches of 10: 9 batches an epoch, 6 images of each epoch left out.
  assert pipeline.train_steps_per_epoch(builder, "train", 10) == 9
  batches = batch_indices(builder, 0, 27, batch_size=10)
  epochs = [np.concatenate(batches[9 * epoch : 9 * (epoch + 1)]) for epoch in range(3)]
  for order in epochs:
    assert len(set(order.tolist())) == 90 and set(order.tolist()) <= set(range(96))
  assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_split_smaller_than_a_batch_is_a_clear_error(tiny_data_dir):
  builder = synthetic_scenes.load_builder(tiny_data_dir, "tiny")
  with pytest.raises(ValueError, match=r"'train' has 96 examples, fewer than one batch of 128"):
    pipeline.train_steps_per_epoch(builder, "train", 128)


@pytest.mark.parametrize("image_size", [64, 32])  # stored at 64: not resized / resized
def test_decoded_cache_gives_the_same_batches_as_decoding_every_epoch(
    tiny_data_dir, monkeypatch, image_size
):
  builder = synthetic_scenes.load_builder(tiny_data_dir, "tiny")
  assert pipeline._fits_in_cache(builder, "train")  # 96 images of 64 x 64: the cached path

  def batches():
    stream = pipeline.train_batches(
        builder,
        split="train",
        global_batch_size=8,
        image_size=image_size,
        seed=3,
        shuffle_buffer=64,
    )
    return [next(stream) for _ in range(30)]  # 2.5 epochs of 12 batches

  cached = batches()
  monkeypatch.setattr(pipeline, "CACHE_LIMIT_BYTES", 0)  # decode after shuffling, every epoch
  assert not pipeline._fits_in_cache(builder, "train")
  decoded_each_epoch = batches()
  for a, b in zip(cached, decoded_each_epoch):
    for key in ("index", "image", "proposals", "labels"):
      np.testing.assert_array_equal(a[key], b[key])
  assert cached[0]["image"].shape == (8, image_size, image_size, 3)


def test_images_stored_at_the_model_size_are_not_resized_and_equal_the_resized_ones(tiny_data_dir):
  import tensorflow as tf
  import tensorflow_datasets as tfds

  builder = synthetic_scenes.load_builder(tiny_data_dir, "tiny")
  assert pipeline._stored_image_shape(builder) == (64, 64, 3)
  examples = pipeline._read(builder, "test", shuffle_files=False, seed=0).take(4)
  resized = tfds.as_numpy(examples.map(pipeline._preprocess(64, stored_shape=None)).batch(4))
  kept = tfds.as_numpy(examples.map(pipeline._preprocess(64, stored_shape=(64, 64, 3))).batch(4))
  resized, kept = next(iter(resized)), next(iter(kept))
  np.testing.assert_array_equal(resized["image"], kept["image"])
  raw = next(iter(tfds.as_numpy(examples.map(lambda example: example["image"]).batch(4))))
  decoded = np.stack([tf.io.decode_image(image).numpy() for image in raw])
  np.testing.assert_array_equal(kept["image"], decoded.astype(np.float32) / 255.0)


@pytest.mark.parametrize("start_step, num_batches", [(0, 30), (17, 8), (12, 12), (5, 0)])
def test_a_bounded_pipeline_gives_the_endless_ones_batches_then_ends(
    tiny_data_dir, start_step, num_batches
):
  builder = synthetic_scenes.load_builder(tiny_data_dir, "tiny")  # 12 batches of 8 per epoch

  def stream(**bound):
    return pipeline.train_batches(
        builder,
        split="train",
        global_batch_size=8,
        image_size=64,
        seed=5,
        shuffle_buffer=64,
        start_step=start_step,
        **bound,
    )

  endless = stream()
  expected = [next(endless) for _ in range(num_batches)]
  bounded = list(stream(num_batches=num_batches))  # ends by itself
  assert len(bounded) == num_batches
  for a, b in zip(expected, bounded):
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_array_equal(a["image"], b["image"])
  with pytest.raises(ValueError, match="num_batches must be a non-negative integer"):
    next(stream(num_batches=-1))
