"""Pretrained backbone weights enter an iah_jax model through ``load``, one strict merge.

The weights come from a torch-free .npz written by ``save_converted``. This module owns that
file format (``save_converted`` / ``load_converted``); two commands write it and import it from
here (convert/ depends on models/, never the other way): ``iah_jax.convert.torchvision_googlenet``
from a torchvision .pth (GoogLeNet), and ``iah_jax.convert.run_backbone`` from a trained
iah_jax run (any backbone, e.g. a classifier trained on one's own labels). The file's marker
names the backbone (``iah_jax.<backbone>.flax_variables.v1``); its feature-extractor subtree
(``features``) has the variable names of that backbone module, so it is merged as is into
``variables[collection][prefix]`` for the ``params`` and ``batch_stats`` collections.
Everything outside ``prefix`` (the hashing head) is returned untouched, i.e. as freshly
initialised.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Mapping
import zipfile
import zlib

import flax
import jax
import jax.numpy as jnp
import numpy as np

from iah_jax.errors import UserInputError

# The converted-weights file: a flat .npz of Flax variables plus a format marker naming the
# backbone (config.model.backbone) the variables belong to.
FORMAT_KEY = "__format__"
_FORMAT = re.compile(r"iah_jax\.(?P<backbone>[a-z0-9_]+)\.flax_variables\.v1")


def format_version(backbone: str) -> str:
  """The marker of a file holding `backbone`'s variables, e.g. 'iah_jax.googlenet.flax_variables.v1'."""
  marker = f"iah_jax.{backbone}.flax_variables.v1"
  if not _FORMAT.fullmatch(marker):
    raise ValueError(f"backbone name {backbone!r} must be lower-case letters, digits and '_'")
  return marker


FORMAT_VERSION = format_version("googlenet")  # the torchvision converter's files
# Subtree of the converted classifier holding the feature extractor (GoogLeNet.features).
CONVERTED_FEATURES = "features"
BACKBONE_COLLECTIONS = ("params", "batch_stats")


def flatten_variables(variables: Mapping) -> dict:
  """Nested dict -> {'collection/module/.../leaf': leaf}."""
  flat = {}
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(dict(variables))[0]:
    flat["/".join(str(key.key) for key in key_path)] = leaf
  return flat


def unflatten_variables(flat: Mapping[str, np.ndarray]) -> dict:
  """{'a/b/c': leaf} -> {'a': {'b': {'c': leaf}}}."""
  nested: dict = {}
  for name, leaf in flat.items():
    node = nested
    *parents, last = name.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[last] = leaf
  return nested


def save_converted(variables: Mapping, path: str, backbone: str = "googlenet") -> None:
  """Write `backbone`'s variables as a flat .npz with a format marker naming it (no pickle, no
  torch needed to read). Written to `path`.partial first and renamed, so an interrupted write
  never leaves a truncated file under the name."""
  flat = {name: np.asarray(leaf) for name, leaf in flatten_variables(variables).items()}
  if FORMAT_KEY in flat:
    raise ValueError(f"variable name {FORMAT_KEY!r} is reserved for the format marker")
  partial = f"{path}.partial"
  with open(partial, "wb") as file:  # a file object keeps numpy from appending '.npz' to the name
    np.savez(file, **{FORMAT_KEY: np.array(format_version(backbone))}, **flat)
  os.replace(partial, path)


def backbone_of(path: str) -> str:
  """The backbone named by the marker of a file written by ``save_converted`` (UserInputError
  as ``load_converted`` for a file it cannot read)."""
  return _read(path)[0]


def load_converted(path: str) -> dict:
  """Read a file written by ``save_converted`` -> nested {'params': ..., 'batch_stats': ...}.

  Raises:
    UserInputError naming the file when it is missing, not a .npz (e.g. a torch .pth passed
    unconverted), truncated or corrupt, or of another format.
  """
  return _read(path)[1]


def _read(path: str) -> tuple[str, dict]:
  """(backbone, nested variables) of a file written by ``save_converted``."""
  if not os.path.isfile(path):
    raise UserInputError(f"pretrained weights {path} not found (config.model.pretrained)")
  convert = (
      "write it with python -m iah_jax.convert.torchvision_googlenet --pth ... --out ... (a "
      "torchvision GoogLeNet) or python -m iah_jax.convert.run_backbone --run_dir ... --out ... "
      "(a trained run)"
  )
  try:
    with np.load(path, allow_pickle=False) as archive:
      if FORMAT_KEY not in archive.files:
        raise UserInputError(
            f"pretrained weights {path} have no {FORMAT_KEY!r} marker: not written by "
            f"save_converted; {convert}"
        )
      marker = str(archive[FORMAT_KEY])
      known = _FORMAT.fullmatch(marker)
      if known is None:
        raise UserInputError(
            f"pretrained weights {path} have format {marker!r}, this code reads "
            "'iah_jax.<backbone>.flax_variables.v1'; " + convert
        )
      flat = {name: archive[name] for name in archive.files if name != FORMAT_KEY}
  except UserInputError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
    raise UserInputError(
        f"pretrained weights {path} cannot be read as a .npz (truncated or corrupt? "
        f"{type(error).__name__}: {error}); {convert}"
    ) from None
  return known.group("backbone"), unflatten_variables(flat)


def _subtree(tree: Mapping, path: tuple[str, ...]):
  for part in path:
    if not isinstance(tree, Mapping) or part not in tree:
      return None
    tree = tree[part]
  return tree


def _set_subtree(tree: dict, path: tuple[str, ...], value) -> None:
  for part in path[:-1]:
    tree = tree[part]
  tree[path[-1]] = value


def _name_list(title: str, names: list[str], limit: int = 40) -> str:
  shown = "\n".join(f"    {name}" for name in names[:limit])
  more = f"\n    ... and {len(names) - limit} more" if len(names) > limit else ""
  return f"  {title} ({len(names)}):\n{shown}{more}"


def load(
    variables: Mapping,
    path: str,
    prefix: str = "backbone",
    dont_load: Iterable[str] = (),
    backbone: str | None = None,
) -> dict:
  """Merge converted backbone weights into a model's variables, strictly.

  Args:
    variables: the model's initialised variables, {'params': ..., 'batch_stats': ...}; the
      backbone lives under ``prefix`` ('/'-separated for a nested module, e.g. 'encoder/backbone').
    path: a file written by ``save_converted`` (e.g. by ``iah_jax.convert.torchvision_googlenet``).
    prefix: module path of the backbone inside the model.
    dont_load: regexes (``re.search``) over full target names such as
      ``params/backbone/inception5b/branch1/conv/kernel``; matching variables keep their
      initial values and are neither required from nor consumed in the file.
    backbone: the model's backbone (config.model.backbone); when given, a file of another
      backbone is refused naming both.

  Returns:
    New nested dict of variables: the backbone's params and batch_stats replaced by the file's
    (cast to each target's dtype, placed with the target's sharding), all else unchanged.

  Raises:
    ValueError listing missing (target has it, file does not), unexpected (file has it, target
    does not) and shape-mismatched names, if any; UserInputError for a file of another
    backbone.
  """
  prefix_path = tuple(part for part in prefix.split("/") if part)
  if not prefix_path:
    raise ValueError("prefix must name the backbone module, e.g. 'backbone'")
  skip_patterns = [re.compile(pattern) for pattern in dont_load]
  skipped = lambda name: any(p.search(name) for p in skip_patterns)  # noqa: E731

  file_backbone, converted = _read(path)
  if backbone is not None and file_backbone != backbone:
    raise UserInputError(
        f"pretrained weights {path} are {file_backbone!r} variables; the model's backbone is "
        f"{backbone!r} (config.model.backbone)"
    )
  merged = flax.core.unfreeze(variables)
  if not isinstance(merged, dict):
    raise ValueError(f"variables must be a (nested) mapping, got {type(variables).__name__}")

  missing, unexpected, mismatched = [], [], []
  replacements = {}
  for collection in BACKBONE_COLLECTIONS:
    source_tree = _subtree(converted, (collection, CONVERTED_FEATURES))
    target_tree = _subtree(merged, (collection,) + prefix_path)
    if collection != "params" and source_tree is None and target_tree is None:
      continue  # a backbone without batch norm (e.g. small_cnn) has no batch_stats at all
    if source_tree is None:
      raise UserInputError(
          f"pretrained weights {path} have no {collection}/{CONVERTED_FEATURES} subtree: not a "
          "converted backbone"
      )
    if target_tree is None:
      raise ValueError(
          f"variables have no {collection}/{prefix} subtree; top-level modules in "
          f"{collection}: {sorted(merged.get(collection, {}))}"
      )
    name_prefix = "/".join((collection,) + prefix_path) + "/"
    source = {name_prefix + n: v for n, v in flatten_variables(source_tree).items()}
    target = {name_prefix + n: v for n, v in flatten_variables(target_tree).items()}

    new_flat = {}
    for name, target_leaf in target.items():
      if skipped(name):
        new_flat[name] = target_leaf
      elif name not in source:
        missing.append(name)
      elif tuple(source[name].shape) != tuple(target_leaf.shape):
        mismatched.append(
            f"{name}: file {tuple(source[name].shape)}, model {tuple(target_leaf.shape)}"
        )
      else:
        new_flat[name] = _like(source[name], target_leaf)
    unexpected += [n for n in source if n not in target and not skipped(n)]
    replacements[collection] = {n[len(name_prefix) :]: v for n, v in new_flat.items()}

  if missing or unexpected or mismatched:
    parts = [f"pretrained weights in {path} do not fit variables[...]['{prefix}']:"]
    if missing:
      parts.append(_name_list("missing (in the model, not in the file)", sorted(missing)))
    if unexpected:
      parts.append(_name_list("unexpected (in the file, not in the model)", sorted(unexpected)))
    if mismatched:
      parts.append(_name_list("shape mismatches", sorted(mismatched)))
    raise UserInputError("\n".join(parts))

  for collection, flat in replacements.items():
    _set_subtree(merged, (collection,) + prefix_path, unflatten_variables(flat))
  return merged


def _like(value: np.ndarray, target_leaf) -> jax.Array:
  """value as an array with the dtype (and, for a jax.Array, the sharding) of target_leaf."""
  array = np.asarray(value).astype(target_leaf.dtype)
  sharding = getattr(target_leaf, "sharding", None)
  if isinstance(target_leaf, jax.Array) and sharding is not None:
    return jax.device_put(array, sharding)
  return jnp.asarray(array)
