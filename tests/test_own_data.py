"""One's own data (issue 12): configs/image_list.py trains on generated list files through the
command-line parsing; prepared data follow edited lists (issue 13); MIRFLICKR's unlabelled images
kept as negatives; readers name the file for truncated proposal caches and weight files; the
converted-GoogLeNet transfer path for the deep methods other than IAH."""

import json
import os

from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from iah_jax import cli
from iah_jax import config as config_lib
from iah_jax import evaluate
from iah_jax import methods
from iah_jax import train
from iah_jax.data import image_list
from iah_jax.data import prepare
from iah_jax.data import registry
from iah_jax.errors import UserInputError
from iah_jax.models import pretrained
from test_data_builders import FAST
from test_data_builders import mirflickr_root  # noqa: F401  (a fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 3


@pytest.fixture
def fast_compile():
  """Compile time, not run time, is what these one-step runs spend (as tests/test_configs.py)."""
  previous = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)


def write_lists(root, num_train=24, num_test=8, seed=0) -> dict[str, np.ndarray]:
  """Random RGB images under root/photos and train.txt / test.txt; returns the labels."""
  rng = np.random.default_rng(seed)
  (root / "photos").mkdir(parents=True, exist_ok=True)
  labels = {}
  for split, count in (("train", num_train), ("test", num_test)):
    rows, lines = [], []
    for index in range(count):
      name = f"photos/{split}_{index}.jpg"
      pixels = rng.integers(0, 256, size=(36, 44, 3), dtype=np.uint8)
      PIL.Image.fromarray(pixels).save(root / name)
      row = rng.integers(0, 2, NUM_CLASSES)
      row[index % NUM_CLASSES] = 1
      rows.append(row)
      lines.append(f"{name} " + " ".join(str(v) for v in row))
    (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    labels[split] = np.asarray(rows, np.uint8)
  return labels


def parse(*args: str, config_file: str) -> ml_collections.ConfigDict:
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", lock_config=True, flag_values=flag_values)
  cli.parse_flags(["main.py", f"--config={os.path.join(REPO, config_file)}", *args], flag_values)
  return config_lib.validate_config(flag_values.config, check_inputs=True)


def split_labels(builder, split: str) -> tuple[list[str], np.ndarray]:
  examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
  return [e["image_id"].decode() for e in examples], np.stack([e["labels"] for e in examples])


@pytest.mark.slow  # compiles a train step: ~20 CPU-s
def test_image_list_config_trains_a_step_on_generated_lists(tmp_path, fast_compile):
  labels = write_lists(tmp_path / "mine")
  (tmp_path / "mine" / "names.txt").write_text("sea\nsky\nsand\n")
  config = parse(
      f"--config.dataset.options.data_path={tmp_path / 'mine'}",
      f"--config.dataset.data_dir={tmp_path / 'tfds'}",
      "--config.dataset.options.proposal_method=whole_image",  # proposals are tested elsewhere
      "--config.dataset.options.num_proposals=2",
      "--config.dataset.options.num_workers=0",
      "--config.dataset.options.class_names_file=names.txt",
      "--config.dataset.image_size=32",
      "--config.model.backbone_options.widths=(8,16)",
      "--config.model.spp_levels=(1,)",
      "--config.semantic_bits=(8,)",
      "--config.bits_per_category=(2,)",
      "--config.batch_size=8",
      "--config.num_train_steps=1",
      "--config.eval.batch_size=16",
      "--config.eval.ks=(5,)",
      config_file="configs/image_list.py",
  )
  results = evaluate.run(config, str(tmp_path / "run"))

  builder = train.load_dataset(config)
  for split, name in (("train", "train"), ("test", "test")):
    ids, stored = split_labels(builder, split)
    assert ids == [f"photos/{name}_{i}.jpg" for i in range(len(labels[name]))]
    np.testing.assert_array_equal(stored, labels[name])
  assert builder.info.metadata["class_names"] == ["sea", "sky", "sand"]
  with open(tmp_path / "run" / "results.json") as file:
    written = json.load(file)
  assert written["semantic"]["8"]["map"] == pytest.approx(results["semantic"]["8"]["map"])
  assert 0.0 < written["semantic"]["8"]["map"] <= 1.0
  manager = train.checkpoint_manager(str(tmp_path / "run" / "q8_b2" / "checkpoints"), config)
  assert manager.latest_step() == 1  # one train step, checkpointed


def test_edited_lists_prepare_new_data(tmp_path, capsys):
  """Issue 13: editing a label or deleting a line is seen on the next run; an unchanged list
  reuses the prepared files, a replaced image gets new proposals and the others come cached."""
  root = tmp_path / "mine"
  write_lists(root, num_train=6, num_test=2)
  options = dict(FAST, data_path=str(root), proposal_method="generic")
  first = registry.get_builder("image_list", tmp_path / "tfds", **options)
  ids, labels = split_labels(first, "train")
  again = registry.get_builder("image_list", tmp_path / "tfds", **options)
  assert again.builder_config.name == first.builder_config.name
  capsys.readouterr()

  lines = (root / "train.txt").read_text().splitlines()
  edited = lines[1].split()
  edited[1:] = ["1", "1", "1"] if edited[1:] != ["1", "1", "1"] else ["1", "0", "0"]
  lines[1] = " ".join(edited)
  del lines[4]
  (root / "train.txt").write_text("\n".join(lines) + "\n")
  second = registry.get_builder("image_list", tmp_path / "tfds", **options)
  assert second.builder_config.name != first.builder_config.name
  new_ids, new_labels = split_labels(second, "train")
  assert new_ids == ids[:4] + ids[5:]
  np.testing.assert_array_equal(new_labels[1], [int(v) for v in edited[1:]])
  np.testing.assert_array_equal(np.delete(new_labels, 1, 0), np.delete(labels, [1, 4], 0))
  assert "7 items, 7 cached, 0 computed" in capsys.readouterr().out

  # A replaced image (same path, new pixels): new data, and only its proposals recomputed.
  PIL.Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(root / ids[0])
  third = registry.get_builder("image_list", tmp_path / "tfds", **options)
  assert third.builder_config.name != second.builder_config.name
  assert "7 items, 6 cached, 1 computed" in capsys.readouterr().out


def test_mirflickr_keeps_unlabelled_images_as_negatives(mirflickr_root, tmp_path):  # noqa: F811
  builder = registry.get_builder(
      "mirflickr25k",
      tmp_path,
      data_path=mirflickr_root,
      num_images=8,
      num_queries=2,
      unlabelled_policy="keep",
      **FAST,
  )
  # im6 has no concept; im5 is corrupt, im8 missing: 5 labelled images, 2 of them queries.
  assert builder.info.metadata["skip_counts"]["unlabelled"] == 0
  assert builder.info.metadata["kept_unlabelled"] == 1
  train_ids, train_labels = split_labels(builder, "train")
  unlabelled_ids, unlabelled_labels = split_labels(builder, "unlabelled")
  query_ids, query_labels = split_labels(builder, "test")
  assert unlabelled_ids == ["im6"] and not unlabelled_labels.any()
  assert len(train_ids) == 3 and len(query_ids) == 2 and query_labels.sum(1).min() >= 1
  assert sorted(train_ids + query_ids) == ["im1", "im2", "im3", "im4", "im7"]
  database = list(tfds.as_numpy(builder.as_dataset(split="train+unlabelled")))
  assert [e["image_id"].decode() for e in database] == train_ids + ["im6"]
  assert [int(e["index"]) for e in database] == [0, 1, 2, 3]  # stored order = index order
  # The default still leaves them out, counted.
  skipped = registry.get_builder(
      "mirflickr25k", tmp_path, data_path=mirflickr_root, num_images=8, num_queries=2, **FAST
  )
  assert skipped.info.metadata["skip_counts"]["unlabelled"] == 1
  assert set(skipped.info.splits) == {"train", "test"}


def test_truncated_proposal_cache_is_recomputed_and_unreadable_ones_are_named(tmp_path):
  image = tmp_path / "a.png"
  PIL.Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(image)
  settings = prepare.ProposalSettings(method="whole_image", num_proposals=3)
  items = [("a", str(image))]
  prepare.prepare_proposals(items, tmp_path / "cache", settings, num_workers=0, progress=False)
  path = prepare.proposal_file(tmp_path / "cache", settings, "a", image)
  complete = path.read_bytes()
  path.write_bytes(complete[:50])
  with pytest.raises(UserInputError, match=f"cached proposals {path}.*delete the file"):
    prepare.load_proposals(tmp_path / "cache", settings, "a", image)
  report = prepare.prepare_proposals(
      items, tmp_path / "cache", settings, num_workers=0, progress=False, verbose=False
  )
  assert (report.num_cached, report.num_computed) == (0, 1)
  assert path.read_bytes() == complete


@pytest.mark.parametrize("damage", ["truncated", "not_npz", "missing"])
def test_unreadable_weight_file_is_named(tmp_path, damage):
  path = tmp_path / "googlenet.npz"
  pretrained.save_converted({"params": {"features": {"w": np.ones((64, 64), np.float32)}}}, path)
  if damage == "truncated":
    path.write_bytes(path.read_bytes()[:-200])
  elif damage == "not_npz":
    path.write_bytes(b"PK\x03\x04 a torch .pth is a zip too" * 3)
  else:
    path.unlink()
  with pytest.raises(UserInputError, match=str(path)):
    pretrained.load_converted(str(path))
  # Config validation names it before any work.
  with pytest.raises(UserInputError, match=f"config.model.pretrained = '{path}'"):
    googlenet_config("iah", str(path))


def test_image_list_lines_that_do_not_parse_name_file_and_line(tmp_path):
  bad = tmp_path / "bad.txt"
  bad.write_bytes(b"a.jpg 1 0\n# comment\nb\xff.jpg 0 1\n")
  with pytest.raises(UserInputError, match=r"bad.txt line 3: not UTF-8"):
    image_list.read_image_list(str(bad), 2, str(tmp_path))
  bom = tmp_path / "bom.txt"
  bom.write_bytes(b"\xef\xbb\xbfa.jpg 1 0\n")
  assert image_list.read_image_list(str(bom), 2, str(tmp_path))[0][0] == "a.jpg"


def random_googlenet_file(path, image_size=32, seed=3):
  """GoogLeNet backbone variables with random values (shapes from jax.eval_shape: nothing is
  compiled), written in the converter's format."""
  from iah_jax.models.googlenet import GoogLeNetBackbone

  shapes = jax.eval_shape(
      GoogLeNetBackbone().init,
      jax.random.PRNGKey(0),
      np.zeros((1, image_size, image_size, 3), np.float32),
  )
  rng = np.random.default_rng(seed)
  variables = jax.tree.map(
      lambda leaf: rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32), shapes
  )
  pretrained.save_converted(
      {collection: {"features": variables[collection]} for collection in ("params", "batch_stats")},
      str(path),
  )
  return variables


def googlenet_config(method: str, weights: str):
  config = config_lib.base_config()
  config.method = method
  config.model.backbone = "googlenet"
  config.model.pretrained = weights
  config.semantic_bits, config.bits_per_category = (8,), (2,)
  config.dataset.image_size = 32
  return config_lib.validate_config(config, check_inputs=True)


def test_converted_googlenet_fits_every_deep_method(tmp_path):
  """train.load_pretrained's strict merge (every backbone weight consumed, nothing left over)
  works for every registered method's network (abstract shapes, no compile)."""
  path = tmp_path / "googlenet.npz"
  source = random_googlenet_file(path)
  for method in methods.names():
    config = googlenet_config(method, str(path))
    model = train.build_model(config, 5, 8, 2)
    abstract = jax.eval_shape(
        lambda: model.init(
            jax.random.PRNGKey(0),
            np.zeros((1, 32, 32, 3), np.float32),
            np.tile(np.asarray([[0.0, 0.0, 1.0, 1.0]], np.float32), (1, 4, 1)),
            train=False,
        )
    )
    merged = pretrained.load(dict(abstract), str(path), prefix="backbone")
    kernel = merged["params"]["backbone"]["inception5b"]["branch1"]["conv"]["kernel"]
    np.testing.assert_array_equal(
        kernel, source["params"]["inception5b"]["branch1"]["conv"]["kernel"]
    )


@pytest.mark.slow
def test_one_stage_fine_tunes_from_converted_googlenet(tmp_path, tiny_data_dir, fast_compile):
  """The transfer path end to end for a method other than IAH: with learning rate 0 the trained
  backbone is exactly the file's."""
  path = tmp_path / "googlenet.npz"
  source = random_googlenet_file(path)
  config = googlenet_config("one_stage", str(path))
  with config.unlocked():
    config.dataset.data_dir, config.dataset.config = tiny_data_dir, "tiny"
    config.batch_size, config.num_train_steps, config.optimizer.learning_rate = 8, 1, 0.0
  builder = train.load_dataset(config)
  _, state, _, _ = evaluate.train_and_restore(
      config, builder, train.make_mesh(), str(tmp_path / "run"), jax.random.PRNGKey(0)
  )
  assert int(state.step) == 1
  trained = jax.device_get(state.params["backbone"])
  for leaf_path, leaf in jax.tree_util.tree_flatten_with_path(source["params"])[0]:
    got = trained
    for key in leaf_path:
      got = got[key.key]
    np.testing.assert_array_equal(got, leaf)
