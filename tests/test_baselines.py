"""Shallow baselines (LSH, SH, ITQ, ITQ-CCA) and backbone feature extraction.

References are written here with loops straight from the papers / the authors' MATLAB code
(trainSH.m, compressSH.m, ITQ.m), independent of the library's vectorised code.
"""

import math

import jax
import numpy as np
import pytest
from scipy import stats

from iah_jax import baselines
from iah_jax.baselines import itq
from iah_jax.baselines import spectral
from iah_jax.baselines import subspaces
from iah_jax.metrics import retrieval_metrics


def gaussian_data(n, stds, seed, offset=3.0):
  """Gaussian rows [n, d] with the given axis stds, rotated by a random orthogonal matrix and
  shifted off the origin (so centring matters)."""
  rng = np.random.default_rng(seed)
  d = len(stds)
  rotation = np.linalg.qr(rng.normal(size=(d, d)))[0]
  return (rng.normal(size=(n, d)) * np.asarray(stds)) @ rotation.T + offset


def labelled_data(n, seed, num_classes=6):
  """Multi-label rows where the labels live in a low-variance 8-dim subspace and 56 dims of
  high-variance, label-independent noise dominate the variance (so PCA keeps the noise)."""
  rng = np.random.default_rng(seed)
  labels = (rng.random((n, num_classes)) < 0.3).astype(np.uint8)
  fixed = np.random.default_rng(1234)  # the same subspace and mixing for train and queries
  label_directions = fixed.normal(size=(num_classes, 8))
  mixing = np.linalg.qr(fixed.normal(size=(64, 64)))[0]
  signal = 0.3 * labels @ label_directions + 0.1 * rng.normal(size=(n, 8))
  noise = 3.0 * rng.normal(size=(n, 56))
  return np.concatenate([signal, noise], axis=1) @ mixing, labels


# ------------------------------------------------------------------------------------------------
# ITQ


def reference_itq(projected, rotation, iterations):
  """ITQ.m with a given start rotation; errors measured after each update, in float64."""
  v = np.asarray(projected, np.float64)
  r = np.asarray(rotation, np.float64)
  errors = []
  for step in range(iterations + 1):
    z = v @ r
    b = np.where(z >= 0, 1.0, -1.0)
    errors.append(float(np.sum((b - z) ** 2)))
    if step == iterations:
      break
    ub, _, ua_t = np.linalg.svd(b.T @ v)
    r = ua_t.T @ ub.T
  return r, np.array(errors)


def test_itq_lowers_quantisation_error_monotonically_and_keeps_rotation_orthogonal():
  features = gaussian_data(2000, np.linspace(3.0, 0.5, 24), seed=0)
  hasher = baselines.fit("itq", features, bits=16, seed=3)
  errors = hasher.history
  assert errors.shape == (51,)
  # Non-increasing up to float32 rounding of a sum of 2000 x 16 squares.
  assert np.all(np.diff(errors) <= 1e-5 * errors[0]), np.diff(errors).max()
  assert errors[-1] < 0.99 * errors[0]  # it learns something from a random start (~2.5% here)
  np.testing.assert_allclose(hasher.rotation @ hasher.rotation.T, np.eye(16), atol=1e-5)
  np.testing.assert_allclose(hasher.rotation.T @ hasher.rotation, np.eye(16), atol=1e-5)
  # The last recorded error is the error of the returned rotation.
  projected = (features - features.mean(0)) @ hasher.projection.astype(np.float64)
  rotated = projected @ hasher.rotation.astype(np.float64)
  final_error = np.sum((np.where(rotated >= 0, 1.0, -1.0) - rotated) ** 2)
  np.testing.assert_allclose(errors[-1], final_error, rtol=1e-4)
  # Codes are [(x - mu) W R >= 0] and balanced on Gaussian data.
  codes = hasher.encode(features)
  assert codes.dtype == np.uint8 and codes.shape == (2000, 16)
  assert np.mean(codes != (rotated >= 0)) < 1e-4
  assert np.all(np.abs(codes.mean(0) - 0.5) < 0.1)


def test_itq_iterations_match_loop_reference_of_itq_m():
  projected = np.random.default_rng(1).normal(size=(500, 6)) * np.array([3, 2, 1.5, 1, 0.7, 0.5])
  projected -= projected.mean(0)
  start = np.asarray(itq.random_rotation(7, 6))
  np.testing.assert_allclose(start @ start.T, np.eye(6), atol=1e-5)
  rotation, errors = baselines.fit_itq(projected, iterations=5, seed=7)
  expected_rotation, expected_errors = reference_itq(projected, start, 5)
  np.testing.assert_allclose(errors, expected_errors, rtol=1e-4)
  np.testing.assert_allclose(rotation, expected_rotation, atol=1e-4)


def test_itq_pca_directions_match_scikit_learn():
  from sklearn.decomposition import PCA

  features = gaussian_data(800, [4.0, 3.0, 2.0, 1.0, 0.5, 0.25], seed=2)
  hasher = baselines.fit("itq", features, bits=4)
  components = PCA(n_components=4).fit(features).components_.T
  # Same directions up to sign.
  np.testing.assert_allclose(np.abs(np.sum(hasher.projection * components, axis=0)), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# LSH


def test_lsh_bits_are_balanced_on_gaussian_data_and_follow_the_hyperplanes():
  features = gaussian_data(5000, np.linspace(2.0, 0.2, 16), seed=4)
  hasher = baselines.fit("lsh", features, bits=32, seed=0)
  codes = hasher.encode(features)
  assert codes.shape == (5000, 32) and codes.dtype == np.uint8
  assert np.all(np.abs(codes.mean(0) - 0.5) < 0.1), codes.mean(0)
  np.testing.assert_allclose(hasher.mean, features.mean(0), rtol=1e-5, atol=1e-5)
  expected = (features - features.mean(0)) @ hasher.projection.astype(np.float64) >= 0
  assert np.mean(codes != expected) < 1e-4
  # Gaussian hyperplanes: entries look standard normal.
  assert abs(hasher.projection.mean()) < 0.1 and abs(hasher.projection.std() - 1.0) < 0.1


def test_lsh_is_deterministic_for_a_seed():
  features = gaussian_data(300, [1.0] * 10, seed=5)
  first = baselines.fit("lsh", features, bits=16, seed=11)
  second = baselines.fit("lsh", features, bits=16, seed=11)
  other = baselines.fit("lsh", features, bits=16, seed=12)
  np.testing.assert_array_equal(first.projection, second.projection)
  np.testing.assert_array_equal(first.encode(features), second.encode(features))
  assert not np.array_equal(first.encode(features), other.encode(features))


# ------------------------------------------------------------------------------------------------
# Spectral hashing


def reference_sh_modes(ranges, bits):
  """trainSH.m step 3 with loops: the modes table [bits, npca] of the chosen eigenfunctions."""
  npca = len(ranges)
  max_range = max(ranges)
  max_mode = [max(math.ceil((bits + 1) * r / max_range), 1) for r in ranges]
  rows = [[0] * npca]  # the constant eigenfunction comes first (eigenvalue 0)
  for i in range(npca):
    for mode in range(2, max_mode[i] + 1):
      row = [0] * npca
      row[i] = mode - 1
      rows.append(row)
  eigenvalues = []
  for row in rows:
    eigenvalues.append(sum((row[j] * math.pi / ranges[j]) ** 2 for j in range(npca)))
  # MATLAB's sort is stable; drop the constant eigenfunction.
  order = sorted(range(len(rows)), key=lambda r: (eigenvalues[r], r))
  return [rows[r] for r in order[1 : bits + 1]]


def reference_sh_codes(principal, range_min, range_max, modes_table):
  """compressSH.m with loops: bit i = [prod_j sin(pi/2 + mode_ij pi (x_j - a_j) / (b_j - a_j)) > 0],
  plus the margin |u| of every value (to skip float32 near-ties)."""
  n, npca = principal.shape
  bits = len(modes_table)
  codes = np.zeros((n, bits), np.uint8)
  margins = np.zeros((n, bits))
  for s in range(n):
    for i in range(bits):
      u = 1.0
      for j in range(npca):
        omega = modes_table[i][j] * math.pi / (range_max[j] - range_min[j])
        u *= math.sin((principal[s, j] - range_min[j]) * omega + math.pi / 2)
      codes[s, i] = u > 0
      margins[s, i] = abs(u)
  return codes, margins


@pytest.mark.parametrize(
    "ranges,bits",
    [
        ([5.0, 3.0, 2.5, 1.0, 0.4], 7),
        ([2.0, 1.0, 1.0], 6),  # exact eigenvalue ties: the enumeration order decides
        ([1.0, 0.9], 5),  # more bits than coordinates
    ],
)
def test_sh_eigenfunction_selection_matches_loop_reference(ranges, bits):
  coordinates, modes = spectral.select_eigenfunctions(np.array(ranges), bits)
  table = np.zeros((bits, len(ranges)), np.int64)
  table[np.arange(bits), coordinates] = modes
  assert table.tolist() == reference_sh_modes(ranges, bits)


def test_sh_codes_match_loop_reference_of_train_and_compress_sh():
  features = gaussian_data(400, [3.0, 2.0, 1.2, 1.0, 0.6, 0.3], seed=6)
  queries = gaussian_data(100, [4.0, 2.0, 1.2, 1.0, 0.6, 0.3], seed=7)  # some outside the range
  hasher = baselines.fit("sh", features, bits=9)
  assert hasher.projection.shape == (6, 6)
  # Independent PCA (scikit-learn) and ranges, then the loop reference.
  from sklearn.decomposition import PCA

  components = PCA(n_components=6).fit(features).components_.T
  np.testing.assert_allclose(np.abs(np.sum(hasher.projection * components, axis=0)), 1.0, atol=1e-5)
  principal_train = (features - features.mean(0)) @ hasher.projection.astype(np.float64)
  range_min, range_max = principal_train.min(0), principal_train.max(0)
  np.testing.assert_allclose(hasher.range_min, range_min, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(hasher.range_max, range_max, rtol=1e-5, atol=1e-5)
  modes_table = reference_sh_modes(list(range_max - range_min), 9)
  assert any(max(row) > 1 for row in modes_table)  # the case exercises higher modes
  for data in (features, queries):
    principal = (data - features.mean(0)) @ hasher.projection.astype(np.float64)
    expected, margins = reference_sh_codes(principal, range_min, range_max, modes_table)
    codes = hasher.encode(data)
    clear = margins > 1e-3  # float32 encoding may differ only right at a zero of the sine
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(codes[clear], expected[clear])


def gaussian_positive_mass(sigma, low, high, mode):
  """P(sin(pi/2 + mode pi (x - low) / (high - low)) > 0) for x ~ N(0, sigma^2) restricted to
  [low, high]: the sine is positive on the alternating pieces of width (high - low) / mode
  starting with half a piece at `low`."""
  width = (high - low) / mode
  cuts = [low] + [low + width * (k + 0.5) for k in range(mode)] + [high]
  mass = 0.0
  for piece in range(len(cuts) - 1):
    if piece % 2 == 0:
      mass += stats.norm.cdf(cuts[piece + 1] / sigma) - stats.norm.cdf(cuts[piece] / sigma)
  inside = stats.norm.cdf(high / sigma) - stats.norm.cdf(low / sigma)
  return mass / inside


def test_sh_bits_on_gaussian_data_first_modes_balanced_higher_modes_as_predicted():
  # Principal stds 3, 1.5, 1, ...: coordinate 0 also gets modes 2, 3, 4 (here the selected
  # (coordinate, mode) pairs are (0,1) (0,2) (1,1) (2,1) (0,3) (3,1) (4,1) (0,4)).
  stds = [3.0, 1.5, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
  features = gaussian_data(5000, stds, seed=8)
  hasher = baselines.fit("sh", features, bits=8)
  codes = hasher.encode(features)
  means = codes.mean(0)
  first_modes = hasher.eigen_modes == 1
  assert first_modes[0] and first_modes.sum() >= 4 and set(hasher.eigen_modes) >= {2, 3}
  # Mode 1 cuts a coordinate at the middle of its range: balanced, since a Gaussian is symmetric
  # (the sampled extremes move the middle by about 0.2 std, hence the +-0.1).
  assert np.all(np.abs(means[first_modes] - 0.5) < 0.1), means
  # Every bit, any mode, carries the Gaussian mass of the pieces where its sine is positive.
  # Higher modes cut at fixed fractions of the range (SH's uniform model): odd modes stay
  # balanced by symmetry, even modes do not (mode 2 is positive only on the outer quarters).
  for bit in range(8):
    coordinate, mode = hasher.eigen_coordinates[bit], hasher.eigen_modes[bit]
    predicted = gaussian_positive_mass(
        stds[coordinate],
        float(hasher.range_min[coordinate]),
        float(hasher.range_max[coordinate]),
        int(mode),
    )
    assert abs(means[bit] - predicted) < 0.02, (bit, mode, means[bit], predicted)
    if mode % 2:
      assert abs(means[bit] - 0.5) < 0.1
    if mode == 2:
      assert means[bit] < 0.2


def test_sh_allows_more_bits_than_dimensions():
  features = gaussian_data(500, [2.0, 1.0, 0.5], seed=9)
  hasher = baselines.fit("sh", features, bits=10)
  assert hasher.projection.shape == (3, 3)
  assert hasher.encode(features).shape == (500, 10)
  assert len({(c, m) for c, m in zip(hasher.eigen_coordinates, hasher.eigen_modes)}) == 10


# ------------------------------------------------------------------------------------------------
# ITQ-CCA


def test_canonical_directions_are_whitened_and_reach_their_correlation():
  features, labels = labelled_data(3000, seed=10)
  centred_x, centred_y = features - features.mean(0), labels - labels.mean(0)
  directions, correlations = subspaces.canonical_directions(centred_x, centred_y, 8, 1e-8)
  projected = centred_x @ directions
  np.testing.assert_allclose(np.cov(projected.T), np.eye(8), atol=1e-4)
  assert np.all(np.diff(correlations) <= 1e-12) and np.all(correlations[6:] < 1e-6)
  # The best correlation of x w_k with any combination of the labels is the least-squares fit's
  # R^2, which must equal the k-th canonical correlation squared.
  for k in range(6):
    coefficients = np.linalg.lstsq(centred_y, projected[:, k], rcond=None)[0]
    r_squared = 1 - np.sum((projected[:, k] - centred_y @ coefficients) ** 2) / np.sum(
        projected[:, k] ** 2
    )
    np.testing.assert_allclose(r_squared, correlations[k] ** 2, rtol=1e-4)


@pytest.mark.parametrize("bits", [4, 8])
def test_itq_cca_beats_itq_when_labels_carry_the_signal(bits):
  train_features, train_labels = labelled_data(2000, seed=11)
  query_features, query_labels = labelled_data(300, seed=12)
  maps = {}
  for method in ("itq", "itq_cca"):
    hasher = baselines.fit(method, train_features, bits, labels=train_labels, seed=0)
    result = retrieval_metrics(
        hasher.encode(query_features), hasher.encode(train_features), query_labels, train_labels
    )
    maps[method] = result["map"]
  assert np.all(np.diff(hasher.history) <= 1e-5 * hasher.history[0])
  # PCA keeps the label-independent noise (near-chance MAP, about the label prevalence ~0.49);
  # CCA finds the label subspace.
  assert maps["itq_cca"] > maps["itq"] + 0.2, maps


# ------------------------------------------------------------------------------------------------
# Save / load and bad input


@pytest.mark.parametrize("method", baselines.METHODS)
def test_save_load_round_trips_exactly(tmp_path, method):
  features, labels = labelled_data(300, seed=13)
  # NumPy-typed options must still serialise (they are stored as JSON).
  options = {"iterations": np.int64(7)} if method.startswith("itq") else {}
  hasher = baselines.fit(method, features, 12, labels=labels, seed=5, **options)
  if options:
    assert hasher.history.shape == (8,) and hasher.options["iterations"] == 7
  path = tmp_path / f"{method}.npz"
  hasher.save(path)
  with np.load(path, allow_pickle=False) as archive:
    assert str(archive["format"]) == "iah_jax.ShallowHasher/1"
    assert str(archive["method"]) == method
  loaded = baselines.load(path)
  assert loaded.method == method and loaded.bits == 12 and loaded.options == hasher.options
  for name in (
      "mean",
      "projection",
      "rotation",
      "history",
      "range_min",
      "range_max",
      "eigen_coordinates",
      "eigen_modes",
  ):
    original, restored = getattr(hasher, name), getattr(loaded, name)
    assert (original is None) == (restored is None), name
    if original is not None:
      assert restored.dtype == original.dtype, name
      np.testing.assert_array_equal(restored, original, err_msg=name)
  np.testing.assert_array_equal(loaded.encode(features), hasher.encode(features))


def test_load_rejects_foreign_and_truncated_files(tmp_path):
  foreign = tmp_path / "foreign.npz"
  np.savez(foreign, mean=np.zeros(3))
  with pytest.raises(ValueError, match="not a shallow-hasher archive"):
    baselines.load(foreign)
  text = tmp_path / "text.npz"
  text.write_text("hello")
  with pytest.raises(ValueError, match="not a readable"):
    baselines.load(text)
  hasher = baselines.fit("itq", gaussian_data(100, [1.0] * 5, seed=0), 4)
  good = tmp_path / "good.npz"
  hasher.save(good)
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(good.read_bytes()[:200])
  with pytest.raises(ValueError):
    baselines.load(truncated)


def test_bad_inputs_raise_clear_value_errors():
  features, labels = labelled_data(50, seed=14)
  with pytest.raises(ValueError, match="unknown shallow hashing method"):
    baselines.fit("pcah", features, 8)
  with pytest.raises(ValueError, match="itq_cca needs the training labels"):
    baselines.fit("itq_cca", features, 8)
  with pytest.raises(ValueError, match=r"labels must be a 2-D array \[n, c\] with n = 50"):
    baselines.fit("itq_cca", features, 8, labels=labels[:40])
  with pytest.raises(ValueError, match="bits <= 64"):
    baselines.fit("itq", features, 65)
  with pytest.raises(ValueError, match="bits <= 64"):
    baselines.fit("itq_cca", features, 100, labels=labels)
  with pytest.raises(ValueError, match="positive integer"):
    baselines.fit("lsh", features, 0)
  with pytest.raises(ValueError, match="no option"):
    baselines.fit("lsh", features, 8, iterations=3)
  with pytest.raises(ValueError, match="regularisation"):
    baselines.fit("itq_cca", features, 8, labels=labels, regularisation=-1.0)
  with pytest.raises(ValueError, match="iterations must be an integer >= 0"):
    baselines.fit("itq", features, 8, iterations=-1)
  broken = features.copy()
  broken[3, 7] = np.nan
  with pytest.raises(ValueError, match="non-finite.*row 3, column 7"):
    baselines.fit("sh", broken, 8)
  with pytest.raises(ValueError, match="2-D"):
    baselines.fit("lsh", features[0], 8)
  with pytest.raises(ValueError, match="all identical"):
    baselines.fit("itq", np.ones((10, 4)), 2)
  hasher = baselines.fit("itq", features, 8)
  with pytest.raises(ValueError, match="fitted on 64-dim"):
    hasher.encode(features[:, :10])
  broken_query = features[:2].copy()
  broken_query[1, 0] = np.inf
  with pytest.raises(ValueError, match="non-finite"):
    hasher.encode(broken_query)
  assert hasher.encode(features[:0]).shape == (0, 8)


def test_encode_in_chunks_equals_one_pass(monkeypatch):
  from iah_jax.baselines import shallow

  features = gaussian_data(1000, np.linspace(2, 0.5, 12), seed=15)
  hasher = baselines.fit("sh", features, 10)
  whole = hasher.encode(features)
  monkeypatch.setattr(shallow, "_ENCODE_ROWS", 300)  # 4 chunks, the last padded
  np.testing.assert_array_equal(hasher.encode(features), whole)


# ------------------------------------------------------------------------------------------------
# Feature extraction


def test_extract_features_matches_per_image_backbone_and_pooling(tiny_data_dir):
  import tensorflow_datasets as tfds

  from iah_jax.baselines import features as features_lib
  from iah_jax.data import pipeline
  from iah_jax.data import synthetic_scenes
  from iah_jax.models.small_cnn import SmallCNN

  builder = synthetic_scenes.load_builder(tiny_data_dir, "tiny")
  image_size = 32
  backbone = SmallCNN(widths=(8, 16))
  variables = backbone.init(jax.random.PRNGKey(0), np.zeros((1, image_size, image_size, 3)))
  pooled, labels = features_lib.extract_features(
      backbone, variables, builder, "train", image_size, batch_size=10
  )  # 96 = 9*10 + 6
  assert pooled.shape == (96, 16) and pooled.dtype == np.float32
  assert labels.dtype == np.uint8

  # Per image: the backbone on one image, the spatial mean written as a loop.
  expected = np.zeros((96, 16))
  for batch in pipeline.eval_batches(builder, split="train", batch_size=1, image_size=image_size):
    feature_map = np.asarray(backbone.apply(variables, batch["image"], train=False))[0]
    total = np.zeros(16)
    for y in range(feature_map.shape[0]):
      for x in range(feature_map.shape[1]):
        total += feature_map[y, x]
    expected[int(batch["index"][0])] = total / (feature_map.shape[0] * feature_map.shape[1])
  np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-6)
  assert np.abs(pooled).max() > 0  # the check is not vacuous

  stored_labels = np.zeros_like(labels)
  for example in tfds.as_numpy(builder.as_dataset(split="train")):
    stored_labels[int(example["index"])] = example["labels"]
  np.testing.assert_array_equal(labels, stored_labels)

  # A plain function backbone and a whole model's variables (params['backbone']).
  from_function, _ = features_lib.extract_features(
      lambda images: backbone.apply(variables, images),
      None,
      builder,
      "train[:20]",
      image_size,
      batch_size=8,
  )
  np.testing.assert_allclose(from_function, expected[:20], rtol=1e-5, atol=1e-6)
  model_variables = {"params": {"backbone": variables["params"], "hash_layer": {}}}
  picked = features_lib.backbone_variables(model_variables)
  assert jax.tree.structure(picked) == jax.tree.structure(variables)
  for got, want in zip(jax.tree.leaves(picked), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match="backbone_variables"):
    features_lib.extract_features(backbone, model_variables, builder, "test", image_size)
  with pytest.raises(ValueError, match="needs its variables"):
    features_lib.extract_features(backbone, None, builder, "test", image_size)
