"""HammingIndex: exact k-nearest-neighbour search of binary codes, JAX or faiss backend.

    index = HammingIndex(db_codes)                 # {0,1} [n, bits]; backend="jax" by default
    distances, ids = index.search(query_codes, k)  # int32 [nq, k], int64 [nq, k]

Results are ordered by Hamming distance, ties by ascending database id (ids default to
0..n-1, the database order). Both backends return identical distances and ids.

- backend="jax": the packed database (uint32 words, word-major) is sharded over all devices of a
  1-D `Mesh` (default: every device JAX sees) and searched by the jitted exact top-k of
  `jax_search` in query batches. The index holds only the packed words (8 MB for 1M x 64 bits,
  plus < chunk * group items of padding per device) and, when custom ids were given, the ids.
- backend="faiss": `faiss.IndexBinaryFlat` (faiss-cpu) on the codes packed to bytes (bits padded
  with zeros to a multiple of 8, which leaves distances unchanged). faiss orders the items inside a
  distance tie by its scan, not by a documented rule, so each row is re-sorted by (distance, id).

k larger than the database returns the whole database ranked (k is clipped to n).
"""

from __future__ import annotations

import math

import numpy as np

from iah_jax.retrieval import index_io
from iah_jax.retrieval import packing

BACKENDS = ("jax", "faiss")


def _check_ids(ids, n: int) -> np.ndarray | None:
  if ids is None:
    return None
  ids = np.asarray(ids)
  if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"ids must be integers of shape ({n},), got {ids.dtype} {ids.shape}")
  ids = ids.astype(np.int64)
  if n > 1 and np.any(np.diff(ids) <= 0):
    raise ValueError(
        "ids must be strictly increasing (ties are broken by ascending id, and the "
        "index keeps items in id order); sort the database by id first"
    )
  return ids


def _check_k(k) -> int:
  if isinstance(k, bool) or int(k) != k or k <= 0:
    raise ValueError(f"k must be a positive integer, got {k!r}")
  return int(k)


class HammingIndex:
  """Exact Hamming k-NN over {0,1} codes; see the module docstring.

  Args:
    db_codes: {0,1} [n, bits] database codes (n >= 1). Use `from_packed` for packed words.
    backend: "jax" (default) or "faiss".
    ids: optional strictly increasing int64 [n] ids returned by `search` (default 0..n-1).
    label_probs: optional per-item label probabilities float32 [n, c], kept for category-aware
      retrieval and saved with the index.
    metadata: optional JSON-serialisable dict saved with the index.
    mesh: JAX backend only: a 1-D `jax.sharding.Mesh` with axis "data" (default: all devices).
    query_batch: JAX backend only: queries per jitted call (smaller batches use the next power
      of two, so a handful of queries does not pay for a full batch).
    chunk, group: JAX backend only: block sizes of the selection (see `jax_search`).
  """

  def __init__(
      self,
      db_codes,
      backend: str = "jax",
      ids=None,
      label_probs=None,
      metadata: dict | None = None,
      mesh=None,
      query_batch: int = 64,
      chunk: int = 32,
      group: int = 16,
  ):
    codes = packing.check_codes(db_codes, "db_codes")
    self._init(
        packing.pack_codes(codes, 32),
        codes.shape[1],
        backend,
        ids,
        label_probs,
        metadata,
        mesh,
        query_batch,
        chunk,
        group,
    )

  @classmethod
  def from_packed(
      cls,
      packed_codes,
      bits: int,
      backend: str = "jax",
      ids=None,
      label_probs=None,
      metadata: dict | None = None,
      mesh=None,
      query_batch: int = 64,
      chunk: int = 32,
      group: int = 16,
  ) -> "HammingIndex":
    """Builds an index from uint32 words [n, ceil(bits/32)] as made by `pack_codes(codes, 32)`."""
    packed = np.asarray(packed_codes)
    if packed.dtype != np.uint32 or packed.ndim != 2 or packed.shape[1] != packing.num_words(bits):
      raise ValueError(
          f"packed_codes must be uint32 [n, {packing.num_words(bits)}] for {bits} "
          f"bits, got {packed.dtype} {packed.shape}"
      )
    if bits % 32 and np.any(packed[:, -1] >> np.uint32(bits % 32)):
      raise ValueError(f"packed_codes have bits set beyond bit {bits - 1} (padding must be 0)")
    index = cls.__new__(cls)
    index._init(
        packed, int(bits), backend, ids, label_probs, metadata, mesh, query_batch, chunk, group
    )
    return index

  def _init(
      self, packed, bits, backend, ids, label_probs, metadata, mesh, query_batch, chunk, group
  ):
    if backend not in BACKENDS:
      raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    n = packed.shape[0]
    if n == 0:
      raise ValueError("cannot build an index over an empty database (0 codes)")
    self.backend = backend
    self.bits = int(bits)
    self.num_items = int(n)
    self._ids = _check_ids(ids, n)
    if label_probs is not None:
      label_probs = np.asarray(label_probs, np.float32)
      if label_probs.ndim != 2 or label_probs.shape[0] != n:
        raise ValueError(f"label_probs must be [n={n}, c], got {label_probs.shape}")
    self.label_probs = label_probs
    self.metadata = {} if metadata is None else dict(metadata)
    self.query_batch = int(query_batch)
    if backend == "jax":
      self._init_jax(packed, mesh, chunk, group)
    else:
      self._init_faiss(packed)

  # -- backends -----------------------------------------------------------------------------

  def _init_jax(self, packed, mesh, chunk, group):
    from iah_jax.retrieval import jax_search

    self._mesh = jax_search.make_mesh() if mesh is None else mesh
    if tuple(self._mesh.axis_names) != (jax_search.AXIS,):
      raise ValueError(
          f"mesh must be 1-D with axis {jax_search.AXIS!r}, got " f"{self._mesh.axis_names}"
      )
    self._chunk, self._group = int(chunk), int(group)
    devices = self._mesh.devices.size
    self._shard_len = jax_search.shard_length(self.num_items, devices, self._chunk, self._group)
    words = packed.shape[1]
    padded = np.zeros((words, self._shard_len * devices), np.uint32)
    padded[:, : self.num_items] = packed.T
    self._db_words_t = jax_search.shard_database(padded, self._mesh)
    del padded  # the only copy now lives on the devices

  def _init_faiss(self, packed):
    import faiss

    nbytes = -(-self.bits // 8)
    as_bytes = np.ascontiguousarray(packed.astype("<u4")).view(np.uint8)[:, :nbytes]
    self._faiss = faiss.IndexBinaryFlat(nbytes * 8)
    self._faiss.add(np.ascontiguousarray(as_bytes))

  # -- properties -----------------------------------------------------------------------------

  @property
  def ids(self) -> np.ndarray:
    """int64 [n] database ids, ascending."""
    return np.arange(self.num_items, dtype=np.int64) if self._ids is None else self._ids

  @property
  def packed_codes(self) -> np.ndarray:
    """uint32 [n, ceil(bits/32)] packed database codes (a host copy, made on request)."""
    if self.backend == "jax":
      return np.asarray(self._db_words_t)[:, : self.num_items].T.copy()
    import faiss

    nbytes = -(-self.bits // 8)
    as_bytes = faiss.vector_to_array(self._faiss.xb).reshape(self.num_items, nbytes)
    padded = np.zeros((self.num_items, packing.num_words(self.bits) * 4), np.uint8)
    padded[:, :nbytes] = as_bytes
    return padded.view("<u4").astype(np.uint32)

  @property
  def memory_bytes(self) -> dict:
    """Bytes held by the index: {"codes": packed codes incl. padding, "ids": stored ids}."""
    if self.backend == "jax":
      codes = int(self._db_words_t.nbytes)
    else:
      codes = int(self._faiss.ntotal * self._faiss.code_size)
    return {"codes": codes, "ids": 0 if self._ids is None else int(self._ids.nbytes)}

  # -- search ---------------------------------------------------------------------------------

  def _check_queries(self, query_codes, k):
    k = _check_k(k)
    queries = packing.check_codes(query_codes, "query_codes")
    if queries.shape[1] != self.bits:
      raise ValueError(
          f"query codes have {queries.shape[1]} bits but the index holds " f"{self.bits}-bit codes"
      )
    return queries, min(k, self.num_items)

  def search(self, query_codes, k: int):
    """k nearest database items of each query.

    Args:
      query_codes: {0,1} [nq, bits].
      k: results per query (> 0; clipped to the database size).

    Returns:
      distances int32 [nq, k] ascending and ids int64 [nq, k]; ties by ascending id.
    """
    queries, k = self._check_queries(query_codes, k)
    if queries.shape[0] == 0:
      return np.zeros((0, k), np.int32), np.zeros((0, k), np.int64)
    if self.backend == "jax":
      dist, pos = self._search_jax(packing.pack_codes(queries, 32), k)
    else:
      dist, pos = self._search_faiss(queries, k)
    ids = pos.astype(np.int64) if self._ids is None else self._ids[pos]
    return dist.astype(np.int32), ids

  def _search_jax(self, query_words, k):
    from iah_jax.retrieval import jax_search

    nq = query_words.shape[0]
    devices = self._mesh.devices.size
    jax_search.check_key_range(self.bits, self._shard_len, k, self._chunk, self._group, devices)
    fn = jax_search.build_search(
        self._mesh, k=k, chunk=self._chunk, group=self._group, bits=self.bits
    )
    num_items = np.int32(self.num_items)
    batch = min(self.query_batch, 1 << max(0, math.ceil(math.log2(max(nq, 1)))))
    dist_out = np.empty((nq, k), np.int32)
    pos_out = np.empty((nq, k), np.int32)
    pending = []
    for start in range(0, nq, batch):
      part = query_words[start : start + batch]
      padded = np.zeros((batch, query_words.shape[1]), np.uint32)
      padded[: len(part)] = part
      # Dispatch is asynchronous: queue every batch, then collect.
      pending.append(
          (
              start,
              len(part),
              fn(jax_search.replicate(padded, self._mesh), self._db_words_t, num_items),
          )
      )
    for start, size, (dist, pos) in pending:
      dist_out[start : start + size] = np.asarray(dist)[:size]
      pos_out[start : start + size] = np.asarray(pos)[:size]
    return dist_out, pos_out

  def _search_faiss(self, queries, k):
    nbytes = -(-self.bits // 8)
    query_bytes = packing.pack_codes(queries, 8)[:, :nbytes]
    dist, pos = self._faiss.search(np.ascontiguousarray(query_bytes), k)
    # Re-sort each row by (distance, position) so ties come in ascending id order.
    order = np.argsort(dist.astype(np.int64) * (self.num_items + 1) + pos, axis=1)
    return np.take_along_axis(dist, order, axis=1), np.take_along_axis(pos, order, axis=1)

  # -- persistence ----------------------------------------------------------------------------

  def save(self, path) -> None:
    """Writes codes, ids, label probabilities and metadata to `path` (see `index_io`)."""
    index_io.save_index(
        path, self.packed_codes, self.bits, self.ids, self.label_probs, self.metadata
    )

  @classmethod
  def load(cls, path, backend: str = "jax", **kwargs) -> "HammingIndex":
    """Reads an index written by `save`; kwargs as for the constructor (mesh, query_batch, ...)."""
    stored = index_io.load_index(path)
    ids = stored["ids"]
    default_ids = np.array_equal(ids, np.arange(stored["num_items"]))
    return cls.from_packed(
        stored["packed_codes"],
        stored["bits"],
        backend=backend,
        ids=None if default_ids else ids,
        label_probs=stored["label_probs"],
        metadata=stored["metadata"],
        **kwargs,
    )
