"""A trained run's backbone exported as pretrained weights (`iah_jax.convert.run_backbone`) and
fine-tuned from by another method (`config.model.pretrained` for any backbone)."""

import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from iah_jax import config as config_lib
from iah_jax import evaluate
from iah_jax import train
from iah_jax.convert import run_backbone
from iah_jax.errors import UserInputError
from iah_jax.models import pretrained
from test_train import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def classifier_run(tiny_data_dir, tmp_path_factory):
  """A 4-step category_baseline run through the main job, and the state it evaluated."""
  workdir = tmp_path_factory.mktemp("classifier")
  config = tiny_config(tiny_data_dir, steps=4)
  config.method = "category_baseline"
  restored = {}
  original = evaluate.train_and_restore

  def recording(*args, **kwargs):
    restored["result"] = original(*args, **kwargs)
    return restored["result"]

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(evaluate, "train_and_restore", recording)
    evaluate.run(config, str(workdir))
  _, state, _, _ = restored["result"]
  return config, os.path.join(str(workdir), "q8_b2"), state


@pytest.fixture(scope="module")
def exported(classifier_run, tmp_path_factory):
  """(the classifier's config, its exported backbone file, the state it evaluated)."""
  config, run_dir, state = classifier_run
  out = str(tmp_path_factory.mktemp("exported") / "backbone.npz")
  run_backbone.export(run_dir, out)
  return config, out, state


def fresh_state(config, seed: int):
  """A freshly initialised train state of `config` on the tiny data (10 classes, 8 / 2 bits)."""
  model = train.build_model(config, 10, 8, 2)
  tx = train.make_optimizer(config, train.learning_rate_schedule(config, 1))
  return train.create_train_state(model, tx, jax.random.PRNGKey(seed), train.make_mesh(), 32, 24)


def flat_numpy(tree) -> dict:
  return {name: np.asarray(leaf) for name, leaf in pretrained.flatten_variables(tree).items()}


def test_export_writes_the_evaluated_backbone_under_its_backbone_name(classifier_run, tmp_path):
  _, run_dir, state = classifier_run
  out = str(tmp_path / "backbone.npz")
  summary = run_backbone.export(run_dir, out)
  assert summary["backbone"] == "small_cnn" and summary["step"] == 4
  assert pretrained.backbone_of(out) == "small_cnn"
  written = pretrained.load_converted(out)
  assert set(written) == {"params"}  # small_cnn has no batch norm, so no batch_stats
  expected = flat_numpy(jax.device_get(state.params["backbone"]))
  got = flat_numpy(written["params"]["features"])
  assert sorted(got) == sorted(expected) and len(got) == 4  # 2 stages x (kernel, bias)
  for name, value in expected.items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)
  assert not os.path.exists(out + ".partial")


def test_fine_tuning_starts_from_the_exported_backbone_with_a_fresh_head(exported):
  config, out, trained = exported
  fine_tune = config.copy_and_resolve_references()
  fine_tune.method = "dsrh"
  fine_tune.model.pretrained = out
  config_lib.validate_config(fine_tune, check_inputs=True)
  fresh = fresh_state(fine_tune, seed=5)
  loaded = train.load_pretrained(fresh, fine_tune)
  expected = flat_numpy(jax.device_get(trained.params["backbone"]))
  got = flat_numpy(jax.device_get(loaded.params["backbone"]))
  for name, value in expected.items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)
  assert set(loaded.params) == set(fresh.params)
  for module in set(fresh.params) - {"backbone"}:  # the hash head: as initialised
    for name, value in flat_numpy(jax.device_get(fresh.params[module])).items():
      np.testing.assert_array_equal(
          flat_numpy(jax.device_get(loaded.params[module]))[name], value, err_msg=name
      )


def test_a_file_of_another_backbone_or_other_widths_is_refused_naming_both(exported):
  config, out, _ = exported
  googlenet = config.copy_and_resolve_references()
  googlenet.model.backbone = "googlenet"
  googlenet.model.backbone_options = ml_collections.ConfigDict()
  googlenet.model.pretrained = out
  with pytest.raises(UserInputError, match=r"holds 'small_cnn' variables.*backbone='small_cnn'"):
    config_lib.validate_config(googlenet, check_inputs=True)

  wider = config.copy_and_resolve_references()
  wider.model.backbone_options.widths = (8, 32)
  wider.model.pretrained = out
  config_lib.validate_config(wider, check_inputs=True)  # same backbone: shapes checked at load
  with pytest.raises(UserInputError, match=r"shape mismatches \(2\)"):
    train.load_pretrained(fresh_state(wider, seed=0), wider)


def test_format_marker_round_trips_per_backbone(tmp_path):
  path = str(tmp_path / "w.npz")
  pretrained.save_converted({"params": {"features": {"w": np.ones(3)}}}, path, backbone="small_cnn")
  assert pretrained.backbone_of(path) == "small_cnn"
  with np.load(path) as archive:
    assert str(archive[pretrained.FORMAT_KEY]) == "iah_jax.small_cnn.flax_variables.v1"
  assert pretrained.FORMAT_VERSION == pretrained.format_version("googlenet")
  with pytest.raises(ValueError, match="lower-case"):
    pretrained.format_version("Small CNN")


def test_command_line_exports_and_a_missing_run_is_one_error_line(classifier_run, tmp_path):
  _, run_dir, _ = classifier_run
  out = tmp_path / "cli.npz"
  done = subprocess.run(
      [
          sys.executable,
          "-m",
          "iah_jax.convert.run_backbone",
          "--run_dir",
          run_dir,
          "--out",
          str(out),
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      check=False,
  )
  assert done.returncode == 0, done.stderr
  assert "small_cnn backbone at step 4" in done.stdout
  assert pretrained.backbone_of(str(out)) == "small_cnn"
  missing = subprocess.run(
      [
          sys.executable,
          "-m",
          "iah_jax.convert.run_backbone",
          "--run_dir",
          str(tmp_path / "none"),
          "--out",
          str(tmp_path / "x.npz"),
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      check=False,
  )
  assert missing.returncode == 2
  assert "error:" in missing.stderr and "Traceback" not in missing.stderr
  assert not (tmp_path / "x.npz").exists()
