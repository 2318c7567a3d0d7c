"""The run manifest: written where a run starts training, read back without the dataset."""

import json

import pytest

import data_fixtures
from iah_jax import config as config_lib
from iah_jax import run_manifest
from iah_jax import train
from iah_jax.data import registry


def tiny_config(data_dir):
  config = config_lib.base_config()
  config.dataset.data_dir = data_dir
  config.dataset.config = "tiny"
  config.dataset.image_size = 32
  config.semantic_bits = (8, 16)
  config.bits_per_category = (2, 4)
  return config


@pytest.mark.parametrize(
    "method,expected_pair",
    [("iah", (16, 4)), ("one_stage", (16, 4)), ("category_baseline", (16, 4))],
)
def test_manifest_of_the_embedded_dataset_round_trips(
    tmp_path, tiny_data_dir, method, expected_pair
):
  config = tiny_config(tiny_data_dir)
  config.method = method
  builder = train.load_dataset(config)
  model = train.build_model(config, 10, 16, 4)  # the second run of the two pairs
  written = run_manifest.write(str(tmp_path / "q16_b4"), config, builder, model)
  manifest = run_manifest.read(str(tmp_path / "q16_b4"))
  assert manifest == json.loads(json.dumps(written))
  assert (manifest["semantic_bits"], manifest["bits_per_category"]) == expected_pair
  assert manifest["method"] == method
  restored = run_manifest.config_of(manifest)
  assert restored.semantic_bits == (16,) and restored.bits_per_category == (4,)
  assert restored.model.spp_levels == tuple(config.model.spp_levels)
  assert restored.dataset.image_size == 32 and restored.method == method
  dataset = manifest["dataset"]
  assert dataset["num_classes"] == 10 and dataset["num_proposals"] == 100
  assert dataset["class_names"][:2] == ["red_disc", "orange_square"]
  assert dataset["image_size"] == 32
  assert dataset["stored_image"] == {"encoding_format": "png", "max_side": 0}
  # The synthetic scenes' proposals: generic_proposals(image, N) with its defaults.
  assert dataset["proposal_settings"]["method"] == "generic"
  assert dataset["proposal_settings"]["num_proposals"] == 100


def test_manifest_of_a_real_builder_names_its_proposals_and_storage(tmp_path):
  root = tmp_path / "lists"
  for k in range(4):
    data_fixtures.write_image(root / f"{k}.jpg", "rgb", seed=k)
  (root / "train.txt").write_text("0.jpg 1 0\n1.jpg 0 1\n2.jpg 1 1\n")
  (root / "test.txt").write_text("3.jpg 1 0\n")
  builder = registry.get_builder(
      "image_list",
      str(tmp_path / "tfds"),
      data_path=str(root),
      proposal_method="generic",
      num_proposals=5,
      image_max_side=40,
      num_workers=0,
      progress=False,
      class_names=("cat", "dog"),
  )
  facts = run_manifest.dataset_facts(builder, image_size=24)
  assert facts["num_classes"] == 2 and facts["class_names"] == ["cat", "dog"]
  assert facts["num_proposals"] == 5 and facts["image_size"] == 24
  assert facts["stored_image"] == {"encoding_format": "jpeg", "max_side": 40}
  assert facts["proposal_settings"]["method"] == "generic"
  assert facts["proposal_settings"]["num_proposals"] == 5


def test_reading_a_directory_without_manifest_names_it(tmp_path):
  with pytest.raises(run_manifest.ManifestError, match=f"{tmp_path} has no run manifest"):
    run_manifest.read(str(tmp_path))
  (tmp_path / run_manifest.FILE_NAME).write_text("{not json")
  with pytest.raises(run_manifest.ManifestError, match="not a readable run manifest"):
    run_manifest.read(str(tmp_path))
  (tmp_path / run_manifest.FILE_NAME).write_text(json.dumps({"format": "something else"}))
  with pytest.raises(run_manifest.ManifestError, match="not an iah_jax run manifest"):
    run_manifest.read(str(tmp_path))


def test_a_manifest_older_than_the_iah_category_loss_option_reads_as_pooled():
  config = config_lib.base_config()
  manifest_config = config.to_dict()
  del manifest_config["method_options"]["iah"]  # written before the option existed
  restored = run_manifest.config_of({"config": manifest_config})
  assert restored.method_options.iah.category_loss_mean == "pooled"
  assert restored.method_options.dsrh.margin == config.method_options.dsrh.margin
  # A manifest that has the option keeps its value, whichever the default is.
  config.method_options.iah.category_loss_mean = "per_category"
  restored = run_manifest.config_of({"config": config.to_dict()})
  assert restored.method_options.iah.category_loss_mean == "per_category"
