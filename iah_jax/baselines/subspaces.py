"""Linear subspaces the shallow baselines project onto: PCA and regularised CCA.

NumPy in float64: these are one-off d x d eigenproblems where exactness and a deterministic
result matter more than speed (d = 1024 takes well under a second on a CPU).
"""

from __future__ import annotations

import numpy as np


def covariance(centred: np.ndarray) -> np.ndarray:
  """Sample covariance (divisor n - 1) of centred rows [n, d] -> [d, d]."""
  return centred.T @ centred / max(centred.shape[0] - 1, 1)


def principal_directions(centred: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
  """The `count` leading principal directions of centred rows [n, d].

  Returns (directions [d, count] with orthonormal columns, variances [count]), by decreasing
  variance. The sign of each direction is fixed so its largest-magnitude entry is positive
  (eigensolvers may return either sign; this keeps fits reproducible across LAPACK builds).
  """
  variances, vectors = np.linalg.eigh(covariance(centred))
  order = np.argsort(variances, kind="stable")[::-1][:count]
  return _fix_signs(vectors[:, order]), np.maximum(variances[order], 0.0)


def _inverse_sqrt(matrix: np.ndarray) -> np.ndarray:
  """matrix^(-1/2) of a symmetric positive definite matrix."""
  values, vectors = np.linalg.eigh(matrix)
  return (vectors / np.sqrt(values)) @ vectors.T


def canonical_directions(
    centred_x: np.ndarray, centred_y: np.ndarray, count: int, regularisation: float
) -> tuple[np.ndarray, np.ndarray]:
  """Regularised CCA of centred features [n, d] against centred targets [n, c].

  Solves max corr(x w, y v) with Cxx + rx I and Cyy + ry I in place of the covariances, where
  rx = regularisation * trace(Cxx) / d (likewise ry): relative to the mean variance, so the same
  setting suits features of any scale (Gong et al.'s code adds an absolute 1e-4). Directions are
  normalised to unit variance under the regularised Cxx (w' (Cxx + rx I) w = 1), found by the SVD
  of Cxx^(-1/2) Cxy Cyy^(-1/2).

  Returns (directions [d, count], correlations [count]) by decreasing canonical correlation. At
  most min(d, c) correlations are non-zero: beyond that the directions complete an orthonormal
  (in the regularised Cxx metric) basis and their correlation is 0.
  """
  d, c = centred_x.shape[1], centred_y.shape[1]
  cxx, cyy = covariance(centred_x), covariance(centred_y)
  cxy = centred_x.T @ centred_y / max(centred_x.shape[0] - 1, 1)
  # A zero-variance block (e.g. all labels constant) gets an absolute floor instead.
  rx = regularisation * (np.trace(cxx) / d if np.trace(cxx) > 0 else 1.0)
  ry = regularisation * (np.trace(cyy) / c if np.trace(cyy) > 0 else 1.0)
  whiten_x = _inverse_sqrt(cxx + rx * np.eye(d))
  whiten_y = _inverse_sqrt(cyy + ry * np.eye(c))
  left, correlations, _ = np.linalg.svd(whiten_x @ cxy @ whiten_y, full_matrices=True)
  correlations = np.concatenate([correlations, np.zeros(max(d - correlations.size, 0))])
  directions = whiten_x @ _fix_signs(left[:, :count])
  return directions, correlations[:count]


def _fix_signs(vectors: np.ndarray) -> np.ndarray:
  """Flips each column so that its entry of largest magnitude is positive."""
  pivots = vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])]
  return vectors * np.where(pivots < 0, -1.0, 1.0)
