"""The embedded synthetic-scenes dataset: scene rules, determinism and the TFDS builder."""

import os
import socket

import numpy as np
import pytest
import tensorflow_datasets as tfds

from iah_jax.data import features
from iah_jax.data import synthetic_scenes

SMALL = dict(num_train=24, num_test=8, num_proposals=20)


def read_split(builder, split):
  return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


@pytest.fixture(scope="module")
def offline(request):
  """Any attempt to open a network connection during preparation fails the test."""
  patch = pytest.MonkeyPatch()

  def refuse(*args, **kwargs):
    raise AssertionError(f"synthetic scenes tried to use the network: {args}")

  patch.setattr(socket.socket, "connect", refuse)
  request.addfinalizer(patch.undo)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, offline):
  """The same small config prepared twice (two data dirs) and once with another seed."""
  config = synthetic_scenes.SyntheticScenesConfig(name="small", **SMALL)
  builders = {
      "a": synthetic_scenes.load_builder(str(tmp_path_factory.mktemp("a")), config),
      "b": synthetic_scenes.load_builder(str(tmp_path_factory.mktemp("b")), config),
      "seed1": synthetic_scenes.load_builder(
          str(tmp_path_factory.mktemp("c")),
          synthetic_scenes.SyntheticScenesConfig(name="small_seed1", seed=1, **SMALL),
      ),
  }
  return {
      name: {split: read_split(builder, split) for split in ("train", "test")}
      for name, builder in builders.items()
  } | {"builders": builders}


def test_class_names():
  assert len(set(synthetic_scenes.CATEGORY_NAMES)) == len(synthetic_scenes.CATEGORY_NAMES) == 20
  assert synthetic_scenes.class_names(3) == ("red_disc", "orange_square", "yellow_triangle")
  for bad in (0, 21):
    with pytest.raises(ValueError, match="num_classes"):
      synthetic_scenes.class_names(bad)
  with pytest.raises(ValueError, match="num_classes"):
    synthetic_scenes.SyntheticScenesConfig(name="x", num_classes=25)


def test_scene_rules_over_many_scenes():
  counts, distinct = [], []
  seen_categories = np.zeros(10, int)
  for index in range(300):
    rng = synthetic_scenes.example_rng(0, "train", index)
    image, boxes, labels = synthetic_scenes.render_scene(rng, 64, 10, 4)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert 1 <= len(labels) <= 4 and boxes.shape == (len(labels), 4)
    features.check_boxes(boxes, "object boxes")
    assert np.all(labels >= 0) and np.all(labels < 10)
    # Visible extents: no object is reduced to a sliver (>= 50% of an object >= 0.2 S wide).
    assert np.all((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) >= 0.2**2 * 0.25)
    counts.append(len(labels))
    distinct.append(len(set(labels.tolist())))
    seen_categories[labels] += 1
  assert 1.5 <= np.mean(distinct) <= 2.2, np.mean(distinct)
  assert np.mean(counts) > 1.5
  assert seen_categories.min() > 0  # every category occurs


def test_single_object_scene_box_is_tight_around_its_colour():
  """With one object and no occluder, its box is the extent of its saturated pixels."""
  for index in range(20):
    rng = synthetic_scenes.example_rng(3, "train", index)
    image, boxes, labels = synthetic_scenes.render_scene(rng, 64, 10, 1)
    assert len(labels) == 1
    rgb = image.astype(float) / 255
    saturation = (rgb.max(-1) - rgb.min(-1)) / np.maximum(rgb.max(-1), 1e-6)
    # Background and strokes have saturation <= 0.6 (plus noise); objects >= 0.7 at value
    # >= 0.75 (the dark bands of striped squares aside).
    ys, xs = np.nonzero((saturation > 0.65) & (rgb.max(-1) > 0.65))
    box = boxes[0] * 64
    inside = (xs >= box[0] - 1) & (xs < box[2] + 1) & (ys >= box[1] - 1) & (ys < box[3] + 1)
    assert inside.mean() > 0.97
    # The object's saturated pixels span most of its box.
    assert xs[inside].max() - xs[inside].min() + 1 >= 0.8 * (box[2] - box[0])
    assert ys[inside].max() - ys[inside].min() + 1 >= 0.8 * (box[3] - box[1])


def test_examples_are_deterministic_and_order_free():
  config = synthetic_scenes.SyntheticScenesConfig(name="x", num_proposals=10)
  late = synthetic_scenes.make_example(config, "train", 7)
  for index in range(7):
    synthetic_scenes.make_example(config, "train", index)
  again = synthetic_scenes.make_example(config, "train", 7)
  for key in late:
    np.testing.assert_array_equal(late[key], again[key])
  other_split = synthetic_scenes.make_example(config, "test", 7)
  assert not np.array_equal(late["image"], other_split["image"])


def test_builder_splits_and_schema(prepared):
  builder = prepared["builders"]["a"]
  assert builder.info.splits["train"].num_examples == 24
  assert builder.info.splits["test"].num_examples == 8
  assert builder.info.metadata["class_names"] == list(synthetic_scenes.class_names(10))
  for split, count in (("train", 24), ("test", 8)):
    examples = prepared["a"][split]
    assert [int(e["index"]) for e in examples] == list(range(count))
    assert len({e["image_id"] for e in examples}) == count
    for e in examples:
      assert e["image"].shape == (64, 64, 3) and e["image"].dtype == np.uint8
      features.check_labels(e["labels"][None])  # >= 1 label
      multi_hot = np.zeros(10, np.uint8)
      multi_hot[e["object_labels"]] = 1
      np.testing.assert_array_equal(e["labels"], multi_hot)
      assert e["object_boxes"].shape == (len(e["object_labels"]), 4)
      features.check_boxes(e["object_boxes"], "object_boxes")
      assert e["proposals"].shape == (20, 4)
      features.check_boxes(e["proposals"], "proposals")


def test_builder_stores_exactly_the_generated_examples(prepared):
  config = prepared["builders"]["a"].builder_config
  for index in (0, 13):
    expected = synthetic_scenes.make_example(config, "train", index)
    stored = prepared["a"]["train"][index]
    for key in ("image", "labels", "proposals", "object_boxes", "object_labels"):
      np.testing.assert_array_equal(stored[key], expected[key])  # PNG is lossless


def test_same_seed_identical_other_seed_differs(prepared):
  for split in ("train", "test"):
    for a, b in zip(prepared["a"][split], prepared["b"][split]):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
  differs = [
      not np.array_equal(a["image"], c["image"])
      for a, c in zip(prepared["a"]["train"], prepared["seed1"]["train"])
  ]
  assert all(differs)


def test_load_builder_reuses_and_guards_parameters(prepared):
  builder = prepared["builders"]["a"]
  data_dir = builder.data_dir
  info_file = f"{data_dir}/dataset_info.json"
  before = os.stat(info_file).st_mtime
  root = str(tfds.core.Path(data_dir).parent.parent.parent)
  again = synthetic_scenes.load_builder(root, builder.builder_config)
  assert again.data_dir == data_dir
  assert os.stat(info_file).st_mtime == before  # not regenerated
  changed = synthetic_scenes.SyntheticScenesConfig(name="small", **(SMALL | {"num_test": 9}))
  with pytest.raises(ValueError, match="prepared with"):
    synthetic_scenes.load_builder(root, changed)
  with pytest.raises(ValueError, match="unknown synthetic-scenes config"):
    synthetic_scenes.load_builder(root, "huge")
