"""Shallow hashing baselines (IAH Table II) on backbone features: LSH, SH, ITQ, ITQ-CCA.

- `METHODS` (lsh, sh, itq, itq_cca) and their display `TITLES` (in comparison-table order).
- `fit(method, features[n, d], bits, labels=None, seed=0, **options) -> ShallowHasher`;
  `ShallowHasher.encode(features[m, d]) -> uint8 {0,1} [m, bits]`, `.save(path)`, `load(path)`.
- `fit_itq(projected[n, q], iterations=50, seed=0) -> (rotation, quantisation errors)`.
- `extract_features(backbone, variables, builder, split, image_size, batch_size=128)
  -> (features[n, C], labels[n, c])`: globally average-pooled backbone features of a TFDS split
  (import from `iah_jax.baselines.features`; it pulls in TensorFlow).
"""

from iah_jax.baselines.shallow import METHODS
from iah_jax.baselines.shallow import TITLES
from iah_jax.baselines.shallow import ShallowHasher
from iah_jax.baselines.shallow import fit
from iah_jax.baselines.shallow import fit_itq
from iah_jax.baselines.shallow import load
