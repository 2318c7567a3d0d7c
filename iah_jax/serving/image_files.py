"""Which image files a user means: a folder walked recursively, an image list, or one image."""

from __future__ import annotations

import os

from iah_jax.serving.errors import ServingError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def is_image_name(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in EXTENSIONS


def _walk(directory: str) -> list[str]:
  found = []
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    found.extend(os.path.join(root, name) for name in sorted(files) if is_image_name(name))
  return found


def _read_list(list_file: str) -> list[str]:
  """One image per line (blank lines and "#" comments skipped); a line may carry labels after
  the path, as the image lists of `iah_jax.data.image_list` do. Relative paths start at the
  list file's directory."""
  base = os.path.dirname(os.path.abspath(list_file))
  paths = []
  try:
    with open(list_file, encoding="utf-8") as file:
      lines = file.read().splitlines()
  except (OSError, UnicodeDecodeError) as err:
    raise ServingError(f"cannot read the image list {list_file}: {err}") from None
  for line in lines:
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    whole = os.path.join(base, line)
    path = line if os.path.exists(whole) else line.split()[0]
    paths.append(os.path.normpath(os.path.join(base, path)))
  return paths


def list_images(source: str) -> list[str]:
  """Absolute image paths, in a stable order, without duplicates.

  Args:
    source: a directory (walked recursively for .jpg, .jpeg, .png, .webp, any case; sorted), a
      text file listing images (see `_read_list`; listed files that are missing are kept, so
      they are reported as unreadable), or a single image file.

  Raises:
    ServingError: `source` does not exist, or holds / lists no image.
  """
  source = os.fspath(source)
  if os.path.isdir(source):
    paths = _walk(source)
    if not paths:
      raise ServingError(
          f"no images ({', '.join(EXTENSIONS)}) found in folder {source} or its subfolders"
      )
  elif os.path.isfile(source):
    paths = [source] if is_image_name(source) else _read_list(source)
    if not paths:
      raise ServingError(f"the image list {source} lists no image")
  else:
    raise ServingError(f"--images {source} does not exist (give a folder or an image list)")
  return list(dict.fromkeys(os.path.abspath(path) for path in paths))
