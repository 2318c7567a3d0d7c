"""The paper-scale configs (configs/voc07.py, voc12.py, mirflickr.py).

Each config validates, its dataset options are the builder's own fields, its learning-rate schedule
does what its docstring says, and it builds GoogLeNet + IAH and runs one train step on random
inputs at a reduced image size (64 x 64, batch 8; every other setting as configured: N = 100
proposals, SPP (4, 3, 2, 1), d = 960, c from the dataset builder). Mixed precision (bfloat16
compute) runs one step with float32 parameters.

Compiling GoogLeNet's train step on CPU is the cost (~25 CPU-s each, even with
`jax_disable_most_optimizations`, which this module sets), so it compiles once per distinct
network: voc07 and voc12 build the same network (c = 20) and share one compiled step (the fast
part of this file, ~30 CPU-s); mirflickr (c = 38) and bfloat16 compile their own and are marked
slow.
"""

import importlib.util
import os
import re

import jax
import numpy as np
import pytest

from iah_jax import config as config_lib
from iah_jax import train
from iah_jax.data import features
from iah_jax.data import registry
from iah_jax.models import googlenet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_NAMES = ("voc07", "voc12", "mirflickr")
TEST_IMAGE_SIZE = 64  # GoogLeNet feature map 2 x 2 (7 x 7 at the configs' 224)
TEST_BATCH_SIZE = 8
STEPS_PER_EPOCH = 100  # any value; equal for all configs so voc07 and voc12 share one step


def load_config(name: str):
  """configs/<name>.py's get_config(), loaded by path as ml_collections' config_flags does."""
  spec = importlib.util.spec_from_file_location(
      f"config_{name}", os.path.join(REPO, "configs", f"{name}.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def num_classes_of(config) -> int:
  """c as evaluate.run gets it: from the dataset builder (not prepared, no data needed)."""
  builder = registry.get_builder(
      config.dataset.name,
      "/nonexistent-unprepared",
      prepare=False,
      **config.dataset.options.to_dict(),
  )
  return builder.info.features[features.LABELS].shape[0]


def random_batch(
    batch_size: int, num_classes: int, image_size: int, num_proposals: int, seed: int = 0
) -> dict:
  rng = np.random.default_rng(seed)
  corners = rng.uniform(size=(batch_size, num_proposals, 4))
  boxes = np.concatenate(
      [
          np.minimum(corners[..., :2], corners[..., 2:]),
          np.maximum(corners[..., :2], corners[..., 2:]),
      ],
      -1,
  )
  labels = (rng.uniform(size=(batch_size, num_classes)) < 0.15).astype(np.float32)
  labels[np.arange(batch_size), rng.integers(0, num_classes, batch_size)] = 1.0
  return {
      "image": rng.uniform(size=(batch_size, image_size, image_size, 3)).astype(np.float32),
      "proposals": boxes.astype(np.float32),
      "labels": labels,
  }


@pytest.fixture(scope="module")
def compiled_steps():
  """get(config, num_classes) -> (model, fresh_state(), step, mesh), one compile per network."""
  previous = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)  # compile time, not run time, counts
  cache = []

  def get(config, num_classes):
    model = train.build_model(
        config, num_classes, config.semantic_bits[0], config.bits_per_category[0]
    )
    settings = (config.method, config.optimizer.to_json(), config.loss.to_json())
    for cached_model, cached_settings, entry in cache:
      if cached_model == model and cached_settings == settings:
        return entry
    mesh = train.make_mesh()
    schedule = train.learning_rate_schedule(config, STEPS_PER_EPOCH)
    tx = train.make_optimizer(config, schedule)
    state = train.create_train_state(
        model,
        tx,
        jax.random.PRNGKey(0),
        mesh,
        TEST_IMAGE_SIZE,
        config.dataset.options.num_proposals,
    )
    initial = jax.device_get(state)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    fresh = lambda: jax.device_put(initial, replicated)
    step = train.make_train_step(model, tx, schedule, config, mesh)
    entry = (model, fresh, step, mesh)
    cache.append((model, settings, entry))
    return entry

  yield get
  jax.config.update("jax_disable_most_optimizations", previous)


def one_step(compiled_steps, config):
  """Runs one step at the test size; returns (model, params before, state after, terms)."""
  num_classes = num_classes_of(config)
  model, fresh, step, mesh = compiled_steps(config, num_classes)
  state = fresh()
  before = jax.device_get(state.params)
  batch = random_batch(
      TEST_BATCH_SIZE, num_classes, TEST_IMAGE_SIZE, config.dataset.options.num_proposals
  )
  state, terms = step(state, train.to_global(batch, mesh), jax.random.PRNGKey(0))
  return model, before, state, jax.device_get(terms)


def tree_shapes(tree) -> dict:
  return jax.tree.map(lambda leaf: tuple(leaf.shape), tree)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_has_the_paper_settings(name):
  config = load_config(name)
  assert config_lib.validate_config(config) is config
  assert config.model.backbone == "googlenet"
  assert config.dataset.options.num_proposals == 100
  assert config.dataset.options.proposal_method == "selective_search"
  assert tuple(config.model.spp_levels) == (4, 3, 2, 1)
  assert config.model.reduced_maps * sum(level * level for level in config.model.spp_levels) == 960
  assert (config.batch_size, config.num_train_steps) == (32, 15_000)
  assert (
      config.optimizer.learning_rate,
      config.optimizer.decay_every_epochs,
      config.optimizer.decay_factor,
  ) == (1e-4, 30.0, 0.1)
  assert tuple(config.semantic_bits) == (16, 32, 48, 64)
  assert [q // b for q, b in zip(config.semantic_bits, config.bits_per_category)] == [4] * 4
  assert config.dataset.image_size == 224
  assert config.model.dtype == "float32"  # bfloat16 is the GPU/TPU option, not the default
  assert config.model.pretrained == ""  # the user passes the converted file
  # The options are the dataset builder's fields (an unknown one is an error there).
  builder_config = registry.make_config(config.dataset.name, **config.dataset.options.to_dict())
  assert builder_config.num_proposals == 100
  # The three configs differ only in the dataset.
  reference = load_config("voc07")
  for section in ("model", "optimizer", "loss", "eval"):
    assert config[section].to_dict() == reference[section].to_dict(), section
  assert (config.semantic_bits, config.bits_per_category) == (
      reference.semantic_bits,
      reference.bits_per_category,
  )


@pytest.mark.parametrize(
    "name,steps_per_epoch,decay_steps",
    [
        ("voc07", 7963 // 32, (7440, 14880)),  # 9963 - 2000 queries
        ("voc12", 9540 // 32, (8940,)),  # 11540 - 2000 queries
        ("mirflickr", 18015 // 32, ()),  # ~20,015 labelled - 2000 queries: 15k steps < 30 epochs
    ],
)
def test_learning_rate_schedule_matches_the_docstring(name, steps_per_epoch, decay_steps):
  config = load_config(name)
  schedule = train.learning_rate_schedule(config, steps_per_epoch)
  expected = {0: 1e-4, config.num_train_steps - 1: 1e-4 * 0.1 ** len(decay_steps)}
  for count, step in enumerate(decay_steps, start=1):
    expected[step - 1], expected[step] = 1e-4 * 0.1 ** (count - 1), 1e-4 * 0.1**count
  np.testing.assert_allclose(
      [float(schedule(step)) for step in sorted(expected)],
      [expected[step] for step in sorted(expected)],
      rtol=1e-5,
  )
  with open(os.path.join(REPO, "configs", f"{name}.py")) as file:
    docstring = " ".join(file.read().split('"""')[1].split())
  for step in decay_steps:
    assert f"at step {step} (" in docstring, step
  if not decay_steps:
    assert "never triggers" in docstring


def test_dataset_options_reach_the_builder(tmp_path):
  """train.load_dataset passes the config's options to the builder: without data_path the
  builder's own message says what to set (not an error about the options themselves)."""
  config = load_config("voc07")
  config.dataset.data_dir = str(tmp_path)
  with pytest.raises(ValueError, match="set data_path to the manual download directory"):
    train.load_dataset(config)


# voc12 reuses voc07's compiled step; mirflickr (c = 38) and bfloat16 compile their own (slow).
@pytest.mark.parametrize(
    "name", ["voc07", "voc12", pytest.param("mirflickr", marks=pytest.mark.slow)]
)
def test_config_builds_googlenet_iah_and_trains_one_step(name, compiled_steps):
  config = load_config(name)
  config_lib.validate_config(config)
  model, before, state, terms = one_step(compiled_steps, config)

  assert int(state.step) == 1
  assert all(np.isfinite(float(value)) for value in terms.values()), terms
  assert float(terms["loss"]) > 0
  after = jax.device_get(state.params)
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, after)
  assert all(jax.tree.leaves(changed["backbone"]["inception5b"])), changed["backbone"]
  head = {key: value for key, value in changed.items() if key != "backbone"}
  assert all(jax.tree.leaves(head)), head

  # The backbone sits under `backbone` with exactly the variables of GoogLeNet's feature
  # extractor, so a converted torchvision file (its `features` subtree) loads into it.
  classifier = jax.eval_shape(
      googlenet.GoogLeNet(num_classes=1000).init,
      jax.random.PRNGKey(0),
      np.zeros((1, TEST_IMAGE_SIZE, TEST_IMAGE_SIZE, 3), np.float32),
  )
  assert tree_shapes(before["backbone"]) == tree_shapes(classifier["params"]["features"])
  assert tree_shapes(state.batch_stats["backbone"]) == tree_shapes(
      classifier["batch_stats"]["features"]
  )
  # The head at paper scale: 1024 -> 32 maps, d = 32 * 30 = 960 per proposal.
  c, b, q = num_classes_of(config), config.bits_per_category[0], config.semantic_bits[0]
  assert before["reduce_conv"]["kernel"].shape == (1, 1, googlenet.FEATURE_CHANNELS, 32)
  assert before["label_fc"]["kernel"].shape == (960, c)
  assert before["hash_fc"]["kernel"].shape == (960, b)
  assert before["semantic_fc"]["kernel"].shape == (c * b, q)
  assert c == {"voc07": 20, "voc12": 20, "mirflickr": 38}[name]


@pytest.mark.slow
def test_mixed_precision_computes_in_bfloat16_with_float32_parameters(compiled_steps):
  config = load_config("voc07")
  config.model.dtype = "bfloat16"
  config_lib.validate_config(config)
  _, before, state, terms = one_step(compiled_steps, config)

  assert all(np.isfinite(float(value)) for value in terms.values()), terms
  dtypes = {str(leaf.dtype) for leaf in jax.tree.leaves((state.params, state.batch_stats))}
  assert dtypes == {"float32"}
  after = jax.device_get(state.params)
  assert np.any(
      after["backbone"]["conv1"]["conv"]["kernel"] != before["backbone"]["conv1"]["conv"]["kernel"]
  )
  # The compute really is bfloat16: every convolution of the compiled step (forward and
  # backward) takes bfloat16 operands.
  num_classes = num_classes_of(config)
  _, fresh, step, mesh = compiled_steps(config, num_classes)
  batch = train.to_global(random_batch(TEST_BATCH_SIZE, num_classes, TEST_IMAGE_SIZE, 100), mesh)
  text = step.lower(fresh(), batch, jax.random.PRNGKey(0)).as_text()
  convolutions = [line for line in text.splitlines() if "convolution" in line and "->" in line]
  # On CPU the 1x1 convs run as dots and some kernel gradients as GEMMs (googlenet conv_impl
  # "auto"), so fewer than GoogLeNet's 57 forward convs stay convolutions; those that do and the
  # dots must all be bfloat16.
  assert len(convolutions) > 30, len(convolutions)
  dots = [
      line
      for line in text.splitlines()
      if "dot_general" in line and "->" in line and "xbf16>" in line
  ]
  assert len(dots) > 30, len(dots)
  assert all(
      re.search(r"xbf16>", line) and not re.search(r"xf32>", line) for line in convolutions
  ), [line for line in convolutions if "xf32>" in line][:3]

  # Same initial parameters in float32: the loss agrees to bfloat16 accuracy.
  _, _, _, terms_f32 = one_step(compiled_steps, load_config("voc07"))
  np.testing.assert_allclose(float(terms["label_loss"]), float(terms_f32["label_loss"]), rtol=0.05)
