"""On-disk format of a Hamming index: one .npz archive, no pickle.

Members (all plain NumPy arrays, read back with ``np.load(..., allow_pickle=False)``):
- ``header``: uint8 bytes of a UTF-8 JSON object {"magic": "iah_jax.HammingIndex", "version": 1,
  "bits", "num_items", "word_bits": 32, "bit_order": "lsb-first", "has_label_probs",
  "metadata": {...}}.
- ``packed_codes``: uint32 [num_items, ceil(bits / 32)], bit k of a code in word k // 32 at bit
  k % 32 (see `iah_jax.retrieval.packing`).
- ``ids``: int64 [num_items], ascending.
- ``label_probs`` (only when has_label_probs): float32 [num_items, c].

Loading checks the magic, the version and every shape, and turns truncated or foreign files into a
ValueError that says what is wrong.
"""

from __future__ import annotations

import json
import os

import numpy as np

MAGIC = "iah_jax.HammingIndex"
VERSION = 1


def save_index(
    path,
    packed_codes: np.ndarray,
    bits: int,
    ids: np.ndarray,
    label_probs: np.ndarray | None = None,
    metadata: dict | None = None,
) -> None:
  """Writes an index archive to `path` (a file name; ".npz" is not appended)."""
  metadata = {} if metadata is None else dict(metadata)
  try:
    json.dumps(metadata)
  except TypeError as err:
    raise ValueError(f"index metadata must be JSON-serialisable: {err}") from None
  header = {
      "magic": MAGIC,
      "version": VERSION,
      "bits": int(bits),
      "num_items": int(packed_codes.shape[0]),
      "word_bits": 32,
      "bit_order": "lsb-first",
      "has_label_probs": label_probs is not None,
      "metadata": metadata,
  }
  arrays = {
      "header": np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8),
      "packed_codes": np.ascontiguousarray(packed_codes, np.uint32),
      "ids": np.ascontiguousarray(ids, np.int64),
  }
  if label_probs is not None:
    arrays["label_probs"] = np.ascontiguousarray(label_probs, np.float32)
  tmp = f"{os.fspath(path)}.tmp"
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)  # never leave a half-written index under `path`


def load_index(path) -> dict:
  """Reads an archive written by `save_index`; returns header fields plus the arrays.

  Returns {"bits", "num_items", "metadata", "packed_codes", "ids", "label_probs" (or None)}.
  Raises ValueError for a file that is not such an archive, is truncated, or is inconsistent.
  """
  path = os.fspath(path)
  try:
    archive = np.load(path, allow_pickle=False)
  except FileNotFoundError:
    raise
  except Exception as err:  # noqa: BLE001 - any parse failure means "not our file"
    raise ValueError(
        f"{path} is not a readable iah_jax Hamming index (not an .npz archive or "
        f"truncated): {type(err).__name__}: {err}"
    ) from None
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise ValueError(f"{path} is a single .npy array, not an iah_jax Hamming index archive")
  with archive:
    missing = {"header", "packed_codes", "ids"} - set(archive.files)
    if missing:
      raise ValueError(f"{path} is not an iah_jax Hamming index (missing {sorted(missing)})")
    try:
      header_bytes = archive["header"]
      packed = archive["packed_codes"]
      ids = archive["ids"]
      label_probs = archive["label_probs"] if "label_probs" in archive.files else None
    except Exception as err:  # noqa: BLE001 - zlib / zip / reshape errors of a cut-off file
      raise ValueError(
          f"{path}: the index archive is damaged or truncated: " f"{type(err).__name__}: {err}"
      ) from None
  try:
    header = json.loads(header_bytes.tobytes().decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as err:
    raise ValueError(f"{path}: the index header is not valid JSON ({err})") from None
  if not isinstance(header, dict) or header.get("magic") != MAGIC:
    raise ValueError(
        f"{path} is not an iah_jax Hamming index (magic is "
        f"{header.get('magic') if isinstance(header, dict) else None!r})"
    )
  if header.get("version") != VERSION:
    raise ValueError(
        f"{path}: index format version {header.get('version')!r} is not supported "
        f"(this code reads version {VERSION})"
    )
  bits, num_items = int(header["bits"]), int(header["num_items"])
  words = -(-bits // 32)
  if packed.dtype != np.uint32 or packed.shape != (num_items, words):
    raise ValueError(
        f"{path}: packed_codes is {packed.dtype} {packed.shape}, expected uint32 "
        f"{(num_items, words)} for {num_items} codes of {bits} bits"
    )
  if ids.dtype != np.int64 or ids.shape != (num_items,):
    raise ValueError(f"{path}: ids is {ids.dtype} {ids.shape}, expected int64 ({num_items},)")
  if header.get("has_label_probs") != (label_probs is not None):
    raise ValueError(f"{path}: header and archive disagree on label_probs")
  if label_probs is not None and (label_probs.ndim != 2 or label_probs.shape[0] != num_items):
    raise ValueError(
        f"{path}: label_probs has shape {label_probs.shape}, expected " f"({num_items}, c)"
    )
  return {
      "bits": bits,
      "num_items": num_items,
      "metadata": header.get("metadata", {}),
      "packed_codes": packed,
      "ids": ids,
      "label_probs": label_probs,
  }
