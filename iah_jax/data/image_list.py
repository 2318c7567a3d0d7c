"""Image-list datasets: the list format of the public deep-hashing code bases; users' own data.

Each list file has one line per image::

    relative/path/to/image.jpg 0 1 0 0 1 ...

the image path (relative to ``image_root``, or absolute; no spaces) followed by exactly
``num_classes`` multi-hot labels (0 or 1), separated by whitespace. Files are UTF-8 (a leading
byte-order mark is allowed); blank lines and lines starting with "#" are ignored. A line with a
different number of labels, a label other than 0/1, or bytes that are not UTF-8 raise a
UserInputError naming the file and the line; so do a missing list file or image root.

Prepared data follow the lists: the prepared files' name hashes the lists' bytes and every listed
image's size and modification time (:meth:`ImageListConfig.source_fingerprint`), so editing a
label, deleting a line or replacing an image prepares the dataset anew on the next run (region
proposals of unchanged images come from the cache); older versions stay in ``data_dir`` until
deleted.

Configuration: ``data_path`` is the directory holding the list files; ``train_list``,
``query_list`` and ``database_list`` name them (relative to ``data_path`` or absolute);
``image_root`` (default ``data_path``) is where the image paths start. ``num_classes`` 0 infers
the count from the first data line of the first list. ``class_names`` (a tuple) or
``class_names_file`` (one name per line, relative to ``data_path`` or absolute) optionally names
the labels (else "class_0", ...).

Splits (fixed by the lists; ``num_queries`` / ``query_seed`` are ignored): "train" = train_list,
"test" = query_list, and "database" = database_list when it is given (in the common protocols the
training list is a subset of the database list; without a database list, retrieve from "train").
Every split keeps the list's line order. The image_id is the path as written in the list.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from iah_jax.data import multilabel_builder as base
from iah_jax.errors import UserInputError

DATABASE = "database"


@dataclasses.dataclass(eq=False, kw_only=True)
class ImageListConfig(base.MultiLabelConfig):
  """Image-list options (see the module docstring)."""

  train_list: str = "train.txt"
  query_list: str = "test.txt"
  database_list: str = ""
  image_root: str = ""
  num_classes: int = 0
  class_names: tuple[str, ...] = ()
  class_names_file: str = ""
  database_split: str = DATABASE

  def __post_init__(self):
    super().__post_init__()
    if self.class_names and self.class_names_file:
      raise ValueError("set class_names or class_names_file, not both")
    if self.num_classes < 0:
      raise ValueError(
          f"num_classes must be >= 0 (0: from the first list line), got {self.num_classes}"
      )
    if self.class_names and self.num_classes and len(self.class_names) != self.num_classes:
      raise ValueError(
          f"class_names lists {len(self.class_names)} names but num_classes is "
          f"{self.num_classes}"
      )
    if self.database_split in (self.train_split, self.test_split):
      raise ValueError(
          f"database_split {self.database_split!r} must differ from the train and "
          "test split names"
      )

  def resolve(self, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(self.data_path, path)

  def root(self) -> str:
    """Where relative image paths start (image_root, else data_path)."""
    return self.image_root or self.data_path

  def lists(self) -> dict[str, str]:
    """{split: list file as configured} (the database split only with a database list)."""
    lists = {self.train_split: self.train_list, self.test_split: self.query_list}
    if self.database_list:
      lists[self.database_split] = self.database_list
    return lists

  def split_names(self) -> tuple[str, ...]:
    return tuple(self.lists())

  def check_sources(self, parse_lists: bool = False) -> None:
    """Raises UserInputError naming a missing data_path, list file, class names file or image
    root; with ``parse_lists`` also a list line that does not parse (file and line named)."""
    if not self.data_path:
      raise UserInputError(
          "config.dataset.options.data_path is not set: the directory holding the list files"
      )
    option_of = {
        self.train_split: "train_list",
        self.test_split: "query_list",
        self.database_split: "database_list",
    }
    for split, list_file in self.lists().items():
      if not os.path.isfile(self.resolve(list_file)):
        raise UserInputError(
            f"config.dataset.options.{option_of[split]} = {list_file!r}: image list "
            f"{self.resolve(list_file)} not found"
        )
    if self.class_names_file and not os.path.isfile(self.resolve(self.class_names_file)):
      raise UserInputError(
          f"config.dataset.options.class_names_file = {self.class_names_file!r}: "
          f"{self.resolve(self.class_names_file)} not found"
      )
    if not os.path.isdir(self.root()):
      option = "image_root" if self.image_root else "data_path"
      raise UserInputError(
          f"config.dataset.options.{option} = {self.root()!r}: image root directory not found"
      )
    if parse_lists:
      num_classes = len(self.names()) if self.names() else self.num_classes
      num_classes = num_classes or infer_num_classes(self.resolve(self.train_list))
      for list_file in self.lists().values():
        read_image_list(self.resolve(list_file), num_classes, self.root())

  def names(self) -> tuple[str, ...]:
    """Class names from class_names or class_names_file (one per line), else ()."""
    if self.class_names or not self.class_names_file:
      return tuple(self.class_names)
    path = self.resolve(self.class_names_file)
    try:
      with open(path, encoding="utf-8-sig") as file:
        return tuple(line.strip() for line in file if line.strip())
    except OSError as error:
      raise UserInputError(f"class names file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
      raise UserInputError(f"class names file {path}: not UTF-8 text") from None

  def source_fingerprint(self) -> str:
    """Hex digest of the list files' bytes and of each listed image's size and modification
    time (-1 for a missing file): it changes when a list or a listed image does."""
    self.check_sources()
    digest = hashlib.sha1()
    root = os.fsencode(self.root())
    seen = set()
    named = {**self.lists(), "class names": self.class_names_file}
    for split, list_file in named.items():
      if not list_file:
        continue
      with open(self.resolve(list_file), "rb") as file:
        data = file.read()
      if split == "class names":
        digest.update(b"class names\0" + data)
        continue
      digest.update(f"{split}\0{len(data)}\0".encode() + data)
      for raw in data.splitlines():
        tokens = raw.split()
        if not tokens or tokens[0].startswith(b"#"):
          continue
        path = os.path.join(root, tokens[0])  # an absolute path in the list stays as it is
        if path in seen:
          continue
        seen.add(path)
        try:
          status = os.stat(path)
          stamp = f"{status.st_size}:{status.st_mtime_ns}"
        except OSError:
          stamp = "-1"
        digest.update(path + b"\0" + stamp.encode() + b"\0")
    return digest.hexdigest()


def _data_lines(list_path: str):
  """Yields (line number, tokens) of the non-blank, non-comment lines."""
  if not os.path.isfile(list_path):
    raise UserInputError(f"image list {list_path} not found")
  with open(list_path, "rb") as file:
    for line_number, raw in enumerate(file, start=1):
      try:
        line = raw.decode("utf-8-sig" if line_number == 1 else "utf-8")
      except UnicodeDecodeError as error:
        raise UserInputError(
            f"image list {list_path} line {line_number}: not UTF-8 text (byte "
            f"{raw[error.start:error.start + 1]!r} at column {error.start + 1}); save the "
            "list as UTF-8"
        ) from None
      text = line.strip()
      if text and not text.startswith("#"):
        yield line_number, text.split()


def infer_num_classes(list_path: str) -> int:
  """Label count of the first data line of ``list_path``."""
  for _, tokens in _data_lines(list_path):
    if len(tokens) < 2:
      break
    return len(tokens) - 1
  raise UserInputError(
      f"image list {list_path}: cannot infer num_classes from its first data line (set "
      "config.dataset.options.num_classes)"
  )


def read_image_list(
    list_path: str, num_classes: int, image_root: str
) -> list[tuple[str, str, np.ndarray]]:
  """Parses one list file -> [(image_id, image path, uint8 labels [num_classes])].

  Raises:
    UserInputError naming the file and line for a wrong label count, a label other than 0/1 or
    bytes that are not UTF-8.
  """
  entries = []
  for line_number, tokens in _data_lines(list_path):
    if len(tokens) != num_classes + 1:
      raise UserInputError(
          f"image list {list_path} line {line_number}: expected an image path and "
          f"{num_classes} labels, got {len(tokens) - 1} labels (paths may not "
          "contain spaces)"
      )
    values = tokens[1:]
    if any(v not in ("0", "1") for v in values):
      bad = next(v for v in values if v not in ("0", "1"))
      raise UserInputError(
          f"image list {list_path} line {line_number}: labels must be 0 or 1, got {bad!r}"
      )
    path = tokens[0] if os.path.isabs(tokens[0]) else os.path.join(image_root, tokens[0])
    entries.append((tokens[0], path, np.asarray([v == "1" for v in values], np.uint8)))
  return entries


class IahImageList(base.MultiLabelBuilder):
  """Images and multi-hot labels from train / query / database list files."""

  name = "iah_image_list"
  BUILDER_CONFIG_CLASS = ImageListConfig

  def _num_classes(self) -> int:
    config = self.config
    if config.num_classes:
      return config.num_classes
    if config.names():
      return len(config.names())
    return infer_num_classes(config.resolve(config.train_list))

  def class_names(self) -> list[str]:
    names = self.config.names()
    if names:
      if self.config.num_classes and len(names) != self.config.num_classes:
        raise UserInputError(
            f"{self.config.class_names_file} lists {len(names)} class names but num_classes is "
            f"{self.config.num_classes}"
        )
      return list(names)
    return [f"class_{i}" for i in range(self._num_classes())]

  def _read_records(self) -> list[base.ImageRecord]:
    config = self.config
    config.check_sources()
    num_classes = self._num_classes()
    records = []
    for split, list_file in config.lists().items():
      for image_id, path, labels in read_image_list(
          config.resolve(list_file), num_classes, config.root()
      ):
        records.append(base.ImageRecord(image_id=image_id, path=path, labels=labels, split=split))
    return records

  def _assign_splits(self, records):
    splits = {split: [] for split in self.config.lists()}
    for record in records:
      splits[record.split].append(record)
    return splits
