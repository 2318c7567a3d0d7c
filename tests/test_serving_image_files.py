"""Which files `iah_jax.index --images` means: folders, image lists, single images."""

import os

import pytest

from iah_jax.serving import image_files
from iah_jax.serving.errors import ServingError


def touch(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  open(path, "wb").close()


def test_a_folder_is_walked_recursively_for_image_extensions_in_any_case(tmp_path):
  for name in ["b.jpg", "a.PNG", "sub/c.webp", "sub/deeper/d.JPEG", "notes.txt", "sub/e.gif"]:
    touch(tmp_path / name)
  found = image_files.list_images(str(tmp_path))
  assert found == [
      str(tmp_path / name) for name in ["a.PNG", "b.jpg", "sub/c.webp", "sub/deeper/d.JPEG"]
  ]


def test_an_image_list_keeps_order_skips_comments_and_labels_and_keeps_missing_files(tmp_path):
  touch(tmp_path / "images" / "x.jpg")
  touch(tmp_path / "images" / "with space.png")
  listing = tmp_path / "list.txt"
  listing.write_text(
      "# my photos\n\nimages/x.jpg 0 1 1\nimages/with space.png\n"
      f"{tmp_path / 'images' / 'x.jpg'}\nimages/gone.jpg\n"
  )
  assert image_files.list_images(str(listing)) == [
      str(tmp_path / "images" / "x.jpg"),  # listed twice, kept once
      str(tmp_path / "images" / "with space.png"),
      str(tmp_path / "images" / "gone.jpg"),  # missing: reported as unreadable by the index
  ]


def test_one_image_is_a_list_of_one(tmp_path):
  touch(tmp_path / "one.webp")
  assert image_files.list_images(str(tmp_path / "one.webp")) == [str(tmp_path / "one.webp")]


def test_missing_and_empty_sources_are_errors_naming_them(tmp_path):
  with pytest.raises(ServingError, match=f"--images {tmp_path / 'nope'} does not exist"):
    image_files.list_images(str(tmp_path / "nope"))
  touch(tmp_path / "empty" / "readme.txt")
  with pytest.raises(ServingError, match=f"no images .* found in folder {tmp_path / 'empty'}"):
    image_files.list_images(str(tmp_path / "empty"))
  (tmp_path / "blank.txt").write_text("# nothing\n\n")
  with pytest.raises(ServingError, match="lists no image"):
    image_files.list_images(str(tmp_path / "blank.txt"))
