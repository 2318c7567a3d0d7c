"""Bit packing, HammingIndex (JAX and faiss), persistence, weighted Hamming, category tables."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from iah_jax import retrieval
from iah_jax.retrieval import CategoryTables
from iah_jax.retrieval import HammingIndex
from iah_jax.retrieval import index_io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def brute_force(query_codes, db_codes, k):
  """Loop-free but naive reference: full distance matrix, stable argsort (ties by index)."""
  dist = (np.asarray(query_codes)[:, None, :] != np.asarray(db_codes)[None, :, :]).sum(-1)
  order = np.argsort(dist, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(dist, order, axis=1), order


# ------------------------------------------------------------------------------------------------
# Packing


@pytest.mark.parametrize("bits", [1, 7, 8, 31, 32, 33, 64, 100])
@pytest.mark.parametrize("word_bits", [8, 32, 64])
def test_pack_unpack_round_trip(bits, word_bits):
  codes = np.random.default_rng(bits).integers(0, 2, (9, bits))
  packed = retrieval.pack_codes(codes, word_bits)
  assert packed.dtype == {8: np.uint8, 32: np.uint32, 64: np.uint64}[word_bits]
  assert packed.shape == (9, -(-bits // word_bits))
  np.testing.assert_array_equal(retrieval.unpack_codes(packed, bits), codes)


def test_pack_bit_layout_is_lsb_first():
  codes = np.zeros((1, 40), np.uint8)
  codes[0, [0, 3, 31, 32, 39]] = 1
  packed = retrieval.pack_codes(codes, 32)
  assert packed[0, 0] == (1 << 0) | (1 << 3) | (1 << 31)
  assert packed[0, 1] == (1 << 0) | (1 << 7)


def test_packed_hamming_equals_loop():
  rng = np.random.default_rng(0)
  q, d = rng.integers(0, 2, (5, 70)), rng.integers(0, 2, (6, 70))
  want = np.array([[sum(int(a != b) for a, b in zip(qi, di)) for di in d] for qi in q])
  for word_bits in (8, 32, 64):
    got = retrieval.hamming_distances_packed(
        retrieval.pack_codes(q, word_bits), retrieval.pack_codes(d, word_bits)
    )
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------------------------
# Search


@pytest.mark.parametrize(
    "bits,nd,chunk,group",
    [
        (64, 3000, 8, 4),  # hierarchical: groups -> chunks -> items
        (8, 3000, 8, 4),  # 8 bits: huge tie groups
        (13, 700, 8, 64),  # chunk-only selection (too few chunks for groups)
        (33, 37, 32, 16),  # database smaller than one block: direct path
        (5, 1, 32, 16),  # a 1-item database
    ],
)
def test_jax_search_equals_brute_force(bits, nd, chunk, group):
  rng = np.random.default_rng(bits + nd)
  db = rng.integers(0, 2, (nd, bits))
  queries = rng.integers(0, 2, (21, bits))
  queries[0] = db[nd // 2]  # an exact match
  index = HammingIndex(db, chunk=chunk, group=group, query_batch=8)
  for k in (1, 50, nd):
    dist, ids = index.search(queries, k)
    want_dist, want_ids = brute_force(queries, db, k)
    assert dist.shape == (21, min(k, nd))
    assert dist.dtype == np.int32 and ids.dtype == np.int64
    np.testing.assert_array_equal(dist, want_dist)
    np.testing.assert_array_equal(ids, want_ids)


def test_default_block_sizes_at_scale_equal_faiss_and_numpy():
  # 60k items: with the default chunk=32, group=16 every level of the selection runs for k=100.
  rng = np.random.default_rng(60)
  db = rng.integers(0, 2, (60_000, 64), dtype=np.uint8)
  queries = rng.integers(0, 2, (40, 64), dtype=np.uint8)
  queries[:5] = db[[3, 59_999, 30_000, 7, 7]]
  dist, ids = HammingIndex(db).search(queries, 100)
  full = retrieval.hamming_distances_packed(
      retrieval.pack_codes(queries, 64), retrieval.pack_codes(db, 64)
  )
  want_ids = np.argsort(full, axis=1, kind="stable")[:, :100]
  np.testing.assert_array_equal(ids, want_ids)
  np.testing.assert_array_equal(dist, np.take_along_axis(full, want_ids, axis=1))
  faiss_dist, faiss_ids = HammingIndex(db, backend="faiss").search(queries, 100)
  np.testing.assert_array_equal(faiss_dist, dist)
  np.testing.assert_array_equal(faiss_ids, ids)


@pytest.mark.parametrize("bits", [8, 13, 64])
def test_faiss_equals_jax(bits):
  rng = np.random.default_rng(bits)
  db = rng.integers(0, 2, (2000, bits))
  queries = rng.integers(0, 2, (30, bits))
  jax_index = HammingIndex(db, backend="jax", chunk=8, group=4)
  faiss_index = HammingIndex(db, backend="faiss")
  for k in (1, 50, 2000):
    jd, ji = jax_index.search(queries, k)
    fd, fi = faiss_index.search(queries, k)
    np.testing.assert_array_equal(fd, jd)
    np.testing.assert_array_equal(fi, ji)  # also the order inside ties


def test_k_larger_than_database_is_clipped_and_custom_ids_are_returned():
  db = np.array([[0, 0, 1], [1, 1, 1], [0, 0, 0]])
  ids = np.array([10, 20, 35])
  for backend in ("jax", "faiss"):
    index = HammingIndex(db, backend=backend, ids=ids)
    dist, got = index.search(np.array([[0, 0, 0]]), 10)
    np.testing.assert_array_equal(dist, [[0, 1, 3]])
    np.testing.assert_array_equal(got, [[35, 10, 20]])


def test_index_keeps_only_packed_codes():
  db = np.random.default_rng(0).integers(0, 2, (4096, 64))
  index = HammingIndex(db, chunk=32, group=16)
  assert index.memory_bytes == {"codes": 4096 * 8, "ids": 0}
  np.testing.assert_array_equal(index.packed_codes, retrieval.pack_codes(db, 32))


def test_eight_fake_devices_equal_one_device(tmp_path):
  rng = np.random.default_rng(8)
  db = rng.integers(0, 2, (5003, 24)).astype(np.uint8)  # not a multiple of 8 devices
  queries = rng.integers(0, 2, (40, 24)).astype(np.uint8)
  np.savez(tmp_path / "data.npz", db=db, queries=queries)
  script = textwrap.dedent(f"""
      import numpy as np, jax
      from iah_jax.retrieval import HammingIndex
      assert jax.device_count() == 8, jax.devices()
      data = np.load({str(tmp_path / 'data.npz')!r})
      index = HammingIndex(data["db"], chunk=8, group=4)
      assert len(index._db_words_t.sharding.device_set) == 8
      out = {{}}
      for k in (1, 50, 5003):
        out[f"d{{k}}"], out[f"i{{k}}"] = index.search(data["queries"], k)
      np.savez({str(tmp_path / 'out.npz')!r}, **out)
  """)
  env = dict(
      os.environ,
      XLA_FLAGS="--xla_force_host_platform_device_count=8",
      JAX_PLATFORMS="cpu",
      PYTHONPATH=REPO,
  )
  proc = subprocess.run(
      [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  eight = np.load(tmp_path / "out.npz")
  one = HammingIndex(db, chunk=8, group=4)
  for k in (1, 50, 5003):
    dist, ids = one.search(queries, k)
    np.testing.assert_array_equal(eight[f"d{k}"], dist)
    np.testing.assert_array_equal(eight[f"i{k}"], ids)
    want_dist, want_ids = brute_force(queries, db, k)
    np.testing.assert_array_equal(ids, want_ids)


# ------------------------------------------------------------------------------------------------
# Persistence


def test_save_load_round_trip(tmp_path):
  rng = np.random.default_rng(1)
  db = rng.integers(0, 2, (300, 20))
  ids = np.arange(300) * 3 + 7
  probs = rng.random((300, 5)).astype(np.float32)
  index = HammingIndex(db, ids=ids, label_probs=probs, metadata={"bits": 20, "run": "x"})
  path = tmp_path / "index.npz"
  index.save(path)
  for backend in ("jax", "faiss"):
    loaded = HammingIndex.load(path, backend=backend)
    np.testing.assert_array_equal(loaded.ids, ids)
    np.testing.assert_array_equal(loaded.label_probs, probs)
    assert loaded.metadata == {"bits": 20, "run": "x"}
    np.testing.assert_array_equal(loaded.packed_codes, retrieval.pack_codes(db, 32))
    queries = rng.integers(0, 2, (5, 20))
    for a, b in zip(loaded.search(queries, 17), index.search(queries, 17)):
      np.testing.assert_array_equal(a, b)


def test_load_rejects_truncated_and_foreign_files(tmp_path):
  db = np.random.default_rng(2).integers(0, 2, (500, 64))
  good = tmp_path / "good.npz"
  HammingIndex(db, label_probs=np.zeros((500, 3))).save(good)
  blob = good.read_bytes()
  cases = {
      "truncated.npz": blob[: len(blob) // 2],
      "empty.npz": b"",
      "text.npz": b"hello, I am not an index",
  }
  for name, data in cases.items():
    (tmp_path / name).write_bytes(data)
  np.save(tmp_path / "array.npy", np.zeros(3))
  np.savez(tmp_path / "other.npz", weights=np.zeros(3))
  header = {"magic": "something.else", "version": 1}
  np.savez(
      tmp_path / "magic.npz",
      header=np.frombuffer(json.dumps(header).encode(), np.uint8),
      packed_codes=np.zeros((1, 2), np.uint32),
      ids=np.zeros(1, np.int64),
  )
  for name in list(cases) + ["array.npy", "other.npz", "magic.npz"]:
    with pytest.raises(ValueError, match="index"):
      HammingIndex.load(tmp_path / name)
  with pytest.raises(FileNotFoundError):
    HammingIndex.load(tmp_path / "missing.npz")


def test_load_rejects_inconsistent_shapes(tmp_path):
  db = np.random.default_rng(3).integers(0, 2, (10, 40))
  stored = index_io.save_index(
      tmp_path / "a.npz", retrieval.pack_codes(db, 32)[:, :1], 40, np.arange(10)
  )
  assert stored is None
  with pytest.raises(ValueError, match="packed_codes"):
    HammingIndex.load(tmp_path / "a.npz")


# ------------------------------------------------------------------------------------------------
# Weighted Hamming (QaDWH)


def test_weighted_with_unit_weights_equals_plain_hamming():
  rng = np.random.default_rng(4)
  db = rng.integers(0, 2, (400, 12))  # 12 bits: many ties
  queries = rng.integers(0, 2, (15, 12))
  dist, ids = retrieval.weighted_hamming_search(queries, db, np.ones((15, 12)), 400)
  plain_dist, plain_ids = HammingIndex(db).search(queries, 400)
  np.testing.assert_array_equal(ids, plain_ids)
  np.testing.assert_array_equal(dist, plain_dist.astype(np.float32))


def test_weighted_distances_and_query_adaptive_weights_match_loops():
  rng = np.random.default_rng(5)
  db = rng.integers(0, 2, (30, 6))
  queries = rng.integers(0, 2, (4, 6))
  probs = rng.random((4, 3))
  class_weights = rng.normal(1.0, 0.1, (3, 6))
  weights = retrieval.query_adaptive_weights(probs, class_weights)
  for i in range(4):
    for bit in range(6):
      want = sum(probs[i, j] * class_weights[j, bit] for j in range(3))
      assert weights[i, bit] == pytest.approx(want, rel=1e-6)
  dist = retrieval.weighted_hamming_distances(queries, db, weights)
  for i in range(4):
    for n in range(30):
      want = sum(weights[i, bit] for bit in range(6) if queries[i, bit] != db[n, bit])
      assert dist[i, n] == pytest.approx(want, rel=1e-6)
  top_dist, top_ids = retrieval.weighted_hamming_search(queries, db, weights, 10)
  np.testing.assert_array_equal(top_ids, np.argsort(dist, axis=1, kind="stable")[:, :10])
  # Query adaptivity breaks Hamming ties: items at equal Hamming distance get distinct scores.
  assert len(np.unique(dist[0])) > len(np.unique((queries[0] != db).sum(1)))


# ------------------------------------------------------------------------------------------------
# Category-aware tables (IAH section IV)


def test_category_tables_hand_made_case():
  # 3 categories of 2-bit pieces; database of 4 items.
  db_codes = np.array(
      [
          [[0, 0], [1, 1], [0, 1]],
          [[0, 1], [1, 1], [0, 0]],
          [[1, 1], [0, 0], [0, 0]],
          [[0, 0], [0, 1], [1, 1]],
      ]
  )
  db_probs = np.array(
      [
          [0.9, 0.5, 0.0],  # item 0 in tables 0, 1
          [0.3, 0.1, 0.1],  # item 1 in table 0 only
          [0.2, 0.2, 0.19],  # item 2 in tables 0, 1 (p = 0.2 counts, 0.19 does not)
          [0.0, 0.6, 0.7],  # item 3 in tables 1, 2
      ]
  )
  tables = CategoryTables(db_codes, db_probs, threshold=0.2)
  assert tables.table_sizes() == [3, 3, 1]
  queries = np.array([[[0, 0], [1, 1], [1, 1]], [[1, 1], [0, 0], [0, 0]]])
  query_probs = np.array(
      [[0.25, 0.7, 0.05], [0.1, 0.1, 0.8]]  # searches tables 1 then 0 (by probability)
  )  # searches table 2 only
  results = tables.search(queries, query_probs, k=2)
  assert list(results[0]) == [1, 0]
  # table 1 holds items 0 ([1,1]), 2 ([0,0]), 3 ([0,1]); query piece [1,1]
  np.testing.assert_array_equal(results[0][1][0], [0, 1])
  np.testing.assert_array_equal(results[0][1][1], [0, 3])
  # table 0 holds items 0 ([0,0]), 1 ([0,1]), 2 ([1,1]); query piece [0,0]
  np.testing.assert_array_equal(results[0][0][0], [0, 1])
  np.testing.assert_array_equal(results[0][0][1], [0, 1])
  assert list(results[1]) == [2]
  np.testing.assert_array_equal(results[1][2][0], [2])  # item 3 piece [1,1] vs [0,0]
  np.testing.assert_array_equal(results[1][2][1], [3])


def test_category_tables_empty_table_is_reported():
  db_codes = np.zeros((2, 2, 3), np.uint8)
  tables = CategoryTables(db_codes, np.array([[0.9, 0.0], [0.5, 0.1]]))
  assert tables.table_sizes() == [2, 0]
  result = tables.search(np.zeros((1, 2, 3)), np.array([[0.3, 0.6]]), k=5)[0]
  assert list(result) == [1, 0]
  assert result[1][0].shape == (0,) and result[1][1].shape == (0,)
  np.testing.assert_array_equal(result[0][1], [0, 1])


# ------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_raises_clear_errors():
  db = np.random.default_rng(6).integers(0, 2, (10, 8))
  with pytest.raises(ValueError, match="only 0 and 1"):
    HammingIndex(db * 2)
  with pytest.raises(ValueError, match="only 0 and 1"):
    HammingIndex(db - 0.5)
  with pytest.raises(ValueError, match="empty"):
    HammingIndex(np.zeros((0, 8)))
  with pytest.raises(ValueError, match="2-D"):
    HammingIndex(np.zeros(8))
  with pytest.raises(ValueError, match="backend"):
    HammingIndex(db, backend="annoy")
  with pytest.raises(ValueError, match="increasing"):
    HammingIndex(db, ids=np.arange(10)[::-1])
  for backend in ("jax", "faiss"):
    index = HammingIndex(db, backend=backend)
    with pytest.raises(ValueError, match="bits"):
      index.search(np.zeros((2, 9)), 3)
    for k in (0, -1, 1.5):
      with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(np.zeros((2, 8)), k)
    with pytest.raises(ValueError, match="only 0 and 1"):
      index.search(np.full((2, 8), 3), 3)
  with pytest.raises(ValueError, match="query_weights"):
    retrieval.weighted_hamming_search(np.zeros((2, 8)), db, np.ones((2, 7)), 3)
  with pytest.raises(ValueError, match="empty"):
    retrieval.weighted_hamming_search(np.zeros((2, 8)), np.zeros((0, 8)), np.ones((2, 8)), 3)
  with pytest.raises(ValueError, match="k must"):
    retrieval.weighted_hamming_search(np.zeros((2, 8)), db, np.ones((2, 8)), 0)
  with pytest.raises(ValueError, match="db_label_probs"):
    CategoryTables(np.zeros((3, 2, 4)), np.zeros((3, 3)))
