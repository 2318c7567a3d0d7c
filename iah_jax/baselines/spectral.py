"""Spectral hashing (Weiss, Torralba & Fergus, NIPS 2008): choosing the eigenfunctions.

After PCA, each principal coordinate is modelled as uniform on its training range [a, b]. The
1-D Laplacian eigenfunctions of a uniform distribution on [a, b] are
  phi_k(x) = sin(pi/2 + k pi (x - a) / (b - a)),   eigenvalue ~ (k pi / (b - a))^2,  k = 1, 2, ...
SH takes the `bits` eigenfunctions of smallest eigenvalue over every (coordinate, mode k) pair, and
bit i is [phi_{k_i}(x_{d_i}) > 0]. Mode 1 splits a coordinate at the middle of its range; mode k
cuts it into k + 1 alternating pieces.

The candidates are enumerated exactly as the authors' trainSH.m: coordinate j contributes modes
1 .. ceil((bits + 1) (b_j - a_j) / max range) - 1, coordinate by coordinate, and a stable sort on
the eigenvalue keeps that order among equal eigenvalues.
"""

from __future__ import annotations

import math

import numpy as np


def candidate_modes(ranges: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """All (coordinate, mode) candidates of trainSH.m in enumeration order.

  Args:
    ranges: float [k] positive ranges b_j - a_j of the principal coordinates.
    bits: code length.

  Returns:
    (coordinates int64 [m], modes int64 [m], eigenvalues float64 [m]) with
    eigenvalue = (mode * pi / range)^2.
  """
  ranges = np.asarray(ranges, np.float64)
  max_modes = np.maximum(np.ceil((bits + 1) * ranges / ranges.max()).astype(np.int64), 1)
  coordinates = np.repeat(np.arange(ranges.size), max_modes - 1)
  modes = np.concatenate([np.arange(1, m, dtype=np.int64) for m in max_modes])
  eigenvalues = np.square(modes * math.pi / ranges[coordinates])
  return coordinates, modes, eigenvalues


def select_eigenfunctions(ranges: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
  """The `bits` eigenfunctions of smallest eigenvalue: (coordinates int64 [bits], modes [bits]).

  The coordinate of largest range always offers `bits` modes, so there are enough candidates.
  """
  coordinates, modes, eigenvalues = candidate_modes(ranges, bits)
  order = np.argsort(eigenvalues, kind="stable")[:bits]
  return coordinates[order], modes[order]
