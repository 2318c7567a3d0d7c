"""Checks on a run directory that need neither JAX nor the model (command lines run them first)."""

from __future__ import annotations

import os

from iah_jax import run_manifest
from iah_jax.serving.errors import ServingError

CHECKPOINTS = "checkpoints"


def _other_runs_hint(run_dir: str) -> str:
  """A hint naming the subdirectories that hold checkpoints (when given a main-job workdir)."""
  try:
    runs = sorted(
        name
        for name in os.listdir(run_dir)
        if os.path.isdir(os.path.join(run_dir, name, CHECKPOINTS))
    )
  except OSError:
    return ""
  if not runs:
    return ""
  return (
      f" It is a workdir holding the run(s) {', '.join(runs)}: pass one of them, e.g. "
      f"{os.path.join(run_dir, runs[0])}"
  )


def check_run_dir(run_dir: str) -> dict:
  """The manifest of a run directory that has a manifest and a checkpoint; ServingError else.

  Cheap (reads JSON and lists a directory), so command lines call it before importing JAX."""
  run_dir = os.fspath(run_dir)
  if not os.path.isdir(run_dir):
    raise ServingError(f"run directory {run_dir} does not exist")
  try:
    manifest = run_manifest.read(run_dir)
  except run_manifest.ManifestError as err:
    raise ServingError(f"{err}.{_other_runs_hint(run_dir)}") from None
  checkpoints = os.path.join(run_dir, CHECKPOINTS)
  steps = (
      [name for name in os.listdir(checkpoints) if name.isdigit()]
      if os.path.isdir(checkpoints)
      else []
  )
  if not steps:
    raise ServingError(
        f"run directory {run_dir} has no checkpoint ({checkpoints} holds no saved step); "
        "train it first with `python -m iah_jax.main`"
    )
  return manifest
