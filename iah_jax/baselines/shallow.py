"""Shallow hashing baselines of IAH Table II on real-valued features: LSH, SH, ITQ, ITQ-CCA.

    hasher = fit("itq_cca", train_features, bits=32, labels=train_labels, seed=0)
    codes = hasher.encode(features)          # uint8 {0,1} [m, 32]
    hasher.save(path); hasher = load(path)   # .npz, no pickle

Every method centres the features with the training mean, then:
- "lsh": bits = [(x - mu) W >= 0], W [d, bits] i.i.d. N(0, 1) from `seed` (random hyperplanes
  through the training mean).
- "sh": spectral hashing (Weiss et al. 2008; see spectral.py): PCA to min(bits, d) coordinates,
  each taken as uniform on its training range [a, b] (min and max), then the `bits` 1-D
  eigenfunctions of smallest eigenvalue; bit = [sin(pi/2 + k pi (x_j - a_j)/(b_j - a_j)) > 0].
  Like the reference trainSH.m it allows bits > d (several modes per coordinate).
- "itq": PCA to `bits` coordinates, then the ITQ rotation R (itq.py; `iterations`, default 50,
  random orthogonal start from `seed`); bits = [(x - mu) W_pca R >= 0].
- "itq_cca": as "itq" with the PCA directions replaced by regularised CCA directions of the
  features against the label matrix (subspaces.py; `regularisation`, default 1e-4 relative to the
  mean feature variance), each scaled by its canonical correlation as in Gong et al. (PAMI 2013).
  Only min(d, c) correlations are non-zero, so with bits > c the extra directions carry nothing
  (scaled to 0) and the rotation spreads the c informative ones over all bits.

The eigenproblems run once in NumPy float64; the ITQ iterations and the encoder are jitted JAX
(float32 with full-precision matmuls, so TPU bf16 passes never flip a bit).

Archive format (np.load(path, allow_pickle=False)): 0-d unicode arrays `format`
("iah_jax.ShallowHasher/1"), `method`, `options` (JSON); int64 0-d `bits`; float32 `mean` [d],
`projection` [d, k]; and per method `rotation` [bits, bits] + `history` [iterations + 1]
(itq, itq_cca), `range_min` / `range_max` [k] + int64 `eigen_coordinates` / `eigen_modes`
[bits] (sh).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from iah_jax.baselines import itq
from iah_jax.baselines import spectral
from iah_jax.baselines import subspaces

METHODS = ("lsh", "sh", "itq", "itq_cca")
# Display titles, in the row order of the comparison tables (IAH Table II).
TITLES = {"itq_cca": "ITQ-CCA", "itq": "ITQ", "sh": "SH", "lsh": "LSH"}
FORMAT = "iah_jax.ShallowHasher/1"
_OPTIONS = {  # method -> its options and their defaults
    "lsh": {},
    "sh": {},
    "itq": {"iterations": 50},
    "itq_cca": {"iterations": 50, "regularisation": 1e-4},
}
# Rows encoded per jitted call: bounds memory for any database size with one compilation.
_ENCODE_ROWS = 8192
_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True, eq=False)
class ShallowHasher:
  """A fitted shallow hash function (see the module docstring for each method's formula).

  Attributes:
    method: "lsh", "sh", "itq" or "itq_cca".
    bits: code length.
    mean: float32 [d] training mean subtracted from every input.
    projection: float32 [d, k]: hyperplanes (lsh, k = bits), principal directions (sh,
      k = min(bits, d); itq, k = bits) or correlation-scaled CCA directions (itq_cca, k = bits).
    rotation: float32 [bits, bits] ITQ rotation (itq, itq_cca), else None.
    history: float32 [iterations + 1] ITQ quantisation error ||B - V R||_F^2 at the start and
      after every iteration (itq, itq_cca), else None.
    range_min, range_max: float32 [k] training range of each principal coordinate (sh).
    eigen_coordinates, eigen_modes: int64 [bits] principal coordinate and mode of each bit (sh).
    options: the method's options as used (JSON-serialisable), including `seed`.
  """

  method: str
  bits: int
  mean: np.ndarray
  projection: np.ndarray
  rotation: np.ndarray | None = None
  history: np.ndarray | None = None
  range_min: np.ndarray | None = None
  range_max: np.ndarray | None = None
  eigen_coordinates: np.ndarray | None = None
  eigen_modes: np.ndarray | None = None
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def input_dim(self) -> int:
    return int(self.mean.shape[0])

  def encode(self, features) -> np.ndarray:
    """features float [m, d] -> codes uint8 {0,1} [m, bits]."""
    features = _check_features(features, "features to encode", dim=self.input_dim, min_rows=0)
    if features.shape[0] == 0:
      return np.zeros((0, self.bits), np.uint8)
    encode_rows = self._encoder()
    rows = min(features.shape[0], _ENCODE_ROWS)
    codes = []
    for start in range(0, features.shape[0], rows):
      chunk = features[start : start + rows]
      real = chunk.shape[0]
      if real < rows:  # pad the last chunk so every call has the same shape (one compilation)
        chunk = np.concatenate([chunk, np.zeros((rows - real, chunk.shape[1]), np.float32)])
      codes.append(np.asarray(encode_rows(jnp.asarray(chunk)))[:real])
    return np.concatenate(codes)

  def _encoder(self):
    """A function of one chunk of float32 features [rows, d] -> uint8 codes [rows, bits]."""
    mean, projection = jnp.asarray(self.mean), jnp.asarray(self.projection)
    if self.method == "sh":
      coordinates = jnp.asarray(self.eigen_coordinates)
      lower = jnp.asarray(self.range_min)[coordinates]
      # omega_i = k_i pi / (b - a) of the coordinate each bit reads (trainSH.m's omegas).
      widths = (self.range_max - self.range_min)[self.eigen_coordinates].astype(np.float64)
      frequencies = jnp.asarray(self.eigen_modes * math.pi / widths, jnp.float32)
      return lambda chunk: _spectral_codes(chunk, mean, projection, coordinates, lower, frequencies)
    if self.rotation is not None:
      rotation = jnp.asarray(self.rotation)
      return lambda chunk: _rotated_codes(chunk, mean, projection, rotation)
    return lambda chunk: _linear_codes(chunk, mean, projection)

  def save(self, path) -> None:
    """Writes the hasher to `path` (.npz, no pickle; ".npz" is not appended)."""
    arrays = {
        "format": np.array(FORMAT),
        "method": np.array(self.method),
        "options": np.array(json.dumps(dict(self.options), sort_keys=True)),
        "bits": np.array(self.bits, np.int64),
        "mean": self.mean,
        "projection": self.projection,
    }
    for name in _METHOD_ARRAYS[self.method]:
      arrays[name] = getattr(self, name)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)  # never leave a half-written file under `path`

  @classmethod
  def load(cls, path) -> "ShallowHasher":
    return load(path)


_METHOD_ARRAYS = {
    "lsh": (),
    "sh": ("range_min", "range_max", "eigen_coordinates", "eigen_modes"),
    "itq": ("rotation", "history"),
    "itq_cca": ("rotation", "history"),
}


@jax.jit
def _linear_codes(features, mean, projection):
  projected = jnp.matmul(features - mean, projection, precision=_HIGHEST)
  return (projected >= 0).astype(jnp.uint8)


@jax.jit
def _rotated_codes(features, mean, projection, rotation):
  projected = jnp.matmul(features - mean, projection, precision=_HIGHEST)
  return (jnp.matmul(projected, rotation, precision=_HIGHEST) >= 0).astype(jnp.uint8)


@jax.jit
def _spectral_codes(features, mean, projection, coordinates, lower, frequencies):
  principal = jnp.matmul(features - mean, projection, precision=_HIGHEST)
  phase = (principal[:, coordinates] - lower) * frequencies
  return (jnp.sin(phase + jnp.pi / 2) > 0).astype(jnp.uint8)


# --------------------------------------------------------------------------------------------
# Fitting


def fit(method: str, features, bits: int, labels=None, seed: int = 0, **options) -> ShallowHasher:
  """Fits a shallow hash function on training features.

  Args:
    method: "lsh", "sh", "itq" or "itq_cca".
    features: float [n, d] training features (e.g. pooled backbone outputs), finite.
    bits: code length (<= d for itq and itq_cca).
    labels: {0,1} [n, c] training labels; required by itq_cca, ignored by the others.
    seed: seeds LSH's hyperplanes and ITQ's initial rotation (SH is deterministic).
    **options: itq / itq_cca: `iterations` (default 50); itq_cca: `regularisation` (default
      1e-4, relative to the mean variance of the features and of the labels).

  Returns:
    The fitted ShallowHasher.
  """
  if method not in METHODS:
    raise ValueError(f"unknown shallow hashing method {method!r}; known: {list(METHODS)}")
  unknown = set(options) - set(_OPTIONS[method])
  if unknown:
    raise ValueError(
        f"{method} has no option(s) {sorted(unknown)}; its options are "
        f"{sorted(_OPTIONS[method]) or 'none'}"
    )
  options = _checked_options(method, {**_OPTIONS[method], **options})
  features = _check_features(features, "training features", min_rows=2).astype(np.float64)
  n, d = features.shape
  if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 1:
    raise ValueError(f"bits must be a positive integer, got {bits!r}")
  bits = int(bits)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise ValueError(f"seed must be an integer, got {seed!r}")
  if method in ("itq", "itq_cca") and bits > d:
    raise ValueError(
        f"{method} projects the {d}-dim features onto `bits` {'PCA' if method == 'itq' else 'CCA'}"
        f" directions, so it needs bits <= {d}, got {bits}: use at most {d} bits, or richer "
        "features, or lsh / sh (which allow more bits than feature dimensions)"
    )
  if method == "itq_cca":
    labels = _check_labels(labels, n)
  mean = features.mean(axis=0)
  centred = features - mean
  if not np.any(centred):
    raise ValueError(f"the {n} training feature vectors are all identical; nothing to hash")
  recorded = {"seed": int(seed), **options}

  if method == "lsh":
    # Random hyperplanes: JAX's counter-based PRNG gives the same W on any platform.
    hyperplanes = jax.random.normal(jax.random.PRNGKey(seed), (d, bits), jnp.float32)
    return ShallowHasher(
        "lsh", bits, mean.astype(np.float32), np.asarray(hyperplanes), options=recorded
    )
  if method == "sh":
    return _fit_spectral(centred, mean, bits, recorded)

  iterations = options["iterations"]
  if method == "itq":
    directions, _ = subspaces.principal_directions(centred, bits)
  else:
    directions, correlations = subspaces.canonical_directions(
        centred, labels - labels.mean(axis=0), bits, options["regularisation"]
    )
    directions = directions * correlations  # Gong et al.: scale by the canonical correlations
  projection = directions.astype(np.float32)
  rotation, history = itq.fit_itq(centred @ projection.astype(np.float64), iterations, seed)
  return ShallowHasher(
      method,
      bits,
      mean.astype(np.float32),
      projection,
      rotation=rotation,
      history=history,
      options=recorded,
  )


def _checked_options(method: str, options: dict) -> dict:
  """Validates the options and turns them into plain Python numbers (they go into JSON)."""
  checked = dict(options)
  if "iterations" in options:
    iterations = options["iterations"]
    if (
        isinstance(iterations, bool)
        or not isinstance(iterations, (int, np.integer))
        or iterations < 0
    ):
      raise ValueError(f"{method} iterations must be an integer >= 0, got {iterations!r}")
    checked["iterations"] = int(iterations)
  if "regularisation" in options:
    regularisation = options["regularisation"]
    if (
        isinstance(regularisation, bool)
        or not isinstance(regularisation, (int, float, np.number))
        or not (math.isfinite(regularisation) and regularisation > 0)
    ):
      raise ValueError(
          f"{method} regularisation must be a positive number, got " f"{regularisation!r}"
      )
    checked["regularisation"] = float(regularisation)
  return checked


def _fit_spectral(centred, mean, bits, recorded) -> ShallowHasher:
  directions, _ = subspaces.principal_directions(centred, min(bits, centred.shape[1]))
  directions = directions.astype(np.float32)
  # The range of the coordinates as the encoder computes them (float32 projection), widened by
  # machine epsilon as trainSH.m (min - eps, max + eps) so no range is empty.
  principal = centred @ directions.astype(np.float64)
  eps = np.finfo(np.float64).eps
  range_min, range_max = principal.min(axis=0) - eps, principal.max(axis=0) + eps
  coordinates, modes = spectral.select_eigenfunctions(range_max - range_min, bits)
  return ShallowHasher(
      "sh",
      bits,
      mean.astype(np.float32),
      directions,
      range_min=range_min.astype(np.float32),
      range_max=range_max.astype(np.float32),
      eigen_coordinates=coordinates,
      eigen_modes=modes,
      options=recorded,
  )


def fit_itq(projected, iterations: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """ITQ rotation of centred data [n, q] -> (rotation [q, q], errors [iterations + 1])."""
  return itq.fit_itq(projected, iterations, seed)


# --------------------------------------------------------------------------------------------
# Input checks and the archive


def _check_features(features, what: str, dim: int | None = None, min_rows: int = 1) -> np.ndarray:
  array = np.asarray(features)
  if array.ndim != 2:
    raise ValueError(f"{what} must be a 2-D array [n, d], got shape {array.shape}")
  if not (
      np.issubdtype(array.dtype, np.floating)
      or np.issubdtype(array.dtype, np.integer)
      or array.dtype == np.bool_
  ):
    raise ValueError(f"{what} must be numeric, got dtype {array.dtype}")
  if array.shape[0] < min_rows:
    raise ValueError(f"{what}: need at least {min_rows} rows, got {array.shape[0]}")
  if dim is not None and array.shape[1] != dim:
    raise ValueError(
        f"{what} have {array.shape[1]} dimensions but the hasher was fitted on "
        f"{dim}-dim features"
    )
  if array.shape[1] < 1:
    raise ValueError(f"{what} have no dimensions (shape {array.shape})")
  array = array.astype(np.float32) if dim is not None else array.astype(np.float64)
  bad = ~np.isfinite(array)
  if bad.any():
    row, column = np.argwhere(bad)[0]
    raise ValueError(
        f"{what} contain {int(bad.sum())} non-finite value(s) (NaN or Inf), first "
        f"at row {row}, column {column}"
    )
  return array


def _check_labels(labels, n: int) -> np.ndarray:
  if labels is None:
    raise ValueError(
        "itq_cca needs the training labels: fit('itq_cca', features, bits, "
        "labels=<{0,1} array [n, c]>)"
    )
  labels = np.asarray(labels)
  if labels.ndim != 2 or labels.shape[0] != n or labels.shape[1] < 1:
    raise ValueError(
        f"labels must be a 2-D array [n, c] with n = {n} (one row per feature "
        f"vector), got shape {labels.shape}"
    )
  labels = labels.astype(np.float64)
  if not np.all(np.isfinite(labels)):
    raise ValueError("labels contain non-finite values")
  return labels


def load(path) -> ShallowHasher:
  """Reads a hasher written by `ShallowHasher.save`; ValueError for anything else."""
  path = os.fspath(path)
  try:
    archive = np.load(path, allow_pickle=False)
  except FileNotFoundError:
    raise
  except Exception as err:  # noqa: BLE001 - any parse failure means "not our file"
    raise ValueError(
        f"{path} is not a readable shallow-hasher archive: " f"{type(err).__name__}: {err}"
    ) from None
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise ValueError(f"{path} is a single .npy array, not a shallow-hasher archive")
  with archive:
    try:
      stored = {name: archive[name] for name in archive.files}
    except Exception as err:  # noqa: BLE001 - zlib / zip errors of a cut-off file
      raise ValueError(f"{path}: the archive is damaged or truncated: {err}") from None
  if "format" not in stored or str(stored["format"]) != FORMAT:
    raise ValueError(
        f"{path} is not a shallow-hasher archive (format "
        f"{str(stored['format']) if 'format' in stored else None!r}, expected "
        f"{FORMAT!r})"
    )
  method = str(stored.get("method", ""))
  if method not in METHODS:
    raise ValueError(f"{path}: unknown method {method!r}")
  missing = {"options", "bits", "mean", "projection", *_METHOD_ARRAYS[method]} - set(stored)
  if missing:
    raise ValueError(f"{path}: {method} archive is missing {sorted(missing)}")
  bits, mean, projection = int(stored["bits"]), stored["mean"], stored["projection"]
  if mean.ndim != 1 or projection.ndim != 2 or projection.shape[0] != mean.shape[0]:
    raise ValueError(
        f"{path}: inconsistent shapes mean {mean.shape}, projection " f"{projection.shape}"
    )
  extra = {name: stored[name] for name in _METHOD_ARRAYS[method]}
  expected = {
      "rotation": (bits, bits),
      "eigen_coordinates": (bits,),
      "eigen_modes": (bits,),
      "range_min": (projection.shape[1],),
      "range_max": (projection.shape[1],),
  }
  for name, value in extra.items():
    if name in expected and value.shape != expected[name]:
      raise ValueError(f"{path}: {name} has shape {value.shape}, expected {expected[name]}")
  if method != "sh" and projection.shape[1] != bits:
    raise ValueError(f"{path}: projection has {projection.shape[1]} columns for {bits} bits")
  return ShallowHasher(
      method, bits, mean, projection, options=json.loads(str(stored["options"])), **extra
  )
