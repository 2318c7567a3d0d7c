"""Compile once per input signature, and say so (iah_jax.compilation)."""

import logging

import jax
import jax.numpy as jnp
import numpy as np

from iah_jax import compilation
from iah_jax import phases


def test_compiles_once_per_shape_and_logs_only_new_shapes(caplog):
  traces = []

  def double(x):
    traces.append(x.shape)
    return 2 * x

  step = compilation.ShapeCompiled(jax.jit(double), "double_step")
  with caplog.at_level(logging.INFO, logger="iah_jax"):
    for _ in range(3):
      np.testing.assert_array_equal(step(jnp.ones((4, 2))), 2 * np.ones((4, 2)))
  assert step.compiles == 1 and traces == [(4, 2)]
  messages = [record for record in caplog.records if "double_step" in record.getMessage()]
  assert len(messages) == 1 and messages[0].levelno == logging.INFO
  assert "float32[4, 2]" in messages[0].getMessage()

  caplog.clear()
  with caplog.at_level(logging.INFO, logger="iah_jax"):
    np.testing.assert_array_equal(step(jnp.ones((3, 2))), 2 * np.ones((3, 2)))  # new shape
    step(jnp.ones((3, 2)))
    step(jnp.ones((4, 2)))  # known again
  assert step.compiles == 2 and traces == [(4, 2), (3, 2)]
  warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
  assert len(warnings) == 1
  assert "recompiling" in warnings[0].getMessage() and "float32[3, 2]" in warnings[0].getMessage()


def test_dtype_and_pytree_structure_are_part_of_the_signature():
  step = compilation.ShapeCompiled(jax.jit(lambda tree: jax.tree.map(lambda x: x + 1, tree)), "s")
  step({"a": jnp.ones(2)})
  step({"a": jnp.ones(2, jnp.int32)})
  step({"a": jnp.ones(2), "b": jnp.ones(2)})
  step({"a": jnp.ones(2)})
  assert step.compiles == 3


def test_donation_and_results_match_plain_jit():
  def update(state, batch):
    return state + batch.sum(), state * 2

  jitted = jax.jit(update, donate_argnums=0)
  step = compilation.ShapeCompiled(jax.jit(update, donate_argnums=0), "update")
  expected = jitted(jnp.arange(3.0), jnp.ones((2, 3)))
  state = jnp.arange(3.0)
  result = step(state, jnp.ones((2, 3)))
  for got, want in zip(result, expected):
    np.testing.assert_array_equal(got, want)
  assert state.is_deleted()  # the state was donated, as with jax.jit(donate_argnums=0)


def test_compile_time_is_charged_to_the_compile_phase():
  timer = phases.default_timer()
  before = timer.totals.get(compilation.COMPILE_PHASE, phases.PhaseTotals()).count
  step = compilation.ShapeCompiled(jax.jit(lambda x: jnp.sin(x) * 3), "sin_step")
  step(jnp.ones(5))
  step(jnp.ones(5))
  assert timer.totals[compilation.COMPILE_PHASE].count == before + 1


def test_traced_calls_and_eval_shape_compile_nothing():
  step = compilation.ShapeCompiled(jax.jit(lambda x: (2 * x).astype(jnp.int32)), "traced")
  shapes = step.eval_shape(jnp.ones((5, 3)))
  assert shapes.shape == (5, 3) and shapes.dtype == jnp.int32
  # Inside an outer transformation the step runs traced (an executable cannot take tracers).
  outer = jax.jit(lambda x: step(x) + 1)
  np.testing.assert_array_equal(outer(jnp.ones((2, 2))), 3 * np.ones((2, 2), np.int32))
  assert jax.eval_shape(step, jnp.ones((4,))).shape == (4,)
  assert step.compiles == 0
