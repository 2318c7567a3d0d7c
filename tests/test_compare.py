"""`python -m iah_jax.compare`: every method's cell on a tiny config, the report (Table II layout,
plots, per-category MAP), resuming without recomputation, and the pieces it is built from."""

import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import ml_collections
import numpy as np
import pytest

from iah_jax import baselines
from iah_jax import comparison
from iah_jax import metrics
from iah_jax.comparison import cells as cell_lib
from iah_jax.comparison import report
from iah_jax.models import iah as iah_model
from tests.test_train import REPO, tiny_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CURVE_KS = (1, 5, 10)


def table(text: str, title: str) -> dict[str, list[str]]:
  """The rows of the Markdown table under '## title': row title -> its cells."""
  section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
  lines = [line for line in section.strip().splitlines() if line.startswith("|")]
  rows = {}
  for line in lines[2:]:
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
    rows[cells[0]] = cells[1:]
  return rows


def number(cell: str) -> float:
  return float(cell.strip("*"))


@pytest.fixture(scope="module")
def compared(tiny_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("compare"))
  config = tiny_config(tiny_data_dir, steps=2)
  results = comparison.compare(config, workdir, list(cell_lib.all_methods()), (8,), "iah", CURVE_KS)
  with open(os.path.join(workdir, "comparison.md")) as file:
    text = file.read()
  return config, workdir, results, text


@pytest.mark.slow
def test_report_has_every_method_row_the_tables_and_the_plots(compared):
  _, workdir, results, text = compared
  assert [cell["method"] for cell in results] == list(cell_lib.all_methods())
  assert "deep methods: the config's data, backbone (small_cnn, from scratch)" in text
  semantic_rows = [
      "IAH",
      "IAH (query-adaptive weighted Hamming)",
      "One-Stage (DNNH)",
      "DSRH",
      "QaDWH",
      "QaDWH (plain Hamming)",
      "ITQ-CCA",
      "ITQ",
      "SH",
      "LSH",
  ]
  for title in ("NDCG@10", "ACG@10", "MAP", "Weighted MAP"):
    rows = table(text, title)
    assert list(rows) == semantic_rows, title
  by_method = {cell["method"]: cell for cell in results}
  map_rows = table(text, "MAP")
  for method, cell in by_method.items():
    if method != "category_baseline":
      assert number(map_rows[report.display_title(method)][0]) == pytest.approx(
          cell["metrics"]["map"], abs=5e-5
      )
  best = max(cell["metrics"]["map"] for cell in results if cell["semantic_table"])
  bold = [title for title, row in map_rows.items() if row[0].startswith("**")]
  assert bold and all(number(map_rows[title][0]) == pytest.approx(best, abs=5e-5) for title in bold)
  # The category baseline has only category-aware codes: it appears in the Fig. 8/9 table only.
  category_rows = table(text, "Category-aware codes: per-category MAP (IAH Figs. 8-9)")
  tables, whole = f"IAH ({report.TABLES})", f"IAH ({report.WHOLE_DATABASE})"
  assert list(category_rows) == [tables, whole, "Category baseline (Fig. 9)"]
  for title, method, key in (
      (tables, "iah", "category_aware_tables"),
      (whole, "iah", "category_aware"),
      ("Category baseline (Fig. 9)", "category_baseline", "category_aware"),
  ):
    row = category_rows[title]
    per_category = by_method[method][key]["per_category_map"]
    assert row[0] == "2" and len(row) == 2 + len(per_category)
    assert number(row[1]) == pytest.approx(by_method[method][key]["map"], abs=5e-5)
  assert "category_aware_tables" not in by_method["category_baseline"]  # it has no p
  for name in ("ndcg_q8.png", "acg_q8.png", "per_category_map_b2.png"):
    with open(os.path.join(workdir, name), "rb") as file:
      assert file.read(8) == PNG_MAGIC, name
    assert f"({name})" in text
  for method in cell_lib.all_methods():
    assert os.path.exists(cell_lib.cell_path(workdir, method, 8))


@pytest.mark.slow
def test_cells_hold_curves_and_the_ranking_each_method_uses(compared):
  _, _, results, _ = compared
  by_method = {cell["method"]: cell for cell in results}
  for cell in results:
    for k in CURVE_KS:
      assert 0.0 <= cell["metrics"][f"ndcg@{k}"] <= 1.0 + 1e-9
  assert by_method["qadwh"]["ranking"] == cell_lib.QUERY_ADAPTIVE
  assert set(by_method["qadwh"]["variants"]) == {"plain Hamming"}
  assert by_method["iah"]["ranking"] == "hamming"
  assert set(by_method["iah"]["variants"]) == {"query-adaptive weighted Hamming"}
  assert not by_method["category_baseline"]["semantic_table"]
  assert by_method["category_baseline"]["bits_per_category"] == 2
  assert all(by_method[m]["kind"] == "shallow" for m in cell_lib.shallow_methods())


@pytest.mark.slow
def test_shallow_cells_are_fitted_on_the_train_split_features(compared, tiny_data_dir):
  config, workdir, results, _ = compared
  cached = np.load(os.path.join(workdir, "features", "iah_q8.npz"))
  from iah_jax.data import synthetic_scenes

  builder = synthetic_scenes.load_builder(tiny_data_dir, "tiny")
  sizes = {split: info.num_examples for split, info in builder.info.splits.items()}
  assert cached["fit_features"].shape[0] == sizes["train"]  # config.dataset.train_split
  assert cached["database_features"].shape[0] == sizes["train"]
  assert cached["query_features"].shape[0] == sizes["test"]
  for method in cell_lib.shallow_methods():
    hasher = baselines.fit(
        method, cached["fit_features"], 8, labels=cached["fit_labels"], seed=config.seed
    )
    expected = metrics.retrieval_metrics(
        hasher.encode(cached["query_features"]),
        hasher.encode(cached["database_features"]),
        cached["query_labels"],
        cached["database_labels"],
        ks=(10,),
        ties=config.eval.ties,
    )
    cell = next(cell for cell in results if cell["method"] == method)
    assert cell["features_from"] == "iah"
    assert cell["metrics"]["map"] == pytest.approx(expected["map"], abs=1e-9), method


@pytest.mark.slow
def test_second_run_reuses_finished_cells_and_redoes_only_a_missing_one(compared, monkeypatch):
  config, workdir, results, _ = compared
  os.remove(cell_lib.cell_path(workdir, "lsh", 8))

  def no_training(*args, **kwargs):
    raise AssertionError("a finished cell or a cached feature source was trained again")

  monkeypatch.setattr(cell_lib.train, "train", no_training)
  again = comparison.compare(config, workdir, list(cell_lib.all_methods()), (8,), "iah", CURVE_KS)
  assert [cell["metrics"]["map"] for cell in again] == pytest.approx(
      [cell["metrics"]["map"] for cell in results], abs=1e-12
  )
  # A finished shallow cell is not silently reused for another feature source.
  with pytest.raises(ValueError, match="fitted on features from 'iah', not 'one_stage'"):
    comparison.compare(config, workdir, ["lsh"], (8,), "one_stage", CURVE_KS)


@pytest.mark.slow
def test_command_line_rewrites_the_report_from_finished_cells(compared, tiny_data_dir, tmp_path):
  _, workdir, _, text = compared
  os.remove(os.path.join(workdir, "comparison.md"))
  config_file = tmp_path / "tiny_config.py"
  config_file.write_text(textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {REPO!r})
      from tests.test_train import tiny_config
      def get_config():
        return tiny_config({tiny_data_dir!r}, steps=2)
  """))
  run = subprocess.run(
      [
          sys.executable,
          "-m",
          "iah_jax.compare",
          f"--config={config_file}",
          f"--workdir={workdir}",
          "--bits=8",
          "--curve_ks=1,5,10",
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  with open(os.path.join(workdir, "comparison.md")) as file:
    rewritten = file.read()
  assert table(rewritten, "MAP") == table(text, "MAP")
  bad = subprocess.run(
      [
          sys.executable,
          "-m",
          "iah_jax.compare",
          f"--config={config_file}",
          f"--workdir={workdir}",
          "--bits=8,x",
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert bad.returncode != 0 and "--bits must be a comma-separated list of integers" in bad.stderr


@pytest.mark.slow
def test_report_gathers_cells_of_earlier_calls_with_other_bits(compared):
  """(Runs after the tests above: it adds a cell to the shared workdir.)"""
  config, workdir, _, _ = compared
  added = comparison.compare(config, workdir, ["category_baseline"], (4,), "iah", CURVE_KS)
  assert [(cell["method"], cell["bits"], cell["bits_per_category"]) for cell in added] == [
      ("category_baseline", 4, 1)
  ]
  with open(os.path.join(workdir, "comparison.md")) as file:
    text = file.read()
  map_rows = table(text, "MAP")
  assert map_rows["LSH"][0] == "-" and number(map_rows["LSH"][1]) > 0  # columns 4 and 8 bits
  category_rows = text.split("(IAH Figs. 8-9)\n", 1)[1]
  assert "| Category baseline (Fig. 9) | 1 |" in category_rows
  assert "| Category baseline (Fig. 9) | 2 |" in category_rows
  assert os.path.exists(os.path.join(workdir, "per_category_map_b1.png"))


def test_unknown_method_and_feature_source_are_refused(tiny_data_dir, tmp_path):
  config = tiny_config(tiny_data_dir)
  with pytest.raises(ValueError, match=re.escape("unknown method(s) ['pca']")):
    comparison.compare(config, str(tmp_path), ["iah", "pca"], (8,))
  with pytest.raises(ValueError, match="features_from must be one of"):
    comparison.compare(config, str(tmp_path), ["lsh"], (8,), features_from="lsh")


@pytest.mark.slow
def test_pretrained_feature_source_is_the_supplied_backbone_untrained(tiny_data_dir, tmp_path):
  """features_from="pretrained" (the paper's setting): no training, the converted weights as
  they are; here a randomly initialised GoogLeNet backbone written in the converter's format."""
  from iah_jax.baselines import features as feature_lib
  from iah_jax.models.googlenet import GoogLeNetBackbone
  from iah_jax.models.pretrained import save_converted

  config = tiny_config(tiny_data_dir)
  config.model.backbone = "googlenet"
  config.model.backbone_options = ml_collections.ConfigDict()
  backbone = GoogLeNetBackbone()
  images = np.zeros((1, 32, 32, 3), np.float32)
  variables = jax.jit(backbone.init)(jax.random.PRNGKey(3), images)
  path = str(tmp_path / "googlenet.npz")
  save_converted(
      {collection: {"features": variables[collection]} for collection in ("params", "batch_stats")},
      path,
  )
  with pytest.raises(ValueError, match="needs config.model.pretrained"):
    comparison.compare(config, str(tmp_path / "work0"), ["lsh"], (8,), "pretrained")
  config.model.pretrained = path

  def no_training(*args, **kwargs):
    raise AssertionError("the pretrained feature source must not be trained")

  import iah_jax.train

  original = iah_jax.train.train
  iah_jax.train.train = no_training
  try:
    (cell,) = comparison.compare(config, str(tmp_path / "work"), ["lsh"], (8,), "pretrained")
  finally:
    iah_jax.train.train = original
  assert cell["features_from"] == "pretrained"
  with open(tmp_path / "work" / "comparison.md") as file:
    assert f"(googlenet, fine-tuned from config.model.pretrained = {path})" in file.read()
  cached = np.load(str(tmp_path / "work" / "features" / "pretrained.npz"))
  builder = iah_jax.train.load_dataset(config)
  # The comparison's batch size: the same program, so the session's compilation cache serves it.
  expected, _ = feature_lib.extract_features(
      backbone, variables, builder, "test", 32, batch_size=config.eval.batch_size
  )
  np.testing.assert_allclose(cached["query_features"], expected, rtol=1e-4, atol=1e-5)


def test_bits_per_category_follows_the_config_pairing_else_a_quarter():
  config = tiny_config("unused")
  config.semantic_bits, config.bits_per_category = (16, 32), (4, 6)
  assert cell_lib.bits_per_category(config, 32) == 6
  assert cell_lib.bits_per_category(config, 48) == 12
  assert cell_lib.bits_per_category(config, 2) == 1


def test_iah_class_bit_weights_are_row_normalised_kernel_piece_norms():
  rng = np.random.default_rng(0)
  c, b, q = 3, 4, 5
  kernel = rng.normal(size=(c * b, q)).astype(np.float32)
  expected = np.zeros((c, q))
  for j in range(c):
    for k in range(q):
      expected[j, k] = np.sqrt(sum(kernel[j * b + i, k] ** 2 for i in range(b)))
    expected[j] /= expected[j].mean()
  np.testing.assert_allclose(
      np.asarray(iah_model.class_bit_weights(kernel, c, b)), expected, rtol=1e-5
  )
  # No gradient flows into the kernel through the ranking weights.
  grad = jax.grad(lambda k: iah_model.class_bit_weights(k, c, b).sum())(kernel)
  assert np.all(np.asarray(grad) == 0.0)


# ----------------------------------------------------------------------------- seeds


def test_features_default_to_pretrained_when_the_config_supplies_a_backbone():
  from iah_jax import compare as compare_command

  config = tiny_config("unused")
  assert not config.model.pretrained
  assert compare_command.resolve_features_from(None, config) == "iah"
  config.model.pretrained = "googlenet.npz"
  assert compare_command.resolve_features_from(None, config) == "pretrained"  # the paper's
  assert compare_command.resolve_features_from("one_stage", config) == "one_stage"  # as given


def test_seeds_flag_defaults_to_the_config_seed_and_refuses_repeats():
  from absl import app

  from iah_jax import compare as compare_command

  config = tiny_config("unused")
  config.seed = 7
  assert compare_command.parse_seeds(None, config) == (7,)
  assert compare_command.parse_seeds(["0", "1", "2"], config) == (0, 1, 2)
  with pytest.raises(app.UsageError, match="distinct non-negative"):
    compare_command.parse_seeds(["1", "1"], config)
  with pytest.raises(app.UsageError, match="comma-separated list of integers"):
    compare_command.parse_seeds(["1", "x"], config)


def hand_made_cell(method: str, seed: int, map_value: float, bits: int = 16, collapsed=False):
  """A shallow-looking cell with only the figures the report reads."""
  health = {"distinct_codes": 1 if collapsed else 50, "num_codes": 50, "bits": bits}
  health.update({"mean_bit_entropy": 0.0 if collapsed else 0.9, "constant_bits": 0})
  return {
      "method": method,
      "kind": "shallow",
      "bits": bits,
      "bits_per_category": None,
      "seed": seed,
      "ranking": "hamming",
      "semantic_table": True,
      "code_health": {"semantic": dict(health, collapsed=collapsed)},
      "features_from": "iah",
      "best_step": None,
      "train_seconds": 1.0,
      "eval_seconds": 0.1,
      "metrics": {"map": map_value, "wmap": map_value / 2, "ndcg@5": 0.5, "acg@5": 0.5},
      "variants": {},
      "num_queries": 10,
      "num_database": 50,
  }


def test_multi_seed_report_is_mean_std_and_bolds_only_separated_leaders(tmp_path):
  """itq clearly above the others at 16 bits: bold; at 32 bits lsh and sh overlap: no bold, a
  tie note; itq_cca collapsed (highest values): marked, never bold nor ordered."""
  maps = {
      ("itq", 16): [0.80, 0.82, 0.81],
      ("lsh", 16): [0.60, 0.65, 0.55],
      ("sh", 16): [0.50, 0.52, 0.51],
      ("itq_cca", 16): [0.95, 0.96, 0.97],
      ("itq", 32): [0.40, 0.41, 0.42],
      ("lsh", 32): [0.70, 0.60, 0.65],
      ("sh", 32): [0.62, 0.66, 0.64],
  }
  cells = [
      hand_made_cell(method, seed, value, bits, collapsed=method == "itq_cca")
      for (method, bits), values in maps.items()
      for seed, value in enumerate(values)
  ]
  text = report.write_report(
      cells, str(tmp_path), dataset="hand-made", table_ks=(5,), class_names=[], ties="stable"
  )
  assert "over 3 seeds (0, 1, 2)" in text and "ddof = 1" in text
  rows = table(text, "MAP")
  for (method, bits), values in maps.items():
    shown = rows[report.display_title(method)][0 if bits == 16 else 1]
    expected = f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"
    assert shown.strip("*").rstrip("†") == expected, (method, bits)
  assert rows["ITQ"][0].startswith("**")  # [0.80, 0.82] lies above lsh's [0.55, 0.65]
  assert rows["ITQ-CCA"][0].endswith("†") and not rows["ITQ-CCA"][0].startswith("**")
  assert not any(row[1].startswith("**") for row in rows.values())  # lsh and sh overlap
  section = text.split("## MAP\n", 1)[1].split("\n## ", 1)[0]
  assert "32 bits: no best claimed, tied within noise" in section and ": LSH, SH" in section
  assert "ordering at 16 bits (only where intervals do not overlap" in section
  assert "ITQ > LSH > SH" in section
  assert "ordering at 32 bits" in section and "{LSH, SH} > ITQ" in section
  assert "ITQ-CCA at 16 bits, seed 0: 1 distinct codes of 50" in section


def test_claimed_best_and_ordering_compare_whole_intervals():
  candidates = {"a": [1.0, 3.0], "b": [0.0, 0.2], "c": [1.5, 1.7]}  # a: 2 ± 1.41, c: 1.6 ± 0.14
  assert report.claimed_best(candidates) == (None, ["a", "c"])
  assert report.ordered_groups(candidates) == [["a", "c"], ["b"]]
  assert report.claimed_best({"a": [1.0, 1.1], "b": [0.0, 0.1]}) == ("a", [])
  # a above c, c overlaps b, but a's own interval is wide enough to reach b: no cut after a.
  wide = {"a": [0.9, 1.9], "c": [0.95, 1.05], "b": [0.8, 1.0]}
  assert report.ordered_groups(wide) == [["a", "c", "b"]]


def test_seeds_give_their_own_cells_and_a_seed_gives_the_same_cell(tiny_data_dir, tmp_path):
  """Two seeds: different cells (deep and the shallow one on that seed's backbone), files per
  seed; the same seed in another workdir: the same cell; the report's mean ± std is NumPy's
  over the cell files."""
  config = tiny_config(tiny_data_dir, steps=2)
  first, second = str(tmp_path / "first"), str(tmp_path / "second")
  cells = comparison.compare(config, first, ["dsrh", "lsh"], (8,), "dsrh", CURVE_KS, seeds=(0, 1))
  by_key = {(cell["method"], cell["seed"]): cell for cell in cells}
  assert sorted(by_key) == [("dsrh", 0), ("dsrh", 1), ("lsh", 0), ("lsh", 1)]
  for method in ("dsrh", "lsh"):
    assert by_key[(method, 0)]["metrics"] != by_key[(method, 1)]["metrics"], method
  # The config's seed keeps the names cells and runs had before seeds; others are suffixed.
  names = sorted(os.listdir(os.path.join(first, "cells")))
  assert names == ["dsrh_q8.json", "dsrh_q8_s1.json", "lsh_q8.json", "lsh_q8_s1.json"]
  assert sorted(os.listdir(os.path.join(first, "dsrh"))) == ["q8_b2", "q8_b2_s1"]
  assert os.path.exists(os.path.join(first, "features", "dsrh_q8_s1.npz"))

  (again,) = comparison.compare(config, second, ["dsrh"], (8,), "dsrh", CURVE_KS, seeds=(1,))
  assert again["seed"] == 1
  assert again["metrics"] == pytest.approx(by_key[("dsrh", 1)]["metrics"], abs=1e-12)
  assert os.listdir(os.path.join(second, "dsrh")) == ["q8_b2_s1"]

  with open(os.path.join(first, "comparison.md")) as file:
    text = file.read()
  assert "over 2 seeds (0, 1)" in text
  loaded = []
  for name in names:
    with open(os.path.join(first, "cells", name)) as file:
      loaded.append(json.load(file))
  rows = table(text, "MAP")
  for method in ("dsrh", "lsh"):
    values = [cell["metrics"]["map"] for cell in loaded if cell["method"] == method]
    expected = f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"
    assert rows[report.display_title(method)][0].strip("*").rstrip("†") == expected
