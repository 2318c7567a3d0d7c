"""The run manifest: what it takes to restore a trained run without its dataset.

A run directory (``WORKDIR/q<q>_b<b>/``) holds ``checkpoints/``, ``tensorboard/`` and
``run_manifest.json``, written by `train.train` when the run starts (process 0 only; rewritten on
every start, so re-running the main job on an older workdir adds it). Serving
(`iah_jax.serving.load_model`) reads it to rebuild the model and to treat a user's photo exactly as
the evaluation treated the dataset's images. JSON fields:

- ``format`` ("iah_jax.run_manifest"), ``version`` (1), ``method``, ``semantic_bits`` (q),
  ``bits_per_category`` (b);
- ``config``: the run's whole config with ``semantic_bits`` / ``bits_per_category`` set to the
  run's single pair;
- ``dataset``: ``name``, ``num_classes``, ``class_names``, ``num_proposals``, ``image_size`` (the
  model's input side), ``stored_image`` (how the dataset stored its images before the input
  pipeline read them: ``encoding_format`` "png" | "jpeg" and ``max_side``, the longer side images
  were downscaled to, 0 = kept), ``proposal_settings`` (`iah_jax.data.prepare.ProposalSettings`
  fields: the proposal method and its options; null when the builder did not say).
"""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections

FILE_NAME = "run_manifest.json"
FORMAT = "iah_jax.run_manifest"
VERSION = 1


def manifest_path(run_dir: str) -> str:
  return os.path.join(os.fspath(run_dir), FILE_NAME)


def run_pair(config: ml_collections.ConfigDict, model) -> tuple[int, int]:
  """(q, b) of the run that trains `model`: its own semantic_bits / bits_per_category, the one it
  lacks (a method may use only one of them) taken from the config's pair holding the other."""
  model_q = getattr(model, "semantic_bits", None)
  model_b = getattr(model, "bits_per_category", None)
  pairs = [(int(q), int(b)) for q, b in zip(config.semantic_bits, config.bits_per_category)]
  for q, b in pairs:
    if (model_q is None or q == model_q) and (model_b is None or b == model_b):
      return q, b
  return (
      int(model_q) if model_q is not None else pairs[0][0],
      int(model_b) if model_b is not None else pairs[0][1],
  )


def run_config(
    config: ml_collections.ConfigDict, semantic_bits: int, bits_per_category: int
) -> ml_collections.ConfigDict:
  """A copy of `config` with the single pair (semantic_bits, bits_per_category)."""
  single = ml_collections.ConfigDict(config.to_dict())
  single.semantic_bits = (int(semantic_bits),)
  single.bits_per_category = (int(bits_per_category),)
  return single


def dataset_facts(builder, image_size: int) -> dict:
  """The facts about a prepared TFDS builder that serving needs without the dataset."""
  from iah_jax.data import features  # late: imports TensorFlow Datasets
  from iah_jax.data import prepare

  info_features = builder.info.features
  num_classes = int(info_features[features.LABELS].shape[0])
  num_proposals = int(info_features[features.PROPOSALS].shape[0])
  builder_config = builder.builder_config
  class_names = list(builder.info.metadata.get("class_names") or [])
  if len(class_names) != num_classes:
    class_names = [f"category {index}" for index in range(num_classes)]
  if hasattr(builder_config, "proposal_settings"):  # the real-dataset builders
    settings = dataclasses.asdict(builder_config.proposal_settings())
  elif builder.name == "iah_synthetic_scenes":  # generic_proposals(image, N), defaults
    settings = dataclasses.asdict(
        prepare.ProposalSettings(method="generic", num_proposals=num_proposals)
    )
  else:
    settings = None
  return {
      "name": builder.name,
      "num_classes": num_classes,
      "class_names": class_names,
      "num_proposals": num_proposals,
      "image_size": int(image_size),
      "stored_image": {
          "encoding_format": str(info_features[features.IMAGE].encoding_format),
          "max_side": int(getattr(builder_config, "image_max_side", 0) or 0),
      },
      "proposal_settings": settings,
  }


def make_manifest(config: ml_collections.ConfigDict, builder, model) -> dict:
  q, b = run_pair(config, model)
  return {
      "format": FORMAT,
      "version": VERSION,
      "method": config.method,
      "semantic_bits": q,
      "bits_per_category": b,
      "config": run_config(config, q, b).to_dict(),
      "dataset": dataset_facts(builder, config.dataset.image_size),
  }


def write(run_dir: str, config: ml_collections.ConfigDict, builder, model) -> dict | None:
  """Writes `run_dir`/run_manifest.json (process 0 only; others return None). Atomic: written
  to a temporary name, then renamed. `run_dir` may be a gs:// URL (TensorFlow's gfile)."""
  import jax  # late: keeps this module importable without initialising JAX

  if jax.process_index() != 0:
    return None
  import tensorflow as tf  # the file API of train.py (gs:// and local)

  manifest = make_manifest(config, builder, model)
  tf.io.gfile.makedirs(os.fspath(run_dir))
  path = manifest_path(run_dir)
  temporary = f"{path}.tmp{os.getpid()}"
  with tf.io.gfile.GFile(temporary, "w") as file:
    file.write(json.dumps(manifest, indent=2))
  tf.io.gfile.rename(temporary, path, overwrite=True)
  return manifest


class ManifestError(ValueError):
  """A run manifest that is missing, unreadable or of another format; the message names it."""


def read(run_dir: str) -> dict:
  """The manifest of `run_dir` (local directory), checked; raises ManifestError naming the file."""
  path = manifest_path(run_dir)
  if not os.path.isfile(path):
    raise ManifestError(
        f"{os.fspath(run_dir)} has no run manifest ({FILE_NAME}); it is written when "
        "`python -m iah_jax.main` starts training a run (re-run the main job on the same workdir "
        "to add it to a run trained before)"
    )
  try:
    with open(path) as file:
      manifest = json.load(file)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
    raise ManifestError(f"{path} is not a readable run manifest: {err}") from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise ManifestError(f"{path} is not an iah_jax run manifest")
  if manifest.get("version") != VERSION:
    raise ManifestError(
        f"{path} has manifest version {manifest.get('version')!r}; this code reads version "
        f"{VERSION}"
    )
  missing = sorted(
      {"method", "semantic_bits", "bits_per_category", "config", "dataset"} - set(manifest)
  )
  if missing:
    raise ManifestError(f"{path} lacks the field(s) {missing}")
  return manifest


def _tuples(value):
  if isinstance(value, dict):
    return {key: _tuples(item) for key, item in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(item) for item in value)
  return value


# Method options added after runs had been written, with the value those earlier runs were trained
# with (their manifests lack the key): {(method, option): value}.
OPTIONS_OF_EARLIER_RUNS = {("iah", "category_loss_mean"): "pooled"}


def config_of(manifest: dict) -> ml_collections.ConfigDict:
  """The run's config (JSON lists back to tuples, as config files write them); a method option
  the manifest predates gets the value its run was trained with (`OPTIONS_OF_EARLIER_RUNS`)."""
  config = _tuples(manifest["config"])
  method_options = config.setdefault("method_options", {})
  for (method, option), value in OPTIONS_OF_EARLIER_RUNS.items():
    method_options.setdefault(method, {}).setdefault(option, value)
  return ml_collections.ConfigDict(config)
