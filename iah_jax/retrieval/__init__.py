"""Retrieval: bit packing, Hamming / weighted-Hamming search, category-aware tables.

- `pack_codes` / `unpack_codes`: {0,1} codes <-> uint8 / uint32 / uint64 words (LSB first).
- `HammingIndex(db_codes, backend="jax" | "faiss").search(query_codes, k) -> (distances, ids)`:
  exact, ties by ascending id; save / load to a no-pickle .npz.
- `weighted_hamming_search`, `query_adaptive_weights` (QaDWH): per-query bit weights.
- `CategoryTables` (IAH section IV): per-category tables, results grouped by category.
- NumPy block functions `iah_jax.metrics` ranks with: `packing.pairwise_popcount`,
  `weighted.weighted_distance_blocks`, `category_tables.passes_threshold` (`DEFAULT_THRESHOLD`).
- `code_health.code_health(codes)`: distinct codes, per-bit balance, mean bit entropy and the
  `collapsed` verdict of a code matrix (the evaluation stores it next to every result).
"""

from iah_jax.retrieval.category_tables import DEFAULT_THRESHOLD
from iah_jax.retrieval.category_tables import CategoryTables
from iah_jax.retrieval.hamming_index import HammingIndex
from iah_jax.retrieval.packing import check_codes
from iah_jax.retrieval.packing import hamming_distances_packed
from iah_jax.retrieval.packing import num_words
from iah_jax.retrieval.packing import pack_codes
from iah_jax.retrieval.packing import pairwise_popcount
from iah_jax.retrieval.packing import unpack_codes
from iah_jax.retrieval.weighted import query_adaptive_weights
from iah_jax.retrieval.weighted import weighted_hamming_distances
from iah_jax.retrieval.weighted import weighted_hamming_search
