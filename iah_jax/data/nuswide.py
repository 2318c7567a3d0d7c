"""NUS-WIDE (Chua et al., CIVR 2009) from its manual download, 21 or 81 concepts.

Expected layout of ``data_path`` (the official "Groundtruth", "ImageList" and "Concepts" files
plus the image archive; every path is a config field)::

    Concepts81.txt                        81 concept names, one per line (``concepts_file``)
    ImageList/Imagelist.txt               one image path per line, e.g.
                                          C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg
                                          (``image_list_file``)
    Groundtruth/AllLabels/Labels_<concept>.txt
                                          one 0/1 line per image, in Imagelist.txt order
                                          (``label_dir``)
    Flickr/<dir>/<file>.jpg               the images (``image_root``)

Image paths: backslashes become slashes and only the last two components are kept
(``actor/0001_2124494179.jpg``), joined to ``image_root``; that relative path is the image_id.
(Re-distributions that ship images with list files instead belong to the ``image_list`` builder.)

Labels:
- ``num_concepts=81``: Concepts81.txt order.
- ``num_concepts=21``: the 21 concepts with the most positive images (ties: Concepts81 order),
  kept in Concepts81 order — the "21 most frequent concepts" subset of the hashing literature,
  computed from the label files rather than hard-coded.
- ``concepts``: an explicit list overrides both (its length must equal ``num_concepts``).
The chosen names are stored in ``builder.info.metadata["class_names"]``.

Images with none of the chosen concepts are unlabelled (skipped and counted by default). Many
NUS-WIDE Flickr files are missing or broken in circulating copies: they are counted as
missing_file / corrupt_image. Protocol: 2000 random queries (split "test"), the rest "train".
No object boxes.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from iah_jax.data import multilabel_builder as base

CONCEPT_COUNTS = (21, 81)


@dataclasses.dataclass(eq=False, kw_only=True)
class NusWideConfig(base.MultiLabelConfig):
  """NUS-WIDE options (see the module docstring for the layout and label order)."""

  num_concepts: int = 21
  concepts: tuple[str, ...] = ()
  concepts_file: str = "Concepts81.txt"
  image_list_file: str = os.path.join("ImageList", "Imagelist.txt")
  label_dir: str = os.path.join("Groundtruth", "AllLabels")
  image_root: str = "Flickr"

  def __post_init__(self):
    super().__post_init__()
    if self.num_concepts not in CONCEPT_COUNTS:
      raise ValueError(f"NUS-WIDE num_concepts must be 21 or 81, got {self.num_concepts}")
    if self.concepts and len(self.concepts) != self.num_concepts:
      raise ValueError(
          f"NUS-WIDE concepts lists {len(self.concepts)} names but num_concepts is "
          f"{self.num_concepts}"
      )


def _read_lines(path: str) -> list[str]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"NUS-WIDE file {path} not found")
  with open(path, encoding="utf-8", errors="replace") as f:
    return [line.strip() for line in f if line.strip()]


def normalise_image_path(listed: str) -> str:
  """'C:\\ImageData\\Flickr\\actor\\0001_2.jpg' -> 'actor/0001_2.jpg' (last two components)."""
  parts = [p for p in listed.replace("\\", "/").split("/") if p]
  return "/".join(parts[-2:])


def read_concept_labels(path: str, num_images: int) -> np.ndarray:
  """One Labels_<concept>.txt -> uint8 [num_images]; errors name the file and line."""
  lines = _read_lines(path)
  if len(lines) != num_images:
    raise ValueError(
        f"NUS-WIDE {path} has {len(lines)} label lines but the image list has "
        f"{num_images} images"
    )
  for line_number, value in enumerate(lines, start=1):
    if value not in ("0", "1"):
      raise ValueError(f"NUS-WIDE {path} line {line_number}: expected 0 or 1, got {value!r}")
  return np.asarray([v == "1" for v in lines], np.uint8)


def select_concepts(
    all_concepts: list[str],
    all_labels: np.ndarray,
    num_concepts: int,
    explicit: tuple[str, ...] = (),
) -> list[int]:
  """Column indices of the chosen concepts, in Concepts81 order (see the module docstring)."""
  if explicit:
    unknown = [c for c in explicit if c not in all_concepts]
    if unknown:
      raise ValueError(f"NUS-WIDE: unknown concepts {unknown}; known: {all_concepts}")
    return [all_concepts.index(c) for c in explicit]
  if num_concepts > len(all_concepts):
    raise ValueError(
        f"NUS-WIDE: {num_concepts} concepts requested but the concept file lists "
        f"only {len(all_concepts)}"
    )
  if num_concepts == len(all_concepts):
    return list(range(len(all_concepts)))
  counts = all_labels.sum(axis=0, dtype=np.int64)  # signed: it is negated below
  # Stable sort on -count keeps Concepts81 order among ties.
  most_frequent = np.argsort(-counts, kind="stable")[:num_concepts]
  return sorted(int(i) for i in most_frequent)


class IahNusWide(base.MultiLabelBuilder):
  """NUS-WIDE, 21 or 81 concepts, 2000 random queries."""

  name = "iah_nuswide"
  BUILDER_CONFIG_CLASS = NusWideConfig

  _chosen_names: list[str] | None = None

  def class_names(self) -> list[str]:
    if self.config.concepts:
      return list(self.config.concepts)
    if self._chosen_names is None:
      # Known only after reading the label files (21 most frequent); placeholders until then.
      return [f"concept_{i}" for i in range(self.config.num_concepts)]
    return list(self._chosen_names)

  def _num_classes(self) -> int:
    return self.config.num_concepts

  def _read_records(self) -> list[base.ImageRecord]:
    config = self.config
    concepts = _read_lines(os.path.join(config.data_path, config.concepts_file))
    listed = _read_lines(os.path.join(config.data_path, config.image_list_file))
    relative_paths = [normalise_image_path(p) for p in listed]
    all_labels = np.stack(
        [
            read_concept_labels(
                os.path.join(config.data_path, config.label_dir, f"Labels_{concept}.txt"),
                len(listed),
            )
            for concept in concepts
        ],
        axis=-1,
    )
    columns = select_concepts(concepts, all_labels, config.num_concepts, config.concepts)
    self._chosen_names = [concepts[i] for i in columns]
    labels = all_labels[:, columns]
    image_root = os.path.join(config.data_path, config.image_root)
    return [
        base.ImageRecord(
            image_id=relative, path=os.path.join(image_root, relative), labels=labels[i]
        )
        for i, relative in enumerate(relative_paths)
    ]
