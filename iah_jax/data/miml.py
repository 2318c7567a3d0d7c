"""MIML natural scenes (Zhou & Zhang, NIPS 2006): 2000 photos, 5 scene labels, fixed split.

Expected layout of ``data_path`` (as in ../shared/data/miml)::

    labels.csv   header "image,desert,mountains,sea,sunset,trees", then one 0/1 row per image
    split.csv    header "image,split", split is "database" or "query"
    images/N.jpg the images named in the "image" columns

Splits (the fixed protocol of the shared copy, not a random draw; ``num_queries`` and
``query_seed`` are ignored): "train" = the 1500 ``database`` images (train on them, carve any
validation subset out of them, retrieve from them), "test" = the 500 ``query`` images. Label order
is the column order of labels.csv (default: desert, mountains, sea, sunset, trees). MIML has no
object boxes (``object_boxes`` is empty).
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from iah_jax.data import multilabel_builder as base

MIML_CLASSES = ("desert", "mountains", "sea", "sunset", "trees")
SOURCE_SPLITS = {"database": base.TRAIN, "query": base.TEST}


@dataclasses.dataclass(eq=False, kw_only=True)
class MimlConfig(base.MultiLabelConfig):
  """MIML options.

  Attributes:
    class_names: expected label columns of labels.csv, in order.
    image_dir: image directory, relative to data_path.
  """

  class_names: tuple[str, ...] = MIML_CLASSES
  image_dir: str = "images"


def _read_csv(path: str) -> tuple[list[str], list[list[str]]]:
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"MIML: {path} not found (expected labels.csv, split.csv and images/ " "in data_path)"
    )
  with open(path, newline="") as f:
    rows = [row for row in csv.reader(f) if row]
  if not rows:
    raise ValueError(f"MIML: {path} is empty")
  return rows[0], rows[1:]


def read_miml_table(data_path: str, class_names=MIML_CLASSES) -> list[tuple[str, np.ndarray, str]]:
  """Parses labels.csv and split.csv -> [(image file name, uint8 labels [c], source split)].

  Rows keep labels.csv order. Raises ValueError naming the file and line for malformed rows.
  """
  labels_path = os.path.join(data_path, "labels.csv")
  split_path = os.path.join(data_path, "split.csv")
  header, rows = _read_csv(labels_path)
  if tuple(header[1:]) != tuple(class_names):
    raise ValueError(
        f"MIML: {labels_path} has label columns {header[1:]}, expected " f"{list(class_names)}"
    )
  split_header, split_rows = _read_csv(split_path)
  if split_header[:2] != ["image", "split"]:
    raise ValueError(f"MIML: {split_path} must start with header 'image,split', got {split_header}")
  split_of = {}
  for line, row in enumerate(split_rows, start=2):
    if len(row) != 2 or row[1] not in SOURCE_SPLITS:
      raise ValueError(
          f"MIML: {split_path} line {line}: expected '<image>,database|query', got "
          f"{','.join(row)!r}"
      )
    split_of[row[0]] = row[1]
  table = []
  for line, row in enumerate(rows, start=2):
    if len(row) != len(header):
      raise ValueError(
          f"MIML: {labels_path} line {line} has {len(row) - 1} labels, expected "
          f"{len(class_names)}"
      )
    if any(value not in ("0", "1") for value in row[1:]):
      raise ValueError(f"MIML: {labels_path} line {line}: labels must be 0 or 1, got {row[1:]}")
    if row[0] not in split_of:
      raise ValueError(f"MIML: image {row[0]!r} ({labels_path} line {line}) is not in {split_path}")
    table.append((row[0], np.array([int(v) for v in row[1:]], np.uint8), split_of[row[0]]))
  return table


class IahMiml(base.MultiLabelBuilder):
  """MIML natural scenes: 2000 photos, 5 scene labels, fixed 1500 database / 500 query split."""

  name = "iah_miml"
  BUILDER_CONFIG_CLASS = MimlConfig

  def class_names(self) -> list[str]:
    return list(self.config.class_names)

  def _read_records(self) -> list[base.ImageRecord]:
    config = self.config
    return [
        base.ImageRecord(
            image_id=name,
            path=os.path.join(config.data_path, config.image_dir, name),
            labels=labels,
            split=SOURCE_SPLITS[split],
        )
        for name, labels, split in read_miml_table(config.data_path, config.class_names)
    ]

  def _assign_splits(self, records):
    names = {base.TRAIN: self.config.train_split, base.TEST: self.config.test_split}
    splits = {names[base.TRAIN]: [], names[base.TEST]: []}
    for record in records:
      splits[names[record.split]].append(record)
    return splits
