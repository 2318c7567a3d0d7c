"""Compile once per input shape, visibly.

`ShapeCompiled(jitted, name)` calls a `jax.jit` function through ahead-of-time compiled
executables (`jitted.lower(*args).compile()`), one per input signature (pytree structure, shapes,
dtypes, shardings). The first compile of a function is logged at INFO, any later one (a new
signature: a recompile) at WARNING with the signature that changed, and compile time is charged
to the "compile" phase of `iah_jax.phases`, so a job's report shows what compiling cost and a
recompile between train or evaluation batches cannot go unnoticed. Calls with a known signature
go straight to the compiled executable.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import jax

from iah_jax import phases

logger = logging.getLogger("iah_jax")

COMPILE_PHASE = "compile"


def _leaf_signature(leaf: Any):
  shape = getattr(leaf, "shape", None)
  if shape is None:  # a Python scalar: its type decides the traced dtype
    return type(leaf).__name__
  return (
      tuple(shape),
      str(leaf.dtype),
      bool(getattr(leaf, "weak_type", False)),
      getattr(leaf, "sharding", None),
  )


def signature(args: tuple) -> tuple:
  """Hashable (pytree structure, per-leaf shape / dtype / weak type / sharding) of `args`."""
  leaves, treedef = jax.tree.flatten(args)
  return treedef, tuple(_leaf_signature(leaf) for leaf in leaves)


def describe(args: tuple) -> str:
  """Shapes and dtypes of the array leaves of `args`, for log messages."""
  leaves = jax.tree.leaves(args)
  shapes = [
      f"{leaf.dtype}{list(leaf.shape)}"
      for leaf in leaves
      if getattr(leaf, "shape", None) is not None
  ]
  if len(shapes) > 8:
    shapes = shapes[:4] + [f"... {len(shapes) - 8} more ..."] + shapes[-4:]
  return ", ".join(shapes)


class ShapeCompiled:
  """A jitted function compiled ahead of time once per input signature (module docstring).

  Attributes:
    name: used in the log messages.
    compiles: how many signatures have been compiled.
  """

  def __init__(self, jitted: Callable, name: str):
    self._jitted = jitted
    self.name = name
    self._executables: dict[tuple, Any] = {}
    self.compiles = 0

  def __call__(self, *args):
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args)):
      # Traced by an outer transformation (eval_shape, jit, vmap): compiled executables cannot
      # take tracers, and the outer transformation compiles the whole anyway.
      return self._jitted(*args)
    key = signature(args)
    executable = self._executables.get(key)
    if executable is None:
      executable = self._compile(key, args)
    return executable(*args)

  def _compile(self, key: tuple, args: tuple):
    if self._executables:
      logger.warning(
          "%s: recompiling for a new input signature (compile %d): %s",
          self.name,
          self.compiles + 1,
          describe(args),
      )
    else:
      logger.info("%s: compiling for %s", self.name, describe(args))
    with phases.phase(COMPILE_PHASE):
      executable = self._jitted.lower(*args).compile()
    self._executables[key] = executable
    self.compiles += 1
    return executable

  def eval_shape(self, *args):
    """Output shapes and dtypes of the wrapped function (`jax.eval_shape`), compiling nothing."""
    return jax.eval_shape(self._jitted, *args)

  def lower(self, *args):
    """The wrapped function's `lower` (benchmarks and tests inspect the compiled HLO)."""
    return self._jitted.lower(*args)
