"""The photo index files: round trip, crash safety of commits, headers of other formats."""

import json
import os

import numpy as np
import pytest

from iah_jax import retrieval
from iah_jax.serving import photo_index
from iah_jax.serving.errors import ServingError

RUN = {
    "run_dir": "/runs/x/q8_b2",
    "method": "iah",
    "semantic_bits": 8,
    "bits_per_category": 2,
    "num_classes": 3,
    "class_names": ["a", "b", "c"],
    "checkpoint_step": 4,
    "outputs": ["semantic_codes", "category_codes", "label_probs"],
}
SETTINGS = {"method": "generic", "num_proposals": 5}


def outputs(n, seed):
  rng = np.random.default_rng(seed)
  return {
      "semantic_codes": rng.integers(0, 2, (n, 8)).astype(np.uint8),
      "category_codes": rng.integers(0, 2, (n, 3, 2)).astype(np.uint8),
      "label_probs": rng.dirichlet(np.ones(3), n).astype(np.float32),
  }


def test_commits_round_trip_and_append(tmp_path):
  writer = photo_index.IndexWriter(str(tmp_path), RUN, SETTINGS)
  first, second = outputs(5, 0), outputs(3, 1)
  writer.add([f"/p/{i}.png" for i in range(5)], first)
  writer.commit([{"path": "/p/bad.png", "reason": "not a readable image"}])
  writer = photo_index.IndexWriter(
      str(tmp_path), RUN, SETTINGS, photo_index.PhotoIndex.load(str(tmp_path), backend="faiss")
  )
  writer.add([f"/p/{i}.png" for i in range(5, 8)], second)
  writer.commit([])
  index = photo_index.PhotoIndex.load(str(tmp_path), backend="faiss")
  assert index.paths == [f"/p/{i}.png" for i in range(8)]
  assert index.header["generation"] == 2 and index.header["unreadable"] == []
  expected = {name: np.concatenate([first[name], second[name]]) for name in first}
  np.testing.assert_array_equal(
      retrieval.unpack_codes(index.semantic.packed_codes, 8), expected["semantic_codes"]
  )
  np.testing.assert_array_equal(index.category_codes, expected["category_codes"])
  np.testing.assert_array_equal(index.label_probs, expected["label_probs"])
  # Only the committed generation's files remain.
  assert sorted(os.listdir(tmp_path)) == [
      "category-g000002.npz",
      "index.json",
      "paths-g000002.json",
      "semantic-g000002.npz",
  ]


def test_a_commit_killed_before_the_header_leaves_the_previous_generation(tmp_path):
  writer = photo_index.IndexWriter(str(tmp_path), RUN, SETTINGS)
  writer.add(["/p/0.png", "/p/1.png"], outputs(2, 0))
  writer.commit([])
  before = (tmp_path / "index.json").read_text()
  # What a process killed in the middle of commit 2 leaves: the new generation's files (one
  # half written) and a temporary header, but not the new index.json.
  (tmp_path / "semantic-g000002.npz").write_bytes(b"PK\x03\x04 half an archive")
  (tmp_path / "paths-g000002.json").write_text('["/p/0.png", "/p/1.png", "/p/2.p')
  (tmp_path / "index.json.tmp123").write_text('{"format": "iah_jax.photo_index", "gen')
  index = photo_index.PhotoIndex.load(str(tmp_path), backend="faiss")
  assert index.paths == ["/p/0.png", "/p/1.png"] and (tmp_path / "index.json").read_text() == before
  writer = photo_index.IndexWriter(str(tmp_path), RUN, SETTINGS, index)
  writer.add(["/p/2.png"], outputs(1, 2))
  writer.commit([])
  assert photo_index.PhotoIndex.load(str(tmp_path), backend="faiss").num_images == 3
  assert "index.json.tmp123" not in os.listdir(tmp_path)


def test_foreign_or_missing_headers_are_clear_errors(tmp_path):
  assert photo_index.read_header(str(tmp_path)) is None
  with pytest.raises(ServingError, match="holds no photo index"):
    photo_index.require_header(str(tmp_path))
  (tmp_path / "index.json").write_text(json.dumps({"format": "something"}))
  with pytest.raises(ServingError, match="is not an iah_jax photo index"):
    photo_index.read_header(str(tmp_path))


def test_another_run_or_code_length_is_refused():
  header = {"run": RUN}
  manifest = {
      "method": "iah",
      "semantic_bits": 16,
      "bits_per_category": 2,
      "dataset": {"num_classes": 3},
  }
  with pytest.raises(ServingError, match="holds 8-bit codes .* encodes 16-bit codes"):
    photo_index.check_same_run(header, "idx", manifest, "/runs/x/q16_b2")
  manifest["semantic_bits"] = 8
  with pytest.raises(ServingError, match="codes of two models cannot be mixed"):
    photo_index.check_same_run(header, "idx", manifest, "/runs/other/q8_b2")
  photo_index.check_same_run(header, "idx", manifest, "/runs/x/q8_b2")
  with pytest.raises(ServingError, match="step 4 .* now restores step 9"):
    photo_index.check_same_step(header, "idx", 9)
