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
never overwrite each other. A builder config with a ``source_fingerprint()`` (image lists: the list
files' bytes and each listed image's size and modification time) adds it to the hash, so editing
a list or an image prepares the data anew instead of silently reusing the old files.

Before any work, the config layer checks options with :func:`option_schema` (every option a
dataset takes, with its default), :func:`check_options` (names, types and the builder config's
own checks, without reading any file) and :func:`split_names` (the splits a prepared dataset has).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import numbers
import os
from typing import Any

import tensorflow_datasets as tfds

from iah_jax.errors import UserInputError

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


def _config_class(name: str):
  if name not in _DATASETS:
    raise UserInputError(f"unknown dataset {name!r}; known: {list(DATASET_NAMES)}")
  module_name, _, config_class_name, _ = _DATASETS[name]
  return getattr(importlib.import_module(module_name), config_class_name)


def synthetic_named_config(config_name_: str):
  """The named SyntheticScenesConfig ("default", "tiny", ...)."""
  from iah_jax.data import synthetic_scenes  # pylint: disable=g-import-not-at-top

  known = {c.name: c for c in synthetic_scenes.SyntheticScenes.BUILDER_CONFIGS}
  if config_name_ not in known:
    raise UserInputError(
        f"config.dataset.config = {config_name_!r}: not a synthetic_scenes config; known: "
        + ", ".join(sorted(known))
    )
  return known[config_name_]


def option_schema(name: str, synthetic_config: str = "default") -> dict[str, Any]:
  """{option: default} of every option dataset ``name`` takes (``config.dataset.options``).

  For the real datasets these are the fields of the builder config dataclass (less the fields
  the name fixes, e.g. VOC's year); for "synthetic_scenes" the parameters of its named config
  ``synthetic_config``, which the options replace.
  """
  if name == SYNTHETIC_SCENES:
    return dict(synthetic_named_config(synthetic_config).parameters())
  fixed = _DATASETS[name][3] if name in _DATASETS else {}
  schema = {}
  for field in dataclasses.fields(_config_class(name)):
    if field.name in _RESERVED or field.name in fixed:
      continue
    if field.default is not dataclasses.MISSING:
      schema[field.name] = field.default
    elif field.default_factory is not dataclasses.MISSING:
      schema[field.name] = field.default_factory()
    else:
      schema[field.name] = None
  return schema


def type_problem(value, default) -> str | None:
  """What ``value`` must be to stand where ``default`` stands, or None when it fits (bools are
  not integers, integers are numbers, lists are tuples)."""
  if isinstance(default, bool):
    return None if isinstance(value, bool) else "must be true or false"
  if isinstance(default, numbers.Integral):
    fits = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return None if fits else "must be an integer"
  if isinstance(default, numbers.Real):
    fits = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return None if fits else "must be a number"
  if isinstance(default, str):
    return None if isinstance(value, str) else "must be a string"
  if isinstance(default, (tuple, list)):
    return None if isinstance(value, (tuple, list)) else "must be a tuple, e.g. '(a, b)'"
  return None


def check_options(name: str, options: dict, synthetic_config: str = "default") -> None:
  """Raises UserInputError naming each bad option of dataset ``name``: unknown names (with the
  known ones), values of the wrong type, and the builder config's own checks. Reads no file."""
  schema = option_schema(name, synthetic_config)
  fixed = _DATASETS[name][3] if name in _DATASETS else {}
  problems = []
  for key in sorted(options):
    value, field = options[key], f"config.dataset.options.{key}"
    if key not in schema:
      why = f"fixed to {fixed[key]!r} by the dataset name" if key in fixed else "no such option"
      problems.append(
          f"{field} = {value!r}: {why} for dataset {name!r}; known options: "
          + ", ".join(sorted(schema))
      )
    elif (problem := type_problem(value, schema[key])) is not None:
      problems.append(f"{field} = {value!r}: {problem} (dataset {name!r}, default {schema[key]!r})")
  if not problems:
    try:
      if name == SYNTHETIC_SCENES:
        from iah_jax.data import synthetic_scenes  # pylint: disable=g-import-not-at-top

        synthetic_scenes.SyntheticScenesConfig(name="check", **{**schema, **options})
      else:
        _config_class(name)(name=name, **_as_fields(options))
    except (TypeError, ValueError) as error:
      problems.append(f"config.dataset.options (dataset {name!r}): {error}")
  if problems:
    raise UserInputError("\n".join(problems))


def split_names(name: str, options: dict) -> tuple[str, ...]:
  """The splits dataset ``name`` with ``options`` has once prepared (e.g. ("train", "test"))."""
  if name == SYNTHETIC_SCENES:
    return ("train", "test")
  return tuple(_config_class(name)(name=name, **_as_fields(options)).split_names())


def check_sources(name: str, options: dict) -> None:
  """Raises UserInputError when the files dataset ``name`` reads are plainly not there or
  unreadable: no data_path; for image lists a missing list file or image root, or a list line
  that does not parse (``check_sources`` of the builder config)."""
  if name == SYNTHETIC_SCENES:
    return
  config = _config_class(name)(name=name, **_as_fields(options))
  if not config.data_path:
    raise UserInputError(
        f"config.dataset.options.data_path is not set: dataset {name!r} reads its manual "
        f"download directory (see {_DATASETS[name][0]} for the layout)"
    )
  if hasattr(config, "check_sources"):
    config.check_sources(parse_lists=True)


def _as_fields(options: dict) -> dict:
  """Options as dataclass field values: lists become tuples (hashable, immutable)."""
  return {key: tuple(value) if isinstance(value, list) else value for key, value in options.items()}


def make_config(name: str, **options):
  """The BuilderConfig of dataset ``name`` with ``options`` (validated, not prepared)."""
  config_class = _config_class(name)
  fixed = _DATASETS[name][3]
  allowed = {f.name for f in dataclasses.fields(config_class)} - set(_RESERVED)
  unknown = sorted(set(options) - allowed)
  if unknown:
    raise UserInputError(
        f"unknown option(s) {unknown} for dataset {name!r}; allowed: {sorted(allowed)}"
    )
  for key, value in fixed.items():
    if key in options and options[key] != value:
      raise UserInputError(f"dataset {name!r} fixes {key}={value!r}; got {key}={options[key]!r}")
  options = {**options, **fixed}
  if options.get("data_path"):
    options["data_path"] = os.path.abspath(os.path.expanduser(os.fspath(options["data_path"])))
  options = _as_fields(options)
  config = config_class(name=name, **options)
  # Every field enters the name, defaults included: a changed default never reuses stale files.
  identity = {
      f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in _RESERVED
  }
  # What the files say (image lists: their bytes, the images' sizes and times), so an edited
  # source prepares new data rather than reusing the old.
  fingerprint = getattr(config, "source_fingerprint", None)
  if fingerprint is not None:
    identity["source_fingerprint"] = fingerprint()
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
      name, whose parameters the other options replace, or a SyntheticScenesConfig).

  Raises:
    UserInputError: unknown options, or (before preparing anything) no or a missing data_path.
  """
  data_dir = os.fspath(data_dir)
  if "://" not in data_dir:  # keep gs:// and other remote data_dirs as they are
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
  if name == SYNTHETIC_SCENES:
    from iah_jax.data import synthetic_scenes  # pylint: disable=g-import-not-at-top

    config = options.pop("config", None)
    if isinstance(config, synthetic_scenes.SyntheticScenesConfig) and options:
      raise UserInputError(
          f"synthetic_scenes: pass either a SyntheticScenesConfig or options, not both "
          f"(got {config.name!r} and {sorted(options)})"
      )
    if not isinstance(config, synthetic_scenes.SyntheticScenesConfig):
      named = synthetic_named_config(config or "default")
      parameters = {**named.parameters(), **options}
      # The named config itself when the options change nothing, so its files are reused.
      if parameters != named.parameters():
        config = synthetic_scenes.SyntheticScenesConfig(
            name=config_name(name, parameters), **parameters
        )
      else:
        config = named.name
    return synthetic_scenes.load_builder(data_dir, config)
  config = make_config(name, **options)
  module_name, builder_class_name, _, _ = _DATASETS[name]
  builder_class = getattr(importlib.import_module(module_name), builder_class_name)
  builder = builder_class(config=config, data_dir=data_dir)
  if prepare and not builder.is_prepared():
    _check_data_path(name, config)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP, try_download_gcs=False
        )
    )
  return builder


def _check_data_path(name: str, config) -> None:
  """The manual directory must be set and exist before preparation starts."""
  module_name = _DATASETS[name][0]
  if not config.data_path:
    raise UserInputError(
        f"{name}: set data_path to the manual download directory "
        f"(--config.dataset.options.data_path=DIR; see {module_name} for the expected layout)"
    )
  if not os.path.isdir(config.data_path):
    raise UserInputError(
        f"config.dataset.options.data_path = {config.data_path!r}: no such directory "
        f"(dataset {name!r}; see {module_name} for the expected layout)"
    )
