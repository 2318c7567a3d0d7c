"""The on-disk index of a photo collection (written by `python -m iah_jax.index`).

    INDEX_DIR/index.json                 what is committed (below); replaced atomically, last
    INDEX_DIR/semantic-g<G>.npz          `retrieval.HammingIndex.save`: semantic codes, label
                                         probabilities (where the method has them), metadata
    INDEX_DIR/category-g<G>.npz          category-aware codes [n, c, b] packed (IAH, Fig. 9
                                         baseline); with the label probabilities they make the
                                         `retrieval.CategoryTables` of IAH section IV
    INDEX_DIR/paths-g<G>.json            the image paths; position i = database id i
    INDEX_DIR/proposals/...              the proposal cache (`iah_jax.data.prepare`)

No pickle anywhere: .npz read with allow_pickle=False, JSON. ``index.json`` holds ``format``,
``version``, ``generation`` G, ``num_images``, ``files`` (the generation's file names), ``run``
(the run directory, method, q, b, classes and the checkpoint step that made the codes) and
``unreadable`` (the images the last `index` run could not read, with the reason).

Commits are crash-safe: a commit writes generation G + 1's files under new names, then replaces
``index.json``, then deletes older generations. A process killed at any point (kill -9 included)
leaves ``index.json`` naming one complete generation; leftovers are removed by the next commit.
"""

from __future__ import annotations

import json
import os

import numpy as np

from iah_jax.serving.errors import ServingError

HEADER = "index.json"
FORMAT = "iah_jax.photo_index"
VERSION = 1
PROPOSAL_CACHE = "proposals"
_CATEGORY_MAGIC = "iah_jax.photo_index.category_codes"


def _write_json_atomically(path: str, value) -> None:
  temporary = f"{path}.tmp{os.getpid()}"
  with open(temporary, "w") as file:
    json.dump(value, file, indent=1)
    file.flush()
    os.fsync(file.fileno())
  os.replace(temporary, path)


def read_header(directory: str) -> dict | None:
  """The committed ``index.json`` of `directory`, or None when there is no index there yet.

  Raises ServingError for a directory whose index.json is not a photo index of this version."""
  path = os.path.join(os.fspath(directory), HEADER)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as file:
      header = json.load(file)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
    raise ServingError(f"{path} is not a readable photo index header: {err}") from None
  if not isinstance(header, dict) or header.get("format") != FORMAT:
    raise ServingError(f"{path} is not an iah_jax photo index (written by iah_jax.index)")
  if header.get("version") != VERSION:
    raise ServingError(
        f"{path} has index format version {header.get('version')!r}; this code reads "
        f"version {VERSION}"
    )
  return header


def require_header(directory: str) -> dict:
  """`read_header`, with a ServingError naming the directory when there is no index."""
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise ServingError(f"index directory {directory} does not exist")
  header = read_header(directory)
  if header is None:
    raise ServingError(
        f"{directory} holds no photo index ({HEADER} is missing); build one with "
        "`python -m iah_jax.index --run RUN_DIR --images DIR --out INDEX_DIR`"
    )
  return header


def run_info(encoder) -> dict:
  """What an index records about the run that encoded it."""
  return {
      "run_dir": encoder.run_dir,
      "method": encoder.method,
      "semantic_bits": encoder.semantic_bits,
      "bits_per_category": encoder.bits_per_category,
      "num_classes": encoder.num_classes,
      "class_names": encoder.class_names,
      "checkpoint_step": encoder.step,
      "outputs": list(encoder.outputs),
  }


def check_same_run(header: dict, directory: str, manifest: dict, run_dir: str) -> None:
  """ServingError unless the run of `manifest` (at `run_dir`) encodes codes like the index's."""
  indexed = header["run"]
  if int(manifest["semantic_bits"]) != int(indexed["semantic_bits"]):
    raise ServingError(
        f"index {directory} holds {indexed['semantic_bits']}-bit codes (run "
        f"{indexed['run_dir']}), but run {run_dir} encodes {manifest['semantic_bits']}-bit "
        "codes; use the index's own run, or index into another --out"
    )
  same = (
      manifest["method"] == indexed["method"]
      and int(manifest["bits_per_category"]) == int(indexed["bits_per_category"])
      and int(manifest["dataset"]["num_classes"]) == int(indexed["num_classes"])
  )
  if not same or os.path.abspath(run_dir) != indexed["run_dir"]:
    raise ServingError(
        f"index {directory} was built with run {indexed['run_dir']} ({indexed['method']}, "
        f"q={indexed['semantic_bits']}, b={indexed['bits_per_category']}), not with {run_dir} "
        f"({manifest['method']}, q={manifest['semantic_bits']}, "
        f"b={manifest['bits_per_category']}): codes of two models cannot be mixed; use the "
        "index's run, or index into another --out"
    )


def check_same_step(header: dict, directory: str, step: int) -> None:
  indexed = int(header["run"]["checkpoint_step"])
  if int(step) != indexed:
    raise ServingError(
        f"index {directory} was encoded with the checkpoint of step {indexed} of run "
        f"{header['run']['run_dir']}, which now restores step {step} (trained further?): "
        "codes of two checkpoints cannot be mixed; index into another --out"
    )


def _save_category_codes(path: str, codes: np.ndarray) -> None:
  from iah_jax import retrieval

  n, c, b = codes.shape
  header = {"magic": _CATEGORY_MAGIC, "num_items": n, "num_classes": c, "bits_per_category": b}
  temporary = f"{path}.tmp{os.getpid()}"
  with open(temporary, "wb") as file:
    np.savez(
        file,
        header=np.frombuffer(json.dumps(header).encode(), np.uint8),
        packed_codes=retrieval.pack_codes(codes.reshape(n, c * b), 32),
    )
  os.replace(temporary, path)


def _load_category_codes(path: str) -> np.ndarray:
  from iah_jax import retrieval

  try:
    with np.load(path, allow_pickle=False) as archive:
      header = json.loads(archive["header"].tobytes().decode())
      packed = archive["packed_codes"]
  except Exception as err:  # noqa: BLE001 - any parse failure: not our file
    raise ServingError(f"{path} is not a readable category-code file: {err}") from None
  if header.get("magic") != _CATEGORY_MAGIC:
    raise ServingError(f"{path} is not a photo-index category-code file")
  n, c, b = header["num_items"], header["num_classes"], header["bits_per_category"]
  return retrieval.unpack_codes(packed, c * b).reshape(n, c, b)


class PhotoIndex:
  """A committed photo index, loaded (see the module docstring).

  Attributes:
    directory, header: the index directory and its index.json.
    paths: list of image paths; position i is database id i.
    semantic: `retrieval.HammingIndex` of the semantic codes (``.label_probs`` [n, c] or None).
    category_codes: uint8 [n, c, b] or None.
  """

  def __init__(self, directory, header, paths, semantic, category_codes):
    self.directory = os.path.abspath(directory)
    self.header = header
    self.paths = paths
    self.semantic = semantic
    self.category_codes = category_codes

  @property
  def num_images(self) -> int:
    return len(self.paths)

  @property
  def label_probs(self) -> np.ndarray | None:
    return self.semantic.label_probs

  @property
  def run(self) -> dict:
    return self.header["run"]

  @classmethod
  def load(cls, directory: str, backend: str = "jax") -> "PhotoIndex":
    """Loads the committed generation of `directory` with the given search backend."""
    from iah_jax import retrieval

    directory = os.fspath(directory)
    header = require_header(directory)
    files = header["files"]
    try:
      with open(os.path.join(directory, files["paths"])) as file:
        paths = json.load(file)
      semantic = retrieval.HammingIndex.load(
          os.path.join(directory, files["semantic"]), backend=backend
      )
    except (OSError, ValueError) as err:
      raise ServingError(f"photo index {directory} is damaged: {err}") from None
    category_codes = None
    if files.get("category"):
      category_codes = _load_category_codes(os.path.join(directory, files["category"]))
    if not (len(paths) == semantic.num_items == header["num_images"]) or (
        category_codes is not None and category_codes.shape[0] != len(paths)
    ):
      raise ServingError(
          f"photo index {directory} is inconsistent: {header['num_images']} images in "
          f"{HEADER}, {len(paths)} paths, {semantic.num_items} codes"
      )
    return cls(directory, header, paths, semantic, category_codes)

  def category_tables(self, threshold: float | None = None, backend: str = "jax"):
    """IAH section IV's `retrieval.CategoryTables` over the database (threshold default
    `retrieval.DEFAULT_THRESHOLD`, 0.2), or None when the method has no category-aware codes or
    no label probabilities."""
    from iah_jax import retrieval

    threshold = retrieval.DEFAULT_THRESHOLD if threshold is None else threshold

    if self.category_codes is None or self.label_probs is None:
      return None
    return retrieval.CategoryTables(
        self.category_codes, self.label_probs, threshold=threshold, backend=backend
    )

  def proposals(self, position: int) -> np.ndarray:
    """float32 [N, 4]: the proposals the index computed for image `position`."""
    from iah_jax.data import prepare

    settings = prepare.ProposalSettings(**self.header["proposal_settings"])
    path = self.paths[position]
    return prepare.load_proposals(
        os.path.join(self.directory, PROPOSAL_CACHE), settings, path, path
    )


class IndexWriter:
  """Accumulates encoded images and commits generations (see the module docstring).

  `IndexWriter(directory, run, proposal_settings, existing=PhotoIndex or None)`; `add(paths,
  outputs)` with `Encoder.encode_inputs` outputs; `commit(unreadable)`.
  """

  def __init__(self, directory: str, run: dict, proposal_settings: dict, existing=None):
    self.directory = os.path.abspath(directory)
    os.makedirs(self.directory, exist_ok=True)
    self.run = run
    self.proposal_settings = proposal_settings
    self.generation = 0
    self.paths: list[str] = []
    self._codes: list[np.ndarray] = []
    self._probs: list[np.ndarray] = []
    self._category: list[np.ndarray] = []
    if existing is not None:
      from iah_jax import retrieval

      self.generation = int(existing.header["generation"])
      self.paths = list(existing.paths)
      self._codes.append(
          retrieval.unpack_codes(existing.semantic.packed_codes, existing.semantic.bits)
      )
      if existing.label_probs is not None:
        self._probs.append(existing.label_probs)
      if existing.category_codes is not None:
        self._category.append(existing.category_codes)
    self.committed = len(self.paths)

  @property
  def num_images(self) -> int:
    return len(self.paths)

  def add(self, paths: list[str], outputs: dict) -> None:
    self.paths.extend(paths)
    self._codes.append(np.asarray(outputs["semantic_codes"], np.uint8))
    if "label_probs" in outputs:
      self._probs.append(np.asarray(outputs["label_probs"], np.float32))
    if "category_codes" in outputs:
      self._category.append(np.asarray(outputs["category_codes"], np.uint8))

  def commit(self, unreadable: list[dict]) -> None:
    """Writes generation G + 1 and makes it the committed one."""
    from iah_jax import retrieval

    if not self.paths:
      raise ServingError("nothing to commit: no image was encoded")
    generation = self.generation + 1
    files = {
        "semantic": f"semantic-g{generation:06d}.npz",
        "paths": f"paths-g{generation:06d}.json",
        "category": f"category-g{generation:06d}.npz" if self._category else None,
    }
    codes = np.concatenate(self._codes)
    probs = np.concatenate(self._probs) if self._probs else None
    self._codes, self._probs = [codes], [probs] if probs is not None else []
    retrieval.HammingIndex(
        codes,
        backend="faiss",  # only to write the file: no device placement
        label_probs=probs,
        metadata={"photo_index": FORMAT, "run_dir": self.run["run_dir"]},
    ).save(os.path.join(self.directory, files["semantic"]))
    if self._category:
      category = np.concatenate(self._category)
      self._category = [category]
      _save_category_codes(os.path.join(self.directory, files["category"]), category)
    _write_json_atomically(os.path.join(self.directory, files["paths"]), self.paths)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "generation": generation,
        "num_images": len(self.paths),
        "files": files,
        "run": self.run,
        "proposal_settings": self.proposal_settings,
        "unreadable": unreadable,
    }
    _write_json_atomically(os.path.join(self.directory, HEADER), header)
    self.generation, self.committed = generation, len(self.paths)
    self._remove_other_generations(set(filter(None, files.values())))

  def _remove_other_generations(self, keep: set[str]) -> None:
    for name in os.listdir(self.directory):
      stale_generation = name.startswith(("semantic-g", "paths-g", "category-g"))
      stale_temporary = name.startswith(HEADER + ".tmp")
      if (stale_generation and name not in keep) or stale_temporary:
        try:
          os.remove(os.path.join(self.directory, name))
        except OSError:
          pass
