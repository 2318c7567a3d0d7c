"""One entry point from a dataset name in a config to a prepared TFDS builder.

    builder = get_builder("voc2007", data_dir="~/tensorflow_datasets",
                          data_path="/data/VOCdevkit", num_proposals=100)
    builder.as_dataset(split="train")   # splits: "train" (database / training), "test" (queries)

Names: "voc2007", "voc2012", "mirflickr25k", "coco2014", "coco2017", "nuswide", "image_list",
"miml" (options: the fields of the dataset's BuilderConfig, e.g. :class:`iah_jax.data.voc.VocConfig`;
an unknown option is an error), and "synthetic_scenes" (the embedded dataset, handed to
:func:`iah_jax.data.synthetic_scenes.load_builder`).

The config name under ``data_dir`` is derived from the dataset name and a hash of every config field
that changes the data, defaults included (``data_path`` made absolute; not ``num_workers`` /
``progress`` / ``proposal_cache_dir``), so the same options find the same prepared files and different options
never overwrite each other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os

import tensorflow_datasets as tfds

# name -> (module, builder class, config class, options fixed by the name)
_DATASETS = {
    "voc2007": ("iah_jax.data.voc", "IahVoc", "VocConfig", {"year": "2007"}),
    "voc2012": ("iah_jax.data.voc", "IahVoc", "VocConfig", {"year": "2012"}),
    "mirflickr25k": ("iah_jax.data.mirflickr", "IahMirflickr", "MirflickrConfig", {}),
    "coco2014": ("iah_jax.data.coco", "IahCoco", "CocoConfig", {"year": "2014"}),
    "coco2017": ("iah_jax.data.coco", "IahCoco", "CocoConfig", {"year": "2017"}),
    "nuswide": ("iah_jax.data.nuswide", "IahNusWide", "NusWideConfig", {}),
    "image_list": ("iah_jax.data.image_list", "IahImageList", "ImageListConfig", {}),
    "miml": ("iah_jax.data.miml", "IahMiml", "MimlConfig", {}),
}
# ---- synthetic_scenes: the embedded dataset, written by another module ----------------------
# Handled lazily in get_builder by iah_jax.data.synthetic_scenes.load_builder(data_dir, config).
SYNTHETIC_SCENES = "synthetic_scenes"
# ----------------------------------------------------------------------------------------------

DATASET_NAMES = tuple(_DATASETS) + (SYNTHETIC_SCENES,)
# Options that change how preparation runs, not what it produces.
_RUN_ONLY_OPTIONS = ("num_workers", "progress", "proposal_cache_dir")
# BuilderConfig's own fields; the registry sets them.
_RESERVED = ("name", "version", "release_notes", "supported_versions", "description", "tags")


def _canonical(value):
  if isinstance(value, (list, tuple)):
    return [_canonical(v) for v in value]
  return value


def config_name(name: str, options: dict) -> str:
  """'<name>-<12 hex digits>' from the options that change the prepared data (all but run-only)."""
  identity = {k: _canonical(v) for k, v in sorted(options.items()) if k not in _RUN_ONLY_OPTIONS}
  digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
  return f"{name}-{digest[:12]}"


def make_config(name: str, **options):
  """The BuilderConfig of dataset ``name`` with ``options`` (validated, not prepared)."""
  if name not in _DATASETS:
    raise ValueError(f"unknown dataset {name!r}; known: {list(DATASET_NAMES)}")
  module_name, _, config_class_name, fixed = _DATASETS[name]
  config_class = getattr(importlib.import_module(module_name), config_class_name)
  allowed = {f.name for f in dataclasses.fields(config_class)} - set(_RESERVED)
  unknown = sorted(set(options) - allowed)
  if unknown:
    raise ValueError(
        f"unknown option(s) {unknown} for dataset {name!r}; allowed: {sorted(allowed)}"
    )
  for key, value in fixed.items():
    if key in options and options[key] != value:
      raise ValueError(f"dataset {name!r} fixes {key}={value!r}; got {key}={options[key]!r}")
  options = {**options, **fixed}
  if options.get("data_path"):
    options["data_path"] = os.path.abspath(os.path.expanduser(os.fspath(options["data_path"])))
  for key, value in options.items():
    if isinstance(value, list):  # dataclass fields hold tuples (hashable, immutable)
      options[key] = tuple(value)
  config = config_class(name=name, **options)
  # Every field enters the name, defaults included: a changed default never reuses stale files.
  identity = {
      f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in _RESERVED
  }
  return dataclasses.replace(
      config, name=config_name(name, identity), description=f"{name} {options}"
  )


def get_builder(
    name: str, data_dir: str, prepare: bool = True, **options
) -> tfds.core.DatasetBuilder:
  """The TFDS builder of dataset ``name``, prepared under ``data_dir`` unless ``prepare=False``.

  Args:
    name: one of :data:`DATASET_NAMES`.
    data_dir: TFDS data directory (prepared files and, by default, the proposal cache).
    prepare: run ``download_and_prepare`` when the data is not prepared yet (reads the manual
      directory ``data_path``, computes proposals, writes the TFDS files).
    **options: BuilderConfig fields of the dataset (for "synthetic_scenes": ``config=`` a config
      name or SyntheticScenesConfig, or the SyntheticScenesConfig fields).
  """
  data_dir = os.fspath(data_dir)
  if "://" not in data_dir:  # keep gs:// and other remote data_dirs as they are
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
  if name == SYNTHETIC_SCENES:
    from iah_jax.data import synthetic_scenes  # pylint: disable=g-import-not-at-top

    config = options.pop("config", None)
    if config is None:
      config = (
          synthetic_scenes.SyntheticScenesConfig(name=config_name(name, options), **options)
          if options
          else "default"
      )
    elif options:
      raise ValueError(
          f"synthetic_scenes: pass either config= or its fields, not both "
          f"(got config={config!r} and {sorted(options)})"
      )
    return synthetic_scenes.load_builder(data_dir, config)
  config = make_config(name, **options)
  module_name, builder_class_name, _, _ = _DATASETS[name]
  builder_class = getattr(importlib.import_module(module_name), builder_class_name)
  builder = builder_class(config=config, data_dir=data_dir)
  if prepare and not builder.is_prepared():
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP, try_download_gcs=False
        )
    )
  return builder
