"""PASCAL VOC 2007 / 2012 as multi-label retrieval data, with the IAH paper's protocol.

Why a manual directory and not ``tfds.builder("voc/2007")``: TFDS's own ``voc`` builder can only
download (its ``_split_generators`` calls ``dl_manager.download_and_extract`` on the mirror's tar
URLs and has no manual-dir path), and its prepared records carry no file paths for computing
proposals. So this builder reads the standard VOCdevkit tree that the official tars (and TFDS's
own download, under ``<tfds data_dir>/downloads/extracted/*/VOCdevkit``) extract to. The label
order is TFDS's (``tfds.object_detection.voc``), i.e. VOC's alphabetical class order.

Expected layout: ``data_path`` is any of ``<root>``, ``<root>/VOCdevkit`` or
``<root>/VOCdevkit/VOC<year>``, where the last holds::

    Annotations/<id>.xml      one XML per image (size, objects with name / difficult / bndbox)
    JPEGImages/<id>.jpg
    ImageSets/Main/<set>.txt  image ids, one per line (trainval.txt, test.txt, ...)

For VOC2007, extract VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar into the same root
(they merge into one VOC2007 directory).

Protocol (IAH section V-A): the pool is the images of ``image_sets`` — VOC2007: trainval + test
(9963 images); VOC2012: only trainval (11,540 images; VOC2012 test has no public annotations).
2000 random queries (``num_queries``, ``query_seed``) form split "test", the rest split "train".

Labels: category j is positive when the image has an object of class j. ``difficult_as_label``
(default True, like TFDS's ``labels`` feature) says whether objects marked difficult count; with
False their boxes are dropped too (like TFDS's ``labels_no_difficult``), and an image whose only
objects are difficult becomes unlabelled (counted and skipped by default).

Boxes: VOC's 1-based inclusive pixel corners (xmin..xmax) become continuous coordinates
(xmin - 1, xmax), divided by the annotated image width / height, clipped to [0, 1].
"""

from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from iah_jax.data import images
from iah_jax.data import multilabel_builder as base

# Same order as TFDS's voc builder (alphabetical); tests check they agree.
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
DEFAULT_IMAGE_SETS = {"2007": ("trainval", "test"), "2012": ("trainval",)}


@dataclasses.dataclass(eq=False, kw_only=True)
class VocConfig(base.MultiLabelConfig):
  """VOC options.

  Attributes:
    year: "2007" or "2012".
    image_sets: ImageSets/Main lists forming the pool; () = the paper's (see the module doc).
    difficult_as_label: whether objects marked difficult make their category positive.
  """

  year: str = "2007"
  image_sets: tuple[str, ...] = ()
  difficult_as_label: bool = True

  def __post_init__(self):
    super().__post_init__()
    if self.year not in DEFAULT_IMAGE_SETS:
      raise ValueError(f"VOC year must be one of {sorted(DEFAULT_IMAGE_SETS)}, got {self.year!r}")

  def pool_image_sets(self) -> tuple[str, ...]:
    return tuple(self.image_sets) or DEFAULT_IMAGE_SETS[self.year]


def find_voc_year_dir(data_path: str | os.PathLike, year: str) -> Path:
  """The VOC<year> directory under ``data_path`` (accepts root, VOCdevkit or VOC<year> itself)."""
  root = Path(data_path)
  candidates = [root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}", root]
  for candidate in candidates:
    if (candidate / "Annotations").is_dir() and (candidate / "ImageSets" / "Main").is_dir():
      return candidate
  raise FileNotFoundError(
      f"VOC{year}: no Annotations/ and ImageSets/Main/ found in any of "
      f"{[str(c) for c in candidates]}"
  )


def _text(element, tag: str, xml_path, default: str | None = None) -> str:
  child = element.find(tag)
  if child is None or child.text is None:
    if default is not None:
      return default
    raise ValueError(f"VOC annotation {xml_path}: missing <{tag}>")
  return child.text.strip()


def parse_voc_annotation(
    xml_path: str | os.PathLike,
    difficult_as_label: bool = True,
    class_names=VOC_CLASSES,
    image_path: str | None = None,
):
  """Parses one VOC XML.

  Returns:
    (labels uint8 [20], boxes float32 [K, 4] fractions, box_labels int32 [K]).

  Raises:
    ValueError naming the file for an unknown class or a malformed box.
  """
  root = ElementTree.parse(xml_path).getroot()
  size = root.find("size")
  width = float(_text(size, "width", xml_path, "0")) if size is not None else 0.0
  height = float(_text(size, "height", xml_path, "0")) if size is not None else 0.0
  if (width <= 0 or height <= 0) and image_path and os.path.isfile(image_path):
    # A few annotation files carry size 0; the image header has the truth.
    from PIL import Image  # pylint: disable=g-import-not-at-top

    with Image.open(image_path) as image:
      width, height = image.size
  if width <= 0 or height <= 0:
    raise ValueError(f"VOC annotation {xml_path}: image size {width}x{height} is not positive")
  labels = np.zeros(len(class_names), np.uint8)
  boxes, box_labels = [], []
  for obj in root.findall("object"):
    name = _text(obj, "name", xml_path).lower()
    if name not in class_names:
      raise ValueError(
          f"VOC annotation {xml_path}: unknown class {name!r}; known: " f"{list(class_names)}"
      )
    difficult = _text(obj, "difficult", xml_path, "0") == "1"
    if difficult and not difficult_as_label:
      continue
    category = class_names.index(name)
    labels[category] = 1
    bndbox = obj.find("bndbox")
    if bndbox is None:
      raise ValueError(f"VOC annotation {xml_path}: object {name!r} has no <bndbox>")
    corners = [float(_text(bndbox, tag, xml_path)) for tag in ("xmin", "ymin", "xmax", "ymax")]
    boxes.append([corners[0] - 1.0, corners[1] - 1.0, corners[2], corners[3]])
    box_labels.append(category)
  fractions = images.pixel_boxes_to_fractions(
      np.asarray(boxes, np.float32).reshape(-1, 4), height, width
  )
  return labels, fractions, np.asarray(box_labels, np.int32)


def read_image_set(year_dir: Path, set_name: str) -> list[str]:
  path = year_dir / "ImageSets" / "Main" / f"{set_name}.txt"
  if not path.is_file():
    raise FileNotFoundError(f"VOC image set {path} not found")
  # Lines are "<id>" (Main/<set>.txt) or "<id> <flag>" (class-specific lists); take the id.
  return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


class IahVoc(base.MultiLabelBuilder):
  """PASCAL VOC 2007 / 2012, 20 classes, 2000 random queries (IAH protocol)."""

  name = "iah_voc"
  BUILDER_CONFIG_CLASS = VocConfig

  def class_names(self) -> list[str]:
    return list(VOC_CLASSES)

  def _read_records(self) -> list[base.ImageRecord]:
    config = self.config
    year_dir = find_voc_year_dir(config.data_path, config.year)
    ids = list(
        dict.fromkeys(
            image_id
            for set_name in config.pool_image_sets()
            for image_id in read_image_set(year_dir, set_name)
        )
    )
    records = []
    for image_id in ids:
      xml_path = year_dir / "Annotations" / f"{image_id}.xml"
      image_path = str(year_dir / "JPEGImages" / f"{image_id}.jpg")
      if not xml_path.is_file():
        raise FileNotFoundError(
            f"VOC{config.year}: image {image_id!r} is listed in "
            f"{config.pool_image_sets()} but {xml_path} does not exist"
        )
      labels, boxes, box_labels = parse_voc_annotation(
          xml_path, config.difficult_as_label, VOC_CLASSES, image_path
      )
      records.append(
          base.ImageRecord(
              image_id=image_id,
              path=image_path,
              labels=labels,
              object_boxes=boxes,
              object_labels=box_labels,
          )
      )
    return records
