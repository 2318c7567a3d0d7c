"""Convert a torchvision GoogLeNet state_dict (.pth) into Flax variables for iah_jax.

Conversion is an explicit table: each rule maps a torchvision key pattern to a Flax variable path
and says how to reorder axes. Keys the table ignores on purpose (BatchNorm's
``num_batches_tracked`` counters and the auxiliary classifiers ``aux1.*`` / ``aux2.*``, which
torchvision's ImageNet file contains but inference never uses) are listed as ignore rules. Any
other key with no rule, or whose target is not a variable of ``GoogLeNet``, is "unexpected"; any
variable of ``GoogLeNet`` no key provides is "missing"; either refuses the conversion with the
names listed.

The converted variables are saved as a flat ``.npz`` (names joined with '/', e.g.
``params/features/conv1/conv/kernel``) plus a format marker, loadable with ``allow_pickle=False``
and without torch; that file format lives in ``iah_jax.models.pretrained`` (``save_converted`` /
``load_converted``). torch is imported only inside ``read_state_dict``.

Command line::

    python -m iah_jax.convert.torchvision_googlenet --pth googlenet-1378be20.pth --out googlenet.npz
"""

from __future__ import annotations

import argparse
import re
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from iah_jax.models.googlenet import GoogLeNet
from iah_jax.models.pretrained import FORMAT_VERSION
from iah_jax.models.pretrained import flatten_variables
from iah_jax.models.pretrained import save_converted
from iah_jax.models.pretrained import unflatten_variables

# --- axis rules: torch array -> Flax array -------------------------------------------------


def _conv_oihw_to_hwio(array: np.ndarray) -> np.ndarray:
  if array.ndim != 4:
    raise ValueError(f"conv weight must be 4-D OIHW, got shape {array.shape}")
  return np.transpose(array, (2, 3, 1, 0))


def _linear_out_in_to_in_out(array: np.ndarray) -> np.ndarray:
  if array.ndim != 2:
    raise ValueError(f"linear weight must be 2-D (out, in), got shape {array.shape}")
  return np.transpose(array, (1, 0))


def _same(array: np.ndarray) -> np.ndarray:
  return array


# --- name rules -----------------------------------------------------------------------------
# Torch sub-module names inside an Inception block -> our Flax names (branch4.0 is the max-pool).
_INCEPTION_BRANCHES = {
    "branch1": "branch1",
    "branch2.0": "branch2_reduce",
    "branch2.1": "branch2_conv",
    "branch3.0": "branch3_reduce",
    "branch3.1": "branch3_conv",
    "branch4.1": "branch4_proj",
}
_BN_FIELDS = {  # torch BatchNorm2d entry -> (Flax collection, Flax name)
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}

_CONV_PREFIX = (
    r"(?P<block>conv[123]|inception[345][a-e]\.(?P<branch>branch1|branch[23]\.[01]|branch4\.1))"
)


def _conv_block_path(match: re.Match) -> tuple[str, ...]:
  block = match.group("block")
  if match.group("branch") is None:
    return ("features", block)
  inception, branch = block.split(".", 1)
  return ("features", inception, _INCEPTION_BRANCHES[branch])


def _conv_weight_target(match: re.Match) -> str:
  return "/".join(("params",) + _conv_block_path(match) + ("conv", "kernel"))


def _bn_target(match: re.Match) -> str:
  collection, name = _BN_FIELDS[match.group("field")]
  return "/".join((collection,) + _conv_block_path(match) + ("bn", name))


# (pattern, target path builder, axis rule); patterns are matched with re.fullmatch.
NAME_RULES: tuple[tuple[re.Pattern, Callable[[re.Match], str], Callable], ...] = (
    (re.compile(_CONV_PREFIX + r"\.conv\.weight"), _conv_weight_target, _conv_oihw_to_hwio),
    (
        re.compile(_CONV_PREFIX + r"\.bn\.(?P<field>weight|bias|running_mean|running_var)"),
        _bn_target,
        _same,
    ),
    (re.compile(r"fc\.weight"), lambda m: "params/fc/kernel", _linear_out_in_to_in_out),
    (re.compile(r"fc\.bias"), lambda m: "params/fc/bias", _same),
)

# Keys dropped on purpose, each with the reason.
IGNORE_RULES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r".*\.num_batches_tracked"), "BatchNorm step counter; Flax keeps no counter"),
    (re.compile(r"aux[12]\..*"), "auxiliary classifier, only used for ImageNet training"),
)


# --- conversion -----------------------------------------------------------------------------


def expected_variable_shapes(num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
  """Flat '/'-joined name -> shape of every ``GoogLeNet`` variable (params and batch_stats)."""
  model = GoogLeNet(num_classes=num_classes)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3), jnp.float32))
  )
  return {name: tuple(leaf.shape) for name, leaf in flatten_variables(shapes).items()}


def _format_name_list(title: str, names: list[str], limit: int = 40) -> str:
  shown = "\n".join(f"    {name}" for name in names[:limit])
  more = f"\n    ... and {len(names) - limit} more" if len(names) > limit else ""
  return f"  {title} ({len(names)}):\n{shown}{more}"


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict:
  """torchvision GoogLeNet state_dict (name -> array) -> Flax variables for ``GoogLeNet``.

  Returns nested dicts ``{'params': ..., 'batch_stats': ...}`` of float32 numpy arrays. The
  number of classes is read from ``fc.weight``. Raises ValueError listing missing, unexpected
  and shape-mismatched keys if the state_dict is not exactly a torchvision GoogLeNet.
  """
  arrays = {name: np.asarray(value) for name, value in state_dict.items()}
  if "fc.weight" not in arrays:
    raise ValueError(
        "state_dict has no 'fc.weight'; is this a torchvision GoogLeNet state_dict? "
        f"First keys: {sorted(arrays)[:10]}"
    )
  num_classes = arrays["fc.weight"].shape[0]
  expected = expected_variable_shapes(num_classes)

  flat: dict[str, np.ndarray] = {}
  provided: set[str] = set()  # targets some key maps to, including mis-shaped ones
  unexpected: list[str] = []
  shape_mismatches: list[str] = []
  for torch_name, array in arrays.items():
    if any(pattern.fullmatch(torch_name) for pattern, _ in IGNORE_RULES):
      continue
    for pattern, target_of, axis_rule in NAME_RULES:
      match = pattern.fullmatch(torch_name)
      if match:
        break
    else:
      unexpected.append(torch_name)
      continue
    target = target_of(match)
    if target not in expected or target in provided:
      unexpected.append(f"{torch_name} (-> {target})")
      continue
    provided.add(target)
    try:
      converted = axis_rule(array)
    except ValueError as error:
      shape_mismatches.append(f"{torch_name}: {error}")
      continue
    if converted.shape != expected[target]:
      shape_mismatches.append(
          f"{torch_name} -> {target}: got {converted.shape}, expected {expected[target]}"
      )
      continue
    flat[target] = converted.astype(np.float32)

  missing = sorted(set(expected) - provided)
  if missing or unexpected or shape_mismatches:
    parts = ["state_dict is not a torchvision GoogLeNet (aux_logits ignored):"]
    if missing:
      parts.append(
          _format_name_list("missing Flax variables (no torch key provides them)", missing)
      )
    if unexpected:
      parts.append(_format_name_list("unexpected torch keys", sorted(unexpected)))
    if shape_mismatches:
      parts.append(_format_name_list("shape mismatches", sorted(shape_mismatches)))
    raise ValueError("\n".join(parts))
  return unflatten_variables(flat)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Load a .pth state_dict with torch (weights_only=True, no arbitrary unpickling) as numpy."""
  import torch  # test-only / conversion-only dependency

  loaded = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
    loaded = loaded["state_dict"]
  if not isinstance(loaded, dict):
    raise ValueError(f"{path} holds a {type(loaded).__name__}, expected a state_dict (dict)")
  return {name: tensor.detach().cpu().numpy() for name, tensor in loaded.items()}


def convert_file(path: str) -> dict:
  """Read a torchvision GoogLeNet .pth and return Flax variables (see ``convert_state_dict``)."""
  return convert_state_dict(read_state_dict(path))


# --- verification -----------------------------------------------------------------------------


def classifier_logits(variables: Mapping, images_nhwc, transform_input: bool = False) -> np.ndarray:
  """Run the Flax ``GoogLeNet`` classifier in eval mode: images [B,H,W,3] -> logits [B, classes].

  images_nhwc follow torchvision's input convention (ImageNet-normalised RGB), NHWC.
  """
  num_classes = variables["params"]["fc"]["kernel"].shape[1]
  model = GoogLeNet(num_classes=num_classes, transform_input=transform_input)
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(
      variables, jnp.asarray(images_nhwc, jnp.float32)
  )
  return np.asarray(logits)


def logits_from_state_dict(path: str, images_nhwc, transform_input: bool = False) -> np.ndarray:
  """Convert a torchvision GoogLeNet .pth and run it in Flax: images [B,H,W,3] -> logits.

  This is the parity check: compare with torchvision's ``model.eval()(images_nchw)``.
  ``transform_input`` is a model setting, not stored in the state_dict; pass what the torch
  model used (torchvision's ImageNet weights use True).
  """
  return classifier_logits(convert_file(path), images_nhwc, transform_input)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--pth", required=True, help="torchvision GoogLeNet state_dict (.pth)")
  parser.add_argument("--out", required=True, help="output .npz (flat Flax variables)")
  args = parser.parse_args(argv)

  state_dict = read_state_dict(args.pth)
  ignored = [n for n in state_dict if any(p.fullmatch(n) for p, _ in IGNORE_RULES)]
  try:
    variables = convert_state_dict(state_dict)
  except ValueError as error:
    parser.exit(1, f"error: {error}\n")
  save_converted(variables, args.out)

  flat = flatten_variables(variables)
  for collection in ("params", "batch_stats"):
    names = [n for n in flat if n.startswith(collection + "/")]
    count = sum(flat[n].size for n in names)
    print(f"{collection}: {len(names)} arrays, {count:,} numbers")
  print(f"ignored torch keys: {len(ignored)} (num_batches_tracked, aux classifiers)")
  print(f"num_classes: {variables['params']['fc']['kernel'].shape[1]}")
  print(f"wrote {args.out} (format {FORMAT_VERSION})")


if __name__ == "__main__":
  main()
