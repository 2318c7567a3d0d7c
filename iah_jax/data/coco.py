"""MS-COCO 2014 / 2017 as multi-label retrieval data (80 categories, boxes from instances).

Why a manual directory and not TFDS's ``coco`` builder: like ``voc``, TFDS's ``coco`` builder only
downloads (``dl_manager.download_and_extract`` of images.cocodataset.org zips) and its records
carry no file paths for computing proposals. This builder reads the official files.

Expected layout of ``data_path`` (the official zips extracted)::

    annotations/instances_train2014.json   (instances_<split><year>.json for each source split)
    annotations/instances_val2014.json
    train2014/<file_name>                  (<split><year>/ as named in the JSON "file_name")
    val2014/<file_name>

Labels: the 80 categories in ascending category-id order (COCO ids 1..90 with 10 gaps), names as
in :data:`COCO_CATEGORIES`; the JSON must list exactly these (checked). Category j is positive
when the image has an instance annotation of it; ``include_crowd`` (default True) says whether
"iscrowd" annotations count (and contribute boxes).

Boxes: COCO's [x, y, width, height] in continuous pixels -> (x / W, y / H, (x + w) / W,
(y + h) / H) with the JSON's image width / height, clipped to [0, 1].

Protocol: the images of ``source_splits`` (default train + val of the year) are pooled in
(source split, image id) order; ``num_queries`` random queries (default 2000, like the IAH paper
on its datasets; many hashing papers use 5000 on COCO) form split "test", the rest split "train".
Images without any (counted) annotation — about 1% of COCO — are unlabelled: skipped and counted by
default.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from iah_jax.data import images
from iah_jax.data import multilabel_builder as base

# (category id, name) in ascending id order: the label order.
COCO_CATEGORIES = (
    (1, "person"),
    (2, "bicycle"),
    (3, "car"),
    (4, "motorcycle"),
    (5, "airplane"),
    (6, "bus"),
    (7, "train"),
    (8, "truck"),
    (9, "boat"),
    (10, "traffic light"),
    (11, "fire hydrant"),
    (13, "stop sign"),
    (14, "parking meter"),
    (15, "bench"),
    (16, "bird"),
    (17, "cat"),
    (18, "dog"),
    (19, "horse"),
    (20, "sheep"),
    (21, "cow"),
    (22, "elephant"),
    (23, "bear"),
    (24, "zebra"),
    (25, "giraffe"),
    (27, "backpack"),
    (28, "umbrella"),
    (31, "handbag"),
    (32, "tie"),
    (33, "suitcase"),
    (34, "frisbee"),
    (35, "skis"),
    (36, "snowboard"),
    (37, "sports ball"),
    (38, "kite"),
    (39, "baseball bat"),
    (40, "baseball glove"),
    (41, "skateboard"),
    (42, "surfboard"),
    (43, "tennis racket"),
    (44, "bottle"),
    (46, "wine glass"),
    (47, "cup"),
    (48, "fork"),
    (49, "knife"),
    (50, "spoon"),
    (51, "bowl"),
    (52, "banana"),
    (53, "apple"),
    (54, "sandwich"),
    (55, "orange"),
    (56, "broccoli"),
    (57, "carrot"),
    (58, "hot dog"),
    (59, "pizza"),
    (60, "donut"),
    (61, "cake"),
    (62, "chair"),
    (63, "couch"),
    (64, "potted plant"),
    (65, "bed"),
    (67, "dining table"),
    (70, "toilet"),
    (72, "tv"),
    (73, "laptop"),
    (74, "mouse"),
    (75, "remote"),
    (76, "keyboard"),
    (77, "cell phone"),
    (78, "microwave"),
    (79, "oven"),
    (80, "toaster"),
    (81, "sink"),
    (82, "refrigerator"),
    (84, "book"),
    (85, "clock"),
    (86, "vase"),
    (87, "scissors"),
    (88, "teddy bear"),
    (89, "hair drier"),
    (90, "toothbrush"),
)
COCO_YEARS = ("2014", "2017")


@dataclasses.dataclass(eq=False, kw_only=True)
class CocoConfig(base.MultiLabelConfig):
  """COCO options.

  Attributes:
    year: "2014" or "2017".
    source_splits: official splits pooled before the random query draw.
    include_crowd: whether "iscrowd" annotations make their category positive.
  """

  year: str = "2014"
  source_splits: tuple[str, ...] = ("train", "val")
  include_crowd: bool = True

  def __post_init__(self):
    super().__post_init__()
    if self.year not in COCO_YEARS:
      raise ValueError(f"COCO year must be one of {COCO_YEARS}, got {self.year!r}")
    if not self.source_splits:
      raise ValueError("COCO source_splits must name at least one official split")


def read_coco_instances(
    json_path: str, image_dir: str, include_crowd: bool = True
) -> list[base.ImageRecord]:
  """Records of one instances_*.json, in ascending image-id order."""
  if not os.path.isfile(json_path):
    raise FileNotFoundError(f"COCO annotation file {json_path} not found")
  with open(json_path) as f:
    data = json.load(f)
  for key in ("images", "annotations", "categories"):
    if key not in data:
      raise ValueError(f"COCO {json_path} has no {key!r} list; is it an instances_*.json file?")
  found = sorted((int(c["id"]), c["name"]) for c in data["categories"])
  if tuple(found) != COCO_CATEGORIES:
    raise ValueError(
        f"COCO {json_path}: categories {found[:5]}... differ from the 80 expected "
        "(ids and names of COCO 2014/2017 instances)"
    )
  column = {category_id: j for j, (category_id, _) in enumerate(COCO_CATEGORIES)}
  image_info = {int(info["id"]): info for info in data["images"]}
  labels = {image_id: np.zeros(len(COCO_CATEGORIES), np.uint8) for image_id in image_info}
  boxes: dict[int, list] = {image_id: [] for image_id in image_info}
  box_labels: dict[int, list] = {image_id: [] for image_id in image_info}
  for annotation in data["annotations"]:
    image_id = int(annotation["image_id"])
    if image_id not in image_info:
      raise ValueError(
          f"COCO {json_path}: annotation {annotation.get('id')} refers to unknown "
          f"image {image_id}"
      )
    if annotation.get("iscrowd", 0) and not include_crowd:
      continue
    category = column.get(int(annotation["category_id"]))
    if category is None:
      raise ValueError(
          f"COCO {json_path}: annotation {annotation.get('id')} has unknown category "
          f"{annotation['category_id']}"
      )
    labels[image_id][category] = 1
    x, y, w, h = (float(v) for v in annotation["bbox"])
    boxes[image_id].append([x, y, x + w, y + h])
    box_labels[image_id].append(category)
  records = []
  for image_id in sorted(image_info):
    info = image_info[image_id]
    fractions = images.pixel_boxes_to_fractions(
        np.asarray(boxes[image_id], np.float32).reshape(-1, 4), info["height"], info["width"]
    )
    records.append(
        base.ImageRecord(
            image_id=info["file_name"],
            path=os.path.join(image_dir, info["file_name"]),
            labels=labels[image_id],
            object_boxes=fractions,
            object_labels=np.asarray(box_labels[image_id], np.int32),
        )
    )
  return records


class IahCoco(base.MultiLabelBuilder):
  """MS-COCO 2014 / 2017, 80 categories, instance boxes, random queries."""

  name = "iah_coco"
  BUILDER_CONFIG_CLASS = CocoConfig

  def class_names(self) -> list[str]:
    return [name for _, name in COCO_CATEGORIES]

  def _read_records(self) -> list[base.ImageRecord]:
    config = self.config
    records = []
    for split in config.source_splits:
      records += read_coco_instances(
          os.path.join(config.data_path, "annotations", f"instances_{split}{config.year}.json"),
          os.path.join(config.data_path, f"{split}{config.year}"),
          config.include_crowd,
      )
    return records
