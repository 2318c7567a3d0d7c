"""Building and growing a photo index: list the images, compute their proposals, encode them,
commit (see `photo_index` for the files and the crash safety).

    report = index_photos("runs/default/q16_b4", "photos/", "photo_index/")

Re-running on a grown folder encodes only the images not in the index yet (an image is known by
its absolute path; a file changed in place keeps its old codes). Images that cannot be read are
counted and listed (`IndexReport.unreadable`, ``index.json``), never dropped silently; they are
retried on the next run. The cheap checks (run directory, image list, existing index) come
before JAX and the model are loaded, so mistakes are reported at once.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time

import numpy as np

from iah_jax.serving import image_files
from iah_jax.serving import photo_index
from iah_jax.serving import run_dirs
from iah_jax.serving.errors import ServingError

# Below this many new images, proposals are computed in this process: starting the worker
# processes (each imports TensorFlow Datasets) costs more than it saves.
MIN_IMAGES_FOR_WORKERS = 500


@dataclasses.dataclass
class IndexReport:
  """What `index_photos` did.

  Attributes:
    directory: the index directory.
    num_listed: images found in the source.
    num_already: of those, images already in the index.
    num_added: images encoded and committed by this run.
    num_images: images in the index now.
    unreadable: [{"path", "reason"}] of the images this run could not read.
    proposal_seconds_per_image: CPU seconds per image of the proposal computation (one core).
    proposal_wall_seconds: elapsed time of the proposal phase.
    encode_seconds: elapsed time of reading, preparing and encoding (proposals excluded).
    commits: generations committed by this run.
  """

  directory: str
  num_listed: int
  num_already: int
  num_added: int = 0
  num_images: int = 0
  unreadable: list = dataclasses.field(default_factory=list)
  proposal_seconds_per_image: float = float("nan")
  proposal_wall_seconds: float = 0.0
  encode_seconds: float = 0.0
  commits: int = 0

  @property
  def images_per_second(self) -> float:
    """Encoding throughput, proposals excluded."""
    return self.num_added / self.encode_seconds if self.encode_seconds else float("nan")

  def format(self, max_listed: int = 20) -> str:
    lines = [
        f"index {self.directory}: {self.num_images} images ({self.num_added} added now, "
        f"{self.num_already} of the {self.num_listed} listed were indexed before)"
    ]
    if self.num_added:
      lines.append(
          f"  proposals: {1000 * self.proposal_seconds_per_image:.1f} ms CPU per image "
          f"({self.proposal_wall_seconds:.1f} s wall); encoding (reading, resizing, model; "
          f"proposals excluded): {self.images_per_second:.0f} images/s "
          f"({self.encode_seconds:.1f} s)"
      )
    if self.unreadable:
      lines.append(
          f"  unreadable: {len(self.unreadable)} image(s), not indexed (listed in "
          f"{os.path.join(self.directory, photo_index.HEADER)}):"
      )
      lines.extend(f"    {item['path']}: {item['reason']}" for item in self.unreadable[:max_listed])
      if len(self.unreadable) > max_listed:
        lines.append(f"    ... and {len(self.unreadable) - max_listed} more")
    return "\n".join(lines)


def _indexed_paths(directory: str, header: dict) -> list[str]:
  path = os.path.join(directory, header["files"]["paths"])
  try:
    with open(path) as file:
      return json.load(file)
  except (OSError, json.JSONDecodeError) as err:
    raise ServingError(f"photo index {directory} is damaged ({path}: {err})") from None


def _header_problem(path: str) -> str | None:
  """Why PIL cannot even open `path` (missing, not an image, too small), or None."""
  from PIL import Image

  try:
    with Image.open(path) as image:
      width, height = image.size
  except FileNotFoundError:
    return "the file does not exist"
  except (OSError, ValueError, SyntaxError) as err:
    return f"not a readable image ({type(err).__name__}: {err})"
  if width < 2 or height < 2:
    return f"too small for region proposals ({width}x{height} pixels)"
  return None


def _read_problem(path: str) -> str:
  """The reason a file that failed in the proposal phase cannot be read."""
  from iah_jax.serving import preprocess

  try:
    preprocess.read_photo(path)
  except ServingError as err:
    return str(err)
  return "its proposals could not be computed"


def index_photos(
    run_dir: str,
    images: str,
    out_dir: str,
    *,
    commit_every: int = 2048,
    num_workers: int | None = None,
    progress: bool = True,
    log=print,
    encoder=None,
) -> IndexReport:
  """Encodes the images of `images` not yet in the index `out_dir` with the run `run_dir`.

  Args:
    run_dir: a trained run directory (WORKDIR/q<q>_b<b>).
    images: a folder (walked recursively), an image list, or one image (`image_files`).
    out_dir: the index directory (created; an existing index must come from the same run).
    commit_every: commit a generation after this many newly encoded images (and at the end).
    num_workers: processes for the proposals; None = every core for large batches of new
      images (`MIN_IMAGES_FOR_WORKERS`), else this process.
    progress: progress bars (stderr).
    log: where progress messages go (one string per call).
    encoder: the run already loaded (`load_model(run_dir)`, default batch size), to index
      several folders without restoring it each time.

  Returns:
    An `IndexReport`. Raises ServingError for bad input, leaving the existing index as it was.
  """
  if commit_every < 1:
    raise ServingError(f"commit_every must be >= 1, got {commit_every}")
  manifest = run_dirs.check_run_dir(run_dir)
  paths = image_files.list_images(images)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ServingError(f"--out {out_dir} exists and is not a directory")
  header = photo_index.read_header(out_dir) if os.path.isdir(out_dir) else None
  already = set()
  if header is not None:
    photo_index.check_same_run(header, out_dir, manifest, run_dir)
    already = set(_indexed_paths(out_dir, header))
  new = [path for path in paths if path not in already]
  report = IndexReport(
      directory=os.path.abspath(out_dir),
      num_listed=len(paths),
      num_already=len(paths) - len(new),
      num_images=len(already),
  )
  if not new:
    return report

  unreadable = {}
  for path in new:
    problem = _header_problem(path)
    if problem:
      unreadable[path] = problem
  candidates = [path for path in new if path not in unreadable]
  if not candidates and header is None:
    raise ServingError(_nothing_readable(paths, unreadable))

  from iah_jax.data import prepare  # the heavy part starts here: JAX, TensorFlow, the model
  from iah_jax.serving import encoder as encoder_lib

  if encoder is None:
    log(f"loading run {run_dir}")
    encoder = encoder_lib.load_model(run_dir)
  elif encoder.run_dir != os.path.abspath(run_dir):
    raise ServingError(f"the encoder given is run {encoder.run_dir}, not {run_dir}")
  existing = None
  if header is not None:
    photo_index.check_same_step(header, out_dir, encoder.step)
    existing = photo_index.PhotoIndex.load(out_dir, backend="faiss")
  settings = encoder.preparation.proposal_settings
  writer = photo_index.IndexWriter(
      out_dir, photo_index.run_info(encoder), dataclasses.asdict(settings), existing
  )
  cache_dir = os.path.join(writer.directory, photo_index.PROPOSAL_CACHE)

  if num_workers is None and len(candidates) < MIN_IMAGES_FOR_WORKERS:
    num_workers = 0
  proposals_report = prepare.prepare_proposals(
      [(path, path) for path in candidates],
      cache_dir,
      settings,
      num_workers=num_workers,
      progress=progress,
      verbose=False,
      description="proposals",
  )
  report.proposal_seconds_per_image = proposals_report.seconds_per_image
  report.proposal_wall_seconds = proposals_report.wall_seconds
  ready = set(proposals_report.ready_ids)
  for path in candidates:
    if path not in ready:
      unreadable[path] = _read_problem(path)
  to_encode = [path for path in candidates if path in ready]

  def unreadable_list():
    return [{"path": path, "reason": unreadable[path]} for path in paths if path in unreadable]

  started = time.perf_counter()
  encode_and_commit(
      encoder,
      writer,
      to_encode,
      cache_dir,
      settings,
      unreadable,
      commit_every,
      progress,
      log,
      report,
  )
  report.encode_seconds = time.perf_counter() - started
  if writer.num_images == 0:
    raise ServingError(_nothing_readable(paths, unreadable))
  if writer.num_images > writer.committed or unreadable_list() != (header or {}).get("unreadable"):
    writer.commit(unreadable_list())
    report.commits += 1
  report.num_added = writer.num_images - len(already)
  report.num_images = writer.num_images
  report.unreadable = unreadable_list()
  return report


def encode_and_commit(
    encoder, writer, to_encode, cache_dir, settings, unreadable, commit_every, progress, log, report
) -> None:
  """Streams `to_encode` through the encoder in the run's batches, committing every
  `commit_every` images; files that fail to read now are added to `unreadable`."""
  import tqdm

  from iah_jax.data import prepare
  from iah_jax.serving import preprocess

  # The generator runs ahead in tf.data's thread; it queues each image's path and proposals in
  # the order it yields the image, so the i-th row of a batch is the i-th queued entry.
  queued = collections.deque()

  def stored_images():
    for path in to_encode:
      try:
        image = preprocess.read_photo(path)
      except ServingError as err:
        unreadable[path] = str(err)
        continue
      queued.append((path, prepare.load_proposals(cache_dir, settings, path, path)))
      yield encoder.preparation.stored(image)

  since_commit = 0
  with tqdm.tqdm(
      total=len(to_encode), desc="encode", unit="img", disable=not progress, dynamic_ncols=True
  ) as bar:
    for batch in encoder.preparation.model_batches(stored_images(), encoder.batch_size):
      rows = [queued.popleft() for _ in range(batch.shape[0])]
      outputs = encoder.encode_inputs(batch, np.stack([boxes for _, boxes in rows]))
      writer.add([path for path, _ in rows], outputs)
      since_commit += batch.shape[0]
      bar.update(batch.shape[0])
      if since_commit >= commit_every:
        writer.commit([{"path": p, "reason": r} for p, r in unreadable.items()])
        report.commits += 1
        since_commit = 0
        log(f"committed {writer.num_images} images (generation {writer.generation})")


def _nothing_readable(paths: list[str], unreadable: dict) -> str:
  first = next(iter(unreadable.items()), None)
  example = f"; e.g. {first[0]}: {first[1]}" if first else ""
  return f"none of the {len(paths)} image(s) could be read, nothing was indexed{example}"
