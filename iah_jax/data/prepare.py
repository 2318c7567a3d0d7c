"""Proposal preparation: per-image region proposals computed once, in parallel, resumable.

Every dataset builder calls :func:`prepare_proposals` while it prepares its TFDS files, so the
train step never computes proposals. The cache is one small ``.npy`` per image::

    <cache_dir>/<settings key>/settings.json          the ProposalSettings that made the files
    <cache_dir>/<settings key>/<image id>-<hash>.npy  float32 [N, 4], written atomically

The settings key names the method and every parameter, so changing a parameter starts a fresh
directory instead of mixing proposals; the hash covers the image's resolved path, size and
modification time, so a replaced image gets new proposals. A second run finds the existing files
and computes nothing; an interrupted run resumes where it stopped (a file is renamed into place
only when complete). A cached file of the wrong size (truncated, e.g. by a full disk) is computed
again and counted in the report. Failures are not cached: a missing or corrupt image is re-checked
on every run, so fixing the file and re-running picks it up.

Skip policy (documented, counted, printed at the end of preparation). Every item that does not
reach the dataset is counted under exactly one reason:

- ``missing_file``: the image file does not exist.
- ``corrupt_image``: the file exists but cannot be decoded (truncated, not an image).
- ``unlabelled``: the image has no positive label under the chosen label set (counted by the
  builders, before preparation; IAH's label loss needs at least one positive per image).

Builders choose per reason between counting the skip (default) and raising an error
(``bad_image_policy`` / ``unlabelled_policy`` = "error"). Structural problems (a list line with the
wrong number of labels, an unknown split name, a missing annotation file) are always errors.

Proposal methods (:class:`ProposalSettings`):

- ``selective_search``: :func:`iah_jax.data.selective_search.selective_search_proposals`.
- ``generic``: :func:`iah_jax.data.proposals.generic_proposals`, the fast generator of the embedded
  dataset.
- ``whole_image``: every row is (0, 0, 1, 1). No proposals at all: for label-only uses, fast checks
  and the "no proposal module" ablation; images are still decoded, so the skip counts are real.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import io
import json
import multiprocessing
import os
import re
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from iah_jax.errors import UserInputError

PROPOSAL_METHODS = ("selective_search", "generic", "whole_image")

SKIP_REASONS = {
    "missing_file": "the image file does not exist",
    "corrupt_image": "the image file cannot be decoded",
    "unlabelled": "the image has no positive label",
}

_SETTINGS_FILE = "settings.json"


@dataclasses.dataclass(frozen=True)
class ProposalSettings:
  """How proposals are computed; every field enters the cache key.

  Attributes:
    method: "selective_search", "generic" or "whole_image".
    num_proposals: N rows per image.
    search_max_side: selective search runs on a copy downscaled to this longer side.
    mode: selective-search strategy, "fast" | "quality" | "single".
    nms_iou: NMS threshold of selective search.
    min_side: selective search drops boxes narrower/shorter than this fraction.
    seed: seeds selective search's ranking.
  """

  method: str = "selective_search"
  num_proposals: int = 100
  search_max_side: int = 256
  mode: str = "fast"
  nms_iou: float = 0.7
  min_side: float = 0.04
  seed: int = 0

  def __post_init__(self):
    if self.method not in PROPOSAL_METHODS:
      raise ValueError(f"proposal method must be one of {PROPOSAL_METHODS}, got {self.method!r}")
    if self.num_proposals < 1:
      raise ValueError(f"num_proposals must be >= 1, got {self.num_proposals}")

  def key(self) -> str:
    """Directory name identifying these settings, e.g. 'selective_search-n100-s256-fast-...'."""
    if self.method == "selective_search":
      return (
          f"selective_search-n{self.num_proposals}-s{self.search_max_side}-{self.mode}"
          f"-nms{self.nms_iou:g}-min{self.min_side:g}-seed{self.seed}"
      )
    return f"{self.method}-n{self.num_proposals}"

  def compute(self, image: np.ndarray) -> np.ndarray:
    """Proposals for one uint8 [H, W, 3] image -> float32 [num_proposals, 4] in [0, 1]."""
    from iah_jax.data import features  # pylint: disable=g-import-not-at-top

    if self.method == "selective_search":
      from iah_jax.data import selective_search  # pylint: disable=g-import-not-at-top

      boxes = selective_search.selective_search_proposals(
          image,
          self.num_proposals,
          search_max_side=self.search_max_side,
          mode=self.mode,
          nms_iou=self.nms_iou,
          min_side=self.min_side,
          seed=self.seed,
      )
    elif self.method == "generic":
      from iah_jax.data import proposals  # pylint: disable=g-import-not-at-top

      boxes = np.asarray(proposals.generic_proposals(image, self.num_proposals), np.float32)
    else:
      boxes = np.tile(np.array([[0.0, 0.0, 1.0, 1.0]], np.float32), (self.num_proposals, 1))
    if boxes.shape != (self.num_proposals, 4):
      raise ValueError(
          f"{self.method} proposals have shape {boxes.shape}, expected "
          f"({self.num_proposals}, 4)"
      )
    return features.check_boxes(boxes, what=f"{self.method} proposals")


class SkipCounts:
  """Items left out of a dataset, counted by reason (see the module docstring)."""

  def __init__(self):
    self.counts: collections.Counter = collections.Counter()
    self.examples: dict[str, list[str]] = collections.defaultdict(list)

  def add(self, reason: str, item_id: str, max_examples: int = 5) -> None:
    if reason not in SKIP_REASONS:
      raise ValueError(f"unknown skip reason {reason!r}; known: {sorted(SKIP_REASONS)}")
    self.counts[reason] += 1
    if len(self.examples[reason]) < max_examples:
      self.examples[reason].append(str(item_id))

  def update(self, other: "SkipCounts") -> None:
    for reason, count in other.counts.items():
      self.counts[reason] += count
      room = 5 - len(self.examples[reason])
      self.examples[reason].extend(other.examples[reason][: max(room, 0)])

  @property
  def total(self) -> int:
    return sum(self.counts.values())

  def as_dict(self) -> dict[str, int]:
    """Count per reason, every known reason present (0 when none)."""
    return {reason: int(self.counts.get(reason, 0)) for reason in SKIP_REASONS}

  def format(self) -> str:
    if not self.total:
      return "skipped 0 items"
    parts = []
    for reason, count in sorted(self.counts.items()):
      examples = ", ".join(self.examples[reason])
      parts.append(f"{reason}={count} ({SKIP_REASONS[reason]}; e.g. {examples})")
    return f"skipped {self.total} items: " + "; ".join(parts)


@dataclasses.dataclass
class PreparationReport:
  """What :func:`prepare_proposals` did.

  Attributes:
    num_items: items asked for.
    num_cached: items whose proposals were already in the cache.
    num_computed: items computed in this run.
    skips: items without proposals, by reason (missing_file / corrupt_image).
    ready_ids: ids that have proposals in the cache, in input order.
    compute_seconds: summed per-image wall time (decode + proposals) of the computed items.
    cpu_seconds: summed per-image CPU time of the computed items: the per-core cost, which stays
      right when other processes share the cores (wall time then grows).
    wall_seconds: elapsed time of the whole call.
    num_workers: processes used (0 = in this process).
  """

  num_items: int
  num_cached: int
  num_computed: int
  skips: SkipCounts
  ready_ids: list[str]
  compute_seconds: float
  cpu_seconds: float
  wall_seconds: float
  num_workers: int

  @property
  def seconds_per_image(self) -> float:
    """Mean CPU time per computed image, i.e. on one core (nan when nothing was computed)."""
    return self.cpu_seconds / self.num_computed if self.num_computed else float("nan")

  def format(self) -> str:
    timing = (
        f"{self.seconds_per_image:.3f} CPU s/image per core, "
        f"{self.compute_seconds / max(self.num_computed, 1):.3f} s/image wall per process, "
        f"{self.num_computed / max(self.wall_seconds, 1e-9):.1f} images/s over "
        f"{max(self.num_workers, 1)} process(es)"
        if self.num_computed
        else "nothing to compute"
    )
    return (
        f"proposals: {self.num_items} items, {self.num_cached} cached, {self.num_computed} "
        f"computed in {self.wall_seconds:.1f} s ({timing}); {self.skips.format()}"
    )


def _safe_stem(image_id: str, image_path: str) -> str:
  """File stem for an image: readable id plus a hash of the resolved path (ids may collide) and
  of the file's size and modification time (a replaced image is a new image)."""
  readable = re.sub(r"[^A-Za-z0-9._-]+", "_", str(image_id))[-80:].lstrip(".") or "image"
  path = os.path.abspath(os.fspath(image_path))
  try:
    status = os.stat(path)
    stamp = f"{status.st_size}:{status.st_mtime_ns}"
  except OSError:  # missing: preparation counts it; the name only has to be stable
    stamp = "missing"
  digest = hashlib.sha1(f"{path}\0{stamp}".encode("utf-8", "surrogateescape")).hexdigest()[:12]
  return f"{readable}-{digest}"


@functools.lru_cache(maxsize=None)
def _cache_file_size(num_proposals: int) -> int:
  """Bytes of a complete cache file of ``num_proposals`` rows (np.save's header included)."""
  buffer = io.BytesIO()
  np.save(buffer, np.zeros((num_proposals, 4), np.float32))
  return buffer.tell()


def settings_dir(cache_dir: str | os.PathLike, settings: ProposalSettings) -> Path:
  """The cache subdirectory holding proposals made with ``settings``."""
  return Path(cache_dir) / settings.key()


def proposal_file(
    cache_dir: str | os.PathLike,
    settings: ProposalSettings,
    image_id: str,
    image_path: str | os.PathLike,
) -> Path:
  """Cache file of one image's proposals."""
  return settings_dir(cache_dir, settings) / f"{_safe_stem(image_id, os.fspath(image_path))}.npy"


def load_proposals(
    cache_dir: str | os.PathLike,
    settings: ProposalSettings,
    image_id: str,
    image_path: str | os.PathLike,
) -> np.ndarray:
  """Cached proposals of one image, float32 [N, 4]; raises if preparation did not make them."""
  path = proposal_file(cache_dir, settings, image_id, image_path)
  if not path.is_file():
    raise FileNotFoundError(
        f"no cached proposals for image {image_id!r} at {path}; run prepare_proposals first "
        "(or the image changed since)"
    )
  try:
    boxes = np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as error:
    raise UserInputError(
        f"cached proposals {path} (image {image_id!r}) cannot be read ({error}); delete the "
        "file and run again to recompute it"
    ) from None
  if boxes.shape != (settings.num_proposals, 4) or boxes.dtype != np.float32:
    raise UserInputError(
        f"cached proposals {path} have {boxes.dtype} {boxes.shape}, expected float32 "
        f"({settings.num_proposals}, 4); delete the file to recompute it"
    )
  return boxes


def _check_or_write_settings(directory: Path, settings: ProposalSettings) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / _SETTINGS_FILE
  wanted = dataclasses.asdict(settings)
  if path.is_file():
    try:
      found = json.loads(path.read_text())
    except ValueError:
      found = None  # truncated or edited: not these settings
    if found != wanted:
      raise UserInputError(
          f"proposal cache {directory} was made with settings {found}, not {wanted} (see "
          f"{path}); use another cache directory or delete this one"
      )
  else:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(wanted, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _compute_one(
    job: tuple[int, str, str], settings: ProposalSettings
) -> tuple[int, str, float, float]:
  """Decodes one image, computes and stores its proposals -> (position, status, wall s, CPU s).

  status is "ok" or a skip reason; runs in worker processes, so it must stay picklable.
  """
  from iah_jax.data import images  # pylint: disable=g-import-not-at-top

  position, image_path, target = job
  start, start_cpu = time.perf_counter(), time.process_time()
  try:
    image = images.read_image(image_path)
  except FileNotFoundError:
    return position, "missing_file", 0.0, 0.0
  except images.CorruptImageError:
    return position, "corrupt_image", 0.0, 0.0
  boxes = settings.compute(image)
  # Write to a temporary name and rename: an interrupted run never leaves a partial file.
  tmp = f"{target}.tmp{os.getpid()}.npy"
  np.save(tmp, boxes)
  os.replace(tmp, target)
  return position, "ok", time.perf_counter() - start, time.process_time() - start_cpu


def _init_worker() -> None:
  # One OpenCV thread per process: the pool already uses every core.
  try:
    import cv2  # pylint: disable=g-import-not-at-top

    cv2.setNumThreads(1)
  except ImportError:
    pass


def default_num_workers() -> int:
  """CPU cores available to this process."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:
    return max(1, os.cpu_count() or 1)


def _progress(total: int, description: str, enabled: bool):
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  return tqdm(total=total, desc=description, unit="img", disable=not enabled, dynamic_ncols=True)


def prepare_proposals(
    items: Sequence[tuple[str, str | os.PathLike]],
    cache_dir: str | os.PathLike,
    settings: ProposalSettings = ProposalSettings(),
    num_workers: int | None = None,
    progress: bool = True,
    verbose: bool = True,
    description: str = "proposals",
) -> PreparationReport:
  """Computes and caches the proposals of every item that has none yet.

  Args:
    items: (image_id, image_path) pairs; ids must be unique.
    cache_dir: cache root (see the module docstring for the layout).
    settings: the proposal method and its parameters.
    num_workers: processes to use; None = every available core; 0 or 1 = in this process. Worker
      processes are started with "spawn" (safe after TensorFlow has started its threads).
    progress: show a tqdm progress bar.
    verbose: print the report (timing and skip counts) at the end.
    description: progress-bar label.

  Returns:
    A :class:`PreparationReport`; ``ready_ids`` lists the items that now have proposals.
  """
  start = time.perf_counter()
  items = [(str(image_id), os.fspath(path)) for image_id, path in items]
  ids = [image_id for image_id, _ in items]
  if len(set(ids)) != len(ids):
    duplicate = collections.Counter(ids).most_common(1)[0][0]
    raise ValueError(f"image ids must be unique; {duplicate!r} appears more than once")
  directory = settings_dir(cache_dir, settings)
  _check_or_write_settings(directory, settings)

  ready = np.zeros(len(items), dtype=bool)
  jobs = []
  truncated = []
  complete_size = _cache_file_size(settings.num_proposals)
  for position, (image_id, path) in enumerate(items):
    target = proposal_file(cache_dir, settings, image_id, path)
    if target.is_file() and target.stat().st_size == complete_size:
      ready[position] = True
    else:
      if target.is_file():
        truncated.append(os.fspath(target))
      jobs.append((position, path, os.fspath(target)))
  num_cached = int(ready.sum())
  if truncated and verbose:
    print(
        f"proposals: recomputing {len(truncated)} cached file(s) of the wrong size (truncated?), "
        f"e.g. {truncated[0]}",
        flush=True,
    )

  if num_workers is None:
    num_workers = default_num_workers()
  # Spawning costs ~1 s per process; below a few images per worker it does not pay.
  if num_workers <= 1 or len(jobs) < 2 * num_workers:
    num_workers = 0
  skips = SkipCounts()
  totals = {"computed": 0, "wall": 0.0, "cpu": 0.0}
  compute = functools.partial(_compute_one, settings=settings)
  with _progress(len(jobs), description, progress) as bar:
    if num_workers:
      context = multiprocessing.get_context("spawn")
      chunksize = max(1, min(16, len(jobs) // (4 * num_workers)))
      with context.Pool(num_workers, initializer=_init_worker) as pool:
        results: Iterable = pool.imap_unordered(compute, jobs, chunksize=chunksize)
        for result in results:
          _record(result, items, ready, skips, totals)
          bar.update(1)
    else:
      for job in jobs:
        _record(compute(job), items, ready, skips, totals)
        bar.update(1)

  report = PreparationReport(
      num_items=len(items),
      num_cached=num_cached,
      num_computed=totals["computed"],
      skips=skips,
      ready_ids=[image_id for (image_id, _), ok in zip(items, ready) if ok],
      compute_seconds=totals["wall"],
      cpu_seconds=totals["cpu"],
      wall_seconds=time.perf_counter() - start,
      num_workers=num_workers,
  )
  if verbose:
    print(report.format(), flush=True)
  return report


def _record(result, items, ready, skips, totals) -> None:
  """Books one worker result (position, status, wall s, CPU s) into ready / skips / totals."""
  position, status, wall, cpu = result
  if status == "ok":
    ready[position] = True
    totals["computed"] += 1
    totals["wall"] += wall
    totals["cpu"] += cpu
  else:
    skips.add(status, items[position][0])
