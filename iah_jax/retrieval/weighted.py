"""Weighted Hamming ranking (QaDWH, METHODS.md section 4).

Each query carries per-bit weights w [bits]; an item's distance is sum_k w_k [query bit k !=
item bit k]. QaDWH makes the weights query-adaptive: w = sum_j p_j W_j with p the query's predicted
class probabilities [c] and W the learned class-wise bit weights [c, bits]. The same ranking sits on
top of IAH's semantic codes with IAH's p. With all weights 1 it is plain Hamming ranking.

Ties (exactly equal weighted distances) are broken by ascending database id, as in plain search.
Distances are float32 sums computed bit by bit in a fixed order, so two items whose differing
bits carry the same weights get bit-identical distances; mathematically equal sums of *different*
weights may differ in the last float bit (learned weights make such ties vanishingly rare).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from iah_jax.retrieval import packing


def query_adaptive_weights(label_probs, class_bit_weights) -> np.ndarray:
  """QaDWH query weights w = p @ W: float32 [nq, bits] from p [nq, c] and W [c, bits]."""
  label_probs = np.asarray(label_probs, np.float32)
  class_bit_weights = np.asarray(class_bit_weights, np.float32)
  if label_probs.ndim != 2 or class_bit_weights.ndim != 2:
    raise ValueError(
        f"label_probs must be [nq, c] and class_bit_weights [c, bits], got "
        f"{label_probs.shape} and {class_bit_weights.shape}"
    )
  if label_probs.shape[1] != class_bit_weights.shape[0]:
    raise ValueError(
        f"label_probs has {label_probs.shape[1]} classes but class_bit_weights has "
        f"{class_bit_weights.shape[0]} rows"
    )
  return label_probs @ class_bit_weights


def check_query_weights(query_weights, shape) -> np.ndarray:
  """Validates per-query bit weights: finite float32 [nq, bits] = `shape`."""
  weights = np.asarray(query_weights, np.float32)
  if weights.shape != tuple(shape):
    raise ValueError(f"query_weights must be [nq, bits] = {tuple(shape)}, got {weights.shape}")
  if not np.all(np.isfinite(weights)):
    raise ValueError("query_weights must be finite")
  return weights


def _check_weighted_inputs(query_codes, db_codes, query_weights):
  queries = packing.check_codes(query_codes, "query_codes")
  db = packing.check_codes(db_codes, "db_codes")
  if db.shape[0] == 0:
    raise ValueError("the database is empty (db_codes has 0 rows)")
  if queries.shape[1] != db.shape[1]:
    raise ValueError(
        f"query codes have {queries.shape[1]} bits but database codes have " f"{db.shape[1]}"
    )
  return queries, db, check_query_weights(query_weights, queries.shape)


@jax.jit
def _weighted_distances(queries, db, weights):
  """float32 [b, nd] = sum_k w_k [q_k != d_k]; queries, weights [b, bits], db [nd, bits]."""

  def add_bit(k, dist):
    differs = (queries[:, k, None] != db[None, :, k]).astype(jnp.float32)
    return dist + weights[:, k, None] * differs

  init = jnp.zeros((queries.shape[0], db.shape[0]), jnp.float32)
  return lax.fori_loop(0, queries.shape[1], add_bit, init)


def weighted_hamming_distances(query_codes, db_codes, query_weights) -> np.ndarray:
  """Weighted Hamming distances float32 [nq, nd] (jitted; a dense matrix: use it on blocks).

  Args:
    query_codes: {0,1} [nq, bits]. db_codes: {0,1} [nd, bits]. query_weights: [nq, bits].
  """
  queries, db, weights = _check_weighted_inputs(query_codes, db_codes, query_weights)
  return np.asarray(_weighted_distances(queries, db, weights))


def weighted_distance_blocks(query_codes, db_codes, query_weights):
  """`weighted_hamming_distances` by query blocks, for evaluating whole rankings.

  Validates once and places the database on the device once; returns `block(start, stop)` ->
  float32 [stop - start, nd], the distances of queries start..stop-1 (the same values as
  `weighted_hamming_distances`).
  """
  queries, db, weights = _check_weighted_inputs(query_codes, db_codes, query_weights)
  db_on_device = jnp.asarray(db)

  def block(start: int, stop: int) -> np.ndarray:
    return np.asarray(_weighted_distances(queries[start:stop], db_on_device, weights[start:stop]))

  return block


@functools.partial(jax.jit, static_argnames=("k",))
def _weighted_top_k(queries, db, weights, k):
  dist = _weighted_distances(queries, db, weights)
  positions = jnp.broadcast_to(jnp.arange(db.shape[0], dtype=jnp.int32), dist.shape)
  # A stable sort on the distance alone keeps equal distances in ascending position order.
  dist_sorted, pos_sorted = lax.sort((dist, positions), dimension=1, is_stable=True, num_keys=1)
  return dist_sorted[:, :k], pos_sorted[:, :k]


def weighted_hamming_search(query_codes, db_codes, query_weights, k: int, query_batch: int = 64):
  """Ranks the database by weighted Hamming distance for each query.

  Exact; it sorts each query's distance row, so it suits evaluation-sized databases (tens of
  thousands of items) rather than the 1M-item case `HammingIndex` is built for.

  Returns:
    distances float32 [nq, k] ascending and ids int64 [nq, k] (database positions); ties by
    ascending id; k is clipped to the database size.
  """
  if isinstance(k, bool) or int(k) != k or k <= 0:
    raise ValueError(f"k must be a positive integer, got {k!r}")
  queries, db, weights = _check_weighted_inputs(query_codes, db_codes, query_weights)
  k = min(int(k), db.shape[0])
  nq = queries.shape[0]
  dist_out = np.empty((nq, k), np.float32)
  ids_out = np.empty((nq, k), np.int64)
  for start in range(0, nq, query_batch):
    stop = min(start + query_batch, nq)
    pad = query_batch - (stop - start)
    q = np.pad(queries[start:stop], ((0, pad), (0, 0)))
    w = np.pad(weights[start:stop], ((0, pad), (0, 0)))
    dist, pos = _weighted_top_k(q, db, w, k)
    dist_out[start:stop] = np.asarray(dist)[: stop - start]
    ids_out[start:stop] = np.asarray(pos)[: stop - start]
  return dist_out, ids_out
