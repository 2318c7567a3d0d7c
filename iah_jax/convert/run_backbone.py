"""Export a trained run's backbone as pretrained weights for other runs (`config.model.pretrained`).

The papers' protocol starts every deep method from one network trained for classification
(ImageNet) and hashes that network's features with the shallow baselines. Where no such weights
exist (this project's small backbones, or a domain far from ImageNet), a classifier trained on
one's own training split plays that role: train it (e.g. the `category_baseline` method), export
its backbone with this command, and pass the file as ``--config.model.pretrained``; `compare` then
fine-tunes every deep method from it and hashes its features for the shallow baselines.

The file is the format of ``iah_jax.models.pretrained`` (``save_converted``) with the run's
backbone named in its marker, so it loads only into a model of the same backbone (and, by the
strict merge, the same backbone options).

Command line::

    python -m iah_jax.convert.run_backbone --run_dir WORKDIR/q32_b8 --out backbone.npz
"""

from __future__ import annotations

import argparse

import numpy as np

from iah_jax.errors import UserInputError
from iah_jax.models.pretrained import CONVERTED_FEATURES
from iah_jax.models.pretrained import flatten_variables
from iah_jax.models.pretrained import format_version
from iah_jax.models.pretrained import save_converted


def export(run_dir: str, out: str) -> dict:
  """Restore the run in `run_dir` (its best checkpoint when it has a validation split, as the
  evaluation uses) and write its backbone's variables to `out`.

  Returns a summary: backbone, step, arrays and numbers per collection.
  Raises ServingError (a UserInputError) for a missing or damaged run directory.
  """
  from iah_jax.serving.encoder import load_model  # pylint: disable=g-import-not-at-top

  encoder = load_model(run_dir)
  backbone = encoder.config.model.backbone
  variables = encoder.backbone_variables()
  save_converted(
      {collection: {CONVERTED_FEATURES: tree} for collection, tree in variables.items()},
      out,
      backbone=backbone,
  )
  summary = {"backbone": backbone, "step": encoder.step, "method": encoder.method}
  for collection, tree in variables.items():
    leaves = flatten_variables(tree)
    summary[collection] = (len(leaves), int(sum(np.size(leaf) for leaf in leaves.values())))
  return summary


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run_dir", required=True, help="a trained run: WORKDIR/q<q>_b<b>")
  parser.add_argument("--out", required=True, help="output .npz (config.model.pretrained)")
  args = parser.parse_args(argv)
  try:
    summary = export(args.run_dir, args.out)
  except UserInputError as error:
    parser.exit(2, f"error: {error}\n")
  for collection in ("params", "batch_stats"):
    arrays, numbers = summary[collection]
    print(f"{collection}: {arrays} arrays, {numbers:,} numbers")
  print(
      f"wrote {args.out}: the {summary['method']} run's {summary['backbone']} backbone at step "
      f"{summary['step']} (format {format_version(summary['backbone'])})"
  )


if __name__ == "__main__":
  main()
