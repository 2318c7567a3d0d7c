"""Iterative quantisation (Gong & Lazebnik, CVPR 2011): the rotation step, in JAX.

Given zero-centred projected data V [n, q], ITQ looks for an orthogonal R [q, q] minimising the
quantisation error Q(B, R) = ||B - V R||_F^2 over B in {-1, +1}^{n x q} by alternating
  B <- sign(V R)                          (sign(0) = +1, as Gong's ITQ.m), then
  R <- W U^T where U S W^T = SVD(B^T V)   (orthogonal Procrustes),
starting from a random orthogonal matrix. Each half-step minimises Q over one argument with the
other fixed, so Q(sign(V R_t), R_t) never increases with t.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST


def random_rotation(seed: int, size: int) -> jax.Array:
  """A random orthogonal [size, size] matrix: left singular vectors of a Gaussian matrix."""
  gaussian = jax.random.normal(jax.random.PRNGKey(seed), (size, size), jnp.float32)
  left, _, _ = jnp.linalg.svd(gaussian)
  return left


def _signs(values: jax.Array) -> jax.Array:
  return jnp.where(values >= 0, 1.0, -1.0).astype(values.dtype)


def quantisation_error(projected: jax.Array, rotation: jax.Array) -> jax.Array:
  """||sign(V R) - V R||_F^2 for V [n, q] and R [q, q] -> scalar."""
  rotated = jnp.matmul(projected, rotation, precision=_HIGHEST)
  return jnp.sum(jnp.square(_signs(rotated) - rotated))


@functools.partial(jax.jit, static_argnames="iterations")
def _iterate(projected: jax.Array, rotation: jax.Array, iterations: int):
  def step(rotation, _):
    codes = _signs(jnp.matmul(projected, rotation, precision=_HIGHEST))
    left, _, right_t = jnp.linalg.svd(jnp.matmul(codes.T, projected, precision=_HIGHEST))
    rotation = jnp.matmul(right_t.T, left.T, precision=_HIGHEST)
    return rotation, quantisation_error(projected, rotation)

  rotation_final, errors = jax.lax.scan(step, rotation, None, length=iterations)
  return rotation_final, jnp.concatenate([quantisation_error(projected, rotation)[None], errors])


def fit_itq(projected, iterations: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Learns the ITQ rotation of centred projected data.

  Args:
    projected: float [n, q], zero-mean columns (PCA or CCA coordinates).
    iterations: alternating (B, R) updates; Gong & Lazebnik use 50.
    seed: seeds the random orthogonal initial rotation.

  Returns:
    (rotation float32 [q, q], errors float32 [iterations + 1]): errors[0] is the quantisation
    error of the initial rotation, errors[t] the error after t updates (non-increasing).
  """
  projected = np.asarray(projected, np.float32)
  if projected.ndim != 2 or projected.shape[0] < 1 or projected.shape[1] < 1:
    raise ValueError(f"ITQ needs projected data [n, q] with n, q >= 1, got {projected.shape}")
  if not np.all(np.isfinite(projected)):
    raise ValueError("ITQ got non-finite projected data")
  if (
      isinstance(iterations, bool)
      or not isinstance(iterations, (int, np.integer))
      or iterations < 0
  ):
    raise ValueError(f"ITQ iterations must be an integer >= 0, got {iterations!r}")
  rotation, errors = _iterate(
      jnp.asarray(projected), random_rotation(seed, projected.shape[1]), int(iterations)
  )
  return np.asarray(rotation), np.asarray(errors)
