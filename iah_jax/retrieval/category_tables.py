"""Category-aware retrieval (IAH section IV, METHODS.md 1.12).

Every database image has c category-aware codes (piece j: b bits for category j) and predicted
label probabilities p [c]. Table j holds piece j of the database items with p_j >= threshold
(IAH: 0.2). A query searches, for each category j with its own p_j >= threshold, table j with its
piece j, and gets the results grouped by category:

    tables = CategoryTables(db_codes, db_label_probs)            # [nd, c, b], [nd, c]
    groups = tables.search(query_codes, query_label_probs, k)    # one dict per query
    groups[i] == {j: (distances int32 [k_j], ids int64 [k_j]), ...}

Group order: categories by descending query probability p_j (ties by category index), the order in
which a result page shows them. k_j = min(k, size of table j); a category the query passes but
whose table is empty appears with empty arrays, so "searched, nothing stored" is visible; a
query with no p_j >= threshold gets an empty dict.
Each table is a `HammingIndex` (ties by ascending database id).
"""

from __future__ import annotations

import numpy as np

from iah_jax.retrieval import packing
from iah_jax.retrieval.hamming_index import HammingIndex

DEFAULT_THRESHOLD = 0.2  # IAH section IV


def check_pieces(codes, what: str) -> np.ndarray:
  """Validates category-aware codes {0,1} [n, c, b]; returns them as uint8."""
  codes = np.asarray(codes)
  if codes.ndim != 3:
    raise ValueError(f"{what} must be category-aware codes [n, c, b], got shape {codes.shape}")
  n, c, b = codes.shape
  return packing.check_codes(codes.reshape(n, c * b), what).reshape(n, c, b)


def check_label_probs(probs, shape, what: str) -> np.ndarray:
  """Validates predicted label probabilities: finite [n, c] = `shape`, returned as float64."""
  probs = np.asarray(probs, np.float64)
  if probs.shape != tuple(shape):
    raise ValueError(
        f"{what} must have shape {tuple(shape)} (one probability per item and category), "
        f"got {probs.shape}"
    )
  if not np.all(np.isfinite(probs)):
    raise ValueError(f"{what} must be finite")
  return probs


def passes_threshold(label_probs: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
  """bool [n, c]: p_j >= threshold, i.e. item i is stored in (query i searches) table j.

  Compared in float64, so the threshold is not rounded to the probabilities' dtype.
  """
  return np.asarray(label_probs, np.float64) >= float(threshold)


class CategoryTables:
  """One Hamming table per category, holding the items whose p_j >= threshold.

  Args:
    db_codes: {0,1} [nd, c, b] category-aware database codes.
    db_label_probs: [nd, c] predicted label probabilities of the database items.
    threshold: keep piece j of an item when p_j >= threshold (IAH: 0.2).
    ids: optional strictly increasing int64 [nd] database ids (default 0..nd-1).
    backend, **index_kwargs: passed to each table's `HammingIndex`.
  """

  def __init__(
      self,
      db_codes,
      db_label_probs,
      threshold: float = DEFAULT_THRESHOLD,
      ids=None,
      backend: str = "jax",
      **index_kwargs,
  ):
    codes = check_pieces(db_codes, "db_codes")
    nd, c, b = codes.shape
    if nd == 0:
      raise ValueError("the database is empty (db_codes has 0 rows)")
    probs = check_label_probs(db_label_probs, (nd, c), "db_label_probs")
    ids = np.arange(nd, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    if ids.shape != (nd,) or (nd > 1 and np.any(np.diff(ids) <= 0)):
      raise ValueError(f"ids must be strictly increasing int64 [{nd}]")
    self.threshold = float(threshold)
    self.num_categories, self.bits_per_category = c, b
    self.tables: list[HammingIndex | None] = []
    stored = passes_threshold(probs, self.threshold)
    for j in range(c):
      members = np.flatnonzero(stored[:, j])
      if members.size == 0:
        self.tables.append(None)
        continue
      self.tables.append(
          HammingIndex(
              codes[members, j],
              backend=backend,
              ids=ids[members],
              label_probs=probs[members, j : j + 1],
              metadata={"category": j},
              **index_kwargs,
          )
      )

  def table_sizes(self) -> list[int]:
    """Number of database items stored in each category's table."""
    return [0 if t is None else t.num_items for t in self.tables]

  def search(self, query_codes, query_label_probs, k: int) -> list[dict]:
    """Grouped results for each query: [{category: (distances int32 [k_j], ids int64 [k_j])}].

    Args:
      query_codes: {0,1} [nq, c, b]. query_label_probs: [nq, c]. k: results per group (> 0).
    """
    if isinstance(k, bool) or int(k) != k or k <= 0:
      raise ValueError(f"k must be a positive integer, got {k!r}")
    queries = check_pieces(query_codes, "query_codes")
    nq, c, b = queries.shape
    if (c, b) != (self.num_categories, self.bits_per_category):
      raise ValueError(
          f"query codes are [*, {c}, {b}] but the tables hold "
          f"[*, {self.num_categories}, {self.bits_per_category}] codes"
      )
    probs = check_label_probs(query_label_probs, (nq, c), "query_label_probs")
    # Batch all queries of one category through that category's table.
    found = {}
    searches = passes_threshold(probs, self.threshold)
    for j in range(c):
      searching = np.flatnonzero(searches[:, j])
      if searching.size == 0:
        continue
      table = self.tables[j]
      if table is None:
        for i in searching:
          found[i, j] = (np.zeros(0, np.int32), np.zeros(0, np.int64))
        continue
      dist, ids = table.search(queries[searching, j], k)
      for row, i in enumerate(searching):
        found[i, j] = (dist[row], ids[row])
    results = []
    for i in range(nq):
      order = sorted((j for j in range(c) if (i, j) in found), key=lambda j: (-probs[i, j], j))
      results.append({j: found[i, j] for j in order})
    return results
