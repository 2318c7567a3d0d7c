"""Proposal preparation: resumable cache, counted skips, parallel == serial, settings guard."""

import os

import numpy as np
import pytest

import data_fixtures
from iah_jax.data import prepare
from iah_jax.data import selective_search

SETTINGS = prepare.ProposalSettings(method="selective_search", num_proposals=12)


@pytest.fixture()
def items(tmp_path):
  """Five good images (RGB, grayscale, CMYK, PNG, RGB), one corrupt, one missing."""
  image_dir = tmp_path / "images"
  items = []
  for i, kind in enumerate(["rgb", "gray", "cmyk", "png", "rgb"]):
    path = image_dir / f"{i}.{'png' if kind == 'png' else 'jpg'}"
    data_fixtures.write_image(path, kind, seed=i)
    items.append((f"img{i}", str(path)))
  data_fixtures.write_corrupt(image_dir / "broken.jpg")
  items.append(("broken", str(image_dir / "broken.jpg")))
  items.append(("gone", str(image_dir / "gone.jpg")))
  return items


def test_first_run_computes_and_counts_skips_second_run_computes_nothing(tmp_path, items, capsys):
  cache = tmp_path / "cache"
  first = prepare.prepare_proposals(items, cache, SETTINGS, num_workers=0, progress=False)
  assert (first.num_computed, first.num_cached) == (5, 0)
  assert first.skips.as_dict() == {"missing_file": 1, "corrupt_image": 1, "unlabelled": 0}
  assert first.ready_ids == [f"img{i}" for i in range(5)]
  assert first.seconds_per_image > 0
  printed = capsys.readouterr().out
  assert "corrupt_image=1" in printed and "missing_file=1" in printed and "s/image" in printed

  files = sorted(prepare.settings_dir(cache, SETTINGS).glob("*.npy"))
  assert len(files) == 5
  mtimes = [f.stat().st_mtime_ns for f in files]
  second = prepare.prepare_proposals(items, cache, SETTINGS, num_workers=0, progress=False)
  assert (second.num_computed, second.num_cached) == (0, 5)
  assert np.isnan(second.seconds_per_image)
  # Failures are re-checked, not cached: the counts are the same on every run.
  assert second.skips.as_dict() == first.skips.as_dict()
  assert [f.stat().st_mtime_ns for f in files] == mtimes
  assert not list(prepare.settings_dir(cache, SETTINGS).glob("*.tmp*"))


def test_resumes_after_an_interruption_and_picks_up_fixed_files(tmp_path, items):
  cache = tmp_path / "cache"
  prepare.prepare_proposals(items, cache, SETTINGS, num_workers=0, progress=False, verbose=False)
  prepare.proposal_file(cache, SETTINGS, *items[2]).unlink()  # as if killed before image 2
  data_fixtures.write_image(items[6][1], "rgb", seed=6)  # the missing file appears
  report = prepare.prepare_proposals(
      items, cache, SETTINGS, num_workers=0, progress=False, verbose=False
  )
  assert (report.num_computed, report.num_cached) == (2, 4)
  assert report.skips.as_dict()["missing_file"] == 0
  assert "gone" in report.ready_ids


def test_cached_proposals_equal_a_direct_computation(tmp_path, items):
  cache = tmp_path / "cache"
  prepare.prepare_proposals(items, cache, SETTINGS, num_workers=0, progress=False, verbose=False)
  from iah_jax.data import images

  for image_id, path in items[:5]:
    direct = selective_search.selective_search_proposals(images.read_image(path), 12)
    np.testing.assert_array_equal(prepare.load_proposals(cache, SETTINGS, image_id, path), direct)


def test_parallel_workers_write_the_same_proposals_as_serial(tmp_path, items):
  serial = prepare.prepare_proposals(
      items, tmp_path / "serial", SETTINGS, num_workers=0, progress=False, verbose=False
  )
  parallel = prepare.prepare_proposals(
      items, tmp_path / "parallel", SETTINGS, num_workers=2, progress=False, verbose=False
  )
  assert parallel.num_workers == 2 and parallel.num_computed == 5
  assert parallel.skips.as_dict() == serial.skips.as_dict()
  for image_id, path in items[:5]:
    np.testing.assert_array_equal(
        prepare.load_proposals(tmp_path / "parallel", SETTINGS, image_id, path),
        prepare.load_proposals(tmp_path / "serial", SETTINGS, image_id, path),
    )


def test_settings_guard_and_settings_keys(tmp_path, items):
  cache = tmp_path / "cache"
  prepare.prepare_proposals(
      items[:1], cache, SETTINGS, num_workers=0, progress=False, verbose=False
  )
  (prepare.settings_dir(cache, SETTINGS) / "settings.json").write_text('{"method": "other"}')
  with pytest.raises(ValueError, match="was made with settings"):
    prepare.prepare_proposals(items[:1], cache, SETTINGS, num_workers=0, progress=False)
  other = prepare.ProposalSettings(method="selective_search", num_proposals=12, nms_iou=0.5)
  assert other.key() != SETTINGS.key()
  assert prepare.ProposalSettings(method="whole_image", num_proposals=3).key() == "whole_image-n3"


def test_load_proposals_rejects_missing_and_malformed_files(tmp_path, items):
  cache = tmp_path / "cache"
  with pytest.raises(FileNotFoundError, match="prepare_proposals"):
    prepare.load_proposals(cache, SETTINGS, *items[0])
  prepare.prepare_proposals(
      items[:1], cache, SETTINGS, num_workers=0, progress=False, verbose=False
  )
  np.save(prepare.proposal_file(cache, SETTINGS, *items[0]), np.zeros((3, 4), np.float32))
  with pytest.raises(ValueError, match="expected float32"):
    prepare.load_proposals(cache, SETTINGS, *items[0])


def test_whole_image_method_and_generic_method(tmp_path, items):
  whole = prepare.ProposalSettings(method="whole_image", num_proposals=4)
  report = prepare.prepare_proposals(
      items, tmp_path / "c", whole, num_workers=0, progress=False, verbose=False
  )
  assert report.skips.total == 2  # images are still decoded: the skips are real
  np.testing.assert_array_equal(
      prepare.load_proposals(tmp_path / "c", whole, *items[0]), np.tile([[0, 0, 1, 1]], (4, 1))
  )
  generic = prepare.ProposalSettings(method="generic", num_proposals=10)
  prepare.prepare_proposals(
      items[:2], tmp_path / "g", generic, num_workers=0, progress=False, verbose=False
  )
  boxes = prepare.load_proposals(tmp_path / "g", generic, *items[0])
  assert boxes.shape == (10, 4)
  assert np.all((boxes >= 0) & (boxes <= 1))
  assert np.all(boxes[:, 0] <= boxes[:, 2]) and np.all(boxes[:, 1] <= boxes[:, 3])


def test_bad_arguments(tmp_path, items):
  with pytest.raises(ValueError, match="unique"):
    prepare.prepare_proposals([items[0], items[0]], tmp_path, SETTINGS, progress=False)
  with pytest.raises(ValueError, match="proposal method"):
    prepare.ProposalSettings(method="edge_boxes")
  with pytest.raises(ValueError, match="unknown skip reason"):
    prepare.SkipCounts().add("bored", "x")


def test_skip_counts_merge_and_cache_file_names(tmp_path):
  a, b = prepare.SkipCounts(), prepare.SkipCounts()
  a.add("unlabelled", "x")
  b.add("unlabelled", "y")
  b.add("corrupt_image", "z")
  a.update(b)
  assert a.as_dict() == {"missing_file": 0, "corrupt_image": 1, "unlabelled": 2}
  assert a.total == 3 and "unlabelled=2" in a.format()
  # Same id, different files -> different cache files; odd characters are replaced.
  first = prepare.proposal_file(tmp_path, SETTINGS, "a/b c.jpg", "/data/one/a.jpg")
  second = prepare.proposal_file(tmp_path, SETTINGS, "a/b c.jpg", "/data/two/a.jpg")
  assert first != second and first.parent == second.parent
  assert "/" not in first.name and " " not in first.name
  assert os.path.basename(first).startswith("a_b_c.jpg-")
