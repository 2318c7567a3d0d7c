"""Retrieval: bit packing, Hamming / weighted-Hamming search, category-aware tables."""

from iah_jax.retrieval.packing import check_codes
from iah_jax.retrieval.packing import hamming_distances_packed
from iah_jax.retrieval.packing import num_words
from iah_jax.retrieval.packing import pack_codes
from iah_jax.retrieval.packing import unpack_codes
from iah_jax.retrieval.hamming_index import HammingIndex
