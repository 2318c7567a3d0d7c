"""configs/miml.py and benchmarks/miml.py on a tiny generated MIML directory (no ../shared)."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iah_jax import config as config_lib
from iah_jax import evaluate
from iah_jax import train
from iah_jax.data import registry
from iah_jax.models import backbones

import data_fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(relative_path: str, name: str):
  """A repo file loaded by path (configs/ is not a package; config_flags loads it the same way)."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, relative_path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


miml_config = _load("configs/miml.py", "config_miml")
miml_benchmark = _load("benchmarks/miml.py", "benchmark_miml")

# 16 images: 12 database (the last one or two become the validation carve), 4 queries.
LABELS = [
    "1,0,0,0,0",
    "0,1,0,0,0",
    "0,0,1,0,0",
    "0,0,0,1,0",
    "0,0,0,0,1",
    "1,1,0,0,0",
    "0,0,1,1,0",
    "0,1,0,0,1",
    "1,0,0,0,0",
    "0,0,1,0,0",
    "0,0,0,0,1",
    "0,0,0,1,0",
    "1,0,0,0,0",
    "0,1,1,0,0",
    "0,0,0,1,0",
    "0,0,0,0,1",
]
SPLITS = ["database"] * 12 + ["query"] * 4
# Fast preparation; the stored shapes are what the model sees (6 proposals per image).
TINY_OPTIONS = dict(
    proposal_method="generic", num_proposals=6, image_max_side=48, num_workers=0, progress=False
)


@pytest.fixture(scope="module")
def miml_builder(tmp_path_factory):
  root = tmp_path_factory.mktemp("miml")
  (root / "labels.csv").write_text(
      "image,desert,mountains,sea,sunset,trees\n"
      + "".join(f"{k}.jpg,{labels}\n" for k, labels in enumerate(LABELS))
  )
  (root / "split.csv").write_text(
      "image,split\n" + "".join(f"{k}.jpg,{split}\n" for k, split in enumerate(SPLITS))
  )
  for k in range(len(LABELS)):
    data_fixtures.write_image(
        root / "images" / f"{k}.jpg", kind="gray" if k == 3 else "rgb", height=48, width=64, seed=k
    )
  config = tiny_miml_config(str(tmp_path_factory.mktemp("tfds")), str(root))
  return config, train.load_dataset(config)


def tiny_miml_config(data_dir: str, data_path: str):
  """configs/miml.py as shipped, pointed at the fixture, with its cheap-to-prepare proposals."""
  config = miml_config.get_config()
  config.dataset.data_dir = data_dir
  config.dataset.options.data_path = data_path
  config.dataset.options.update(TINY_OPTIONS)
  config.num_train_steps = 1
  config.batch_size = 8  # every epoch holds whole batches: the fixture trains on 11 images
  config.eval.batch_size = 8
  return config


def test_config_validates_and_follows_the_protocol():
  config = config_lib.validate_config(miml_config.get_config())
  assert config.dataset.name == "miml"
  # Model selection on a carve of the database split; the queries ("test") are never seen
  # before the final evaluation; the whole database split is the retrieval database.
  assert config.dataset.train_split == "train[:90%]"
  assert config.dataset.validation_split == "train[90%:]"
  assert config.dataset.database_split == "train" and config.dataset.query_split == "test"
  assert config.eval.every_steps > 0
  assert config.num_train_steps % config.eval.every_steps == 0
  assert config.model.backbone == "small_cnn" and not config.model.pretrained
  assert config.dataset.options.proposal_method == "selective_search"
  # b = q / 4 (the benchmark's rule) for every trained pair.
  assert [b * 4 for b in config.bits_per_category] == list(config.semantic_bits)
  # The documented command passes the shared data path.
  assert "--config.dataset.options.data_path=../shared/data/miml" in miml_config.__doc__
  # The options are the builder's: the prepared files' name is derived from them.
  assert registry.make_config("miml", **config.dataset.options.to_dict()).name.startswith("miml-")


def test_one_train_step_validates_keeps_the_best_and_evaluates(miml_builder, tmp_path):
  config, builder = miml_builder
  assert builder.info.splits["train"].num_examples == 12
  assert builder.info.splits["test"].num_examples == 4
  results = miml_benchmark.run_bits(
      config, builder, train.make_mesh(), str(tmp_path), q=8, lsh_seed=0
  )
  assert results["bits_per_category"] == 2
  assert results["best_step"] == 1  # validated (and kept) at the last step
  assert os.path.isdir(tmp_path / "q8_b2" / "checkpoints" / "1")
  assert results["num_queries"] == 4 and results["num_database"] == 12
  for method in ("iah", "lsh_backbone"):
    assert set(results[method]) == {"map", "wmap", "ndcg@100", "acg@100"}
    assert all(0.0 < value <= 1.0 for value in results[method].values()), results[method]
  table = miml_benchmark.format_table(
      dict(
          runs={"8": results},
          num_queries=4,
          num_database=12,
          wall_seconds=1.0,
          cpu_seconds=1.0,
          cpus=2,
          load_average_start=0.0,
          load_average_end=0.0,
      )
  )
  assert "IAH semantic" in table and "LSH on backbone GAP" in table
  assert f"{results['iah']['map']:.4f}" in table


def test_feature_step_matches_the_model_and_the_backbone_alone(miml_builder):
  config, builder = miml_builder
  model = train.build_model(config, 5, 8, 2)
  images = jnp.asarray(
      np.random.default_rng(0).uniform(
          size=(3, config.dataset.image_size, config.dataset.image_size, 3)
      ),
      jnp.float32,
  )
  proposals = jnp.tile(jnp.asarray([0.0, 0.0, 0.5, 1.0]), (3, 6, 1))
  variables = model.init(jax.random.PRNGKey(0), images, proposals)
  state = train.TrainState(
      step=jnp.zeros((), jnp.int32), params=variables["params"], batch_stats={}, opt_state=()
  )
  # The encoder benchmarks/miml.py uses: IAH codes and pooled backbone features in one pass.
  outputs = evaluate.make_encode_step(model, train.make_mesh(), config, backbone_features=True)(
      state, images, proposals
  )

  backbone = backbones.build_backbone(
      config.model.backbone, config.model.backbone_options.to_dict()
  )
  feature_map = np.asarray(backbone.apply({"params": variables["params"]["backbone"]}, images))
  reference = np.zeros((3, feature_map.shape[-1]))
  for row in range(3):  # global average pooling written out
    for y in range(feature_map.shape[1]):
      for x in range(feature_map.shape[2]):
        reference[row] += feature_map[row, y, x]
  reference /= feature_map.shape[1] * feature_map.shape[2]
  np.testing.assert_allclose(outputs["backbone_features"], reference, rtol=1e-4, atol=1e-6)
  semantic = model.apply(variables, images, proposals)["semantic_features"]
  np.testing.assert_array_equal(outputs["semantic_codes"], np.asarray(semantic > 0, np.uint8))


def test_lsh_codes_match_a_loop_reference_and_never_look_at_the_queries():
  rng = np.random.default_rng(3)
  database, queries = rng.normal(size=(20, 7)) + 5.0, rng.normal(size=(6, 7)) + 5.0
  db_codes, query_codes = miml_benchmark.lsh_codes(database, queries, bits=9, seed=11)
  normals = np.random.default_rng(11).standard_normal((7, 9))
  mean = [sum(database[i, d] for i in range(20)) / 20 for d in range(7)]
  for codes, points in ((db_codes, database), (query_codes, queries)):
    assert codes.shape == (len(points), 9) and codes.dtype == np.uint8
    for i in range(len(points)):
      for bit in range(9):
        projection = sum((points[i, d] - mean[d]) * normals[d, bit] for d in range(7))
        assert codes[i, bit] == (projection > 0)
  # Centring uses the database only: other queries leave the database codes unchanged.
  db_again, _ = miml_benchmark.lsh_codes(database, queries * 3.0 - 40.0, bits=9, seed=11)
  np.testing.assert_array_equal(db_again, db_codes)
  # Centred: about half the database bits are set (uncentred, the +5 offset would skew them).
  assert 0.3 < db_codes.mean() < 0.7


def test_several_seeds_are_summarised_as_mean_and_sample_std():
  rng = np.random.default_rng(0)

  def row(seed):
    figures = {name: float(rng.uniform()) for name in miml_benchmark.METRIC_NAMES}
    return {
        "iah": figures,
        "lsh_backbone": {name: value / 2 for name, value in figures.items()},
        "best_step": 1,
        "num_train_steps": 1,
        "train_wall_seconds": 1.0,
        "train_cpu_seconds": 1.0,
        "eval_wall_seconds": 1.0,
        "eval_cpu_seconds": 1.0,
        "seed": seed,
    }

  seed_runs = {str(seed): {"8": row(seed)} for seed in (0, 1, 2)}
  summary = miml_benchmark.summarize(seed_runs)
  for method in ("iah", "lsh_backbone"):
    for name in miml_benchmark.METRIC_NAMES:
      values = [seed_runs[seed]["8"][method][name] for seed in ("0", "1", "2")]
      assert summary["8"][method][name]["mean"] == pytest.approx(np.mean(values))
      assert summary["8"][method][name]["std"] == pytest.approx(np.std(values, ddof=1))
  table = miml_benchmark.format_table(
      dict(
          seed_runs=seed_runs,
          summary=summary,
          num_queries=4,
          num_database=12,
          wall_seconds=1.0,
          cpu_seconds=1.0,
          cpus=2,
          load_average_start=0.0,
          load_average_end=0.0,
      )
  )
  iah = summary["8"]["iah"]["map"]
  assert f"{iah['mean']:.4f}±{iah['std']:.4f}" in table and "over 3 seeds (0, 1, 2)" in table
  assert "q=8 seed 2: best step" in table
