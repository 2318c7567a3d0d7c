"""Checkpoints that survive kills, NaNs and damaged files: guarded saves, sealed steps, verified
restores that fall back past damaged steps.

What orbax 0.12.8 writes for one step of `StandardSave(state)` through a CheckpointManager:
`<step>/_CHECKPOINT_METADATA` (JSON: item handlers, custom metadata, timestamps) and the item
`<step>/default/`: `_METADATA` (the tree: every array's name, shape, dtype), `_sharding`,
`array_metadatas/`, `manifest.ocdbt` and OCDBT (TensorStore's B-tree key-value store) data
files under `d/` and `ocdbt.process_<i>/d/` holding the zarr chunks of every array (with a
best-by-metric manager also `<step>/metrics/`). A truncated data file makes orbax fail with a
long TensorStore traceback; overwritten bytes may load silently as garbage or NaN. Hence:

- `Saver.save` refuses a state with any NaN/Inf array (`NonFiniteStateError`, naming the step,
  the array and the last checkpoint, which is finite), so a diverged run never rotates finite
  checkpoints out; once a save has completed (orbax saves asynchronously) the step is sealed
  with `SEAL_FILE`: the size and SHA-256 of every file in its directory.
- `restore` takes the newest step (or the best by a metric) and verifies it: every sealed file
  present with its size and hash, the saved tree's names, shapes and dtypes those of the state
  (a different model is a `CheckpointError`, not damage), orbax reads it, every value finite.
  A damaged step is reported with a warning naming the step and the file and, once an intact
  step is found, moved to `<run>/damaged_checkpoints/` (so training can save that step again);
  if no step is intact, `CheckpointError` lists them and nothing is moved or overwritten. A step
  without a seal (saved before seals existed, or killed between the save and its seal) is
  checked for shapes and finite values only, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

from etils import epath
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from iah_jax.errors import RunError

logger = logging.getLogger("iah_jax")

SEAL_FILE = "iah_sha256.json"
DAMAGED_DIR = "damaged_checkpoints"  # beside the checkpoints directory, outside orbax's view
_ITEM = ocp.checkpoint_manager.DEFAULT_ITEM_NAME  # the single-item manager's item directory


class CheckpointError(RunError):
  """No intact checkpoint, or a checkpoint of a different model; the message says which."""


class NonFiniteStateError(RunError, FloatingPointError):
  """A state about to be saved holds NaN or Inf; the message names the step and the array."""


def _gfile():
  import tensorflow as tf  # gfile reads and writes local paths and gs:// alike

  return tf.io.gfile


# ----------------------------------------------------------------------------- finite values


@jax.jit
def _finite_leaves(leaves: list) -> jax.Array:
  """bool [len(leaves)]: whether every value of each leaf is finite."""
  return jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])


def leaf_name(path) -> str:
  """A tree path as a dotted name, e.g. `params.backbone.Conv_0.kernel` (orbax's spelling)."""
  parts = []
  for key in path:
    for attribute in ("key", "name", "idx"):
      if hasattr(key, attribute):
        parts.append(str(getattr(key, attribute)))
        break
    else:
      parts.append(str(key))
  return ".".join(parts)


def non_finite_leaves(tree: Any) -> list[str]:
  """The names of the floating-point leaves of `tree` holding a NaN or an Inf."""
  named = [
      (leaf_name(path), leaf)
      for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
      if jnp.issubdtype(leaf.dtype, jnp.inexact)
  ]
  if not named:
    return []
  finite = jax.device_get(_finite_leaves([leaf for _, leaf in named]))
  return [name for (name, _), ok in zip(named, finite) if not ok]


# ----------------------------------------------------------------------------- seals


def step_directory(manager: ocp.CheckpointManager, step: int) -> str:
  """Where `manager` keeps `step` (train.checkpoint_manager sets no step prefix)."""
  return os.path.join(str(manager.directory), str(step))


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with _gfile().GFile(path, "rb") as file:
    while chunk := file.read(1 << 20):
      digest.update(chunk)
  return digest.hexdigest()


def _files(step_dir: str) -> dict[str, str]:
  """{path relative to step_dir: full path} of every file under step_dir but the seal."""
  found = {}
  for directory, _, names in _gfile().walk(step_dir):
    for name in names:
      full = os.path.join(directory, name)
      relative = os.path.relpath(full, step_dir)
      if relative != SEAL_FILE:
        found[relative] = full
  return found


def seal(step_dir: str) -> None:
  """Writes SEAL_FILE into a completed step directory: {file: {"bytes", "sha256"}}."""
  gfile = _gfile()
  entries = {
      relative: {"bytes": gfile.stat(full).length, "sha256": _sha256(full)}
      for relative, full in sorted(_files(step_dir).items())
  }
  partial = os.path.join(step_dir, SEAL_FILE + ".partial")  # a seal is complete or absent
  with gfile.GFile(partial, "w") as file:
    file.write(json.dumps({"files": entries}, indent=1))
  gfile.rename(partial, os.path.join(step_dir, SEAL_FILE), overwrite=True)


def check_seal(step_dir: str) -> tuple[bool, str | None]:
  """(whether step_dir is sealed, what differs from its seal or None)."""
  gfile = _gfile()
  seal_path = os.path.join(step_dir, SEAL_FILE)
  if not gfile.exists(seal_path):
    return False, None
  try:
    with gfile.GFile(seal_path) as file:
      expected = json.loads(file.read())["files"]
  except (ValueError, KeyError) as error:
    return True, f"its seal {SEAL_FILE} is unreadable ({error})"
  present = _files(step_dir)
  for relative, entry in expected.items():
    if relative not in present:
      return True, f"file {relative} is missing"
    size = gfile.stat(present[relative]).length
    if size != entry["bytes"]:
      return True, f"file {relative} has {size} bytes, {entry['bytes']} when saved"
    if _sha256(present[relative]) != entry["sha256"]:
      return True, f"file {relative} changed since it was saved (SHA-256 differs)"
  return True, None


# ----------------------------------------------------------------------------- saving


class Saver:
  """Saves finite states through `manager` and seals each step once its save completed."""

  def __init__(self, manager: ocp.CheckpointManager):
    self.manager = manager
    self._unsealed: list[int] = []

  def save(
      self,
      step: int,
      state: Any,
      *,
      metrics: dict | None = None,
      custom_metadata: dict | None = None,
  ) -> None:
    """Saves `state` as `step`; raises NonFiniteStateError (saving nothing) if it is not finite."""
    bad = non_finite_leaves(state)
    if bad:
      raise NonFiniteStateError(
          f"the state of step {step} holds NaN or Inf in {', '.join(bad[:5])}"
          f"{' ...' if len(bad) > 5 else ''}; it is not saved. {last_checkpoint_note(self)}"
      )
    # orbax's save waits for the previous one anyway; waiting first seals it before this begins.
    self.seal_finished(wait=True)
    self.manager.save(
        step,
        args=ocp.args.StandardSave(state),
        metrics=metrics,
        custom_metadata=custom_metadata,
        force=True,
    )
    self._unsealed.append(step)

  @property
  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def seal_finished(self, wait: bool = False) -> None:
    """Seals the saved steps whose (asynchronous) save has completed; with `wait`, waits."""
    if not self._unsealed:
      return
    if wait:
      self.manager.wait_until_finished()
    elif self.manager.is_saving_in_progress():
      return
    if jax.process_index() == 0:  # the files of every process are in place once it completed
      for step in self._unsealed:
        step_dir = step_directory(self.manager, step)
        if _gfile().isdir(step_dir):  # else rotated out already (not among the best)
          seal(step_dir)
    self._unsealed = []

  def close(self) -> None:
    """Waits for the last save, seals it and closes the manager."""
    self.seal_finished(wait=True)
    self.manager.close()


def last_checkpoint_note(saver: Saver) -> str:
  """A sentence naming the last (finite) checkpoint, for the errors of a diverged run."""
  step = saver.latest_step
  if step is None:
    return "No checkpoint was saved yet."
  return (
      f"Checkpoints are saved only from finite states: the last one is step {step} in "
      f"{saver.manager.directory}. A rerun resumes there and, training being deterministic, "
      "meets this step again unless the learning rate or the data change."
  )


# ----------------------------------------------------------------------------- restoring


def _saved_arrays(step_dir: str) -> dict[str, tuple[tuple, str]]:
  """{array name: (shape, dtype)} as the step's tree metadata records them."""
  tree = ocp.StandardCheckpointHandler().metadata(epath.Path(step_dir) / _ITEM)
  return {
      leaf.name: (tuple(leaf.shape), str(leaf.dtype))
      for leaf in jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, "shape"))
  }


def _model_mismatch(saved: dict, abstract: Any) -> str | None:
  """What differs between the saved arrays and the state's, or None."""
  wanted = {
      leaf_name(path): (tuple(leaf.shape), str(leaf.dtype))
      for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]
  }
  problems = [f"{name} is not in the checkpoint" for name in sorted(set(wanted) - set(saved))]
  problems += [f"{name} is not in this model" for name in sorted(set(saved) - set(wanted))]
  problems += [
      f"{name} is {saved[name][1]}{list(saved[name][0])} in the checkpoint, "
      f"{wanted[name][1]}{list(wanted[name][0])} in this model"
      for name in sorted(set(saved) & set(wanted))
      if saved[name] != wanted[name]
  ]
  if not problems:
    return None
  return "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")


def _candidates(manager: ocp.CheckpointManager, metric: str | None) -> list[int]:
  """The steps, newest first, or with `metric` best first (ties: newest first)."""
  steps = sorted(manager.all_steps(), reverse=True)
  if metric is None:
    return steps

  def score(step):
    try:
      value = (manager.metrics(step) or {}).get(metric)
    except Exception:  # pylint: disable=broad-except  unreadable metrics: a damaged step
      value = None
    return (value is not None, value if value is not None else 0.0, step)

  return sorted(steps, key=score, reverse=True)


def _restore_step(manager: ocp.CheckpointManager, step: int, abstract: Any) -> tuple[Any, str]:
  """(restored state or None, the damage found or the warning for an unsealed step or "")."""
  step_dir = step_directory(manager, step)
  sealed, damage = check_seal(step_dir)
  if damage:
    return None, damage
  try:
    saved = _saved_arrays(step_dir)
  except Exception as error:  # pylint: disable=broad-except  orbax/TensorStore raise many kinds
    return None, f"its tree metadata is unreadable ({type(error).__name__}: {_first_line(error)})"
  mismatch = _model_mismatch(saved, abstract)
  if mismatch:
    raise CheckpointError(
        f"checkpoint step {step} in {manager.directory} was saved from a different model than "
        f"this config builds: {mismatch}. Use another workdir, or the config it was trained with."
    )
  try:
    restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as error:  # pylint: disable=broad-except
    return None, f"orbax cannot read it ({type(error).__name__}: {_first_line(error)})"
  bad = non_finite_leaves(restored)
  if bad:
    return None, f"it holds NaN or Inf in {', '.join(bad[:5])}"
  if sealed:
    return restored, ""
  return restored, (
      f"checkpoint step {step} in {manager.directory} has no {SEAL_FILE} (saved by an older "
      "version, or killed between its save and its seal): only its shapes and finite values "
      "were checked"
  )


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return (text.splitlines() or [""])[0][:300]


def restore(manager: ocp.CheckpointManager, state: Any, *, metric: str | None = None) -> Any:
  """The newest intact checkpoint (with `metric`, the best intact by it) restored into
  `state`'s structure and shardings, or None when there is no checkpoint.

  Damaged steps met before it are reported and moved to `damaged_checkpoints/` beside the
  checkpoints directory; CheckpointError when none is intact (nothing moved) or when a
  checkpoint holds a different model.
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  damaged: list[tuple[int, str]] = []
  for step in _candidates(manager, metric):
    restored, note = _restore_step(manager, step, abstract)
    if restored is None:
      logger.warning("checkpoint step %d in %s is damaged: %s", step, manager.directory, note)
      damaged.append((step, note))
      continue
    if note:
      logger.warning("%s", note)
    if damaged:
      _move_aside(manager, [bad_step for bad_step, _ in damaged])
      logger.warning(
          "fell back to checkpoint step %d; the damaged steps %s are in %s",
          step,
          [bad_step for bad_step, _ in damaged],
          _damaged_directory(manager),
      )
    return restored
  if damaged:
    listing = "; ".join(f"step {step}: {note}" for step, note in damaged)
    raise CheckpointError(
        f"no intact checkpoint in {manager.directory} ({listing}). Nothing was moved or "
        "overwritten: restore the files, or move the directory away to train from step 0."
    )
  return None


def _damaged_directory(manager: ocp.CheckpointManager) -> str:
  return os.path.join(os.path.dirname(str(manager.directory).rstrip("/")), DAMAGED_DIR)


def _move_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  """Moves damaged steps out of the manager's directory (so their steps can be saved again)."""
  if jax.process_index() == 0:
    gfile = _gfile()
    target_root = _damaged_directory(manager)
    gfile.makedirs(target_root)
    for step in steps:
      target, copy = os.path.join(target_root, str(step)), 1
      while gfile.exists(target):  # damaged twice: keep both
        target, copy = os.path.join(target_root, f"{step}.{copy}"), copy + 1
      gfile.rename(step_directory(manager, step), target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("iah_jax.checkpoints.move_aside")
  manager.reload()
