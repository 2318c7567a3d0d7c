"""Image-list datasets: the list format of the public deep-hashing code bases; users' own data.

Each list file has one line per image::

    relative/path/to/image.jpg 0 1 0 0 1 ...

the image path (relative to ``image_root``, or absolute; no spaces) followed by exactly
``num_classes`` multi-hot labels (0 or 1), separated by whitespace. Blank lines and lines starting
with "#" are ignored. A line with a different number of labels, or a label other than 0/1, raises
a ValueError naming the file and the line.

Configuration: ``data_path`` is the directory holding the list files; ``train_list``,
``query_list`` and ``database_list`` name them (relative to ``data_path`` or absolute);
``image_root`` (default ``data_path``) is where the image paths start. ``num_classes`` 0 infers
the count from the first data line of the first list. ``class_names`` optionally names the
labels (else "class_0", ...).

Splits (fixed by the lists; ``num_queries`` / ``query_seed`` are ignored): "train" = train_list,
"test" = query_list, and "database" = database_list when it is given (in the common protocols the
training list is a subset of the database list; without a database list, retrieve from "train").
Every split keeps the list's line order. The image_id is the path as written in the list.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from iah_jax.data import multilabel_builder as base

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
  database_split: str = DATABASE

  def __post_init__(self):
    super().__post_init__()
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


def _data_lines(list_path: str):
  """Yields (line number, tokens) of the non-blank, non-comment lines."""
  if not os.path.isfile(list_path):
    raise FileNotFoundError(f"image list {list_path} not found")
  with open(list_path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, start=1):
      text = line.strip()
      if text and not text.startswith("#"):
        yield line_number, text.split()


def infer_num_classes(list_path: str) -> int:
  """Label count of the first data line of ``list_path``."""
  for _, tokens in _data_lines(list_path):
    if len(tokens) < 2:
      break
    return len(tokens) - 1
  raise ValueError(f"image list {list_path}: cannot infer num_classes from its first line")


def read_image_list(
    list_path: str, num_classes: int, image_root: str
) -> list[tuple[str, str, np.ndarray]]:
  """Parses one list file -> [(image_id, image path, uint8 labels [num_classes])].

  Raises:
    ValueError naming the file and line for a wrong label count or a label other than 0/1.
  """
  entries = []
  for line_number, tokens in _data_lines(list_path):
    if len(tokens) != num_classes + 1:
      raise ValueError(
          f"image list {list_path} line {line_number}: expected an image path and "
          f"{num_classes} labels, got {len(tokens) - 1} labels (paths may not "
          "contain spaces)"
      )
    values = tokens[1:]
    if any(v not in ("0", "1") for v in values):
      bad = next(v for v in values if v not in ("0", "1"))
      raise ValueError(
          f"image list {list_path} line {line_number}: labels must be 0 or 1, got " f"{bad!r}"
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
    if config.class_names:
      return len(config.class_names)
    return infer_num_classes(config.resolve(config.train_list))

  def class_names(self) -> list[str]:
    if self.config.class_names:
      return list(self.config.class_names)
    return [f"class_{i}" for i in range(self._num_classes())]

  def _lists(self) -> dict[str, str]:
    config = self.config
    lists = {config.train_split: config.train_list, config.test_split: config.query_list}
    if config.database_list:
      lists[config.database_split] = config.database_list
    return lists

  def _read_records(self) -> list[base.ImageRecord]:
    config = self.config
    num_classes = self._num_classes()
    image_root = config.image_root or config.data_path
    records = []
    for split, list_file in self._lists().items():
      for image_id, path, labels in read_image_list(
          config.resolve(list_file), num_classes, image_root
      ):
        records.append(base.ImageRecord(image_id=image_id, path=path, labels=labels, split=split))
    return records

  def _assign_splits(self, records):
    splits = {split: [] for split in self._lists()}
    for record in records:
      splits[record.split].append(record)
    return splits
