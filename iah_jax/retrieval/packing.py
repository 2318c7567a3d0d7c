"""Binary codes: validation, bit packing and Hamming distances on packed words (NumPy).

Codes everywhere in iah_jax are {0,1} arrays [n, bits]. For search they are packed into unsigned
words, bit k of a code going to word k // word_bits at bit position k % word_bits (least
significant bit first); the unused high bits of the last word are zero, so XOR + popcount over the
words is exactly the Hamming distance. 1M codes of 64 bits pack into 2 uint32 words each = 8 MB.
"""

from __future__ import annotations

import numpy as np

_WORD_DTYPES = {8: np.uint8, 32: np.uint32, 64: np.uint64}


def check_codes(codes, what: str = "codes") -> np.ndarray:
  """Validates {0,1} codes [n, bits] (bool, integer or float input); returns them as uint8.

  Raises ValueError (naming `what`) for a wrong rank, zero bits or values outside {0, 1}.
  """
  codes = np.asarray(codes)
  if codes.ndim != 2:
    raise ValueError(f"{what} must be a 2-D array [n, bits] of 0/1 values, got shape {codes.shape}")
  if codes.shape[1] == 0:
    raise ValueError(f"{what} must have at least one bit, got shape {codes.shape}")
  if codes.dtype == np.bool_:
    return codes.astype(np.uint8)
  if not (np.issubdtype(codes.dtype, np.integer) or np.issubdtype(codes.dtype, np.floating)):
    raise ValueError(f"{what} must be numeric 0/1 values, got dtype {codes.dtype}")
  if np.issubdtype(codes.dtype, np.integer) and codes.size:
    # One min/max pass instead of two comparisons: 1M x 64 codes validate in ~20 ms.
    if codes.min() >= 0 and codes.max() <= 1:
      return codes.astype(np.uint8, copy=False)
  bad = (codes != 0) & (codes != 1)
  if bad.any():
    row, col = (int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
        f"{what} must contain only 0 and 1 (binarise with code = (x > 0) first); "
        f"found {codes[row, col]!r} at [{row}, {col}]"
    )
  return codes.astype(np.uint8)


def num_words(bits: int, word_bits: int = 32) -> int:
  """Number of `word_bits`-bit words that hold `bits` bits."""
  return -(-int(bits) // int(word_bits))


def pack_codes(codes, word_bits: int = 32) -> np.ndarray:
  """{0,1} codes [n, bits] -> packed words [n, ceil(bits / word_bits)] (uint8/uint32/uint64).

  Bit k lands in word k // word_bits at bit k % word_bits (LSB first); padding bits are 0.
  """
  if word_bits not in _WORD_DTYPES:
    raise ValueError(f"word_bits must be one of {sorted(_WORD_DTYPES)}, got {word_bits}")
  codes = check_codes(codes)
  n, bits = codes.shape
  words = num_words(bits, word_bits)
  padded = np.zeros((n, words * word_bits), np.uint8)
  padded[:, :bits] = codes
  # packbits with little bit order gives bytes whose bit i is code bit 8*byte + i; viewing runs of
  # bytes as little-endian words keeps that order across bytes.
  packed_bytes = np.packbits(padded, axis=1, bitorder="little")
  dtype = np.dtype(_WORD_DTYPES[word_bits]).newbyteorder("<")
  return np.ascontiguousarray(packed_bytes).view(dtype).astype(_WORD_DTYPES[word_bits])


def unpack_codes(packed, bits: int) -> np.ndarray:
  """Packed words [n, words] (uint8/uint32/uint64) -> {0,1} codes uint8 [n, bits]."""
  packed = np.asarray(packed)
  if packed.ndim != 2:
    raise ValueError(f"packed codes must be 2-D [n, words], got shape {packed.shape}")
  if packed.dtype not in (np.uint8, np.uint32, np.uint64):
    raise ValueError(f"packed codes must be uint8, uint32 or uint64 words, got {packed.dtype}")
  word_bits = packed.dtype.itemsize * 8
  if not 0 < bits <= packed.shape[1] * word_bits:
    raise ValueError(f"bits={bits} does not fit {packed.shape[1]} words of {word_bits} bits")
  little = packed.astype(packed.dtype.newbyteorder("<"))
  as_bytes = np.ascontiguousarray(little).view(np.uint8).reshape(packed.shape[0], -1)
  return np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :bits]


def pairwise_popcount(
    query_words: np.ndarray, db_words: np.ndarray, combine=np.bitwise_xor, max_count=None
) -> np.ndarray:
  """popcount(combine(q, d)) summed over the words: [b, nd] from words [b, w] and [nd, w].

  combine=np.bitwise_xor gives the Hamming distances of packed codes, np.bitwise_and the number
  of labels two packed multi-hot label rows share. The result is uint8 / uint16 when `max_count`
  (the largest possible count; default all bits of the words) allows: such keys make NumPy's
  stable argsort a radix sort, O(nd) per query. One [b, nd] temporary per word, never
  [b, nd, w], so it suits query blocks against a whole database.
  """
  if max_count is None:
    max_count = query_words.shape[1] * query_words.dtype.itemsize * 8
  dtype = np.uint8 if max_count < 256 else np.uint16 if max_count < 65536 else np.int32
  out = np.bitwise_count(combine(query_words[:, None, 0], db_words[None, :, 0])).astype(dtype)
  for w in range(1, query_words.shape[1]):
    out += np.bitwise_count(combine(query_words[:, None, w], db_words[None, :, w])).astype(dtype)
  return out


def hamming_distances_packed(query_packed, db_packed) -> np.ndarray:
  """All-pairs Hamming distances int32 [nq, nd] from packed words [nq, w] and [nd, w] (NumPy).

  A dense [nq, nd] result: call it on query blocks (see `pairwise_popcount`).
  """
  query_packed = np.asarray(query_packed)
  db_packed = np.asarray(db_packed)
  if query_packed.shape[1:] != db_packed.shape[1:] or query_packed.dtype != db_packed.dtype:
    raise ValueError(
        f"packed query {query_packed.shape} {query_packed.dtype} and database "
        f"{db_packed.shape} {db_packed.dtype} words do not match"
    )
  return pairwise_popcount(query_packed, db_packed).astype(np.int32)
