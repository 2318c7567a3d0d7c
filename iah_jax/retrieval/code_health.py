"""Code health: is a set of binary codes spread out, or has the hash collapsed?

A hash that gives every item (nearly) the same code makes every Hamming distance (nearly) 0, so
the ranking is the tie order (by database index under ties="stable") and its MAP / NDCG say
nothing about the codes. These figures make that visible wherever codes are evaluated (the main
job's results.json, each comparison cell, the comparison report).

`code_health(codes [n, bits]) -> dict` (JSON-ready), codes {0,1} or +-1 (a one is a value > 0):
  num_codes           n
  bits                the code length
  distinct_codes      number of distinct rows
  distinct_fraction   distinct_codes / min(n, 2 ** bits): 1 when every row that could differ does
                      (a 2-bit code over 1000 items holds at most 4 distinct codes, which is not
                      a collapse)
  bit_balance         [bits] fraction of ones of each bit
  mean_bit_entropy    mean over bits of the binary entropy H(p) = -p log2 p - (1-p) log2 (1-p) of
                      each bit's fraction of ones p, in bits (1 = balanced, 0 = constant)
  constant_bits       number of bits with one value on every row
  collapsed           the verdict, `is_collapsed` below
Thresholds (documented in the README): collapsed when only one distinct code exists (n > 1), or
distinct_fraction <= COLLAPSED_DISTINCT_FRACTION (1%: e.g. at most 15 distinct codes for 1500
items), or mean_bit_entropy < COLLAPSED_MEAN_BIT_ENTROPY (0.05 bits: almost every bit nearly
constant).
"""

from __future__ import annotations

import numpy as np

COLLAPSED_DISTINCT_FRACTION = 0.01
COLLAPSED_MEAN_BIT_ENTROPY = 0.05


def binary_entropy(p: np.ndarray) -> np.ndarray:
  """H(p) in bits, elementwise, H(0) = H(1) = 0."""
  p = np.asarray(p, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = -p * np.log2(p) - (1.0 - p) * np.log2(1.0 - p)
  return np.where((p <= 0.0) | (p >= 1.0), 0.0, terms)


def is_collapsed(distinct_codes: int, num_codes: int, distinct_fraction: float, entropy: float):
  """The collapse verdict from the figures `code_health` computes (thresholds above)."""
  if num_codes <= 1:
    return False  # one item cannot show a collapse
  return bool(
      distinct_codes <= 1
      or distinct_fraction <= COLLAPSED_DISTINCT_FRACTION
      or entropy < COLLAPSED_MEAN_BIT_ENTROPY
  )


def code_health(codes) -> dict:
  """Health figures of codes [n, bits] ({0,1} or +-1); see the module docstring."""
  codes = np.asarray(codes)
  if codes.ndim != 2:
    raise ValueError(f"codes must be [n, bits], got shape {codes.shape}")
  values = np.unique(codes)
  if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {-1, 1}):
    raise ValueError(f"codes must be {{0,1}} or +-1, got values {values[:8].tolist()}")
  num_codes, bits = codes.shape
  ones = codes > 0
  distinct = int(np.unique(ones, axis=0).shape[0]) if num_codes else 0
  balance = ones.mean(axis=0) if num_codes else np.zeros(bits)
  entropy = float(binary_entropy(balance).mean()) if bits else 0.0
  possible = min(num_codes, 2**bits) if bits < 63 else num_codes
  fraction = distinct / possible if possible else 1.0
  return {
      "num_codes": int(num_codes),
      "bits": int(bits),
      "distinct_codes": distinct,
      "distinct_fraction": float(fraction),
      "bit_balance": [float(value) for value in balance],
      "mean_bit_entropy": entropy,
      "constant_bits": int(np.sum((balance == 0.0) | (balance == 1.0))),
      "collapsed": is_collapsed(distinct, num_codes, fraction, entropy),
  }


def category_code_health(category_codes) -> dict:
  """`code_health` of category-aware codes [n, c, b] flattened to [n, c * b], plus
  `collapsed_categories`: the j whose piece [n, b] holds a single code (ranking by piece j, as
  category-aware retrieval does, is then the tie order for category j). Only that criterion
  per piece: a few-bit piece of a rare category is legitimately low in entropy."""
  category_codes = np.asarray(category_codes)
  if category_codes.ndim != 3:
    raise ValueError(f"category codes must be [n, c, b], got shape {category_codes.shape}")
  health = code_health(category_codes.reshape(category_codes.shape[0], -1))
  health["collapsed_categories"] = [
      j
      for j in range(category_codes.shape[1])
      if category_codes.shape[0] > 1
      and np.unique(category_codes[:, j, :] > 0, axis=0).shape[0] <= 1
  ]
  return health


def describe(health: dict) -> str:
  """One line for logs and report footnotes: 'N distinct codes of M (...)'."""
  return (
      f"{health['distinct_codes']} distinct codes of {health['num_codes']}, mean bit entropy "
      f"{health['mean_bit_entropy']:.3f}, {health['constant_bits']} of {health['bits']} bits "
      "constant"
  )
