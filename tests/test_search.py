"""The validation-selected search of `iah_jax.compare --search`: the trials it runs within the
config's budget, what it selects, that it never encodes the queries, resuming, and the cells that
train with its selection."""

import json
import os

import ml_collections
import pytest

from iah_jax import comparison
from iah_jax import config as config_lib
from iah_jax import evaluate
from iah_jax.comparison import cells as cell_lib
from iah_jax.comparison import search
from tests.test_train import tiny_config


def search_config(data_dir="unused"):
  config = tiny_config(data_dir, steps=6)
  config.dataset.train_split = "train[:75%]"
  config.dataset.validation_split = "train[75%:]"
  config.eval.every_steps = 3
  config.search.learning_rate_scales = (0.1, 1.0, 10.0)
  config.search.weight_scales = (0.5, 2.0)
  config.search.num_train_steps = 3
  return config


def fake_trainer(scores):
  """A run_trial_fn whose validation MAP is scores(trial config) and that logs what it got."""
  calls = []

  def run_trial(config, overrides, builder, mesh, run_dir):
    del builder, mesh
    trial = search.trial_config(config, overrides)
    calls.append((trial, overrides, run_dir))
    return {
        "name": search.trial_name(overrides),
        "overrides": dict(overrides),
        "validation_map": scores(trial),
        "best_step": trial.num_train_steps,
        "train_seconds": 1.0,
    }

  return run_trial, calls


def test_learning_rate_then_each_tuned_weight_in_turn_within_the_budget(tmp_path):
  config = search_config()

  def scores(trial):  # best at lr 0.1 (scale 10) and category_weight 2; label_weight flat
    lr_score = {0.001: 0.2, 0.01: 0.4, 0.1: 0.6}[round(trial.optimizer.learning_rate, 6)]
    return lr_score + {0.5: 0.0, 1.0: 0.05, 2.0: 0.1}[trial.loss.category_weight]

  run_trial, calls = fake_trainer(scores)
  record = search.search(config, "iah", 8, 2, None, None, str(tmp_path), run_trial)
  tried = [overrides for _, overrides, _ in calls]
  assert tried == [
      {"optimizer.learning_rate": 0.01},  # scale 1.0 first
      {"optimizer.learning_rate": 0.001},
      {"optimizer.learning_rate": 0.1},
      {"optimizer.learning_rate": 0.1, "loss.category_weight": 0.5},
      {"optimizer.learning_rate": 0.1, "loss.category_weight": 2.0},
      {"optimizer.learning_rate": 0.1, "loss.category_weight": 2.0, "loss.label_weight": 0.5},
      {"optimizer.learning_rate": 0.1, "loss.category_weight": 2.0, "loss.label_weight": 2.0},
  ]
  # Budget: 3 rates + 2 scales x 2 weights, each of search.num_train_steps with the schedule
  # scaled to it, the rest of the config untouched.
  for trial, _, run_dir in calls:
    assert trial.num_train_steps == 3
    assert trial.optimizer.decay_every_epochs == pytest.approx(30.0 * 3 / 6)
    assert trial.method == "iah" and tuple(trial.semantic_bits) == (8,)
    assert trial.dataset.validation_split == "train[75%:]"
    assert run_dir.startswith(os.path.join(str(tmp_path), "search", "iah_q8"))
  assert record["selected"] == {"optimizer.learning_rate": 0.1, "loss.category_weight": 2.0}
  assert record["selected_validation_map"] == pytest.approx(0.7)
  assert record["budget"]["tuned_weights"] == ["loss.category_weight", "loss.label_weight"]
  with open(search.record_path(str(tmp_path), "iah", 8)) as file:
    assert json.load(file)["selected"] == record["selected"]


def test_ties_keep_the_config_values(tmp_path):
  run_trial, calls = fake_trainer(lambda trial: 0.5)
  record = search.search(search_config(), "dsrh", 8, 2, None, None, str(tmp_path), run_trial)
  assert record["selected"] == {"optimizer.learning_rate": 0.01}
  assert len(calls) == 3 + 2  # dsrh tunes one weight (rho)
  assert calls[-1][1] == {
      "optimizer.learning_rate": 0.01,
      "method_options.dsrh.bit_balance_weight": 2.0,
  }


def test_a_finished_search_resumes_without_retraining_and_refuses_another_budget(tmp_path):
  run_trial, calls = fake_trainer(lambda trial: trial.optimizer.learning_rate)
  first = search.search(search_config(), "qadwh", 8, 2, None, None, str(tmp_path), run_trial)
  count = len(calls)
  again = search.search(search_config(), "qadwh", 8, 2, None, None, str(tmp_path), run_trial)
  assert len(calls) == count and again["selected"] == first["selected"]
  changed = search_config()
  changed.search.num_train_steps = 4
  with pytest.raises(search.SearchError, match="budget"):
    search.search(changed, "qadwh", 8, 2, None, None, str(tmp_path), run_trial)


def test_search_needs_a_validation_split(tmp_path):
  config = search_config()
  config.dataset.validation_split = ""
  with pytest.raises(search.SearchError, match="validation_split"):
    search.search(config, "iah", 8, 2, None, None, str(tmp_path), fake_trainer(lambda t: 0)[0])


def test_budget_fields_are_checked_by_the_config_schema():
  config = search_config()
  config.search.learning_rate_scales = (0.0, 1.0)
  with pytest.raises(config_lib.ConfigError, match="search.learning_rate_scales"):
    config_lib.validate_config(config)


@pytest.mark.slow
def test_real_search_never_encodes_queries_and_cells_train_with_its_selection(
    tiny_data_dir, tmp_path, monkeypatch
):
  config = search_config(tiny_data_dir)
  config.search.learning_rate_scales = (1.0, 3.0)
  config.search.weight_scales = (2.0,)
  workdir = str(tmp_path)
  encoded_splits = []
  real_encode_split = evaluate.encode_split

  def spying_encode_split(state, encode_step, builder, split, *args, **kwargs):
    encoded_splits.append(split)
    return real_encode_split(state, encode_step, builder, split, *args, **kwargs)

  monkeypatch.setattr(evaluate, "encode_split", spying_encode_split)
  records = {}
  real_search = search.search

  def keeping_search(*args, **kwargs):
    record = real_search(*args, **kwargs)
    records[record["method"]] = (record, list(encoded_splits))
    return record

  monkeypatch.setattr(search, "search", keeping_search)
  cells = comparison.compare(
      config, workdir, ["one_stage", "lsh"], (8,), "one_stage", (5,), search=True
  )
  record, splits_during_search = records["one_stage"]
  # The trials encoded only the validation carve (queries) and the training split (database).
  assert set(splits_during_search) <= {"train[75%:]", "train[:75%]"}
  assert len(record["trials"]) == 3  # lr x1, x3, then semantic_margin x2
  validation = {trial["name"]: trial["validation_map"] for trial in record["trials"]}
  assert record["selected_validation_map"] == max(validation.values())
  by_method = {cell["method"]: cell for cell in cells}
  assert by_method["one_stage"]["tuned"] == record["selected"]
  with open(
      os.path.join(cell_lib.run_directory(workdir, "one_stage", 8, 2), "run_manifest.json")
  ) as f:
    trained = json.load(f)["config"]
  for path, value in record["selected"].items():
    assert search.get_value(ml_collections.ConfigDict(trained), path) == pytest.approx(value)
  assert trained["num_train_steps"] == 6  # the cell trains the full schedule
  with open(os.path.join(workdir, "search.md")) as file:
    summary = file.read()
  assert "(selected)" in summary and summary.count("| optimizer.learning_rate = ") == 3
  with open(os.path.join(workdir, "comparison.md")) as file:
    assert "validation search" in file.read()
  # A cell trained with the selection is not silently reused by a comparison without it.
  with pytest.raises(ValueError, match="search"):
    comparison.compare(config, workdir, ["one_stage"], (8,), "one_stage", (5,))


def test_search_flag_without_a_validation_split_is_a_usage_error(tmp_path):
  from tests.test_cli import run_cli

  run = run_cli(
      "iah_jax.compare",
      "--config=configs/default.py",
      f"--workdir={tmp_path}",
      "--methods=one_stage",
      "--search",
  )
  assert run.returncode == 2, run.stderr[-2000:]
  assert "Traceback" not in run.stderr
  assert "--search" in run.stderr and "validation_split" in run.stderr
  assert not os.listdir(tmp_path)
