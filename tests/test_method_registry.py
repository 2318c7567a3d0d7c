"""The method registry: a toy method added from this file alone trains through the shared train
step, runs through `evaluate.run`, gets its own config options, and is held to the capabilities
it declares."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iah_jax import config as config_lib
from iah_jax import evaluate
from iah_jax import losses
from iah_jax import methods
from iah_jax import train
from iah_jax.comparison import cells as cell_lib
from iah_jax.comparison import report
from iah_jax.models.hashing import binarize
from iah_jax.models.hashing import global_average_pool
from tests.test_train import build, random_batch, tiny_config


class ToyHash(nn.Module):
  """Pooled backbone features -> FC to q -> tanh."""

  backbone: nn.Module
  semantic_bits: int

  @nn.compact
  def __call__(self, images, proposals=None, train=False):
    del proposals  # whole-image method (the shared call signature passes them)
    pooled = global_average_pool(self.backbone(images, train=train))
    return {"semantic_features": jnp.tanh(nn.Dense(self.semantic_bits, name="fc")(pooled))}


def toy_losses(outputs, labels, settings):
  semantic = losses.weighted_triplet_loss(outputs["semantic_features"], labels, margin=1.0)
  return {"loss": settings.options.scale * semantic, "semantic_loss": semantic}


TOY = methods.Method(
    name="toy",
    title="Toy hashing",
    build=lambda context: ToyHash(backbone=context.backbone, semantic_bits=context.semantic_bits),
    losses=toy_losses,
    encode=lambda outputs, settings: {"semantic_codes": binarize(outputs["semantic_features"])},
    options={"scale": 2.0},
)


@pytest.fixture
def toy():
  methods.register(TOY)
  try:
    yield TOY
  finally:
    methods.unregister(TOY.name)


def toy_config(data_dir="unused", steps=8):
  config = tiny_config(data_dir, steps=steps)  # after registration: the schema knows "toy"
  config.method = "toy"
  return config_lib.validate_config(config)


def test_toy_method_gets_its_options_and_unknown_ones_are_rejected(toy):
  config = toy_config()
  assert config.method_options.toy.scale == 2.0
  assert methods.names()[-1] == "toy" and methods.get("toy") is toy
  config.method_options.toy.shift = 1.0
  with pytest.raises(
      ValueError,
      match=r"unknown config key config.method_options.toy.shift; known keys of "
      r"config.method_options.toy: scale",
  ):
    config_lib.validate_config(config)
  with pytest.raises(ValueError, match="already registered"):
    methods.register(toy)


def test_unknown_method_and_removed_toy_are_named():
  with pytest.raises(ValueError, match="unknown method 'toy'; known: \\['iah', 'one_stage'"):
    methods.get("toy")
  config = tiny_config("unused")
  assert "toy" not in config.method_options


def test_toy_method_trains_a_step_with_its_own_loss(toy):
  config = toy_config()
  config.method_options.toy.scale = 3.0
  model, state, step, mesh = build(config)
  batch = random_batch()
  outputs = model.apply(
      {"params": jax.device_get(state.params)}, jnp.asarray(batch["image"]), None, train=True
  )
  expected = 3.0 * losses.weighted_triplet_loss(outputs["semantic_features"], batch["labels"])
  state, terms = step(state, train.to_global(batch, mesh), jax.random.PRNGKey(0))
  assert int(state.step) == 1
  np.testing.assert_allclose(float(terms["loss"]), float(expected), rtol=1e-5)
  np.testing.assert_allclose(float(terms["semantic_loss"]), float(expected) / 3.0, rtol=1e-5)


def test_toy_method_runs_through_the_main_job_and_the_comparison_lists(
    toy, tmp_path, tiny_data_dir
):
  config = toy_config(tiny_data_dir, steps=2)
  results = evaluate.run(config, str(tmp_path / "toy"))
  written = json.loads((tmp_path / "toy" / "results.json").read_text())
  assert written["method"] == "toy"
  assert 0.0 <= written["semantic"]["8"]["map"] <= 1.0
  assert written["semantic"]["8"]["map"] == results["semantic"]["8"]["map"]
  # Only what the default capabilities declare: no weighted ranking, no category codes.
  assert written["query_adaptive"] == {} and written["category_aware"] == {}
  assert (tmp_path / "toy" / "q8_b2" / "checkpoints" / "2").is_dir()
  # The comparison reads the same registry: the toy is a deep method with its own title.
  assert "toy" in cell_lib.deep_methods() and "toy" in cell_lib.all_methods()
  assert report.display_title("toy") == "Toy hashing"


def test_encode_must_return_what_the_capabilities_declare(toy):
  liar = dataclasses.replace(
      toy, name="liar", capabilities=methods.Capabilities(label_probs=True), options={}
  )
  methods.register(liar)
  try:
    config = tiny_config("unused")
    config.method = "liar"
    model, state, _, mesh = build(config)
    encode_step = evaluate.make_encode_step(model, mesh, config)
    batch = random_batch()
    with pytest.raises(ValueError, match=r"returned \['semantic_codes'\].*declare"):
      encode_step(state, jnp.asarray(batch["image"]), jnp.asarray(batch["proposals"]))
  finally:
    methods.unregister("liar")
