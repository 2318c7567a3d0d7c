"""Code health (iah_jax.retrieval.code_health) against NumPy loop references on hand-made codes,
the collapse warning, and collapsed cells in the comparison report (marked, never bold)."""

import logging
import math
import os

import numpy as np
import pytest

from iah_jax import evaluate
from iah_jax.comparison import cells as cell_lib
from iah_jax.comparison import report
from iah_jax.retrieval import code_health
from tests.test_train import tiny_config


def reference_health(codes: np.ndarray) -> dict:
  """Loops: distinct rows, fraction of ones per bit, mean binary entropy, constant bits."""
  n, bits = codes.shape
  rows = []
  for i in range(n):
    row = tuple(1 if codes[i, k] > 0 else 0 for k in range(bits))
    if row not in rows:
      rows.append(row)
  balance, entropies, constant = [], [], 0
  for k in range(bits):
    ones = sum(1 for i in range(n) if codes[i, k] > 0)
    p = ones / n
    balance.append(p)
    entropies.append(0.0 if p in (0.0, 1.0) else -p * math.log2(p) - (1 - p) * math.log2(1 - p))
    constant += ones in (0, n)
  return {
      "distinct_codes": len(rows),
      "distinct_fraction": len(rows) / min(n, 2**bits),
      "bit_balance": balance,
      "mean_bit_entropy": sum(entropies) / bits,
      "constant_bits": constant,
  }


@pytest.mark.parametrize("signed", [False, True])
def test_health_figures_equal_a_loop_reference(signed):
  rng = np.random.default_rng(0)
  codes = (rng.random((40, 6)) < [0.5, 0.1, 0.9, 0.0, 1.0, 0.3]).astype(np.int8)
  codes[5] = codes[3]  # a repeated row
  given = codes * 2 - 1 if signed else codes
  health = code_health.code_health(given)
  expected = reference_health(given)
  for key in ("distinct_codes", "constant_bits"):
    assert health[key] == expected[key], key
  for key in ("distinct_fraction", "mean_bit_entropy"):
    assert health[key] == pytest.approx(expected[key], abs=1e-12), key
  np.testing.assert_allclose(health["bit_balance"], expected["bit_balance"], atol=1e-12)
  assert health["num_codes"] == 40 and health["bits"] == 6
  assert health["constant_bits"] == 2 and not health["collapsed"]


def test_collapse_verdicts_follow_the_documented_thresholds():
  one_code = np.tile([1, 0, 1, 1], (50, 1))
  assert code_health.code_health(one_code)["collapsed"]  # one distinct code
  assert code_health.code_health(one_code)["distinct_codes"] == 1
  # 2 distinct codes of 300 items with 16 bits: 2 / 300 < 1%.
  few = np.zeros((300, 16), np.uint8)
  few[::2, 3] = 1
  assert code_health.code_health(few)["distinct_fraction"] == pytest.approx(2 / 300)
  assert code_health.code_health(few)["collapsed"]
  # 2 bits over 300 items hold at most 4 codes: all 4 present is not a collapse.
  two_bits = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 75)
  assert code_health.code_health(two_bits)["distinct_fraction"] == 1.0
  assert not code_health.code_health(two_bits)["collapsed"]
  # Nearly constant bits: many distinct codes (one rare bit each) but entropy under 0.05 bits.
  rare = np.zeros((1000, 32), np.uint8)
  rare[np.arange(32) * 31, np.arange(32)] = 1
  health = code_health.code_health(rare)
  assert health["distinct_codes"] == 33 and health["distinct_fraction"] > 0.01
  assert health["mean_bit_entropy"] < code_health.COLLAPSED_MEAN_BIT_ENTROPY
  assert health["collapsed"]
  with pytest.raises(ValueError, match="must be"):
    code_health.code_health(np.array([[0, 2]]))


def test_category_health_names_the_categories_with_a_single_code():
  rng = np.random.default_rng(1)
  codes = rng.integers(0, 2, size=(30, 3, 2))
  codes[:, 1, :] = [1, 0]  # category 1's piece is constant
  health = code_health.category_code_health(codes)
  assert health["collapsed_categories"] == [1]
  assert health["bits"] == 6 and not health["collapsed"]
  assert health["distinct_codes"] == reference_health(codes.reshape(30, 6))["distinct_codes"]


def test_collapsed_codes_log_a_warning_naming_the_run(caplog):
  health = {"semantic": code_health.code_health(np.ones((20, 8), np.uint8))}
  with caplog.at_level(logging.WARNING, logger="iah_jax"):
    assert evaluate.warn_if_collapsed(health, "dsrh q=8 seed=3")
  (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
  assert "dsrh q=8 seed=3" in record.getMessage()
  assert "1 distinct codes of 20" in record.getMessage()
  caplog.clear()
  healthy = {"semantic": code_health.code_health(np.eye(8, dtype=np.uint8))}
  with caplog.at_level(logging.WARNING, logger="iah_jax"):
    assert not evaluate.warn_if_collapsed(healthy, "iah q=8 seed=0")
  assert not caplog.records


def features_cache(workdir: str, database_features: np.ndarray, seed=None) -> None:
  """A hand-made backbone-features cache <workdir>/features/iah_q8.npz (no training)."""
  rng = np.random.default_rng(0)
  labels = (rng.random((len(database_features), 4)) < 0.4).astype(np.uint8)
  labels[:, 0] = 1
  os.makedirs(os.path.join(workdir, "features"))
  extra = {} if seed is None else {"seed": np.asarray(seed)}
  np.savez(
      os.path.join(workdir, "features", "iah_q8.npz"),
      fit_features=rng.normal(size=(len(database_features), 12)),
      fit_labels=labels,
      database_features=database_features,
      database_labels=labels,
      query_features=rng.normal(size=(6, 12)),
      query_labels=labels[:6],
      **extra,
  )


def test_a_collapsed_shallow_cell_is_warned_stored_marked_and_never_bold(tmp_path, caplog):
  """LSH of identical database features: one code; its cell records it, the log names it, the
  report marks it † with its distinct codes and bolds the best healthy row instead."""
  config = tiny_config("unused")
  collapsed_dir, healthy_dir = str(tmp_path / "collapsed"), str(tmp_path / "healthy")
  features_cache(collapsed_dir, np.ones((30, 12)))
  features_cache(healthy_dir, np.random.default_rng(2).normal(size=(30, 12)))
  with caplog.at_level(logging.WARNING, logger="iah_jax"):
    collapsed = cell_lib.run_cell(config, "lsh", 8, None, None, collapsed_dir, (5,), "iah")
  assert collapsed["code_health"]["semantic"]["collapsed"]
  assert collapsed["code_health"]["semantic"]["distinct_codes"] == 1
  assert any(
      "lsh q=8 seed=0" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
  )
  healthy = cell_lib.run_cell(config, "itq", 8, None, None, healthy_dir, (5,), "iah")
  assert not healthy["code_health"]["semantic"]["collapsed"]
  # Whatever the values, the collapsed row is never the bold one; give it the higher MAP.
  collapsed["metrics"]["map"], healthy["metrics"]["map"] = 0.9, 0.5
  text = report.write_report(
      [healthy, collapsed],
      str(tmp_path),
      dataset="hand-made",
      table_ks=(5,),
      class_names=["a", "b", "c", "d"],
      ties="stable",
  )
  section = text.split("## MAP\n", 1)[1].split("\n## ", 1)[0]
  assert "| LSH | 0.9000† |" in section
  assert "| ITQ | **0.5000** |" in section
  assert (
      "† collapsed codes" in section and "LSH at 8 bits, seed 0: 1 distinct codes of 30" in section
  )
  assert "1 of 30 †" in text  # the time table's distinct-codes column
