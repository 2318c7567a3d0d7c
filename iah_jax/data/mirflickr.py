"""MIRFLICKR-25K (Huiskes & Lew, 2008) from its manual download, 24 or 38 labels.

Expected layout of ``data_path`` (the two official zips extracted side by side)::

    mirflickr/im1.jpg ... im25000.jpg             (mirflickr25k.zip; ``image_dir``)
    mirflickr25k_annotations_v080/<concept>.txt   (mirflickr25k_annotations_v080.zip;
    mirflickr25k_annotations_v080/<concept>_r1.txt ``annotation_dir``)

If ``data_path/image_dir`` (or ``annotation_dir``) does not exist, the files are looked for
directly in ``data_path``. Each annotation file lists the numbers of the images annotated with the
concept, one per line ("1234" means im1234.jpg).

Labels (order fixed, the same in every run):
- ``num_labels=24``: the 24 "potential" concepts, alphabetical: animals, baby, bird, car, clouds,
  dog, female, flower, food, indoor, lake, male, night, people, plant_life, portrait, river, sea,
  sky, structures, sunset, transport, tree, water.
- ``num_labels=38`` (the IAH paper's setting): those 24, then the 14 "relevant" concepts
  (``<concept>_r1``: the concept is salient), alphabetical: baby_r1, bird_r1, car_r1, clouds_r1,
  dog_r1, female_r1, flower_r1, male_r1, night_r1, people_r1, portrait_r1, river_r1, sea_r1,
  tree_r1. The first 24 columns are identical in both settings.

Unlabelled images (no concept at all; about 5,000 of the 25,000 under 24 or 38 labels),
``unlabelled_policy``:

- "skip" (the builder's default): left out and counted, as the hashing literature does (e.g.
  DPSH / HashNet lists keep 20,015 labelled images): 2000 queries, ~18,000 in split "train".
- "keep" (configs/mirflickr.py, the IAH paper's counts: 2000 queries and 23,000 training /
  database images, Table I): they are kept as negatives, in split "unlabelled"; with
  ``database_split="train+unlabelled"`` the database holds all 23,000 and an unlabelled image is
  relevant to no query. Queries are drawn from the labelled images only, so every query has a
  label; one that shares no label with any database image is handled by the metrics'
  ``no_relevant`` policy (default "skip": left out of the averages). Training reads split
  "train" (the labelled ones): the training pipeline refuses images without a label, and IAH's
  label loss (eq. 3) has nothing to learn from them.
- "error": refuses to build.

Protocol: 2000 random queries from the labelled images (split "test"), the other labelled images
split "train".
No object boxes (``object_boxes`` is empty).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from iah_jax.data import multilabel_builder as base

POTENTIAL_LABELS = (
    "animals",
    "baby",
    "bird",
    "car",
    "clouds",
    "dog",
    "female",
    "flower",
    "food",
    "indoor",
    "lake",
    "male",
    "night",
    "people",
    "plant_life",
    "portrait",
    "river",
    "sea",
    "sky",
    "structures",
    "sunset",
    "transport",
    "tree",
    "water",
)
RELEVANT_LABELS = (
    "baby_r1",
    "bird_r1",
    "car_r1",
    "clouds_r1",
    "dog_r1",
    "female_r1",
    "flower_r1",
    "male_r1",
    "night_r1",
    "people_r1",
    "portrait_r1",
    "river_r1",
    "sea_r1",
    "tree_r1",
)
LABEL_SETS = {24: POTENTIAL_LABELS, 38: POTENTIAL_LABELS + RELEVANT_LABELS}


@dataclasses.dataclass(eq=False, kw_only=True)
class MirflickrConfig(base.MultiLabelConfig):
  """MIRFLICKR-25K options.

  Attributes:
    num_labels: 24 or 38 (see the module docstring for the order).
    num_images: images are im1.jpg .. im<num_images>.jpg.
    image_dir: image directory relative to data_path.
    annotation_dir: annotation directory relative to data_path.
  """

  num_labels: int = 38
  num_images: int = 25000
  image_dir: str = "mirflickr"
  annotation_dir: str = "mirflickr25k_annotations_v080"

  def __post_init__(self):
    super().__post_init__()
    if self.num_labels not in LABEL_SETS:
      raise ValueError(f"MIRFLICKR num_labels must be 24 or 38, got {self.num_labels}")


def _subdir_or_root(data_path: str, subdir: str) -> str:
  candidate = os.path.join(data_path, subdir)
  return candidate if os.path.isdir(candidate) else data_path


def read_concept_file(path: str, num_images: int) -> np.ndarray:
  """Image numbers listed in one annotation file -> int64 [k] (1-based, validated)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"MIRFLICKR annotation file {path} not found")
  numbers = []
  with open(path) as f:
    for line_number, line in enumerate(f, start=1):
      text = line.strip()
      if not text:
        continue
      if not text.isdigit() or not 1 <= int(text) <= num_images:
        raise ValueError(
            f"MIRFLICKR {path} line {line_number}: expected an image number in "
            f"1..{num_images}, got {text!r}"
        )
      numbers.append(int(text))
  return np.asarray(numbers, np.int64)


def read_mirflickr_labels(
    annotation_dir: str, num_labels: int = 38, num_images: int = 25000
) -> np.ndarray:
  """uint8 [num_images, num_labels] multi-hot; row i is image im<i+1>.jpg."""
  names = LABEL_SETS[num_labels]
  labels = np.zeros((num_images, len(names)), np.uint8)
  for column, name in enumerate(names):
    numbers = read_concept_file(os.path.join(annotation_dir, f"{name}.txt"), num_images)
    labels[numbers - 1, column] = 1
  return labels


class IahMirflickr(base.MultiLabelBuilder):
  """MIRFLICKR-25K, 24 or 38 labels, 2000 random queries (IAH protocol)."""

  name = "iah_mirflickr"
  BUILDER_CONFIG_CLASS = MirflickrConfig

  def class_names(self) -> list[str]:
    return list(LABEL_SETS[self.config.num_labels])

  def _read_records(self) -> list[base.ImageRecord]:
    config = self.config
    annotation_dir = _subdir_or_root(config.data_path, config.annotation_dir)
    image_dir = _subdir_or_root(config.data_path, config.image_dir)
    labels = read_mirflickr_labels(annotation_dir, config.num_labels, config.num_images)
    return [
        base.ImageRecord(
            image_id=f"im{number}",
            path=os.path.join(image_dir, f"im{number}.jpg"),
            labels=labels[number - 1],
        )
        for number in range(1, config.num_images + 1)
    ]
