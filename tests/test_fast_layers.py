"""Layers written for XLA:CPU's speed must compute what the plain versions compute: the small
CNN's reshape max-pool (vs nn.max_pool) and the narrow-FC dot_general (vs lax.dot_general)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iah_jax.models import small_cnn
from iah_jax.ops import dense


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 7, 9, 2)])  # odd sizes drop the last row/col
def test_max_pool_2x2_matches_flax_values_and_gradients(shape):
  rng = np.random.default_rng(0)
  features = jnp.asarray(rng.normal(size=shape).astype(np.float32))  # no ties
  weights = jnp.asarray(rng.normal(size=(shape[0], shape[1] // 2, shape[2] // 2, shape[3])))
  ours = lambda x: jnp.sum(small_cnn.max_pool_2x2(x) * weights)
  flax_pool = lambda x: jnp.sum(nn.max_pool(x, (2, 2), strides=(2, 2)) * weights)
  np.testing.assert_array_equal(
      small_cnn.max_pool_2x2(features), nn.max_pool(features, (2, 2), strides=(2, 2))
  )
  np.testing.assert_allclose(jax.grad(ours)(features), jax.grad(flax_pool)(features), atol=1e-6)


def test_max_pool_2x2_against_loops():
  rng = np.random.default_rng(1)
  features = rng.normal(size=(1, 5, 6, 2)).astype(np.float32)
  expected = np.zeros((1, 2, 3, 2), np.float32)
  for i in range(2):
    for j in range(3):
      for c in range(2):
        expected[0, i, j, c] = features[0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, c].max()
  np.testing.assert_array_equal(small_cnn.max_pool_2x2(jnp.asarray(features)), expected)


@pytest.mark.parametrize("input_shape", [(6, 5, 7), (11, 7)])
def test_row_reduce_dot_general_matches_lax_values_and_gradients(input_shape):
  rng = np.random.default_rng(2)
  inputs = jnp.asarray(rng.normal(size=input_shape).astype(np.float32))
  kernel = jnp.asarray(rng.normal(size=(input_shape[-1], 3)).astype(np.float32))
  cotangent = jnp.asarray(rng.normal(size=input_shape[:-1] + (3,)).astype(np.float32))
  numbers = (((inputs.ndim - 1,), (0,)), ((), ()))

  def loss(dot_general):
    return lambda x, w: jnp.sum(dot_general(x, w, numbers) * cotangent)

  np.testing.assert_allclose(
      dense.row_reduce_dot_general(inputs, kernel, numbers),
      jax.lax.dot_general(inputs, kernel, numbers),
      rtol=1e-6,
  )
  ours = jax.grad(loss(dense.row_reduce_dot_general), argnums=(0, 1))(inputs, kernel)
  plain = jax.grad(loss(jax.lax.dot_general), argnums=(0, 1))(inputs, kernel)
  for got, want in zip(ours, plain):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The kernel gradient against a loop over rows: sum_r x_r g_r^T.
  rows, grads = np.asarray(inputs).reshape(-1, input_shape[-1]), np.asarray(cotangent).reshape(
      -1, 3
  )
  expected = sum(np.outer(rows[r], grads[r]) for r in range(rows.shape[0]))
  np.testing.assert_allclose(ours[1], expected, rtol=1e-5, atol=1e-5)


def test_dense_layer_with_the_fast_dot_has_the_same_parameters_and_outputs():
  inputs = jnp.asarray(np.random.default_rng(3).normal(size=(4, 9, 16)).astype(np.float32))
  plain = nn.Dense(5)
  fast = nn.Dense(5, dot_general=dense.row_reduce_dot_general)
  variables = plain.init(jax.random.PRNGKey(0), inputs)
  assert jax.tree.structure(variables) == jax.tree.structure(
      fast.init(jax.random.PRNGKey(0), inputs)
  )
  np.testing.assert_allclose(
      fast.apply(variables, inputs), plain.apply(variables, inputs), rtol=1e-5, atol=1e-6
  )
