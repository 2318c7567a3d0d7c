"""The TFDS builder base shared by every real multi-label dataset (VOC, COCO, MIRFLICKR, ...).

A dataset module only says how to list its images (:meth:`MultiLabelBuilder._read_records`) and,
when the source fixes the split, how to split them. This base does the rest, identically for all:

1. counts and leaves out (``unlabelled_policy="skip"``), rejects (``"error"``) or keeps
   (``"keep"``) images without a positive label; kept ones are never queries: under the random
   protocol they go to split "unlabelled" (``unlabelled_split``), so a database of
   "train+unlabelled" holds them as negatives of every query while training reads "train";
2. computes the region proposals of every image once, in parallel, into a resumable cache
   (:func:`iah_jax.data.prepare.prepare_proposals`); missing and corrupt image files are counted
   (or rejected, ``bad_image_policy="error"``);
3. splits the usable images: by default the paper protocol (IAH section V-A) — ``num_queries``
   random queries drawn with ``query_seed`` from the usable images in source order form split
   "test", the rest form split "train" (training images and retrieval database at once); both keep
   source order, so ``index`` is stable;
4. prints the skip counts per reason and stores them in ``builder.info.metadata["skip_counts"]``;
5. writes examples in the shared schema (:mod:`iah_jax.data.features`), images downscaled to
   ``image_max_side``, in split order (``disable_shuffling``: example key = ``index``; the
   "unlabelled" split numbers on after "train").

Split names are the same for every dataset: "train" = database / training images, "test" =
queries (``image_list`` adds "database" when a separate database list is given).
"""

from __future__ import annotations

import abc
import dataclasses
import os
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from iah_jax.data import features
from iah_jax.data import images
from iah_jax.data import prepare

TRAIN = "train"
TEST = "test"
UNLABELLED = "unlabelled"
POLICIES = ("skip", "error")
UNLABELLED_POLICIES = ("skip", "error", "keep")


@dataclasses.dataclass(eq=False, kw_only=True)
class MultiLabelConfig(tfds.core.BuilderConfig):
  """Options shared by every real-dataset builder.

  Attributes:
    data_path: the manual download directory (layout documented by each dataset module).
    proposal_method: "selective_search" | "generic" | "whole_image" (see iah_jax.data.prepare).
    num_proposals: N proposals stored per image (paper: 100).
    search_max_side: selective search runs on a copy with this longer side.
    selective_search_mode: "fast" | "quality" | "single".
    image_max_side: stored images are downscaled so the longer side is at most this (0: keep).
    num_queries: size of split "test" under the random-query protocol (paper: 2000).
    query_seed: seed of the query draw; same seed + same usable images -> same splits.
    unlabelled_policy: for images with no label: "skip" (count and leave out), "error", or
      "keep" (split ``unlabelled_split``: negatives for every query; see the module docstring).
    bad_image_policy: "skip" (count and leave out) or "error" for missing / corrupt image files.
    proposal_cache_dir: proposal cache root; "" = <data_dir>/iah_proposal_cache/<builder name>.
    num_workers: processes for proposal preparation; -1 = every available core.
    progress: show a progress bar while preparing.
    train_split: name of the database / training split.
    test_split: name of the query split.
    unlabelled_split: name of the split of kept unlabelled images (``unlabelled_policy="keep"``).
  """

  data_path: str = ""
  proposal_method: str = "selective_search"
  num_proposals: int = 100
  search_max_side: int = 256
  selective_search_mode: str = "fast"
  image_max_side: int = 512
  num_queries: int = 2000
  query_seed: int = 0
  unlabelled_policy: str = "skip"
  bad_image_policy: str = "skip"
  proposal_cache_dir: str = ""
  num_workers: int = -1
  progress: bool = True
  train_split: str = TRAIN
  test_split: str = TEST
  unlabelled_split: str = UNLABELLED

  def __post_init__(self):
    if self.unlabelled_policy not in UNLABELLED_POLICIES:
      raise ValueError(
          f"unlabelled_policy must be one of {UNLABELLED_POLICIES}, got {self.unlabelled_policy!r}"
      )
    if self.bad_image_policy not in POLICIES:
      raise ValueError(f"bad_image_policy must be one of {POLICIES}, got {self.bad_image_policy!r}")
    if self.proposal_method not in prepare.PROPOSAL_METHODS:
      raise ValueError(
          f"proposal_method must be one of {prepare.PROPOSAL_METHODS}, got "
          f"{self.proposal_method!r}"
      )
    if self.image_max_side < 0:
      raise ValueError(f"image_max_side must be >= 0 (0 keeps the size), got {self.image_max_side}")
    if len(set(self.split_names())) != len(self.split_names()):
      raise ValueError(f"split names must differ, got {self.split_names()}")

  def split_names(self) -> tuple[str, ...]:
    """The splits of the prepared dataset."""
    names = (self.train_split, self.test_split)
    return names + ((self.unlabelled_split,) if self.unlabelled_policy == "keep" else ())

  def proposal_settings(self) -> prepare.ProposalSettings:
    return prepare.ProposalSettings(
        method=self.proposal_method,
        num_proposals=self.num_proposals,
        search_max_side=self.search_max_side,
        mode=self.selective_search_mode,
    )


@dataclasses.dataclass
class ImageRecord:
  """One source image before preparation.

  Attributes:
    image_id: the source's identifier (unique within the dataset).
    path: image file path.
    labels: uint8 [c] multi-hot (may be all zero: such images are counted as "unlabelled").
    object_boxes: float32 [K, 4] (x0, y0, x1, y1) fractions, K may be 0.
    object_labels: int32 [K] category index of each box.
    split: the split fixed by the source (MIML, image lists), or None for the random protocol.
  """

  image_id: str
  path: str
  labels: np.ndarray
  object_boxes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 4), np.float32))
  object_labels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.int32))
  split: str | None = None


def random_query_split(
    records: Sequence[ImageRecord],
    num_queries: int,
    seed: int,
    train_split: str = TRAIN,
    test_split: str = TEST,
) -> dict[str, list[ImageRecord]]:
  """The paper protocol: ``num_queries`` random records form the query split, the rest train.

  Both splits keep the order of ``records``. Deterministic for a seed and a record list.
  """
  if not 0 < num_queries < len(records):
    raise ValueError(
        f"num_queries={num_queries} must be between 1 and the number of usable "
        f"images - 1 ({len(records) - 1})"
    )
  permutation = np.random.default_rng(seed).permutation(len(records))
  is_query = np.zeros(len(records), dtype=bool)
  is_query[permutation[:num_queries]] = True
  return {
      train_split: [r for r, q in zip(records, is_query) if not q],
      test_split: [r for r, q in zip(records, is_query) if q],
  }


class MultiLabelBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the real multi-label dataset builders (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Shared iah_jax schema with precomputed region proposals."}
  BUILDER_CONFIG_CLASS = MultiLabelConfig

  @property
  def config(self) -> MultiLabelConfig:
    config = self.builder_config
    if not isinstance(config, MultiLabelConfig):
      raise ValueError(
          f"{self.name} needs a {self.BUILDER_CONFIG_CLASS.__name__}, got {config!r}; "
          "create builders with iah_jax.data.registry.get_builder"
      )
    return config

  @abc.abstractmethod
  def class_names(self) -> list[str]:
    """Category names in label order (len = c)."""

  @abc.abstractmethod
  def _read_records(self) -> list[ImageRecord]:
    """Every candidate image in source order, labels possibly all zero."""

  def _description(self) -> str:
    return (self.__class__.__doc__ or "").strip()

  def _num_classes(self) -> int:
    return len(self.class_names())

  def _assign_splits(self, records: list[ImageRecord]) -> dict[str, list[ImageRecord]]:
    """Default: the random-query protocol over the labelled records; kept unlabelled records
    (``unlabelled_policy="keep"``) form split ``unlabelled_split``. Sources with fixed splits
    override this (kept unlabelled records then stay in their source split)."""
    config = self.config
    labelled = [r for r in records if r.labels.any()]
    splits = random_query_split(
        labelled, config.num_queries, config.query_seed, config.train_split, config.test_split
    )
    if config.unlabelled_policy == "keep":
      splits[config.unlabelled_split] = [r for r in records if not r.labels.any()]
    return splits

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self._description(),
        features=features.example_features(self._num_classes(), self.config.num_proposals),
        # Examples are written in split order (key = index): retrieval breaks ties by index.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def _proposal_cache_dir(self) -> str:
    if self.config.proposal_cache_dir:
      return self.config.proposal_cache_dir
    return os.path.join(os.fspath(self.data_dir_root), "iah_proposal_cache", self.name)

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything comes from the manual directory in the config.
    config = self.config
    if not config.data_path:
      raise ValueError(
          f"{self.name}: set data_path to the manual download directory (see "
          f"{self.__module__} for the expected layout)"
      )
    records = self._read_records()
    num_classes = self._num_classes()
    skips = prepare.SkipCounts()
    labelled = []  # with unlabelled_policy="keep", the unlabelled records too
    counted_unlabelled = set()  # an image listed twice (image lists) is counted once
    for record in records:
      if record.labels.shape != (num_classes,):
        raise ValueError(
            f"{self.name}: image {record.image_id!r} has labels of shape "
            f"{record.labels.shape}, expected ({num_classes},)"
        )
      if record.labels.any() or config.unlabelled_policy == "keep":
        labelled.append(record)
      elif config.unlabelled_policy == "error":
        raise ValueError(
            f"{self.name}: image {record.image_id!r} has no label "
            "(unlabelled_policy='error'; use 'skip' to count and leave such images out)"
        )
      elif record.image_id not in counted_unlabelled:
        counted_unlabelled.add(record.image_id)
        skips.add("unlabelled", record.image_id)

    # Several records may share a file (an image listed twice); proposals are computed once.
    unique_items = list(dict.fromkeys((r.image_id, r.path) for r in labelled))
    report = prepare.prepare_proposals(
        unique_items,
        self._proposal_cache_dir(),
        config.proposal_settings(),
        num_workers=None if config.num_workers < 0 else config.num_workers,
        progress=config.progress,
        description=f"{self.name} proposals",
    )
    if report.skips.total and config.bad_image_policy == "error":
      raise ValueError(f"{self.name}: {report.skips.format()} (bad_image_policy='error')")
    skips.update(report.skips)
    ready = set(report.ready_ids)
    usable = [r for r in labelled if r.image_id in ready]

    splits = self._assign_splits(usable)
    self.skip_counts = skips
    self.info.metadata["skip_counts"] = skips.as_dict()
    self.info.metadata["class_names"] = list(self.class_names())
    self.info.metadata["split_sizes"] = {name: len(rs) for name, rs in splits.items()}
    self.info.metadata["proposal_settings"] = dataclasses.asdict(config.proposal_settings())
    kept_unlabelled = len({r.image_id for r in usable if not r.labels.any()})
    self.info.metadata["kept_unlabelled"] = kept_unlabelled
    sizes = ", ".join(f"{name}={len(rs)}" for name, rs in splits.items())
    kept = f", {kept_unlabelled} of them unlabelled" if config.unlabelled_policy == "keep" else ""
    print(
        f"{self.name}/{config.name}: {len(records)} images listed, {len(usable)} kept{kept} "
        f"({sizes}); {skips.format()}",
        flush=True,
    )
    # Kept unlabelled images number on after split "train", so "train+unlabelled" (the database
    # that holds them) is ordered by index as stored.
    first_index = {config.unlabelled_split: len(splits.get(config.train_split, ()))}
    return {
        name: self._generate_examples(split_records, first_index.get(name, 0))
        for name, split_records in splits.items()
    }

  def _generate_examples(
      self, records: list[ImageRecord], first_index: int = 0
  ) -> Iterator[tuple[int, dict]]:
    config = self.config
    settings = config.proposal_settings()
    cache_dir = self._proposal_cache_dir()
    for index, record in enumerate(records, start=first_index):
      image = images.resize_to_max_side(images.read_image(record.path), config.image_max_side)
      proposal_boxes = prepare.load_proposals(cache_dir, settings, record.image_id, record.path)
      object_boxes = features.check_boxes(record.object_boxes, f"{record.image_id} object boxes")
      object_labels = np.asarray(record.object_labels, np.int32).reshape(-1)
      if len(object_labels) != len(object_boxes):
        raise ValueError(
            f"{record.image_id}: {len(object_boxes)} object boxes but "
            f"{len(object_labels)} object labels"
        )
      labels = np.asarray(record.labels, np.uint8)
      if labels.any() or config.unlabelled_policy != "keep":  # kept ones are all zero
        labels = features.check_labels(labels, f"{record.image_id} labels").astype(np.uint8)
      yield index, {
          features.IMAGE: image,
          features.LABELS: labels,
          features.PROPOSALS: proposal_boxes,
          features.OBJECT_BOXES: object_boxes,
          features.OBJECT_LABELS: object_labels,
          features.INDEX: index,
          features.IMAGE_ID: record.image_id,
      }
