"""Retrieval metrics of IAH section V-A (eqs. 10-13) and the usual extras, computed exactly.

NumPy arrays in, Python floats out. Every ranking is "database sorted by distance to the query";
queries are processed in blocks so the largest temporary is a [query block, database] array
(`block_elements` entries, default 2**16, at least one query), never a dense all-pairs matrix:
10k queries x 1M items needs a few hundred MB. The distances come from `iah_jax.retrieval`
(packed XOR / AND popcount: `packing.pairwise_popcount`; weighted Hamming:
`weighted.weighted_distance_blocks`; section IV tables: `category_tables.passes_threshold`);
this module ranks and scores.

Definitions (r(j) = number of labels shared by the query and the j-th result, j 1-based;
rel(j) = [r(j) >= 1]; N_pos = number of relevant database items):
- NDCG@m = DCG@m / ideal DCG@m, DCG@m = sum_{j<=m} (2^r(j) - 1) / log(1 + j)  (eq. 10; the log
  base cancels in the ratio).
- ACG@m = (1/m) sum_{j<=m} r(j)  (eq. 11).
- MAP: AP = sum_j P@j rel(j) / N_pos over the whole ranking, P@j = (relevant in top j) / j  (eq. 12).
- wMAP: sum_j ACG@j rel(j) / N_pos  (eq. 13).
- With `map_at=R` also `map@R` and `wmap@R`: the same sums over the top R only, normalised by the
  number of relevant items *within the top R* (what most public hashing code bases do, METHODS.md
  pitfall (c)); a query with relevant items but none in its top R scores 0.
- `precision@r{radius}` / `recall@r{radius}`: over the items within Hamming distance <= radius
  (default 2). A query that retrieves nothing has precision 0 (the common convention).
- k (or R) larger than the database: the whole database is used, i.e. NDCG@k = NDCG@n_db and
  ACG@k is the mean r over all n_db items; the key keeps the requested k.

Options:
- ties: "stable" (default; ties in distance ranked by ascending database index, the order the
  data pipeline reads the split in), "random" (uniformly random order inside each tie, `seed`),
  "expected" (the exact expectation over all orderings inside every tie group; closed forms below).
  "random" draws one independent order per query (32-bit random tie keys; two tied items draw the
  same key with probability 2^-32).
- no_relevant: queries with no relevant database item have AP, wAP, NDCG and recall equal to 0/0.
  "skip" (default) leaves them out of those averages: no ranking could change their score, so
  counting them measures the dataset (unlabelled images), not the hash; "zero" counts them as 0,
  as some public code bases do (METHODS.md pitfall (a)). ACG and precision are defined for every
  query and always average over all queries. `num_queries_without_relevant` reports how many there
  were. If every query is skipped the averages are NaN.

Expected values over tie orderings ("expected"). Take one tie group occupying ranks s+1..s+n
(s items ranked strictly before it), holding m relevant items with total gain G and total
similarity S; R and Rsum are the number of relevant items and the sum of r ranked before it. Under
a uniformly random order of the group, the item at rank j = s + t (t = 1..n):
- is relevant with probability m/n, has expected r = S/n and expected gain G/n, so E[DCG@k] and
  E[ACG@k] use the group means (this is scikit-learn's ndcg_score(ignore_ties=False));
- E[rel(j) * (relevant in top j)] = (m/n) * (R + 1 + (t-1)(m-1)/(n-1)), because given that slot j
  holds a relevant item each of the other t-1 earlier slots of the group holds one of the remaining
  m-1 relevant items with probability (m-1)/(n-1); dividing by j gives the expected AP summand;
- E[rel(j) * sum_{i<=j} r(i)] = (m/n) Rsum + S/n + (t-1)(m-1) S / (n(n-1)), by the same argument
  (pairs of distinct items: sum_{a != b} rel(a) r(b) = (m-1) S); dividing by j gives the wAP summand.
AP and wAP are linear in these summands, so their expectations are exact. Summed over a group
they need only harmonic numbers H: sum_t 1/(s+t) = H(s+n) - H(s) and sum_t (t-1)/(s+t) =
n - (s+1)(H(s+n) - H(s)), so "expected" works on per-query histograms over distance values
(bits + 1 bins) without sorting at all. For map@R the
normaliser (relevant in top R) is random only through the group straddling rank R: with u of its
n slots inside the top R, the number X of its relevant items there is hypergeometric(n, m, u), and
given X = x the first u slots are a uniformly random arrangement of x relevant items, so the same
closed forms apply with (n, m, S) -> (u, x, x S / m); the expectation sums over x exactly.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from iah_jax.retrieval import category_tables
from iah_jax.retrieval import weighted
from iah_jax.retrieval.packing import check_codes
from iah_jax.retrieval.packing import pack_codes
from iah_jax.retrieval.packing import pairwise_popcount

TIES = ("stable", "random", "expected")
NO_RELEVANT = ("skip", "zero")
# About 64k entries per query block keeps the block's temporaries in cache (measured ~3x faster
# than 4M-entry blocks); a block is never smaller than one query.
DEFAULT_BLOCK_ELEMENTS = 2**16


# --------------------------------------------------------------------------------------------
# Input checks


def _check_labels(labels, n: int, what: str) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(f"{what} must be a 2-D {{0,1}} array [n, c], got shape {labels.shape}")
  if labels.shape[0] != n:
    raise ValueError(f"{what} has {labels.shape[0]} rows but the codes have {n}")
  if labels.dtype != np.bool_:
    bad = (labels != 0) & (labels != 1)
    if bad.any():
      row, col = (int(i) for i in np.argwhere(bad)[0])
      raise ValueError(
          f"{what} must be multi-hot 0/1, found {labels[row, col]!r} at [{row}, {col}]"
      )
  return labels.astype(np.float32)


def _check_options(ties: str, no_relevant: str, ks, map_at) -> tuple[int, ...]:
  if ties not in TIES:
    raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
  if no_relevant not in NO_RELEVANT:
    raise ValueError(f"no_relevant must be one of {NO_RELEVANT}, got {no_relevant!r}")
  ks = tuple(int(k) for k in ks)
  for k in ks + (() if map_at is None else (map_at,)):
    if int(k) != k or k <= 0:
      raise ValueError(f"cut-offs (ks, map_at) must be positive integers, got {k!r}")
  return ks


def _check_query_db(query_codes, db_codes, query_labels, db_labels):
  query_codes = check_codes(query_codes, "query_codes")
  db_codes = check_codes(db_codes, "db_codes")
  if db_codes.shape[0] == 0:
    raise ValueError("the database is empty (db_codes has 0 rows)")
  if query_codes.shape[0] == 0:
    raise ValueError("there are no queries (query_codes has 0 rows)")
  if query_codes.shape[1] != db_codes.shape[1]:
    raise ValueError(
        f"query codes have {query_codes.shape[1]} bits but database codes have "
        f"{db_codes.shape[1]}"
    )
  query_labels = _check_labels(query_labels, query_codes.shape[0], "query_labels")
  db_labels = _check_labels(db_labels, db_codes.shape[0], "db_labels")
  if query_labels.shape[1] != db_labels.shape[1]:
    raise ValueError(
        f"query labels have {query_labels.shape[1]} categories but database labels "
        f"have {db_labels.shape[1]}"
    )
  return query_codes, db_codes, query_labels, db_labels


# --------------------------------------------------------------------------------------------
# Per-block machinery


def _packed(bits01: np.ndarray) -> np.ndarray:
  return pack_codes(bits01, word_bits=64)


def _rank(dist: np.ndarray, ties: str, rng: np.random.Generator | None) -> np.ndarray:
  """Ranking order [b, nd] of each row of `dist`; ties by ascending index unless "random"."""
  if ties == "random":
    if np.issubdtype(dist.dtype, np.integer) and dist.min() >= 0 and dist.max() < 2**31:
      # distance in the high word, 32 random bits below: one integer sort (7x faster than
      # lexsort); two tied items draw the same 32 bits with probability 2^-32 per pair.
      key = (dist.astype(np.uint64) << np.uint64(32)) | rng.integers(
          0, 2**32, dist.shape, dtype=np.uint64
      )
      return np.argsort(key, axis=1)
    return np.lexsort((rng.random(dist.shape), dist), axis=-1)
  # On uint8 / uint16 keys NumPy's stable sort is a radix sort.
  return np.argsort(dist, axis=1, kind="stable")


def _harmonic(n_max: int) -> np.ndarray:
  """H[i] = sum_{j=1..i} 1/j for i = 0..n_max."""
  out = np.zeros(n_max + 1)
  out[1:] = np.cumsum(1.0 / np.arange(1, n_max + 1))
  return out


def _discount_prefix(n_max: int) -> np.ndarray:
  """L[i] = sum_{j=1..i} 1/log2(1 + j) for i = 0..n_max (cumulative NDCG discount)."""
  out = np.zeros(n_max + 1)
  out[1:] = np.cumsum(1.0 / np.log2(1.0 + np.arange(1, n_max + 1)))
  return out


def _row_histograms(keys: np.ndarray, num_bins: int, weights=()) -> list[np.ndarray]:
  """Per-row histograms [b, num_bins] of integer `keys` [b, n], unweighted then each weight."""
  b = keys.shape[0]
  flat = (keys.astype(np.int64) + (np.arange(b, dtype=np.int64) * num_bins)[:, None]).ravel()
  out = [np.bincount(flat, minlength=b * num_bins).reshape(b, num_bins).astype(np.float64)]
  for w in weights:
    out.append(np.bincount(flat, weights=w.ravel(), minlength=b * num_bins).reshape(b, num_bins))
  return out


def _exclusive_cumsum(x: np.ndarray) -> np.ndarray:
  return np.cumsum(x, axis=1) - x


def _ideal_dcg(shared: np.ndarray, ks, discount_prefix: np.ndarray) -> dict:
  """Ideal DCG@k [b] for each k from the histogram of shared-label counts (no sort needed)."""
  num_values = int(shared.max()) + 1
  (count,) = _row_histograms(shared, num_values)
  count = count[:, ::-1]  # best similarity first
  gain = (np.exp2(np.arange(num_values)) - 1.0)[::-1]
  end = np.cumsum(count, axis=1)
  out = {}
  for k in ks:
    kk = min(k, shared.shape[1])
    covered = (
        discount_prefix[np.minimum(end, kk).astype(np.int64)]
        - discount_prefix[np.minimum(end - count, kk).astype(np.int64)]
    )
    out[k] = covered @ gain
  return out


def _hypergeometric_pmf(x, n, m, u):
  """P(X = x) for X = relevant items among u draws without replacement from n holding m.

  Log-gamma form (scipy.stats.hypergeom is ~100x slower on these broadcast grids); 0 outside the
  support max(0, u - (n - m)) <= x <= min(m, u).
  """

  def log_choose(a, k):
    return special.gammaln(a + 1) - special.gammaln(k + 1) - special.gammaln(a - k + 1)

  valid = (x >= np.maximum(0, u - (n - m))) & (x <= np.minimum(m, u))
  xs = np.where(valid, x, 0)
  ms = np.broadcast_to(m, xs.shape)
  log_p = log_choose(ms, xs) + log_choose(n - ms, np.clip(u - xs, 0, n - ms)) - log_choose(n, u)
  return np.where(valid, np.exp(log_p), 0.0)


def _top_r_normalised(s, n, m, S, rel_before, r_before, ap_before, wap_before, R, harmonic):
  """Exact E[AP@R], E[wAP@R] normalised by the relevant items within the top R (module doc).

  All arguments are per query [b]: the tie group straddling rank R starts after s items, has n
  items, m of them relevant with similarity sum S; rel_before / r_before / ap_before / wap_before
  are the (expected) counts and AP / wAP numerators of the groups ranked before it.
  """
  u = R - s  # its slots inside the top R (1..n)
  x_max = int(np.minimum(m, u).max())
  x = np.arange(x_max + 1, dtype=np.float64)[None, :]
  prob = _hypergeometric_pmf(x, n[:, None], m[:, None], u[:, None])
  dh = (harmonic[(s + u).astype(np.int64)] - harmonic[s.astype(np.int64)])[:, None]
  uu = u[:, None]
  # sum_{t=1..u} (t-1)/(s+t) / (u-1); zero when u == 1.
  spread = np.where(uu > 1, (uu - (s[:, None] + 1) * dh) / np.maximum(uu - 1, 1), 0.0)
  ap_num = ap_before[:, None] + (x / uu) * ((rel_before[:, None] + 1) * dh + (x - 1) * spread)
  s_in = np.where(m[:, None] > 0, x * S[:, None] / np.maximum(m[:, None], 1), 0.0)
  wap_num = (
      wap_before[:, None]
      + ((x / uu) * r_before[:, None] + s_in / uu) * dh
      + (x - 1) * s_in / uu * spread
  )
  count = rel_before[:, None] + x
  safe = np.maximum(count, 1)
  ap_r = np.where(count > 0, ap_num / safe, 0.0)
  wap_r = np.where(count > 0, wap_num / safe, 0.0)
  return (prob * ap_r).sum(1), (prob * wap_r).sum(1)


def _expected_terms(groups, num_groups, shared, ks, map_at, need_gain):
  """Expected AP / wAP numerators, DCG@k, ACG@k and top-R values over tie orderings.

  groups: int [b, nd] tie-group id of each item (equal id = tied; smaller id = ranked earlier),
  in 0..num_groups-1. Works on per-group histograms only, O(nd + num_groups) per query.
  """
  b, nd = shared.shape
  r = shared.astype(np.float64)
  weights = [(shared > 0).astype(np.float64), r]
  if need_gain:
    weights.append(np.exp2(r) - 1.0)
  hist = _row_histograms(groups, num_groups, weights)
  n, m, S = hist[0], hist[1], hist[2]
  s = _exclusive_cumsum(n)
  rel_before = _exclusive_cumsum(m)
  r_before = _exclusive_cumsum(S)
  harmonic = _harmonic(nd)
  dh = harmonic[(s + n).astype(np.int64)] - harmonic[s.astype(np.int64)]
  safe_n = np.maximum(n, 1)
  pair_fraction = np.where(n > 1, 1.0 / np.maximum(n - 1, 1), 0.0)
  # sum over the group's ranks j = s+t of (t-1)/j
  spread_sum = n - (s + 1) * dh
  ap_num = (m / safe_n) * ((rel_before + 1) * dh + (m - 1) * pair_fraction * spread_sum)
  wap_num = ((m / safe_n) * r_before + S / safe_n) * dh + (
      m - 1
  ) * S / safe_n * pair_fraction * spread_sum
  out = {"ap_num": ap_num.sum(1), "wap_num": wap_num.sum(1), "n_pos": m.sum(1)}
  if ks:
    discount_prefix = _discount_prefix(nd)
    G = hist[3]
    for k in ks:
      kk = min(k, nd)
      inside = np.minimum(s + n, kk) - np.minimum(s, kk)
      covered = (
          discount_prefix[np.minimum(s + n, kk).astype(np.int64)]
          - discount_prefix[np.minimum(s, kk).astype(np.int64)]
      )
      out[("dcg", k)] = (G / safe_n * covered).sum(1)
      out[("acg", k)] = (S / safe_n * inside).sum(1) / kk
  if map_at is not None:
    R = min(int(map_at), nd)
    straddle = np.argmax(s + n >= R, axis=1)  # first group reaching rank R (never empty)
    rows = np.arange(b)
    ap_before = _exclusive_cumsum(ap_num)[rows, straddle]
    wap_before = _exclusive_cumsum(wap_num)[rows, straddle]
    pick = lambda a: a[rows, straddle]
    out["top_r"] = _top_r_normalised(
        pick(s),
        pick(n),
        pick(m),
        pick(S),
        pick(rel_before),
        pick(r_before),
        ap_before,
        wap_before,
        R,
        harmonic,
    )
  return out


def _dense_tie_groups(dist: np.ndarray) -> tuple[np.ndarray, int]:
  """Tie-group ids [b, nd] for arbitrary (e.g. float) distances: dense rank of each value."""
  order = np.argsort(dist, axis=1, kind="stable")
  dist_sorted = np.take_along_axis(dist, order, axis=1)
  new_group = np.zeros(dist.shape, np.int64)
  new_group[:, 1:] = dist_sorted[:, 1:] != dist_sorted[:, :-1]
  groups = np.empty_like(new_group)
  np.put_along_axis(groups, order, np.cumsum(new_group, axis=1), axis=1)
  return groups, dist.shape[1]


def _ordered_terms(dist, shared, ties, ks, map_at, rng, binary_relevance=False):
  """AP / wAP numerators, DCG@k, ACG@k, top-R values of the actual (stable or random) ranking.

  binary_relevance: `shared` is 0/1, so r = rel and the wAP sums equal the AP sums (saves passes).
  """
  b, nd = shared.shape
  order = _rank(dist, ties, rng)
  r = np.take_along_axis(shared, order, axis=1)
  rel = r > 0
  inv_rank = 1.0 / np.arange(1, nd + 1, dtype=np.float64)
  cum_rel = np.cumsum(rel, axis=1, dtype=np.int32)
  cum_r = cum_rel if binary_relevance else np.cumsum(r, axis=1, dtype=np.int32)
  # rel(j) * P@j * j and rel(j) * ACG@j * j; dot with 1/j sums them (BLAS, no float temporaries).
  ap_terms = np.multiply(cum_rel, rel, dtype=np.float64)
  wap_terms = ap_terms if binary_relevance else np.multiply(cum_r, rel, dtype=np.float64)
  ap_num = ap_terms @ inv_rank
  out = {
      "ap_num": ap_num,
      "wap_num": ap_num if binary_relevance else wap_terms @ inv_rank,
      "n_pos": cum_rel[:, -1].astype(np.float64),
  }
  if ks:
    k_max = min(max(ks), nd)
    gain_top = np.exp2(r[:, :k_max].astype(np.float64)) - 1.0
    discount = 1.0 / np.log2(1.0 + np.arange(1, k_max + 1))
    for k in ks:
      kk = min(k, nd)
      out[("dcg", k)] = gain_top[:, :kk] @ discount[:kk]
      out[("acg", k)] = cum_r[:, kk - 1] / kk
  if map_at is not None:
    R = min(int(map_at), nd)
    count = cum_rel[:, R - 1].astype(np.float64)
    safe = np.maximum(count, 1)
    out["top_r"] = (
        np.where(count > 0, (ap_terms[:, :R] @ inv_rank[:R]) / safe, 0.0),
        np.where(count > 0, (wap_terms[:, :R] @ inv_rank[:R]) / safe, 0.0),
    )
  return out


def _block_metrics(
    dist,
    shared,
    ties,
    ks,
    map_at,
    radius,
    rng,
    n_pos_total=None,
    num_distance_values=None,
    binary_relevance=False,
):
  """Per-query metric arrays for one block. dist, shared: [b, nd]. Undefined entries are NaN.

  num_distance_values: distances are integers in [0, num_distance_values) (Hamming: bits + 1),
  which lets "expected" use them directly as tie-group ids; None for arbitrary distances.
  """
  nd = dist.shape[1]
  if ties == "expected":
    if num_distance_values is None:
      groups, num_groups = _dense_tie_groups(dist)
    else:
      groups, num_groups = dist, num_distance_values
    terms = _expected_terms(groups, num_groups, shared, ks, map_at, need_gain=bool(ks))
  else:
    terms = _ordered_terms(dist, shared, ties, ks, map_at, rng, binary_relevance)
  n_pos = terms["n_pos"] if n_pos_total is None else np.asarray(n_pos_total, np.float64)
  has_pos = n_pos > 0
  safe_pos = np.where(has_pos, n_pos, 1.0)
  out = {
      "map": np.where(has_pos, terms["ap_num"] / safe_pos, np.nan),
      "wmap": np.where(has_pos, terms["wap_num"] / safe_pos, np.nan),
  }
  if ks:
    ideal = _ideal_dcg(shared, ks, _discount_prefix(min(max(ks), nd)))
    for k in ks:
      good = ideal[k] > 0
      out[f"ndcg@{k}"] = np.where(good, terms[("dcg", k)] / np.where(good, ideal[k], 1.0), np.nan)
      out[f"acg@{k}"] = terms[("acg", k)]
  if map_at is not None:
    out[f"map@{map_at}"] = np.where(has_pos, terms["top_r"][0], np.nan)
    out[f"wmap@{map_at}"] = np.where(has_pos, terms["top_r"][1], np.nan)
  within = dist <= radius
  n_retrieved = within.sum(1)
  n_rel_retrieved = np.count_nonzero(within & (shared > 0), axis=1)
  out[f"precision@r{radius}"] = np.where(
      n_retrieved > 0, n_rel_retrieved / np.maximum(n_retrieved, 1), 0.0
  )
  out[f"recall@r{radius}"] = np.where(has_pos, n_rel_retrieved / safe_pos, np.nan)
  out["_has_pos"] = has_pos
  return out


def _block_rows(n_queries: int, nd: int, block_elements: int | None) -> int:
  budget = DEFAULT_BLOCK_ELEMENTS if block_elements is None else int(block_elements)
  return max(1, min(n_queries, budget // max(nd, 1)))


def _aggregate(per_query: dict, no_relevant: str) -> dict:
  has_pos = per_query.pop("_has_pos")
  result = {}
  for key, values in per_query.items():
    if no_relevant == "zero":
      values = np.nan_to_num(values, nan=0.0)
      result[key] = float(values.mean())
    else:
      defined = values[~np.isnan(values)]
      result[key] = float(defined.mean()) if defined.size else float("nan")
  result["num_queries"] = float(has_pos.size)
  result["num_queries_without_relevant"] = float((~has_pos).sum())
  return result


def _evaluate(
    distance_block,
    n_queries,
    nd,
    query_labels_f,
    db_labels_f,
    ks,
    ties,
    no_relevant,
    map_at,
    radius,
    seed,
    block_elements,
    per_query=False,
    num_distance_values=None,
):
  rng = np.random.default_rng(seed) if ties == "random" else None
  rows = _block_rows(n_queries, nd, block_elements)
  query_label_words, db_label_words = _packed(query_labels_f), _packed(db_labels_f)
  num_labels = query_labels_f.shape[1]
  parts = []
  for start in range(0, n_queries, rows):
    stop = min(start + rows, n_queries)
    dist = distance_block(start, stop)
    shared = pairwise_popcount(
        query_label_words[start:stop], db_label_words, np.bitwise_and, num_labels
    )
    parts.append(
        _block_metrics(
            dist, shared, ties, ks, map_at, radius, rng, num_distance_values=num_distance_values
        )
    )
  merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
  if per_query:
    return merged
  return _aggregate(merged, no_relevant)


# --------------------------------------------------------------------------------------------
# Public API


def retrieval_metrics(
    query_codes,
    db_codes,
    query_labels,
    db_labels,
    ks=(100, 1000),
    ties: str = "stable",
    no_relevant: str = "skip",
    map_at: int | None = None,
    radius: int = 2,
    seed: int = 0,
    block_elements: int | None = None,
    per_query: bool = False,
    query_weights=None,
) -> dict:
  """All IAH metrics for Hamming ranking of the database for each query (see module docstring).

  Args:
    query_codes: {0,1} [nq, bits]. db_codes: {0,1} [nd, bits].
    query_labels: {0,1} [nq, c]. db_labels: {0,1} [nd, c].
    ks: cut-offs for NDCG@k and ACG@k (k > nd uses the whole database).
    ties: "stable" (default, ascending database index), "random" (uses `seed`) or "expected".
    no_relevant: "skip" (default) or "zero" for queries without any relevant database item.
    map_at: optional R for `map@R` / `wmap@R` (normalised by relevant items within the top R).
    radius: Hamming radius for `precision@r{radius}` / `recall@r{radius}` (default 2).
    block_elements: queries are processed in blocks of about this many query x database entries.
    per_query: return the per-query arrays [nq] (NaN where undefined) instead of the averages.
    query_weights: optional float [nq, bits] per-query bit weights (QaDWH): rank by the weighted
      Hamming distance sum_k w_k [bits differ] instead (computed in float32 bit by bit in a fixed
      order, exactly as `iah_jax.retrieval.weighted`); ties are exactly equal weighted
      distances, and `radius` then thresholds the weighted distance.

  Returns:
    {"map", "wmap", "ndcg@K", "acg@K" for K in ks, ["map@R", "wmap@R"], "precision@r2",
     "recall@r2", "num_queries", "num_queries_without_relevant"} as Python floats.
  """
  ks = _check_options(ties, no_relevant, ks, map_at)
  query_codes, db_codes, query_labels_f, db_labels_f = _check_query_db(
      query_codes, db_codes, query_labels, db_labels
  )
  if query_weights is not None:
    distance_block = weighted.weighted_distance_blocks(query_codes, db_codes, query_weights)
    num_distance_values = None  # float distances: tie groups come from sorting them
  else:
    query_words, db_words, bits = _packed(query_codes), _packed(db_codes), query_codes.shape[1]
    distance_block = lambda a, b: pairwise_popcount(  # noqa: E731
        query_words[a:b], db_words, np.bitwise_xor, bits
    )
    num_distance_values = bits + 1
  return _evaluate(
      distance_block,
      query_codes.shape[0],
      db_codes.shape[0],
      query_labels_f,
      db_labels_f,
      ks,
      ties,
      no_relevant,
      map_at,
      radius,
      seed,
      block_elements,
      per_query,
      num_distance_values=num_distance_values,
  )


def ranking_metrics_from_distances(
    distances,
    query_labels,
    db_labels,
    ks=(100, 1000),
    ties: str = "stable",
    no_relevant: str = "skip",
    map_at: int | None = None,
    radius: float = 2,
    seed: int = 0,
    block_elements: int | None = None,
    per_query: bool = False,
) -> dict:
  """The metrics of `retrieval_metrics` for any precomputed distances [nq, nd] (smaller = closer).

  For rankings that are not plain Hamming, e.g. QaDWH's weighted Hamming distances. Ties are
  equal distance values; `radius` thresholds the given distances.
  """
  ks = _check_options(ties, no_relevant, ks, map_at)
  distances = np.asarray(distances)
  if distances.ndim != 2 or distances.shape[1] == 0 or distances.shape[0] == 0:
    raise ValueError(f"distances must be a non-empty 2-D array [nq, nd], got {distances.shape}")
  if not np.issubdtype(distances.dtype, np.number) or not np.all(np.isfinite(distances)):
    raise ValueError("distances must be finite numbers")
  query_labels_f = _check_labels(query_labels, distances.shape[0], "query_labels")
  db_labels_f = _check_labels(db_labels, distances.shape[1], "db_labels")
  if query_labels_f.shape[1] != db_labels_f.shape[1]:
    raise ValueError(
        f"query labels have {query_labels_f.shape[1]} categories but database labels "
        f"have {db_labels_f.shape[1]}"
    )
  return _evaluate(
      lambda a, b: distances[a:b],
      distances.shape[0],
      distances.shape[1],
      query_labels_f,
      db_labels_f,
      ks,
      ties,
      no_relevant,
      map_at,
      radius,
      seed,
      block_elements,
      per_query,
  )


def hamming_pr_curve(
    query_codes,
    db_codes,
    query_labels,
    db_labels,
    no_relevant: str = "skip",
    block_elements: int | None = None,
) -> dict:
  """Precision-recall curve of Hamming-radius retrieval, one point per radius 0..bits.

  At radius h a query retrieves every item with distance <= h; precision and recall are averaged
  over queries (precision 0 when nothing is retrieved; recall follows `no_relevant` for queries
  without relevant items). Returns {"radius": int [bits+1], "precision": [bits+1],
  "recall": [bits+1]} as NumPy arrays.
  """
  _check_options("stable", no_relevant, (), None)
  query_codes, db_codes, query_labels_f, db_labels_f = _check_query_db(
      query_codes, db_codes, query_labels, db_labels
  )
  bits = query_codes.shape[1]
  query_words, db_words = _packed(query_codes), _packed(db_codes)
  query_label_words, db_label_words = _packed(query_labels_f), _packed(db_labels_f)
  nq, nd = query_codes.shape[0], db_codes.shape[0]
  rows = _block_rows(nq, nd, block_elements)
  precisions, recalls = [], []
  for start in range(0, nq, rows):
    stop = min(start + rows, nq)
    dist = pairwise_popcount(query_words[start:stop], db_words, np.bitwise_xor, bits)
    rel = (
        pairwise_popcount(
            query_label_words[start:stop], db_label_words, np.bitwise_and, query_labels_f.shape[1]
        )
        > 0
    )
    hist, hist_rel = _row_histograms(dist, bits + 1, [rel.astype(np.float64)])
    retrieved = np.cumsum(hist, axis=1)
    rel_retrieved = np.cumsum(hist_rel, axis=1)
    n_pos = rel.sum(1, keepdims=True).astype(np.float64)
    precisions.append(np.where(retrieved > 0, rel_retrieved / np.maximum(retrieved, 1), 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
      recalls.append(np.where(n_pos > 0, rel_retrieved / n_pos, np.nan))
  recall = np.concatenate(recalls)
  if no_relevant == "zero":
    recall_mean = np.nan_to_num(recall, nan=0.0).mean(0)
  else:
    defined = ~np.isnan(recall[:, 0])
    recall_mean = recall[defined].mean(0) if defined.any() else np.full(bits + 1, np.nan)
  return {
      "radius": np.arange(bits + 1),
      "precision": np.concatenate(precisions).mean(0),
      "recall": recall_mean,
  }


def category_aware_metrics(
    query_codes,
    db_codes,
    query_labels,
    db_labels,
    ties: str = "stable",
    query_probs=None,
    db_probs=None,
    threshold: float = category_tables.DEFAULT_THRESHOLD,
    seed: int = 0,
    block_elements: int | None = None,
) -> dict:
  """Per-category MAP of category-aware codes (IAH Fig. 8) and its average over categories.

  Args:
    query_codes: {0,1} [nq, c, b], piece j is the query's code for category j.
    db_codes: {0,1} [nd, c, b]. query_labels: {0,1} [nq, c]. db_labels: {0,1} [nd, c].
    ties: as in `retrieval_metrics`.
    query_probs, db_probs: optional predicted label probabilities [nq, c], [nd, c]. Without them
      (default, the protocol of IAH Fig. 8/9): for category j, every query carrying label j ranks
      the whole database by the Hamming distance of piece j; relevant = the database item carries
      label j; AP over the whole ranking. With them (the thresholded system of IAH section IV):
      table j holds only database items with p_j >= threshold, a query carrying label j searches
      it only if its own p_j >= threshold (otherwise its AP is 0), and AP is normalised by all
      database items carrying label j, so relevant items left out of the table count as missed.
    threshold: the probability threshold of the thresholded variant (default IAH's,
      `iah_jax.retrieval.category_tables.DEFAULT_THRESHOLD`); the tables are selected by
      `category_tables.passes_threshold`, as `iah_jax.retrieval.CategoryTables` selects them.

  Returns:
    {"map": mean of the per-category MAPs over categories that have at least one query,
     "per_category_map": list of c floats, None for a category no query carries (there is no AP
     to average, and None cannot be mistaken for a score)}. Queries whose category has no relevant
     database item are skipped (AP undefined); if that leaves none the category's entry is None.
  """
  if ties not in TIES:
    raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
  query_pieces = category_tables.check_pieces(query_codes, "query_codes")
  db_pieces = category_tables.check_pieces(db_codes, "db_codes")
  if query_pieces.shape[1:] != db_pieces.shape[1:]:
    raise ValueError(
        f"query codes [*, c, b] = {query_pieces.shape} and database codes "
        f"{db_pieces.shape} disagree on c or b"
    )
  nq, c, _ = query_pieces.shape
  nd = db_pieces.shape[0]
  if nd == 0:
    raise ValueError("the database is empty (db_codes has 0 rows)")
  query_labels_f = _check_labels(query_labels, nq, "query_labels")
  db_labels_f = _check_labels(db_labels, nd, "db_labels")
  if query_labels_f.shape[1] != c or db_labels_f.shape[1] != c:
    raise ValueError(
        f"labels must have c = {c} columns (one per code piece), got "
        f"{query_labels_f.shape[1]} and {db_labels_f.shape[1]}"
    )
  thresholded = query_probs is not None or db_probs is not None
  if thresholded:
    if query_probs is None or db_probs is None:
      raise ValueError("give both query_probs and db_probs (or neither)")
    query_searches = category_tables.passes_threshold(
        category_tables.check_label_probs(query_probs, (nq, c), "query_probs"), threshold
    )
    db_stored = category_tables.passes_threshold(
        category_tables.check_label_probs(db_probs, (nd, c), "db_probs"), threshold
    )

  rng = np.random.default_rng(seed) if ties == "random" else None
  per_category = []
  for j in range(c):
    queries = np.flatnonzero(query_labels_f[:, j] > 0)
    if queries.size == 0:
      per_category.append(None)
      continue
    db_rel = db_labels_f[:, j : j + 1]
    n_pos_total = float(db_rel.sum())
    if n_pos_total == 0:
      per_category.append(None)
      continue
    if thresholded:
      in_table = np.flatnonzero(db_stored[:, j])
      searching = queries[query_searches[queries, j]]
      aps = np.zeros(queries.size)
      if in_table.size and searching.size:
        aps_searching = _category_aps(
            query_pieces[searching, j],
            db_pieces[in_table, j],
            db_rel[in_table],
            ties,
            rng,
            block_elements,
            n_pos_total,
        )
        aps[np.searchsorted(queries, searching)] = aps_searching
    else:
      aps = _category_aps(
          query_pieces[queries, j], db_pieces[:, j], db_rel, ties, rng, block_elements, n_pos_total
      )
    per_category.append(float(np.mean(aps)))
  defined = [v for v in per_category if v is not None]
  return {
      "map": float(np.mean(defined)) if defined else float("nan"),
      "per_category_map": per_category,
  }


def _category_aps(query_piece, db_piece, db_rel, ties, rng, block_elements, n_pos_total):
  """AP of each query piece [nq, b] ranking db pieces [nd, b]; relevance db_rel [nd, 1]."""
  query_words, db_words, bits = _packed(query_piece), _packed(db_piece), query_piece.shape[1]
  nq, nd = query_piece.shape[0], db_piece.shape[0]
  rows = _block_rows(nq, nd, block_elements)
  aps = []
  for start in range(0, nq, rows):
    stop = min(start + rows, nq)
    dist = pairwise_popcount(query_words[start:stop], db_words, np.bitwise_xor, bits)
    shared = np.broadcast_to(db_rel.T.astype(np.uint8), dist.shape)
    n_pos = np.full(stop - start, n_pos_total)
    out = _block_metrics(
        dist,
        shared,
        ties,
        (),
        None,
        0,
        rng,
        n_pos_total=n_pos,
        num_distance_values=bits + 1,
        binary_relevance=True,
    )
    aps.append(out["map"])
  return np.concatenate(aps)
