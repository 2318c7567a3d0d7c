"""Exact Hamming top-k in JAX: packed XOR + popcount and a hierarchical block-minimum selection.

A full sort of the database per query is what makes naive top-k slow (and XLA's CPU top_k on a
1M-long row is slower still). Hamming distances are small integers, so the selection works on
block minima instead:

1. One fused pass computes, for every query, the distance to every database item (XOR + popcount
   of the packed uint32 words) and keeps only the minimum over each *chunk* of `chunk` consecutive
   items: a [queries, items / chunk] array; nothing of size [queries, items] is materialised.
2. The minima of `group` consecutive chunks give a [queries, items / (chunk * group)] array; the
   k groups with the smallest (minimum, group id) are kept, then among their chunks the k chunks
   with the smallest (minimum, chunk id).
3. The k * chunk items of those chunks are re-scored exactly and the k smallest (distance, id)
   are the answer.

Why step 2-3 lose nothing: if item x is in the top k (ordered by distance, then id) but its chunk
is not among the k chunks with the smallest (minimum, chunk id), each of those k chunks holds an
item ranked before x (a smaller distance, or the same distance in a chunk of smaller ids, since
chunks are contiguous id ranges), so k items precede x: a contradiction. The same argument lifts
from chunks to groups of chunks. Every selection is a sort of an int32 key distance * n + position
over a few thousand entries, which orders by distance and then by position, i.e. ties by ascending
id. Items past the end of the database (padding) get distance bits + 1, larger than any real one.

Measured on a 2-core AVX-512 CPU (1M x 64 bits, k = 100, CPU seconds per 1000 queries): step 1
0.30 s, steps 2-3 0.25 s, vs 0.63 s for faiss IndexBinaryFlat on one thread. chunk = 32 int32
lanes is where XLA's reduction codegen is best (16: 1.5x, 64: 9x slower step 1); a strided
"column" layout with a vertical min was 2-7x slower, and so was reducing in uint8.

The database is sharded over the devices of a 1-D mesh (axis "data"): each device computes its own
top k, the per-device answers ([queries, devices * k], already sorted within each device) are
merged with one more key sort, which keeps ties by ascending id because shards hold increasing id
ranges.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"
INT32_MAX = 2**31 - 1


def _smallest(keys: jax.Array, k: int) -> jax.Array:
  """The k smallest entries of each row, ascending. keys: int32 [b, n] -> [b, k].

  lax.sort of one int32 operand is ~5x faster than lax.top_k on CPU at these row sizes. (A bitonic
  min/max network was also tried: ~10% faster search, but 10x the compile time, ~5 s per shape.)
  """
  return lax.sort(keys, dimension=1)[:, :k]


def _distances(query_words: jax.Array, db_words_t: jax.Array) -> jax.Array:
  """Hamming distances int32 [b, n] from packed words [b, w] and word-major database [w, n]."""
  dist = lax.population_count(query_words[:, 0, None] ^ db_words_t[None, 0, :])
  for w in range(1, query_words.shape[1]):
    dist = dist + lax.population_count(query_words[:, w, None] ^ db_words_t[None, w, :])
  return dist.astype(jnp.int32)


def _candidate_distances(query_words: jax.Array, db_words_t: jax.Array, items: jax.Array):
  """Distances int32 [b, m] of each query to its own candidate items int32 [b, m]."""
  dist = None
  for w in range(query_words.shape[1]):
    words = db_words_t[w][items]  # [b, m]
    part = lax.population_count(query_words[:, w, None] ^ words)
    dist = part if dist is None else dist + part
  return dist.astype(jnp.int32)


def _ascending_rows(x: jax.Array) -> jax.Array:
  return lax.sort(x, dimension=1)


def local_top_k(
    query_words, db_words_t, first_position, num_items, *, k: int, chunk: int, group: int, bits: int
):
  """Exact top-k of one database shard (see module docstring).

  Args:
    query_words: uint32 [b, w] packed queries. db_words_t: uint32 [w, n] packed shard, word-major,
      n a multiple of chunk * group. first_position: int32 scalar, global position of the shard's
      first item. num_items: int32 scalar, number of real items in the whole database (global
      positions >= num_items are padding).
    k: results per query; at most n are returned.

  Returns:
    distances int32 [b, min(k, n)] ascending, global positions int32 [b, min(k, n)]; ties by
    ascending position. Padding has distance bits + 1.
  """
  b = query_words.shape[0]
  n = db_words_t.shape[1]
  k = min(k, n)
  sentinel = bits + 1
  positions = first_position + jnp.arange(n, dtype=jnp.int32)
  dist = _distances(query_words, db_words_t)
  dist = jnp.where(positions[None, :] < num_items, dist, sentinel)

  if k * chunk >= n:
    # Small shard or large k: score everything, one sort.
    top = _smallest(dist * n + jnp.arange(n, dtype=jnp.int32)[None, :], k)
    return top // n, first_position + top % n

  n_chunks = n // chunk
  chunk_min = dist.reshape(b, n_chunks, chunk).min(axis=-1)  # [b, n_chunks], fused

  if group > 1 and k * group < n_chunks:
    n_groups = n_chunks // group
    group_min = chunk_min.reshape(b, n_groups, group).min(axis=-1)
    group_key = group_min * n_groups + jnp.arange(n_groups, dtype=jnp.int32)[None, :]
    groups = _ascending_rows(_smallest(group_key, k) % n_groups)  # [b, k] ascending ids
    cand_chunks = (
        groups[:, :, None] * group + jnp.arange(group, dtype=jnp.int32)[None, None, :]
    ).reshape(b, k * group)
    m = k * group
    cand_min = jnp.take_along_axis(chunk_min, cand_chunks, axis=1)
    chunk_key = cand_min * m + jnp.arange(m, dtype=jnp.int32)[None, :]
    picked = _ascending_rows(_smallest(chunk_key, k) % m)
    chunks = jnp.take_along_axis(cand_chunks, picked, axis=1)  # [b, k] ascending ids
  else:
    chunk_key = chunk_min * n_chunks + jnp.arange(n_chunks, dtype=jnp.int32)[None, :]
    chunks = _ascending_rows(_smallest(chunk_key, k) % n_chunks)

  m = k * chunk
  items = (chunks[:, :, None] * chunk + jnp.arange(chunk, dtype=jnp.int32)[None, None, :]).reshape(
      b, m
  )  # ascending
  cand_dist = _candidate_distances(query_words, db_words_t, items)
  cand_dist = jnp.where(first_position + items < num_items, cand_dist, sentinel)
  top = _smallest(cand_dist * m + jnp.arange(m, dtype=jnp.int32)[None, :], k)
  return top // m, first_position + jnp.take_along_axis(items, top % m, axis=1)


def shard_length(num_items: int, num_devices: int, chunk: int, group: int) -> int:
  """Per-device shard length: num_items split evenly, rounded up to a multiple of chunk * group."""
  per_device = -(-num_items // num_devices)
  block = chunk * group
  return max(block, -(-per_device // block) * block)


def check_key_range(bits: int, shard_len: int, k: int, chunk: int, group: int, devices: int):
  """Raises ValueError if an int32 key distance * n + position could overflow."""
  k = min(k, shard_len)
  if k * chunk >= shard_len:  # direct path: keys over the whole shard
    largest_n = shard_len
  else:  # block minima, candidates, device merge
    largest_n = max(shard_len // chunk, k * group, k * chunk)
  largest_n = max(largest_n, devices * k)
  if (bits + 2) * largest_n > INT32_MAX:
    raise ValueError(
        f"{shard_len} items per device at {bits} bits overflow the int32 selection "
        f"keys; shard the database over more devices or split it"
    )


@functools.lru_cache(maxsize=64)
def build_search(mesh: Mesh, *, k: int, chunk: int, group: int, bits: int):
  """Jitted (query_words[b, w], db_words_t[w, D * n], num_items) -> (distances, positions).

  db_words_t must be sharded over the mesh axis "data" along items; queries are replicated.
  Returns int32 [b, k] distances and global positions, ties by ascending position.
  """
  num_devices = mesh.devices.size

  def per_device(query_words, db_words_t, num_items):
    n = db_words_t.shape[1]
    first = (lax.axis_index(AXIS) * n).astype(jnp.int32)
    return local_top_k(
        query_words, db_words_t, first, num_items, k=k, chunk=chunk, group=group, bits=bits
    )

  sharded = jax.shard_map(
      per_device,
      mesh=mesh,
      in_specs=(P(), P(None, AXIS), P()),
      out_specs=(P(None, AXIS), P(None, AXIS)),
  )

  def search(query_words, db_words_t, num_items):
    dist, pos = sharded(query_words, db_words_t, num_items)  # [b, devices * k_local]
    if num_devices == 1:
      return dist[:, :k], pos[:, :k]
    m = dist.shape[1]
    # Per-device lists are sorted and shards hold increasing positions, so (distance, slot)
    # orders exactly like (distance, position).
    top = _smallest(dist * m + jnp.arange(m, dtype=jnp.int32)[None, :], k)
    return top // m, jnp.take_along_axis(pos, top % m, axis=1)

  return jax.jit(search)


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis "data" over `devices` (default: all of jax.devices())."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (AXIS,))


def shard_database(db_words_t: np.ndarray, mesh: Mesh) -> jax.Array:
  """Places the word-major packed database [w, D * n] on the mesh, items split over "data"."""
  return jax.device_put(db_words_t, NamedSharding(mesh, P(None, AXIS)))


def replicate(x: np.ndarray, mesh: Mesh) -> jax.Array:
  return jax.device_put(x, NamedSharding(mesh, P()))
