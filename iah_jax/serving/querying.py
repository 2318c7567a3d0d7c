"""Searching a photo index with a query image.

    result = search_index(index, encoder, "query.png", k=20, by_category=True)
    result.to_json()   # what results.json holds

- Semantic ranking: the query's semantic code against every indexed code, by Hamming distance
  (`retrieval.HammingIndex`, ties by ascending id) or, with ``ranking="weighted"``, by
  query-adaptive weighted Hamming distance (QaDWH; `retrieval.weighted_hamming_search` with the
  query's bit weights w = p W), for the methods that give bit weights (IAH, QaDWH).
- By category (IAH section IV): for each category j whose predicted probability p_j >= 0.2, the
  query's piece j searched in table j of `retrieval.CategoryTables` (the indexed images with
  p_j >= 0.2), one group per category, groups by descending p_j. Needs category-aware codes and
  label probabilities (IAH); otherwise the result says why there are no groups.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from iah_jax.serving import photo_index
from iah_jax.serving import preprocess
from iah_jax.serving.errors import ServingError

RANKINGS = ("hamming", "weighted")
DEFAULT_THRESHOLD = 0.2  # IAH section IV


@dataclasses.dataclass
class SearchResult:
  """A query's results (see `to_json` for the fields).

  Attributes:
    query_path, query_image: the query file and its pixels (uint8 [H, W, 3]).
    query_outputs: the encoder's outputs for the query (one row each).
    ranking, k, threshold: the search settings.
    distances, ids: the semantic ranking, [k] each.
    groups: {category: (distances [k_j], ids [k_j])} in display order, or None.
    table_sizes: images stored per category table, or None.
    notes: sentences for the page about what is not available for this method.
    timing_ms: "encode_query", "search", "category_search".
  """

  query_path: str
  query_image: np.ndarray
  query_outputs: dict
  ranking: str
  k: int
  threshold: float
  distances: np.ndarray
  ids: np.ndarray
  groups: dict | None
  table_sizes: list | None
  notes: list
  timing_ms: dict
  index_directory: str
  paths: list
  class_names: list
  db_label_probs: np.ndarray | None

  @property
  def query_label_probs(self) -> np.ndarray | None:
    probs = self.query_outputs.get("label_probs")
    return None if probs is None else probs[0]

  def predicted_categories(self) -> list[int]:
    """The query's categories with p_j >= threshold, most probable first."""
    probs = self.query_label_probs
    if probs is None:
      return []
    return sorted(np.flatnonzero(probs >= self.threshold).tolist(), key=lambda j: (-probs[j], j))

  def flat_saliency_category(self, image_id: int) -> int | None:
    """The category whose saliency a result of the semantic ranking shows: of the query's
    predicted categories (or its most probable one), the one the result is most likely to hold."""
    query = self.query_label_probs
    if query is None or self.db_label_probs is None:
      return None
    candidates = self.predicted_categories() or [int(np.argmax(query))]
    item = self.db_label_probs[image_id]
    return max(candidates, key=lambda j: (item[j], -j))

  def _item(self, rank, image_id, distance, category=None) -> dict:
    item = {
        "rank": rank,
        "id": int(image_id),
        "path": self.paths[int(image_id)],
        "distance": float(distance) if self.ranking == "weighted" else int(distance),
    }
    if category is not None and self.db_label_probs is not None:
      item["probability"] = float(self.db_label_probs[int(image_id), category])
    return item

  def to_json(self) -> dict:
    query_probs = self.query_label_probs
    names = self.class_names
    groups = None
    if self.groups is not None:
      groups = [
          {
              "category": int(j),
              "name": names[j],
              "query_probability": float(query_probs[j]),
              "table_size": int(self.table_sizes[j]),
              "results": [
                  self._item(rank + 1, image_id, distance, j)
                  for rank, (distance, image_id) in enumerate(zip(distances, ids))
              ],
          }
          for j, (distances, ids) in self.groups.items()
      ]
    results = []
    for rank, (distance, image_id) in enumerate(zip(self.distances, self.ids)):
      item = self._item(rank + 1, image_id, distance)
      category = self.flat_saliency_category(int(image_id))
      if category is not None:
        item["saliency_category"] = category
      results.append(item)
    return {
        "query": {
            "path": self.query_path,
            "label_probs": None if query_probs is None else [float(p) for p in query_probs],
            "predicted_labels": (
                None
                if query_probs is None
                else [
                    {"category": j, "name": names[j], "probability": float(query_probs[j])}
                    for j in self.predicted_categories()
                ]
            ),
        },
        "index": self.index_directory,
        "ranking": self.ranking,
        "distance": "weighted Hamming" if self.ranking == "weighted" else "Hamming",
        "k": self.k,
        "threshold": self.threshold,
        "results": results,
        "groups": groups,
        "notes": list(self.notes),
        "timing_ms": dict(self.timing_ms),
    }


class Searcher:
  """An index and the run that encoded it, ready for queries (category tables and unpacked codes
  are built on first use and kept)."""

  def __init__(self, index: photo_index.PhotoIndex, encoder, backend: str = "jax"):
    self.index, self.encoder, self.backend = index, encoder, backend
    if backend == "faiss":
      import faiss

      # One query scans 100k codes in ~0.2 ms on one thread; waking faiss's OpenMP team costs
      # more than that, and ~60 ms per query on a busy 2-core machine (benchmarks/query_latency).
      # A process-wide setting: the searcher's process serves single queries.
      faiss.omp_set_num_threads(1)
    self._tables = {}
    self._codes = None

  def category_tables(self, threshold: float):
    if threshold not in self._tables:
      self._tables[threshold] = self.index.category_tables(threshold, backend=self.backend)
    return self._tables[threshold]

  def semantic_codes(self) -> np.ndarray:
    from iah_jax import retrieval

    if self._codes is None:
      semantic = self.index.semantic
      self._codes = retrieval.unpack_codes(semantic.packed_codes, semantic.bits)
    return self._codes

  def search(
      self,
      query,
      k: int = 20,
      by_category: bool = False,
      ranking: str = "hamming",
      threshold: float = DEFAULT_THRESHOLD,
  ) -> SearchResult:
    """Encodes `query` (a path or uint8 [H, W, 3]) and searches (module docstring)."""
    from iah_jax import retrieval

    if ranking not in RANKINGS:
      raise ServingError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
    if isinstance(k, bool) or int(k) != k or k < 1:
      raise ServingError(f"k must be a positive integer, got {k!r}")
    encoder, index = self.encoder, self.index
    if ranking == "weighted" and "bit_weights" not in encoder.outputs:
      raise ServingError(
          f"--ranking weighted needs query-adaptive bit weights, which method {encoder.method!r} "
          "does not give (iah and qadwh do); use --ranking hamming"
      )
    query_path = os.fspath(query) if isinstance(query, (str, os.PathLike)) else "<array>"
    image = preprocess.read_photo(query) if isinstance(query, (str, os.PathLike)) else query
    started = time.perf_counter()
    # The query's per-proposal probabilities are the page's business (page.Visuals): not
    # computed here, so a query costs one forward pass.
    outputs = encoder.encode([image], proposal_probs=False)
    encoded = time.perf_counter()
    if ranking == "weighted":
      distances, ids = retrieval.weighted_hamming_search(
          outputs["semantic_codes"], self.semantic_codes(), outputs["bit_weights"], k
      )
    else:
      distances, ids = index.semantic.search(outputs["semantic_codes"], k)
    searched = time.perf_counter()
    notes, groups, table_sizes = [], None, None
    if by_category:
      tables = self.category_tables(threshold)
      if tables is None:
        notes.append(
            f"Results are not grouped by category: method {encoder.method!r} has no "
            "category-aware codes with label probabilities (IAH section IV needs both)."
        )
      else:
        groups = tables.search(outputs["category_codes"], outputs["label_probs"], k)[0]
        table_sizes = tables.table_sizes()
        if not groups:
          notes.append(
              f"No category has a predicted probability >= {threshold} for this query, so "
              "there is no group to show."
          )
    grouped = time.perf_counter()
    if "proposal_label_probs" not in encoder.outputs:
      notes.append(
          f"No saliency maps: method {encoder.method!r} has no per-proposal label "
          "probabilities (IAH's P, Fig. 5)."
      )
    if "label_probs" not in outputs:
      notes.append(f"No predicted labels: method {encoder.method!r} has no label probabilities.")
    return SearchResult(
        query_path=query_path,
        query_image=image,
        query_outputs=outputs,
        ranking=ranking,
        k=int(k),
        threshold=float(threshold),
        distances=distances[0],
        ids=ids[0],
        groups=groups,
        table_sizes=table_sizes,
        notes=notes,
        timing_ms={
            "encode_query": 1000 * (encoded - started),
            "search": 1000 * (searched - encoded),
            "category_search": 1000 * (grouped - searched),
        },
        index_directory=index.directory,
        paths=index.paths,
        class_names=encoder.class_names,
        db_label_probs=index.label_probs,
    )


def _json_ready(value):
  if isinstance(value, dict):
    return {key: _json_ready(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_ready(item) for item in value]
  if isinstance(value, (np.integer, np.floating)):
    return value.item()
  return value


def search_photos(
    index_dir: str,
    query: str,
    out_dir: str,
    *,
    k: int = 20,
    by_category: bool = False,
    ranking: str = "hamming",
    backend: str = "jax",
    threshold: float = DEFAULT_THRESHOLD,
    saliency_sheet: bool = False,
    saliency_reduce: str = "max",
    run_dir: str | None = None,
    log=print,
    encoder=None,
) -> dict:
  """The work of `python -m iah_jax.search`: checks the input (cheap checks first), loads the
  run and the index, searches, and writes results.json, results.html (and saliency.png).

  `encoder`: the run already loaded (`load_model`), for several queries in one process.
  Returns the results.json dict (with "files": the paths written). ServingError for bad input.
  """
  import json

  from iah_jax.serving import run_dirs
  from iah_jax.serving import saliency

  if ranking not in RANKINGS:
    raise ServingError(f"--ranking must be one of {RANKINGS}, got {ranking!r}")
  if backend not in ("jax", "faiss"):
    raise ServingError(f"--backend must be 'jax' or 'faiss', got {backend!r}")
  if saliency_reduce not in saliency.REDUCTIONS:
    raise ServingError(
        f"--saliency_reduce must be one of {saliency.REDUCTIONS}, got {saliency_reduce!r}"
    )
  if not 0.0 <= threshold <= 1.0:
    raise ServingError(f"--threshold must be in [0, 1], got {threshold}")
  header = photo_index.require_header(index_dir)
  run_dir = run_dir or header["run"]["run_dir"]
  manifest = run_dirs.check_run_dir(run_dir)
  photo_index.check_same_run(header, index_dir, manifest, run_dir)
  if ranking == "weighted" and "bit_weights" not in header["run"]["outputs"]:
    raise ServingError(
        f"--ranking weighted needs query-adaptive bit weights, which method "
        f"{header['run']['method']!r} does not give (iah and qadwh do); use --ranking hamming"
    )
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ServingError(f"--out {out_dir} exists and is not a directory")
  query_image = preprocess.read_photo(query)

  from iah_jax.serving import encoder as encoder_lib  # the heavy part: JAX and the model
  from iah_jax.serving import page

  if encoder is None:
    log(f"loading run {run_dir}")
    # One query at a time: a batch of one row per device, not the evaluation's batch.
    encoder = encoder_lib.load_model(run_dir, batch_size=1)
  elif encoder.run_dir != os.path.abspath(run_dir):
    raise ServingError(f"the encoder given is run {encoder.run_dir}, not {run_dir}")
  photo_index.check_same_step(header, index_dir, encoder.step)
  searcher = Searcher(photo_index.PhotoIndex.load(index_dir, backend=backend), encoder, backend)
  result = searcher.search(
      query_image, k=k, by_category=by_category, ranking=ranking, threshold=threshold
  )
  result.query_path = os.path.abspath(query)
  visuals = page.Visuals(result, searcher, reduce=saliency_reduce)
  run = header["run"]
  footer = (
      f"index {searcher.index.directory} ({searcher.index.num_images} images); run {run['run_dir']} "
      f"({run['method']}, q={run['semantic_bits']}, b={run['bits_per_category']}, step "
      f"{run['checkpoint_step']}); {result.distances.size} results by "
      f"{'weighted ' if ranking == 'weighted' else ''}Hamming distance; saliency: {saliency_reduce} "
      f"over proposals; query encoded in {result.timing_ms['encode_query']:.1f} ms (with XLA "
      f"compilation on a process's first query), searched in "
      f"{result.timing_ms['search']:.1f} ms"
  )
  files = page.write_outputs(result, visuals, out_dir, footer=footer, sheet=saliency_sheet)
  if saliency_sheet and not visuals.has_saliency:
    os.remove(files.pop("saliency"))
    result.notes.append("No saliency sheet written: the method has no saliency maps.")
  output = _json_ready(result.to_json())
  output["saliency"] = {"reduce": saliency_reduce, "available": visuals.has_saliency}
  output["files"] = dict(files, json=os.path.join(out_dir, "results.json"))
  with open(output["files"]["json"], "w") as file:
    json.dump(output, file, indent=1)
  return output
