"""Serving: a trained run restored to index photos and search them (issue 10).

One module-scoped fixture trains two tiny runs through the main job (`train_and_evaluate`) and
records the codes its evaluation computes: IAH on the embedded synthetic scenes (PNG, generic
proposals) and One-Stage hashing on an image list of JPEG files (grey and CMYK ones included)
that the builder downscales, so both ways a dataset stores images are reproduced for photos.
"""

import html.parser
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

import data_fixtures
from test_train import tiny_config  # the main job's tiny config (8 bits, 32 x 32)
from iah_jax import retrieval
from iah_jax import run_manifest
from iah_jax import sample_photos
from iah_jax import evaluate
from iah_jax import train
from iah_jax.data import synthetic_scenes
from iah_jax.serving import encoder as encoder_lib
from iah_jax.serving import indexing
from iah_jax.serving import page
from iah_jax.serving import photo_index
from iah_jax.serving import querying
from iah_jax.serving.errors import ServingError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_jpeg_list(root) -> list[str]:
  """24 JPEG files (RGB, grey, CMYK; 64 x 48 and 48 x 64) with 3 labels, 20 train / 4 test."""
  rng = np.random.default_rng(0)
  lines = {"train": [], "test": []}
  names = []
  for k in range(24):
    name = f"img_{k:02d}.jpg"
    height, width = (48, 64) if k % 2 else (64, 48)
    data_fixtures.write_image(
        root / "images" / name, ("rgb", "gray", "cmyk")[k % 3], height, width, seed=k
    )
    labels = (rng.uniform(size=3) < 0.5).astype(int)
    labels[k % 3] = 1
    lines["train" if k < 20 else "test"].append(f"{name} " + " ".join(map(str, labels)))
    names.append(name)
  (root / "train.txt").write_text("\n".join(lines["train"]) + "\n")
  (root / "test.txt").write_text("\n".join(lines["test"]) + "\n")
  return names[:20]


def train_recording_codes(config, workdir) -> dict:
  """Runs the main job; returns {split: what its evaluation's encode_split returned}."""
  recorded = {}
  original = evaluate.encode_split

  def recording(state, encode_step, builder, split, config, mesh):
    recorded[split] = original(state, encode_step, builder, split, config, mesh)
    return recorded[split]

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(evaluate, "encode_split", recording)
    evaluate.run(config, str(workdir))
  return recorded


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data_dir):
  root = tmp_path_factory.mktemp("serving")
  iah_config = tiny_config(tiny_data_dir, steps=4)
  iah_codes = train_recording_codes(iah_config, root / "iah")
  photos = root / "photos"
  scenes = synthetic_scenes.SyntheticScenes.builder_configs["tiny"]
  sample_photos.write_photos(str(photos), scenes, "train", 0, scenes.num_train, progress=False)
  queries = root / "queries"
  sample_photos.write_photos(str(queries), scenes, "test", 0, 4, progress=False)

  list_root = root / "jpeg_list"
  jpeg_names = write_jpeg_list(list_root)
  one_stage = tiny_config(str(root / "tfds"), steps=4)
  one_stage.method = "one_stage"
  one_stage.semantic_bits, one_stage.bits_per_category = (12,), (3,)
  one_stage.dataset.name = "image_list"
  one_stage.dataset.options = ml_collections.ConfigDict(
      dict(
          data_path=str(list_root),
          image_root=str(list_root / "images"),
          proposal_method="generic",
          num_proposals=6,
          image_max_side=40,  # the builder downscales the 64-pixel sides: photos must be too
          num_workers=0,
          progress=False,
      )
  )
  one_stage_codes = train_recording_codes(one_stage, root / "one_stage")
  return ml_collections.ConfigDict(
      dict(
          root=str(root),
          iah_run=str(root / "iah" / "q8_b2"),
          iah_codes=iah_codes,
          photos=str(photos),
          queries=str(queries),
          one_stage_run=str(root / "one_stage" / "q12_b3"),
          one_stage_codes=one_stage_codes,
          jpeg_paths=[str(list_root / "images" / name) for name in jpeg_names],
      )
  )


def add_unreadable_files(folder) -> list[str]:
  """A truncated JPEG, a text file named .png and a 1 x 1 PNG; returns their paths."""
  data_fixtures.write_corrupt(os.path.join(folder, "bad", "truncated.jpg"))
  with open(os.path.join(folder, "bad", "notes.png"), "w") as file:
    file.write("not an image")
  Image.new("RGB", (1, 1)).save(os.path.join(folder, "bad", "dot.png"))
  return [os.path.join(folder, "bad", name) for name in ("dot.png", "notes.png", "truncated.jpg")]


@pytest.fixture(scope="module")
def iah_encoder(runs):
  """The IAH run restored once for the module (the evaluation's batch size)."""
  return encoder_lib.load_model(runs.iah_run)


@pytest.fixture(scope="module")
def one_stage_index(runs, tmp_path_factory):
  """The One-Stage run and an index of its JPEG training files."""
  encoder = encoder_lib.load_model(runs.one_stage_run)
  out = str(tmp_path_factory.mktemp("one_stage_index"))
  images = os.path.dirname(runs.jpeg_paths[0])
  report = indexing.index_photos(runs.one_stage_run, images, out, progress=False, encoder=encoder)
  return dict(encoder=encoder, out=out, report=report)


@pytest.fixture(scope="module")
def iah_index(runs, iah_encoder):
  """The IAH index built in two runs: first half of the photos, then the grown folder (all
  photos plus three unreadable files)."""
  folder = os.path.join(runs.root, "growing")
  os.makedirs(folder)
  names = sorted(os.listdir(runs.photos))
  for name in names[:48]:
    shutil.copy(os.path.join(runs.photos, name), folder)
  out = os.path.join(runs.root, "iah_index")
  index = lambda: indexing.index_photos(
      runs.iah_run, folder, out, commit_every=20, progress=False, encoder=iah_encoder
  )
  first = index()
  first_codes = photo_index.PhotoIndex.load(out, backend="faiss").semantic.packed_codes
  for name in names[48:]:
    shutil.copy(os.path.join(runs.photos, name), folder)
  bad = add_unreadable_files(folder)
  second = index()
  return dict(out=out, folder=folder, first=first, second=second, first_codes=first_codes, bad=bad)


def photo_position(path: str) -> int:
  """train_000017.png -> 17: the example index of an exported synthetic scene."""
  return int(os.path.basename(path).split("_")[1].split(".")[0])


# ----------------------------------------------------------------------------- bit-identical codes


def test_index_codes_equal_the_main_jobs_evaluation_codes_iah(runs, iah_index):
  index = photo_index.PhotoIndex.load(iah_index["out"], backend="faiss")
  reference = runs.iah_codes["train"]
  assert index.num_images == 96
  positions = np.array([photo_position(path) for path in index.paths])
  np.testing.assert_array_equal(np.sort(positions), np.arange(96))
  codes = retrieval.unpack_codes(index.semantic.packed_codes, 8)
  np.testing.assert_array_equal(codes, reference["semantic_codes"][positions])
  np.testing.assert_array_equal(index.category_codes, reference["category_codes"][positions])
  np.testing.assert_array_equal(index.label_probs, reference["label_probs"][positions])


def test_index_codes_equal_the_main_jobs_evaluation_codes_one_stage_on_jpeg_files(
    runs, one_stage_index
):
  report = one_stage_index["report"]
  assert report.num_added == 24 and not report.unreadable
  index = photo_index.PhotoIndex.load(one_stage_index["out"], backend="faiss")
  row = {path: i for i, path in enumerate(index.paths)}
  order = [row[os.path.abspath(path)] for path in runs.jpeg_paths]  # train split, list order
  codes = retrieval.unpack_codes(index.semantic.packed_codes, 12)[order]
  np.testing.assert_array_equal(codes, runs.one_stage_codes["train"]["semantic_codes"])
  assert index.category_codes is None and index.label_probs is None


# ----------------------------------------------------------------------------- growing, unreadable


def test_rerun_on_a_grown_folder_adds_only_the_new_images(iah_index):
  first, second = iah_index["first"], iah_index["second"]
  assert (first.num_added, first.num_images, first.commits) == (48, 48, 2)  # at 32 and the end
  assert (second.num_listed, second.num_already, second.num_added) == (99, 48, 48)
  assert second.num_images == 96
  index = photo_index.PhotoIndex.load(iah_index["out"], backend="faiss")
  # The first 48 entries (and their codes) are those of the first run, untouched.
  np.testing.assert_array_equal(index.semantic.packed_codes[:48], iah_index["first_codes"])
  assert index.paths[:48] == sorted(index.paths[:48])
  again = indexing.index_photos(index.run["run_dir"], iah_index["folder"], iah_index["out"])
  assert again.num_added == 0 and again.num_images == 96


def test_unreadable_images_are_counted_listed_and_kept_out(iah_index):
  report = iah_index["second"]
  assert [item["path"] for item in report.unreadable] == iah_index["bad"]
  reasons = {os.path.basename(item["path"]): item["reason"] for item in report.unreadable}
  assert "too small" in reasons["dot.png"]
  assert "not a readable image" in reasons["notes.png"]
  assert "truncated.jpg" in reasons["truncated.jpg"]
  assert "unreadable: 3 image(s)" in report.format()
  header = photo_index.read_header(iah_index["out"])
  assert header["unreadable"] == report.unreadable
  assert not set(iah_index["bad"]) & set(photo_index.PhotoIndex.load(iah_index["out"]).paths)


# ----------------------------------------------------------------------------- search


@pytest.fixture(scope="module")
def searchers(iah_index, iah_encoder):
  return {
      backend: querying.Searcher(
          photo_index.PhotoIndex.load(iah_index["out"], backend=backend), iah_encoder, backend
      )
      for backend in ("jax", "faiss")
  }


def loop_ranking(query_code, db_codes, k, weights=None):
  """(distance, id) of every item, computed bit by bit, sorted by distance then id."""
  scored = []
  for item, code in enumerate(db_codes):
    distance = 0.0
    for bit in range(len(code)):
      if code[bit] != query_code[bit]:
        distance += 1.0 if weights is None else float(weights[bit])
    scored.append((distance, item))
  scored.sort()
  return scored[:k]


def query_threshold(searcher, query) -> float:
  """A threshold just under the query's third most probable label, so the barely trained model
  still predicts three categories (the tests need groups)."""
  probs = searcher.encoder.encode([query])["label_probs"][0]
  return float(np.sort(probs)[-3]) - 1e-6


@pytest.mark.parametrize("backend", ["jax", "faiss"])
def test_search_equals_a_numpy_loop_reference(runs, searchers, backend):
  searcher = searchers[backend]
  db_codes = retrieval.unpack_codes(searcher.index.semantic.packed_codes, 8)
  for name in sorted(os.listdir(runs.queries))[:2]:
    query = os.path.join(runs.queries, name)
    result = searcher.search(query, k=30)
    expected = loop_ranking(result.query_outputs["semantic_codes"][0], db_codes, 30)
    assert [(float(d), int(i)) for d, i in zip(result.distances, result.ids)] == expected
    weighted = searcher.search(query, k=30, ranking="weighted")
    expected = loop_ranking(
        weighted.query_outputs["semantic_codes"][0],
        db_codes,
        30,
        weighted.query_outputs["bit_weights"][0],
    )
    np.testing.assert_allclose(weighted.distances, [d for d, _ in expected], rtol=1e-5)
    assert [int(i) for i in weighted.ids] == [i for _, i in expected]


@pytest.mark.parametrize("backend", ["jax", "faiss"])
def test_category_groups_equal_category_tables_answer(runs, searchers, backend):
  searcher = searchers[backend]
  query = os.path.join(runs.queries, "test_000001.png")
  threshold = query_threshold(searcher, query)
  result = searcher.search(query, k=7, by_category=True, threshold=threshold)
  index = searcher.index
  tables = retrieval.CategoryTables(
      index.category_codes, index.label_probs, threshold=threshold, backend="jax"
  )
  outputs = result.query_outputs
  expected = tables.search(outputs["category_codes"], outputs["label_probs"], 7)[0]
  assert len(result.groups) == 3 and list(result.groups) == list(expected)
  for category, (distances, ids) in expected.items():
    np.testing.assert_array_equal(result.groups[category][0], distances)
    np.testing.assert_array_equal(result.groups[category][1], ids)
  listed = result.to_json()
  assert [group["category"] for group in listed["groups"]] == list(expected)
  first = listed["groups"][0]
  assert first["query_probability"] == pytest.approx(
      float(outputs["label_probs"][0][first["category"]])
  )
  for item in first["results"]:
    assert item["path"] == index.paths[item["id"]]
    assert item["probability"] >= threshold


# ----------------------------------------------------------------------------- page


class PageParser(html.parser.HTMLParser):

  def __init__(self):
    super().__init__()
    self.images, self.groups, self.notes, self._in_note = [], [], [], False

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == "img":
      self.images.append(attrs)
    if tag == "section":
      self.groups.append(attrs.get("data-category"))
    self._in_note = tag == "p" and attrs.get("class") == "note"

  def handle_data(self, data):
    if self._in_note:
      self.notes.append(data)


def search_to_page(runs, searchers, out, **options):
  """results.json / .html of query test_000001 with three predicted categories."""
  query = os.path.join(runs.queries, "test_000001.png")
  threshold = query_threshold(searchers["jax"], query)
  return querying.search_photos(
      os.path.join(runs.root, "iah_index"),
      query,
      out,
      threshold=threshold,
      encoder=searchers["jax"].encoder,
      **options,
  )


@pytest.fixture(scope="module")
def grouped_page(runs, searchers):
  out = os.path.join(runs.root, "page")
  output = search_to_page(runs, searchers, out, k=6, by_category=True, saliency_sheet=True)
  return out, output


def test_results_json_and_page_hold_the_query_every_group_and_every_thumbnail(grouped_page):
  out, output = grouped_page
  assert set(os.listdir(out)) == {"results.json", "results.html", "saliency.png"}
  written = json.load(open(os.path.join(out, "results.json")))
  assert written == json.loads(json.dumps(output))
  assert len(written["groups"]) == 3 and written["saliency"]["available"]
  parser = PageParser()
  parser.feed(open(os.path.join(out, "results.html")).read())
  assert parser.groups == [str(group["category"]) for group in written["groups"]]
  assert [image.get("id") for image in parser.images].count("query") == 1
  shown = sum(len(group["results"]) for group in written["groups"])
  # Every result and the query (header and one per group): a thumbnail and its saliency map.
  assert len(parser.images) == 2 * (shown + 1 + len(written["groups"]))
  for image in parser.images:
    assert image["src"].startswith("data:image/png;base64,")  # self-contained
  sheet = Image.open(os.path.join(out, "saliency.png"))
  assert sheet.size[1] >= 3 * 2 * page.THUMBNAIL_SIDE  # three rows of image + map


def test_a_method_without_label_probabilities_says_so_on_the_page(runs, one_stage_index, tmp_path):
  index_dir, encoder = one_stage_index["out"], one_stage_index["encoder"]
  out = str(tmp_path / "out")
  query = runs.jpeg_paths[3]
  output = querying.search_photos(index_dir, query, out, k=5, by_category=True, encoder=encoder)
  assert output["groups"] is None and output["query"]["predicted_labels"] is None
  assert len(output["results"]) == 5 and output["results"][0]["distance"] == 0
  assert not output["saliency"]["available"]
  parser = PageParser()
  parser.feed(open(os.path.join(out, "results.html")).read())
  notes = " ".join(parser.notes)
  assert "not grouped by category" in notes and "No saliency maps" in notes
  assert len(parser.images) == 6  # query + 5 thumbnails, no saliency maps
  with pytest.raises(ServingError, match="--ranking weighted needs query-adaptive bit weights"):
    querying.search_photos(index_dir, query, out, ranking="weighted", encoder=encoder)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium's flags for a machine without network (playwright adds --headless itself).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian package `chromium`)")
def test_results_page_in_headless_chromium(grouped_page, tmp_path):
  playwright_api = pytest.importorskip("playwright.sync_api")
  out, output = grouped_page
  problems = []
  with playwright_api.sync_playwright() as playwright:
    browser = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"),  # a fresh profile
        executable_path=CHROMIUM,
        args=CHROMIUM_FLAGS,
        headless=True,
        viewport={"width": 1280, "height": 900},
    )
    try:
      tab = browser.new_page()
      tab.on("console", lambda message: problems.append(f"console {message.type}: {message.text}"))
      tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
      tab.on("requestfailed", lambda request: problems.append(f"failed request: {request.url}"))
      tab.goto("file://" + os.path.join(out, "results.html"), wait_until="load")
      images = tab.evaluate(
          "Array.from(document.images).map(i => ({id: i.id, ok: i.complete && i.naturalWidth > 0}))"
      )
      groups = tab.evaluate(
          "Array.from(document.querySelectorAll('section.group h2')).map(h => h.textContent)"
      )
      query_shown = tab.evaluate("document.getElementById('query').naturalWidth")
      screenshot = tmp_path / "results.png"
      tab.screenshot(path=str(screenshot), full_page=True)
    finally:
      browser.close()
  assert not [p for p in problems if not p.startswith("console log")], problems
  assert images and all(image["ok"] for image in images), images
  assert query_shown > 0
  assert len(groups) == len(output["groups"])
  for title, group in zip(groups, output["groups"]):
    assert title.startswith(group["name"])
  shot = Image.open(screenshot)
  assert shot.size[0] == 1280 and shot.size[1] > 900  # the whole page, taller than the window


# ----------------------------------------------------------------------------- bad input (CLI)


def run_command(module: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return subprocess.run(
      [sys.executable, "-m", module, *args],
      capture_output=True,
      text=True,
      env=env,
      cwd=cwd,
      timeout=600,
  )


def snapshot(directory: str) -> dict:
  """Every file of an index directory (proposal cache aside) with its bytes."""
  files = {}
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      with open(path, "rb") as file:
        files[name] = file.read()
  return files


def assert_clear_error(result, *fragments):
  assert result.returncode == 2, (result.returncode, result.stdout, result.stderr[-3000:])
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  message = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(message) == 1, result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in message[0], message[0]


def test_bad_input_ends_in_one_clear_message_and_loses_nothing(runs, iah_index, tmp_path):
  out = iah_index["out"]
  before = snapshot(out)
  query = os.path.join(runs.queries, "test_000000.png")

  missing = str(tmp_path / "no_such_run")
  result = run_command("iah_jax.index", "--run", missing, "--images", runs.photos, "--out", out)
  assert_clear_error(result, f"run directory {missing} does not exist")

  bare = tmp_path / "run_without_checkpoint"
  bare.mkdir()
  shutil.copy(run_manifest.manifest_path(runs.iah_run), bare)
  result = run_command("iah_jax.index", "--run", str(bare), "--images", runs.photos, "--out", out)
  assert_clear_error(result, str(bare), "has no checkpoint")
  workdir = os.path.dirname(runs.iah_run)
  result = run_command(
      "iah_jax.search",
      "--index",
      out,
      "--query",
      query,
      "--run",
      workdir,
      "--out",
      str(tmp_path / "o"),
  )
  assert_clear_error(result, "has no run manifest", "holding the run(s) q8_b2")

  # An index of 8-bit codes searched, or grown, with a run of 12-bit codes.
  result = run_command(
      "iah_jax.search",
      "--index",
      out,
      "--query",
      query,
      "--run",
      runs.one_stage_run,
      "--out",
      str(tmp_path / "o"),
  )
  assert_clear_error(result, f"index {out} holds 8-bit codes", "encodes 12-bit codes")
  result = run_command(
      "iah_jax.index", "--run", runs.one_stage_run, "--images", runs.photos, "--out", out
  )
  assert_clear_error(result, "holds 8-bit codes", "encodes 12-bit codes")

  not_an_image = tmp_path / "holiday.png"
  not_an_image.write_text("these are my notes, not a picture")
  result = run_command(
      "iah_jax.search", "--index", out, "--query", str(not_an_image), "--out", str(tmp_path / "o")
  )
  assert_clear_error(result, str(not_an_image), "is not a readable image")

  empty = tmp_path / "empty_folder"
  (empty / "sub").mkdir(parents=True)
  (empty / "sub" / "readme.txt").write_text("no pictures here")
  result = run_command("iah_jax.index", "--run", runs.iah_run, "--images", str(empty), "--out", out)
  assert_clear_error(result, f"no images (.jpg, .jpeg, .png, .webp) found in folder {empty}")

  result = run_command(
      "iah_jax.search",
      "--index",
      str(tmp_path / "nowhere"),
      "--query",
      query,
      "--out",
      str(tmp_path / "o"),
  )
  assert_clear_error(result, "index directory", "does not exist")

  assert snapshot(out) == before  # nothing already indexed was touched
  assert not os.path.exists(tmp_path / "o")
  assert photo_index.PhotoIndex.load(out, backend="faiss").num_images == 96


def test_load_model_refuses_incomplete_run_directories(runs, tmp_path):
  with pytest.raises(ServingError, match="does not exist"):
    encoder_lib.load_model(str(tmp_path / "missing"))
  with pytest.raises(ServingError, match="has no run manifest"):
    encoder_lib.load_model(str(tmp_path))
  shutil.copy(run_manifest.manifest_path(runs.iah_run), tmp_path)
  with pytest.raises(ServingError, match="has no checkpoint"):
    encoder_lib.load_model(str(tmp_path))


def test_encoder_api_returns_codes_probabilities_and_proposals(runs, iah_encoder):
  encoder = iah_encoder
  paths = [os.path.join(runs.photos, f"train_{i:06d}.png") for i in (3, 40)]
  outputs = encoder.encode(paths)
  assert set(outputs) == {
      "semantic_codes",
      "category_codes",
      "label_probs",
      "bit_weights",
      "proposal_label_probs",
      "proposals",
  }
  assert outputs["semantic_codes"].shape == (2, 8)
  assert outputs["category_codes"].shape == (2, 10, 2)
  assert outputs["proposal_label_probs"].shape == (2, 100, 10)
  np.testing.assert_allclose(outputs["proposal_label_probs"].sum(-1), 1.0, rtol=1e-5)
  reference = runs.iah_codes["train"]
  np.testing.assert_array_equal(outputs["semantic_codes"], reference["semantic_codes"][[3, 40]])
  with pytest.raises(ServingError, match="is not a readable image"):
    encoder.encode([__file__])


@pytest.mark.slow
def test_kill_during_indexing_leaves_the_old_index_loadable(runs, iah_encoder, tmp_path):
  folder, out = tmp_path / "photos", str(tmp_path / "index")
  folder.mkdir()
  names = sorted(os.listdir(runs.photos))
  for name in names[:40]:
    shutil.copy(os.path.join(runs.photos, name), folder)
  indexing.index_photos(runs.iah_run, str(folder), out, progress=False, encoder=iah_encoder)
  for name in names[40:]:
    shutil.copy(os.path.join(runs.photos, name), folder)
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  process = subprocess.Popen(
      [sys.executable, "-m", "iah_jax.index", "--run", runs.iah_run, "--images", str(folder)]
      + ["--out", out, "--commit_every", "8"],
      stderr=subprocess.PIPE,
      stdout=subprocess.DEVNULL,
      env=env,
  )
  seen = b""
  while b"committed" not in seen and process.poll() is None:
    seen += process.stderr.read1(4096)
  process.kill()  # SIGKILL: no clean-up runs
  assert process.wait() == -signal.SIGKILL  # killed while indexing, not finished
  index = photo_index.PhotoIndex.load(out, backend="faiss")
  assert index.num_images >= 40
  reference = runs.iah_codes["train"]["semantic_codes"]
  positions = [photo_position(path) for path in index.paths]
  np.testing.assert_array_equal(
      retrieval.unpack_codes(index.semantic.packed_codes, 8), reference[positions]
  )
  resumed = indexing.index_photos(
      runs.iah_run, str(folder), out, progress=False, encoder=iah_encoder
  )
  assert resumed.num_already == index.num_images and resumed.num_images == 96
  final = photo_index.PhotoIndex.load(out, backend="faiss")
  positions = [photo_position(path) for path in final.paths]
  assert sorted(positions) == list(range(96))
  np.testing.assert_array_equal(
      retrieval.unpack_codes(final.semantic.packed_codes, 8), reference[positions]
  )
