"""Metrics against loop-based NumPy references and scikit-learn."""

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.metrics import ndcg_score

from iah_jax import metrics
from iah_jax import retrieval
from iah_jax.retrieval import CategoryTables

# ------------------------------------------------------------------------------------------------
# Loop-based reference, written straight from the definitions (IAH eqs. 10-13).


def reference_query(dist_row, shared_row, ks, map_at, radius, order=None):
  """Metrics of one query; `order` overrides the stable (distance, index) ranking."""
  nd = len(dist_row)
  if order is None:
    order = sorted(range(nd), key=lambda i: (dist_row[i], i))
  r = [int(shared_row[i]) for i in order]
  n_pos = sum(1 for v in r if v > 0)
  out = {}
  hits, total_r, ap, wap = 0, 0, 0.0, 0.0
  for j, v in enumerate(r, start=1):
    total_r += v
    if v > 0:
      hits += 1
      ap += hits / j
      wap += total_r / j
  out["map"] = ap / n_pos if n_pos else math.nan
  out["wmap"] = wap / n_pos if n_pos else math.nan
  ideal = sorted(r, reverse=True)
  for k in ks:
    kk = min(k, nd)
    dcg = sum((2 ** r[j] - 1) / math.log(2 + j) for j in range(kk))
    idcg = sum((2 ** ideal[j] - 1) / math.log(2 + j) for j in range(kk))
    out[f"ndcg@{k}"] = dcg / idcg if idcg > 0 else math.nan
    out[f"acg@{k}"] = sum(r[:kk]) / kk
  if map_at is not None:
    R = min(map_at, nd)
    hits, total_r, ap, wap = 0, 0, 0.0, 0.0
    for j, v in enumerate(r[:R], start=1):
      total_r += v
      if v > 0:
        hits += 1
        ap += hits / j
        wap += total_r / j
    out[f"map@{map_at}"] = (ap / hits if hits else 0.0) if n_pos else math.nan
    out[f"wmap@{map_at}"] = (wap / hits if hits else 0.0) if n_pos else math.nan
  retrieved = [i for i in range(nd) if dist_row[i] <= radius]
  rel_ret = sum(1 for i in retrieved if shared_row[i] > 0)
  out[f"precision@r{radius}"] = rel_ret / len(retrieved) if retrieved else 0.0
  out[f"recall@r{radius}"] = rel_ret / n_pos if n_pos else math.nan
  return out


def reference_all(query_codes, db_codes, query_labels, db_labels, ks, map_at=None, radius=2):
  rows = []
  for qc, ql in zip(query_codes, query_labels):
    dist = [int(sum(a != b for a, b in zip(qc, dc))) for dc in db_codes]
    shared = [int(sum(a * b for a, b in zip(ql, dl))) for dl in db_labels]
    rows.append(reference_query(dist, shared, ks, map_at, radius))
  return rows


def mean_policy(rows, key, no_relevant):
  values = np.array([row[key] for row in rows], dtype=np.float64)
  if no_relevant == "zero":
    return float(np.nan_to_num(values).mean())
  return float(values[~np.isnan(values)].mean())


def random_case(rng, nq, nd, bits, c, label_rate=0.2):
  return (
      rng.integers(0, 2, (nq, bits)),
      rng.integers(0, 2, (nd, bits)),
      (rng.random((nq, c)) < label_rate).astype(np.uint8),
      (rng.random((nd, c)) < label_rate).astype(np.uint8),
  )


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("no_relevant", ["skip", "zero"])
@pytest.mark.parametrize("bits,nd", [(6, 40), (16, 60), (8, 1)])
def test_stable_matches_loop_reference(bits, nd, no_relevant):
  rng = np.random.default_rng(bits * 100 + nd)
  q, d, ql, dl = random_case(rng, 12, nd, bits, 5)
  ql[0] = 0  # a query with no relevant item
  ks = (1, 5, 1000)  # 1000 > nd: whole database
  got = metrics.retrieval_metrics(
      q, d, ql, dl, ks=ks, no_relevant=no_relevant, map_at=7, block_elements=3 * nd
  )  # several query blocks
  rows = reference_all(q, d, ql, dl, ks, map_at=7)
  for key in rows[0]:
    assert got[key] == pytest.approx(mean_policy(rows, key, no_relevant), abs=1e-12), key
  assert got["num_queries_without_relevant"] == sum(np.isnan(r["map"]) for r in rows)
  assert all(isinstance(v, float) for v in got.values())


def test_multi_word_codes_and_labels_match_loop_reference():
  # 70 bits and 70 labels: two 64-bit words for both the XOR distance and the AND label count.
  rng = np.random.default_rng(37)
  q, d, ql, dl = random_case(rng, 9, 80, 70, 70, label_rate=0.04)
  ql[0] = 0
  ql[1, [3, 66]] = 1
  dl[5, [3, 66]] = 1  # shares a label in each word with query 1
  ks = (5, 30)
  got = metrics.retrieval_metrics(q, d, ql, dl, ks=ks, map_at=20, block_elements=2 * 80)
  rows = reference_all(q, d, ql, dl, ks, map_at=20)
  for key in rows[0]:
    assert got[key] == pytest.approx(mean_policy(rows, key, "skip"), abs=1e-12), key
  curve = metrics.hamming_pr_curve(q, d, ql, dl)
  assert curve["precision"][2] == pytest.approx(got["precision@r2"], abs=1e-12)


def reference_category_aware(query_codes, db_codes, query_labels, db_labels):
  c = query_codes.shape[1]
  per_category = []
  for j in range(c):
    aps = []
    for qi in range(len(query_codes)):
      if not query_labels[qi, j]:
        continue
      dist = [int((query_codes[qi, j] != db_codes[i, j]).sum()) for i in range(len(db_codes))]
      shared = [int(db_labels[i, j]) for i in range(len(db_codes))]
      ap = reference_query(dist, shared, (), None, 0)["map"]
      if not math.isnan(ap):
        aps.append(ap)
    per_category.append(float(np.mean(aps)) if aps else None)
  defined = [v for v in per_category if v is not None]
  return float(np.mean(defined)), per_category


def test_category_aware_matches_loop_reference():
  rng = np.random.default_rng(3)
  nq, nd, c, b = 15, 50, 4, 4
  q = rng.integers(0, 2, (nq, c, b))
  d = rng.integers(0, 2, (nd, c, b))
  ql = (rng.random((nq, c)) < 0.4).astype(np.uint8)
  dl = (rng.random((nd, c)) < 0.4).astype(np.uint8)
  ql[:, 2] = 0  # no query carries category 2
  got = metrics.category_aware_metrics(q, d, ql, dl)
  want_map, want_per = reference_category_aware(q, d, ql, dl)
  assert got["per_category_map"][2] is None
  for g, w in zip(got["per_category_map"], want_per):
    assert (g is None and w is None) or g == pytest.approx(w, abs=1e-12)
  assert got["map"] == pytest.approx(want_map, abs=1e-12)


def exhaustive_expected(dist_row, shared_row, ks, map_at):
  """Average of the reference over every ordering inside every tie group (tiny cases only)."""
  groups = {}
  for i, v in enumerate(dist_row):
    groups.setdefault(v, []).append(i)
  keys = sorted(groups)
  totals, count = {}, 0
  for perms in itertools.product(*(itertools.permutations(groups[k]) for k in keys)):
    order = [i for p in perms for i in p]
    row = reference_query(dist_row, shared_row, ks, map_at, 2, order=order)
    for key, value in row.items():
      totals[key] = totals.get(key, 0.0) + value
    count += 1
  return {key: value / count for key, value in totals.items()}


@pytest.mark.parametrize("seed", range(4))
def test_expected_ties_equal_exhaustive_average(seed):
  rng = np.random.default_rng(seed)
  nd = 7
  q, d, ql, dl = random_case(rng, 3, nd, 2, 3, label_rate=0.5)  # 2 bits: large tie groups
  ql[:, 0] = 1
  dl[0, 0] = 1  # every query has a relevant item
  got = metrics.retrieval_metrics(
      q, d, ql, dl, ks=(1, 3, 10), ties="expected", map_at=4, per_query=True
  )
  for qi in range(3):
    dist = [int((q[qi] != d[i]).sum()) for i in range(nd)]
    shared = [int((ql[qi] * dl[i]).sum()) for i in range(nd)]
    want = exhaustive_expected(dist, shared, (1, 3, 10), 4)
    for key in want:
      if key.startswith(("precision", "recall")):
        continue
      assert got[key][qi] == pytest.approx(want[key], abs=1e-12), key


def test_expected_ties_equal_mean_of_random_orders():
  rng = np.random.default_rng(7)
  q, d, ql, dl = random_case(rng, 20, 300, 6, 4, label_rate=0.3)
  expected = metrics.retrieval_metrics(q, d, ql, dl, ks=(10, 100), ties="expected", map_at=50)
  runs = [
      metrics.retrieval_metrics(q, d, ql, dl, ks=(10, 100), ties="random", map_at=50, seed=s)
      for s in range(200)
  ]
  for key in ("map", "wmap", "ndcg@10", "ndcg@100", "acg@10", "map@50", "wmap@50"):
    values = np.array([run[key] for run in runs])
    stderr = values.std() / np.sqrt(len(values))
    assert abs(values.mean() - expected[key]) < 4 * stderr + 1e-9, key
  stable = metrics.retrieval_metrics(q, d, ql, dl, ks=(10, 100), map_at=50)
  assert stable["map"] != expected["map"]  # the ties really matter here


def test_ap_matches_sklearn_with_tie_free_scores():
  rng = np.random.default_rng(11)
  q, d, ql, dl = random_case(rng, 10, 200, 12, 5, label_rate=0.3)
  got = metrics.retrieval_metrics(q, d, ql, dl, ks=(), per_query=True)
  nd = len(d)
  for qi in range(len(q)):
    dist = (q[qi] != d).sum(1)
    relevant = (ql[qi] * dl).sum(1) > 0
    if not relevant.any():
      assert np.isnan(got["map"][qi])
      continue
    score = -(dist * nd + np.arange(nd))  # stable ranking, no ties for sklearn
    assert got["map"][qi] == pytest.approx(average_precision_score(relevant, score), abs=1e-12)


@pytest.mark.parametrize("ties", ["stable", "expected"])
def test_ndcg_matches_sklearn(ties):
  rng = np.random.default_rng(5)
  q, d, ql, dl = random_case(rng, 10, 150, 5, 6, label_rate=0.35)
  ks = (1, 10, 100, 500)
  got = metrics.retrieval_metrics(q, d, ql, dl, ks=ks, ties=ties, per_query=True)
  nd = len(d)
  for qi in range(len(q)):
    dist = (q[qi] != d).sum(1)
    gain = 2.0 ** (ql[qi] * dl).sum(1) - 1  # sklearn's gain is linear in y_true
    if ties == "stable":
      score, ignore_ties = -(dist * nd + np.arange(nd)), True
    else:
      score, ignore_ties = -dist, False  # sklearn averages over tie orderings
    for k in ks:
      want = ndcg_score(gain[None], score[None].astype(np.float64), k=k, ignore_ties=ignore_ties)
      if gain.sum() == 0:
        assert np.isnan(got[f"ndcg@{k}"][qi])
      else:
        assert got[f"ndcg@{k}"][qi] == pytest.approx(want, abs=1e-12), k


def test_float_distance_path_equals_hamming_path_for_every_tie_mode():
  rng = np.random.default_rng(13)
  q, d, ql, dl = random_case(rng, 9, 120, 5, 4, label_rate=0.4)
  dist = (q[:, None, :] != d[None, :, :]).sum(-1).astype(np.float64) * 0.5  # same ties
  for ties in ("stable", "expected"):  # ("random" draws its tie keys differently)
    a = metrics.retrieval_metrics(q, d, ql, dl, ks=(3, 50), ties=ties, map_at=20, radius=1, seed=4)
    b = metrics.ranking_metrics_from_distances(
        dist, ql, dl, ks=(3, 50), ties=ties, map_at=20, radius=0.5, seed=4
    )
    for key in a:
      other = key.replace("@r1", "@r0.5")
      assert b[other] == pytest.approx(a[key], abs=1e-12), (ties, key)


def test_random_ties_depend_on_seed_only_and_blocks_do_not_matter():
  rng = np.random.default_rng(17)
  q, d, ql, dl = random_case(rng, 30, 200, 4, 4, label_rate=0.4)
  a = metrics.retrieval_metrics(q, d, ql, dl, ties="random", seed=1)
  b = metrics.retrieval_metrics(q, d, ql, dl, ties="random", seed=1)
  c = metrics.retrieval_metrics(q, d, ql, dl, ties="random", seed=2)
  assert a == b and a["map"] != c["map"]
  for ties in ("stable", "expected"):
    small = metrics.retrieval_metrics(q, d, ql, dl, ties=ties, map_at=30, block_elements=1)
    large = metrics.retrieval_metrics(q, d, ql, dl, ties=ties, map_at=30, block_elements=10**9)
    for key in small:
      assert small[key] == pytest.approx(large[key], abs=1e-12)


def test_weighted_ranking_metrics_equal_metrics_of_the_weighted_distances():
  rng = np.random.default_rng(19)
  q, d, ql, dl = random_case(rng, 8, 90, 10, 4, label_rate=0.4)
  weights = rng.random((8, 10)).astype(np.float32)
  got = metrics.retrieval_metrics(q, d, ql, dl, ks=(10,), query_weights=weights, per_query=True)
  dist = np.array(
      [
          [sum(float(weights[i, b]) for b in range(10) if q[i, b] != d[n, b]) for n in range(90)]
          for i in range(8)
      ]
  )
  for i in range(8):
    shared = (ql[i] * dl).sum(1)
    want = reference_query(
        list(dist[i]), list(shared), (10,), None, 2, order=list(np.argsort(dist[i], kind="stable"))
    )
    assert got["map"][i] == pytest.approx(want["map"], abs=1e-12) or np.isnan(want["map"])
    assert got["ndcg@10"][i] == pytest.approx(want["ndcg@10"], abs=1e-12) or np.isnan(
        want["ndcg@10"]
    )
  unit = metrics.retrieval_metrics(q, d, ql, dl, ks=(10,), query_weights=np.ones((8, 10)))
  plain = metrics.retrieval_metrics(q, d, ql, dl, ks=(10,))
  for key in plain:
    assert unit[key] == pytest.approx(plain[key], abs=1e-12), key


def test_weighted_ranking_uses_float32_sums_in_bit_order_exactly():
  # The distances must be bit-identical to float32 sums taken bit 0, 1, ...: equal weights then
  # give exactly tied distances, which "expected" averages over.
  rng = np.random.default_rng(41)
  q, d, ql, dl = random_case(rng, 7, 120, 9, 4, label_rate=0.4)
  weights = rng.random((7, 9)).astype(np.float32)
  weights[:, 3:] = weights[:, :1]  # many equal weights: many exact ties
  want = np.zeros((7, 120), np.float32)
  for bit in range(9):
    want += weights[:, bit, None] * (q[:, bit, None] != d[None, :, bit])
  np.testing.assert_array_equal(retrieval.weighted_hamming_distances(q, d, weights), want)
  for ties in ("stable", "expected"):
    got = metrics.retrieval_metrics(
        q, d, ql, dl, ks=(10,), ties=ties, map_at=30, query_weights=weights, per_query=True
    )
    ref = metrics.ranking_metrics_from_distances(
        want, ql, dl, ks=(10,), ties=ties, map_at=30, per_query=True
    )
    for key in ref:
      np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{ties} {key}")


def test_pr_curve_matches_loop():
  rng = np.random.default_rng(23)
  q, d, ql, dl = random_case(rng, 7, 60, 6, 3, label_rate=0.3)
  ql[0] = 0
  curve = metrics.hamming_pr_curve(q, d, ql, dl)
  np.testing.assert_array_equal(curve["radius"], np.arange(7))
  for h in range(7):
    precisions, recalls = [], []
    for i in range(7):
      dist = (q[i] != d).sum(1)
      relevant = (ql[i] * dl).sum(1) > 0
      retrieved = dist <= h
      precisions.append((relevant & retrieved).sum() / retrieved.sum() if retrieved.any() else 0.0)
      if relevant.any():
        recalls.append((relevant & retrieved).sum() / relevant.sum())
    assert curve["precision"][h] == pytest.approx(np.mean(precisions), abs=1e-12)
    assert curve["recall"][h] == pytest.approx(np.mean(recalls), abs=1e-12)
  assert curve["recall"][-1] == pytest.approx(1.0)
  radius2 = metrics.retrieval_metrics(q, d, ql, dl, ks=())
  assert radius2["precision@r2"] == pytest.approx(curve["precision"][2], abs=1e-12)
  assert radius2["recall@r2"] == pytest.approx(curve["recall"][2], abs=1e-12)


def test_category_aware_thresholded_variant_matches_loop():
  rng = np.random.default_rng(29)
  nq, nd, c, b = 12, 40, 3, 3
  q = rng.integers(0, 2, (nq, c, b))
  d = rng.integers(0, 2, (nd, c, b))
  ql = (rng.random((nq, c)) < 0.5).astype(np.uint8)
  dl = (rng.random((nd, c)) < 0.5).astype(np.uint8)
  qp, dp = rng.random((nq, c)), rng.random((nd, c))
  got = metrics.category_aware_metrics(q, d, ql, dl, query_probs=qp, db_probs=dp, threshold=0.3)
  for j in range(c):
    aps = []
    table = [i for i in range(nd) if dp[i, j] >= 0.3]
    n_pos = int(dl[:, j].sum())
    for i in range(nq):
      if not ql[i, j]:
        continue
      if qp[i, j] < 0.3:
        aps.append(0.0)
        continue
      ranked = sorted(table, key=lambda n: (int((q[i, j] != d[n, j]).sum()), n))
      hits, ap = 0, 0.0
      for rank, n in enumerate(ranked, start=1):
        if dl[n, j]:
          hits += 1
          ap += hits / rank
      aps.append(ap / n_pos)
    assert got["per_category_map"][j] == pytest.approx(np.mean(aps), abs=1e-12)


def test_category_aware_thresholded_variant_equals_category_tables_search():
  # The metrics' section IV tables are CategoryTables': AP of each searched table's full ranking.
  rng = np.random.default_rng(43)
  nq, nd, c, b = 10, 60, 3, 4
  q = rng.integers(0, 2, (nq, c, b))
  d = rng.integers(0, 2, (nd, c, b))
  ql = (rng.random((nq, c)) < 0.6).astype(np.uint8)
  dl = (rng.random((nd, c)) < 0.5).astype(np.uint8)
  qp = rng.random((nq, c)).astype(np.float32)
  dp = rng.random((nd, c)).astype(np.float32)
  # float32(0.7) < 0.7: neither the tables nor the metrics may round the threshold to float32.
  dp[:5, 0] = qp[:2, 1] = np.float32(0.7)
  dp[5:8, 1] = qp[2, 0] = np.float32(0.75)
  got = metrics.category_aware_metrics(q, d, ql, dl, query_probs=qp, db_probs=dp, threshold=0.7)
  tables = CategoryTables(d, dp, threshold=0.7, backend="faiss")
  assert not np.isin(np.arange(5), tables.tables[0].ids).any()  # p = float32(0.7) < 0.7
  results = tables.search(q, qp, k=nd)
  for j in range(c):
    aps = []
    for i in range(nq):
      if not ql[i, j]:
        continue
      hits, ap = 0, 0.0
      if j in results[i]:
        for rank, item in enumerate(results[i][j][1], start=1):
          if dl[item, j]:
            hits += 1
            ap += hits / rank
      aps.append(ap / dl[:, j].sum())
    assert got["per_category_map"][j] == pytest.approx(np.mean(aps), abs=1e-12), j


def test_metrics_bad_input():
  rng = np.random.default_rng(31)
  q, d, ql, dl = random_case(rng, 4, 10, 8, 3)
  call = metrics.retrieval_metrics
  with pytest.raises(ValueError, match="only 0 and 1"):
    call(q * 2, d, ql, dl)
  with pytest.raises(ValueError, match="bits"):
    call(q[:, :7], d, ql, dl)
  with pytest.raises(ValueError, match="empty"):
    call(q, d[:0], ql, dl[:0])
  with pytest.raises(ValueError, match="rows"):
    call(q, d, ql[:3], dl)
  with pytest.raises(ValueError, match="categories"):
    call(q, d, ql[:, :2], dl)
  bad_labels = ql.copy()
  bad_labels[0, 0] = 3
  with pytest.raises(ValueError, match="multi-hot"):
    call(q, d, bad_labels, dl)
  with pytest.raises(ValueError, match="positive"):
    call(q, d, ql, dl, ks=(0,))
  with pytest.raises(ValueError, match="positive"):
    call(q, d, ql, dl, map_at=-5)
  with pytest.raises(ValueError, match="ties"):
    call(q, d, ql, dl, ties="pessimistic")
  with pytest.raises(ValueError, match="no_relevant"):
    call(q, d, ql, dl, no_relevant="drop")
  with pytest.raises(ValueError, match="query_weights"):
    call(q, d, ql, dl, query_weights=np.ones((4, 7)))
  with pytest.raises(ValueError, match=r"\[n, c, b\]"):
    metrics.category_aware_metrics(q, d, ql, dl)
