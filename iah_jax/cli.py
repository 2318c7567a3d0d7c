"""Command-line entry points whose user mistakes end in one clear message, never a traceback.

An entry point defines its flags as usual (absl flags, an ml_collections config file flag) and
hands its `main` to `run`:

    from absl import flags
    from ml_collections import config_flags
    from iah_jax import cli
    from iah_jax import config as config_lib

    FLAGS = flags.FLAGS
    config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)

    def main(argv):
      config = config_lib.validate_config(FLAGS.config, check_inputs=True)
      ...  # import the heavy modules (TensorFlow, training) only now: mistakes fail fast

    if __name__ == "__main__":
      cli.run(main)

What `run(main)` adds to `absl.app.run(main)`:

- Flags are parsed by `parse_flags`. The errors ml_collections and absl raise while parsing
  (an unknown key such as `--config.optimizer.lr`, a value of the wrong type, an unknown flag, a
  missing config file) become one message naming the field, the value and the known keys.
- `--config.dataset.options.KEY=VALUE` and `--config.model.backbone_options.KEY=VALUE` are
  applied by `parse_flags` itself, against the option schema of the selected dataset
  (`iah_jax.data.registry.option_schema`: every field of its builder config) or backbone
  (`iah_jax.config.backbone_option_schema`), after the config file and every other override:
  any option of the selected dataset can be set, whether the config file sets it or not, and an
  unknown one is refused with the list of known options. The value is read as the option's
  default is typed (integer, number, true/false, string, or a tuple: '(1, 2)' or '1,2').
- A `UserInputError` (iah_jax.errors; config validation raises one, so do the data and weight
  readers for unreadable inputs), a `RunError` (a non-finite loss, no intact checkpoint) or
  absl's `app.UsageError` raised by `main` is printed as
  "error: <message>" on stderr and the process exits with `EXIT_CODE` (2).

Only these user errors are caught; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import sys
from typing import Any, Callable, NoReturn, Sequence

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from iah_jax.errors import RunError
from iah_jax.errors import UserInputError

EXIT_CODE = 2
# Sub-dicts of a config whose keys depend on another field (the dataset, the backbone).
FREE_FORM_SECTIONS = ("dataset.options", "model.backbone_options")

__all__ = ["EXIT_CODE", "UserInputError", "fail", "parse_flags", "run"]


def run(main: Callable[[list[str]], Any]) -> None:
  """`absl.app.run(main)` with user mistakes (flags, config, inputs) ending in one message on
  stderr and exit code 2 (see the module docstring)."""

  def flags_parser(argv: list[str]) -> list[str]:
    try:
      return parse_flags(argv)
    except UserInputError as error:
      fail(str(error))

  def guarded_main(argv: list[str]):
    try:
      return main(argv)
    except (UserInputError, RunError, app.UsageError) as error:
      fail(str(error))

  app.run(guarded_main, flags_parser=flags_parser)


def fail(message: str) -> NoReturn:
  """Prints `message` as "error: ..." lines on stderr and exits with EXIT_CODE."""
  lines = str(message).strip().splitlines() or ["(no message)"]
  sys.stderr.write("".join(f"error: {line}\n" for line in lines))
  sys.stderr.flush()
  sys.exit(EXIT_CODE)


# ----------------------------------------------------------------------------- parsing


@dataclasses.dataclass(frozen=True)
class _Override:
  """One `--<flag>.<section>.<key>[=value]` argument taken out of argv."""

  flag: str
  section: str
  key: str
  raw: str | None  # None: given without a value (`--config.x.y` / `--noconfig.x.y`)
  negated: bool

  @property
  def field(self) -> str:
    return f"config.{self.section}.{self.key}"


def parse_flags(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """Parses `argv` into `flag_values` and returns the positional arguments (argv[0] first).

  The free-form sections (FREE_FORM_SECTIONS) of every config flag are applied against their
  schemas; every parsing error is raised as a UserInputError with one clear message.
  """
  argv = list(argv)
  config_names = [name for name in flag_values if _is_config_flag(flag_values[name])]
  try:
    argv = flag_values.read_flags_from_files(argv, force_gnu=False)
  except flags.Error as error:
    raise UserInputError(str(error)) from None
  argv, overrides = _take_free_form(argv, config_names)
  saved_argv = sys.argv
  sys.argv = argv  # ml_collections reads its overrides from sys.argv
  try:
    remaining = flag_values(argv)
  except Exception as error:  # pylint: disable=broad-except  # anything here is a flag mistake
    raise UserInputError(_describe(error, argv, flag_values, config_names)) from None
  finally:
    sys.argv = saved_argv
  for name in config_names:
    config = flag_values[name].value
    if config is None:
      continue
    if not isinstance(config, ml_collections.ConfigDict):
      path = _config_path(flag_values[name], argv)
      raise UserInputError(f"--{name}={path}: {_config_file_problem(path)}")
    _apply_free_form(config, [o for o in overrides if o.flag == name])
  return remaining


def _is_config_flag(flag) -> bool:
  # ml_collections' documented test for its config flags (kept in its config_flags submodule).
  return config_flags.config_flags.is_config_flag(flag)


def _take_free_form(argv: list[str], config_names: list[str]) -> tuple[list[str], list[_Override]]:
  if not config_names:
    return argv, []
  sections = "|".join(re.escape(section) for section in FREE_FORM_SECTIONS)
  names = "|".join(re.escape(name) for name in config_names)
  pattern = re.compile(
      rf"^--?(?P<no>no)?(?P<flag>{names})\.(?P<section>{sections})\.(?P<key>[^=]+)(=(?P<raw>.*))?$",
      re.DOTALL,
  )
  kept, overrides = [], []
  index = 0
  while index < len(argv):
    argument = argv[index]
    match = pattern.match(argument) if index else None
    if match is None or argument == "--":
      kept.append(argument)
      index += 1
      if argument == "--":
        kept.extend(argv[index:])
        break
      continue
    raw = match.group("raw")
    negated = bool(match.group("no"))
    if raw is None and not negated and index + 1 < len(argv):
      following = argv[index + 1]
      if not following.startswith("-"):  # `--config.dataset.options.data_path DIR`
        raw = following
        index += 1
    overrides.append(_Override(match["flag"], match["section"], match["key"], raw, negated))
    index += 1
  return kept, overrides


def _apply_free_form(config: ml_collections.ConfigDict, overrides: list[_Override]) -> None:
  """Sets each override in its section, read as its schema's default is typed."""
  from iah_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from iah_jax.data import registry  # pylint: disable=g-import-not-at-top

  problems = []
  for override in overrides:
    if override.section == "dataset.options":
      name = config.dataset.name
      if name not in registry.DATASET_NAMES:
        problems.append(
            f"config.dataset.name = {name!r}: must be one of "
            + ", ".join(repr(n) for n in registry.DATASET_NAMES)
        )
        break
      owner = f"dataset {name!r}"
      synthetic = config.dataset.config if name == registry.SYNTHETIC_SCENES else "default"
      try:
        schema = registry.option_schema(name, synthetic)
      except UserInputError as error:
        problems.append(str(error))
        break
    else:
      name = config.model.backbone
      owner = f"backbone {name!r}"
      try:
        schema = config_lib.backbone_option_schema(name)
      except ValueError as error:
        problems.append(f"config.model.backbone = {name!r}: {error}")
        break
    if override.key not in schema:
      shown = override.raw if override.raw is not None else "(no value)"
      problems.append(
          f"{override.field} = {shown!r}: no such option for {owner}; known options: "
          + ", ".join(sorted(schema))
      )
      continue
    try:
      value = _read_value(override, schema[override.key])
    except UserInputError as error:
      problems.append(str(error))
      continue
    section = config
    for part in override.section.split("."):
      section = section[part]
    with config.unlocked():
      if override.key in section:
        del section[override.key]  # the file's value may have another type
      section[override.key] = value
  if problems:
    raise UserInputError("\n".join(problems))


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _read_value(override: _Override, default) -> Any:
  """The override's text read as `default` is typed."""
  raw, field = override.raw, override.field
  if isinstance(default, bool):
    if raw is None:
      return not override.negated
    if raw.lower() in _TRUE + _FALSE:
      return raw.lower() in _TRUE
    raise UserInputError(f"{field} = {raw!r}: must be true or false")
  if raw is None:
    raise UserInputError(f"{field}: needs a value, --{override.flag}.{override.section}.KEY=VALUE")
  if isinstance(default, int):
    try:
      return int(raw)
    except ValueError:
      raise UserInputError(f"{field} = {raw!r}: must be an integer") from None
  if isinstance(default, float):
    try:
      return float(raw)
    except ValueError:
      raise UserInputError(f"{field} = {raw!r}: must be a number") from None
  if isinstance(default, str):
    return raw
  if isinstance(default, (tuple, list)):
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      inner = raw.strip().strip("()[]")  # bare words: '(dog, cat)' or 'dog,cat'
      value = tuple(part.strip().strip("'\"") for part in inner.split(",") if part.strip())
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
  try:
    return ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    return raw


# ----------------------------------------------------------------------------- error messages


def _config_path(flag, argv: list[str]) -> str | None:
  """The config file path given for `flag` in argv (else its default)."""
  for index, argument in enumerate(argv):
    if argument in (f"--{flag.name}", f"-{flag.name}") and index + 1 < len(argv):
      return argv[index + 1]
    for prefix in (f"--{flag.name}=", f"-{flag.name}="):
      if argument.startswith(prefix):
        return argument[len(prefix) :]
  return flag.default if isinstance(flag.default, str) else None


def _config_file_problem(path: str | None) -> str:
  file_path = (path or "").split(":", 1)[0]
  if not file_path:
    return "no config file given"
  if not os.path.isfile(file_path):
    return f"no such config file {file_path!r}"
  return f"cannot load config file {file_path!r}"


def _unknown_key(config: ml_collections.ConfigDict, path: str) -> str | None:
  """A message when `path` (a.b.c) is not a key of `config`, else None."""
  node, parts = config, path.split(".")
  for depth, part in enumerate(parts):
    where = "config." + ".".join(parts[:depth]) if depth else "config"
    if not isinstance(node, ml_collections.ConfigDict):
      return f"{where} = {node!r} is a value, not a group of keys: it has no key {part!r}"
    if part not in node:
      return (
          f"unknown config key config.{'.'.join(parts[: depth + 1])}; known keys of {where}: "
          + ", ".join(sorted(node.keys()))
      )
    node = node[part]
  return None


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _describe(error: Exception, argv: list[str], flag_values, config_names: list[str]) -> str:
  """One clear message for an exception raised while parsing flags."""
  text = str(error)
  if "Traceback" in text:  # ml_collections wraps a config file's own error with its traceback
    last = [line.strip() for line in text.splitlines() if line.strip()][-1]
    files = [str(_config_path(flag_values[name], argv)) for name in config_names]
    return f"config file {' / '.join(files)} failed to load: {last}"
  for name in config_names:
    paths = []
    for argument in argv[1:]:
      match = re.match(rf"^--?(no)?{re.escape(name)}\.([^=]+)", argument)
      if match:
        paths.append(match.group(2))
    path = _config_path(flag_values[name], argv)
    if not paths and not isinstance(error, (IOError, SyntaxError)):
      continue
    try:
      config = flag_values[name].parser.parse(path)
    except Exception as load_error:  # pylint: disable=broad-except
      last = [line.strip() for line in str(load_error).splitlines() if line.strip()] or [""]
      return f"config file {path} failed to load: {type(load_error).__name__}: {last[-1]}"
    if not isinstance(config, ml_collections.ConfigDict):
      return f"--{name}={path}: {_config_file_problem(path)}"
    for field_path in paths:
      problem = _unknown_key(config, field_path)
      if problem:
        return problem
    match = re.match(
        rf"^flag --{re.escape(name)}\.(?P<path>[^=]+)=(?P<value>.*?): (?P<why>.*)$",
        str(error),
        re.DOTALL,
    )
    if match:
      current = config
      for part in match["path"].split("."):
        current = current[part]
      wanted = _TYPE_NAMES.get(type(current), f"of type {type(current).__name__}")
      return (
          f"config.{match['path']} = {match['value']!r}: must be {wanted} (the config "
          f"has {current!r}; {match['why']})"
      )
  if isinstance(error, flags.Error):
    return str(error)
  return f"{type(error).__name__}: {error}"
