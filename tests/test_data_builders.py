"""Every real-dataset builder on a tiny fixture in its real on-disk format.

Each fixture holds an RGB JPEG, a grayscale JPEG, a CMYK JPEG, a PNG, a corrupt image, an
unlabelled image and (where the format lists files) a missing file. Checked: labels, boxes, split
sizes and membership, skip counts, stored images, proposals, the query draw of the paper protocol,
clear errors for malformed input, and the registry.
"""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

import data_fixtures
from iah_jax.data import coco
from iah_jax.data import features
from iah_jax.data import images
from iah_jax.data import image_list
from iah_jax.data import mirflickr
from iah_jax.data import multilabel_builder
from iah_jax.data import nuswide
from iah_jax.data import registry
from iah_jax.data import selective_search
from iah_jax.data import voc

# Small and fast: 6 selective-search proposals on 64 x 48 images, stored at 40 x 30.
FAST = dict(num_proposals=6, search_max_side=64, image_max_side=40, num_workers=0, progress=False)
KIND_OF = {0: "rgb", 1: "gray", 2: "cmyk", 3: "png"}


def read_split(builder, split):
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


def ids_of(examples):
  return [e["image_id"].decode() for e in examples]


def by_id(examples):
  return {e["image_id"].decode(): e for e in examples}


def check_common(num_classes, *splits):
  """Schema checks every builder must pass, on each split's examples."""
  for examples in splits:
    assert [int(e["index"]) for e in examples] == list(range(len(examples)))
  for e in (e for examples in splits for e in examples):
    assert e["image"].dtype == np.uint8 and e["image"].shape[-1] == 3
    assert max(e["image"].shape[:2]) <= FAST["image_max_side"]
    assert e["labels"].shape == (num_classes,) and e["labels"].sum() >= 1
    assert e["proposals"].shape == (FAST["num_proposals"], 4)
    features.check_boxes(e["proposals"])
    features.check_boxes(e["object_boxes"])
    assert len(e["object_boxes"]) == len(e["object_labels"])


def expected_queries(usable_ids, num_queries, seed):
  """The paper protocol written out: a seeded permutation picks the queries."""
  chosen = set(np.random.default_rng(seed).permutation(len(usable_ids))[:num_queries].tolist())
  return [i for k, i in enumerate(usable_ids) if k in chosen]


# ----------------------------------------------------------------------------------------- VOC
VOC_OBJECTS = {  # id -> [(class, difficult, (xmin, ymin, xmax, ymax))], 1-based VOC pixels
    "000001": [("dog", 0, (5, 6, 30, 40)), ("person", 1, (10, 10, 60, 45))],
    "000002": [("cat", 0, (1, 1, 64, 48))],
    "000003": [("car", 0, (10, 5, 20, 15)), ("bus", 0, (30, 20, 50, 40))],
    "000004": [("bird", 0, (2, 3, 12, 13))],
    "000005": [("cow", 0, (2, 3, 12, 13))],  # corrupt image
    "000006": [],  # no object: unlabelled
    "000007": [("sheep", 1, (20, 20, 40, 40))],  # only a difficult object
    "000008": [("horse", 0, (2, 3, 12, 13))],  # image file missing
    "000009": [("train", 0, (5, 5, 60, 40))],
    "000010": [("sofa", 0, (1, 20, 30, 48)), ("tvmonitor", 0, (35, 2, 60, 20))],
}


def voc_xml(objects, width=64, height=48):
  parts = [
      f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth>" "</size>"
  ]
  for name, difficult, (x0, y0, x1, y1) in objects:
    parts.append(
        f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
        f"<difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
    )
  return "".join(parts) + "</annotation>"


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("voc")
  year_dir = root / "VOCdevkit" / "VOC2007"
  for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
    (year_dir / sub).mkdir(parents=True)
  for k, (image_id, objects) in enumerate(VOC_OBJECTS.items()):
    (year_dir / "Annotations" / f"{image_id}.xml").write_text(voc_xml(objects))
    path = year_dir / "JPEGImages" / f"{image_id}.jpg"
    if image_id == "000005":
      data_fixtures.write_corrupt(path)
    elif image_id != "000008":
      data_fixtures.write_image(path, KIND_OF.get(k, "rgb"), seed=k)
  ids = list(VOC_OBJECTS)
  (year_dir / "ImageSets/Main/trainval.txt").write_text("\n".join(ids[:5]) + "\n")
  (year_dir / "ImageSets/Main/test.txt").write_text("\n".join(ids[5:]) + "\n")
  # VOC2012 fixture: the same files; its protocol only uses trainval.
  os.symlink(year_dir, root / "VOCdevkit" / "VOC2012")
  return root


@pytest.fixture(scope="module")
def voc_builder(voc_root, tmp_path_factory):
  return registry.get_builder(
      "voc2007",
      tmp_path_factory.mktemp("tfds"),
      data_path=voc_root,
      num_queries=3,
      query_seed=4,
      **FAST,
  )


def test_voc_labels_boxes_splits_and_skips(voc_builder, voc_root):
  train, test = read_split(voc_builder, "train"), read_split(voc_builder, "test")
  check_common(20, train, test)
  assert voc_builder.info.metadata["skip_counts"] == {
      "missing_file": 1,
      "corrupt_image": 1,
      "unlabelled": 1,
  }
  usable = ["000001", "000002", "000003", "000004", "000007", "000009", "000010"]
  assert ids_of(test) == expected_queries(usable, 3, seed=4)
  assert ids_of(train) == [i for i in usable if i not in ids_of(test)]
  examples = by_id(train + test)
  for image_id in usable:
    objects = VOC_OBJECTS[image_id]
    expected = np.zeros(20, np.uint8)
    for name, _, _ in objects:
      expected[voc.VOC_CLASSES.index(name)] = 1
    np.testing.assert_array_equal(examples[image_id]["labels"], expected)
    boxes = [[(x0 - 1) / 64, (y0 - 1) / 48, x1 / 64, y1 / 48] for _, _, (x0, y0, x1, y1) in objects]
    np.testing.assert_allclose(
        examples[image_id]["object_boxes"], np.reshape(boxes, (-1, 4)), atol=1e-6
    )
    np.testing.assert_array_equal(
        examples[image_id]["object_labels"], [voc.VOC_CLASSES.index(name) for name, _, _ in objects]
    )


def test_voc_stored_images_and_proposals(voc_builder, voc_root):
  examples = by_id(read_split(voc_builder, "train") + read_split(voc_builder, "test"))
  year_dir = voc_root / "VOCdevkit" / "VOC2007" / "JPEGImages"
  for image_id, example in examples.items():
    assert example["image"].shape == (30, 40, 3)  # 64 x 48 downscaled to max side 40
    original = images.read_image(year_dir / f"{image_id}.jpg")
    # Stored proposals are the selective search of the original image.
    np.testing.assert_array_equal(
        example["proposals"],
        selective_search.selective_search_proposals(original, 6, search_max_side=64),
    )
    reference = images.resize_to_max_side(original, 40).astype(int)
    assert np.abs(example["image"].astype(int) - reference).mean() < 8  # JPEG re-encoding only
  gray = examples["000002"]["image"].astype(int)
  assert (
      np.abs(gray[..., 0] - gray[..., 1]).max() <= 3
      and np.abs(gray[..., 1] - gray[..., 2]).max() <= 3
  )


def test_voc_difficult_flag_and_voc2012_protocol(voc_root, tmp_path):
  hard = registry.get_builder(
      "voc2007",
      tmp_path / "a",
      data_path=voc_root,
      num_queries=2,
      difficult_as_label=False,
      proposal_method="whole_image",
      **FAST,
  )
  examples = by_id(read_split(hard, "train") + read_split(hard, "test"))
  assert hard.info.metadata["skip_counts"]["unlabelled"] == 2  # 000006 and difficult-only 000007
  assert "000007" not in examples
  first = examples["000001"]
  np.testing.assert_array_equal(np.nonzero(first["labels"])[0], [voc.VOC_CLASSES.index("dog")])
  assert len(first["object_boxes"]) == 1  # the difficult person box is dropped too
  v12 = registry.get_builder(
      "voc2012",
      tmp_path / "b",
      data_path=voc_root / "VOCdevkit",
      num_queries=1,
      proposal_method="whole_image",
      **FAST,
  )
  ids = ids_of(read_split(v12, "train") + read_split(v12, "test"))
  assert sorted(ids) == ["000001", "000002", "000003", "000004"]  # trainval only, 000005 corrupt


def test_voc_class_order_is_tfds_order_and_annotation_errors(tmp_path):
  from tensorflow_datasets.object_detection import voc as tfds_voc

  assert voc.VOC_CLASSES == tuple(tfds_voc._VOC_LABELS)  # pylint: disable=protected-access
  bad = tmp_path / "bad.xml"
  bad.write_text(voc_xml([("unicorn", 0, (1, 1, 5, 5))]))
  with pytest.raises(ValueError, match="unknown class 'unicorn'"):
    voc.parse_voc_annotation(bad)
  with pytest.raises(FileNotFoundError, match="Annotations"):
    voc.find_voc_year_dir(tmp_path, "2007")


# ---------------------------------------------------------------------------------------- COCO
COCO_IMAGES = {  # id -> (source split, kind, [(category id, bbox, iscrowd)])
    1: ("train", "rgb", [(1, [4, 6, 20, 10], 0), (90, [0, 0, 8, 8], 1)]),
    2: ("train", "gray", [(17, [0, 0, 64, 48], 0)]),
    3: ("train", "cmyk", [(18, [10, 10, 30, 30], 0)]),
    4: ("train", "png", [(3, [1, 2, 3, 4], 0), (3, [30, 20, 40, 30], 0)]),
    5: ("train", "corrupt", [(6, [1, 1, 5, 5], 0)]),
    6: ("train", "rgb", []),  # no annotation: unlabelled
    7: ("val", "missing", [(1, [1, 1, 5, 5], 0)]),
    8: ("val", "rgb", [(38, [5, 5, 20, 20], 1)]),  # crowd only
    9: ("val", "rgb", [(59, [50, 40, 30, 30], 0)]),  # box past the border: clipped
}


def coco_file_name(image_id, split):
  return f"COCO_{split}2014_{image_id:012d}.jpg"


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("coco")
  (root / "annotations").mkdir()
  categories = [{"id": i, "name": n, "supercategory": "x"} for i, n in coco.COCO_CATEGORIES]
  for split in ("train", "val"):
    data = {"images": [], "annotations": [], "categories": categories[::-1]}  # order irrelevant
    for image_id, (image_split, kind, annotations) in COCO_IMAGES.items():
      if image_split != split:
        continue
      name = coco_file_name(image_id, split)
      data["images"].append({"id": image_id, "file_name": name, "width": 64, "height": 48})
      for k, (category, bbox, crowd) in enumerate(annotations):
        data["annotations"].append(
            {
                "id": image_id * 10 + k,
                "image_id": image_id,
                "category_id": category,
                "bbox": bbox,
                "iscrowd": crowd,
            }
        )
      path = root / f"{split}2014" / name
      if kind == "corrupt":
        data_fixtures.write_corrupt(path)
      elif kind != "missing":
        data_fixtures.write_image(path, kind, seed=image_id)
    (root / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(data))
  return root


def test_coco_labels_boxes_crowd_and_skips(coco_root, tmp_path):
  column = {i: j for j, (i, _) in enumerate(coco.COCO_CATEGORIES)}
  for include_crowd in (True, False):
    builder = registry.get_builder(
        "coco2014",
        tmp_path / str(include_crowd),
        data_path=coco_root,
        num_queries=2,
        include_crowd=include_crowd,
        **FAST,
    )
    train, test = read_split(builder, "train"), read_split(builder, "test")
    check_common(80, train, test)
    assert len(test) == 2
    examples = by_id(train + test)
    unlabelled = 1 if include_crowd else 2
    assert builder.info.metadata["skip_counts"] == {
        "missing_file": 1,
        "corrupt_image": 1,
        "unlabelled": unlabelled,
    }
    for image_id, (split, kind, annotations) in COCO_IMAGES.items():
      kept = [a for a in annotations if include_crowd or not a[2]]
      name = coco_file_name(image_id, split)
      if kind in ("corrupt", "missing") or not kept:
        assert name not in examples
        continue
      expected = np.zeros(80, np.uint8)
      for category, _, _ in kept:
        expected[column[category]] = 1
      np.testing.assert_array_equal(examples[name]["labels"], expected)
      boxes = [
          [min(x / 64, 1), min(y / 48, 1), min((x + w) / 64, 1), min((y + h) / 48, 1)]
          for _, (x, y, w, h), _ in kept
      ]
      np.testing.assert_allclose(examples[name]["object_boxes"], boxes, atol=1e-6)
      np.testing.assert_array_equal(
          examples[name]["object_labels"], [column[c] for c, _, _ in kept]
      )
  assert coco.COCO_CATEGORIES[79] == (90, "toothbrush")


def test_coco_rejects_wrong_categories(coco_root, tmp_path):
  data = json.loads((coco_root / "annotations" / "instances_val2014.json").read_text())
  data["categories"] = data["categories"][1:]
  bad = tmp_path / "instances_val2014.json"
  bad.write_text(json.dumps(data))
  with pytest.raises(ValueError, match="differ from the 80 expected"):
    coco.read_coco_instances(str(bad), str(tmp_path))


# ----------------------------------------------------------------------------------- MIRFLICKR
MIRFLICKR_ANNOTATIONS = {
    "animals": [1, 2],
    "dog": [2],
    "dog_r1": [2],
    "sky": [3, 4, 7],
    "clouds": [3, 5],
    "clouds_r1": [3],
    "people": [7, 8],
    "water": [4],
}
MIRFLICKR_KINDS = {
    1: "rgb",
    2: "gray",
    3: "cmyk",
    4: "png",
    5: "corrupt",
    6: "rgb",
    7: "rgb",
    8: "missing",
}  # 6 has no annotation: unlabelled


@pytest.fixture(scope="module")
def mirflickr_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("mirflickr")
  annotation_dir = root / "mirflickr25k_annotations_v080"
  annotation_dir.mkdir()
  for name in mirflickr.POTENTIAL_LABELS + mirflickr.RELEVANT_LABELS:
    numbers = MIRFLICKR_ANNOTATIONS.get(name, [])
    (annotation_dir / f"{name}.txt").write_text("".join(f"{n}\r\n" for n in numbers))
  for number, kind in MIRFLICKR_KINDS.items():
    path = root / "mirflickr" / f"im{number}.jpg"
    if kind == "corrupt":
      data_fixtures.write_corrupt(path)
    elif kind != "missing":
      data_fixtures.write_image(path, kind, seed=number)
  return root


@pytest.mark.parametrize("num_labels", [24, 38])
def test_mirflickr_labels_in_documented_order(mirflickr_root, tmp_path, num_labels):
  builder = registry.get_builder(
      "mirflickr25k",
      tmp_path,
      data_path=mirflickr_root,
      num_labels=num_labels,
      num_images=8,
      num_queries=2,
      **FAST,
  )
  train, test = read_split(builder, "train"), read_split(builder, "test")
  check_common(num_labels, train, test)
  names = builder.info.metadata["class_names"]
  assert names[:24] == sorted(mirflickr.POTENTIAL_LABELS) and len(names) == num_labels
  if num_labels == 38:
    assert names[24:] == sorted(mirflickr.RELEVANT_LABELS)
  assert builder.info.metadata["skip_counts"] == {
      "missing_file": 1,
      "corrupt_image": 1,
      "unlabelled": 1,
  }
  usable = ["im1", "im2", "im3", "im4", "im7"]
  assert ids_of(test) == expected_queries(usable, 2, seed=0)
  for image_id, example in by_id(train + test).items():
    number = int(image_id[2:])
    expected = [int(number in MIRFLICKR_ANNOTATIONS.get(name, [])) for name in names]
    np.testing.assert_array_equal(example["labels"], expected)
    assert example["object_boxes"].shape == (0, 4)


def test_mirflickr_bad_annotation_line_names_file_and_line(tmp_path):
  path = tmp_path / "sky.txt"
  path.write_text("3\n\n12\n")
  with pytest.raises(ValueError, match=r"sky.txt line 3: expected an image number in 1..8"):
    mirflickr.read_concept_file(str(path), 8)


# ------------------------------------------------------------------------------------ NUS-WIDE
NUS_CONCEPTS = [f"concept{k:02d}" for k in range(25)]
NUS_EXCLUDED = (2, 9, 15, 24)  # lowest counts: not among the 21 most frequent
NUS_KINDS = ["rgb", "gray", "cmyk", "png", "corrupt", "rgb", "missing", "rgb", "rgb"]


def nus_label_matrix():
  labels = np.zeros((9, 25), np.uint8)
  top = [k for k in range(25) if k not in NUS_EXCLUDED]
  for position, concept in enumerate(top):
    for i in range(9):
      labels[i, concept] = int((i + position) % 3 == 0 and i != 5)
  labels[5, 9] = 1  # image 5 only has an excluded concept: unlabelled under 21 concepts
  return labels


@pytest.fixture(scope="module")
def nus_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("nuswide")
  (root / "Concepts81.txt").write_text("\n".join(NUS_CONCEPTS) + "\n")
  (root / "ImageList").mkdir()
  listed = [
      f"C:\\ImageData\\Flickr\\{'actor' if i % 2 else 'zebra'}\\{i:04d}_{1000 + i}.jpg"
      for i in range(9)
  ]
  (root / "ImageList" / "Imagelist.txt").write_text("\r\n".join(listed) + "\r\n")
  label_dir = root / "Groundtruth" / "AllLabels"
  label_dir.mkdir(parents=True)
  labels = nus_label_matrix()
  for k, concept in enumerate(NUS_CONCEPTS):
    (label_dir / f"Labels_{concept}.txt").write_text("".join(f"{v}\n" for v in labels[:, k]))
  for i, kind in enumerate(NUS_KINDS):
    path = root / "Flickr" / nuswide.normalise_image_path(listed[i])
    if kind == "corrupt":
      data_fixtures.write_corrupt(path)
    elif kind != "missing":
      data_fixtures.write_image(path, kind, seed=i)
  return root


def test_nuswide_21_most_frequent_concepts(nus_root, tmp_path):
  builder = registry.get_builder("nuswide", tmp_path, data_path=nus_root, num_queries=2, **FAST)
  train, test = read_split(builder, "train"), read_split(builder, "test")
  check_common(21, train, test)
  chosen = [k for k in range(25) if k not in NUS_EXCLUDED]
  assert builder.info.metadata["class_names"] == [NUS_CONCEPTS[k] for k in chosen]
  assert builder.info.metadata["skip_counts"] == {
      "missing_file": 1,
      "corrupt_image": 1,
      "unlabelled": 1,
  }
  labels = nus_label_matrix()
  examples = by_id(train + test)
  assert sorted(examples) == sorted(
      f"{'actor' if i % 2 else 'zebra'}/{i:04d}_{1000 + i}.jpg" for i in (0, 1, 2, 3, 7, 8)
  )
  for image_id, example in examples.items():
    i = int(image_id.split("/")[1][:4])
    np.testing.assert_array_equal(example["labels"], labels[i, chosen])


def test_nuswide_concept_selection_matches_a_loop_with_ties():
  rng = np.random.default_rng(1)
  labels = (rng.random((30, 10)) < 0.3).astype(np.uint8)
  labels[:, 3] = labels[:, 7]  # a tie
  counts = labels.sum(0, dtype=np.int64)
  names = [f"c{k}" for k in range(10)]
  for n in (4, 6, 10):
    ranked = sorted(range(10), key=lambda k: (-counts[k], k))[:n]
    assert nuswide.select_concepts(names, labels, n) == sorted(ranked)
  assert nuswide.select_concepts(names, labels, 2, ("c5", "c1")) == [5, 1]
  with pytest.raises(ValueError, match="only 10"):
    nuswide.select_concepts(names, labels, 21)


def test_nuswide_label_file_errors(tmp_path):
  path = tmp_path / "Labels_x.txt"
  path.write_text("0\n1\n2\n")
  with pytest.raises(ValueError, match="line 3: expected 0 or 1"):
    nuswide.read_concept_labels(str(path), 3)
  with pytest.raises(ValueError, match="3 label lines but the image list has 4"):
    nuswide.read_concept_labels(str(path), 4)
  assert nuswide.normalise_image_path(r"C:\ImageData\Flickr\actor\0001_2.jpg") == "actor/0001_2.jpg"


# ---------------------------------------------------------------------------------- image_list
@pytest.fixture(scope="module")
def list_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("lists")
  for k, name in enumerate(["a.jpg", "sub/b.jpg", "c.jpg", "d.png", "h.jpg", "i.jpg", "f.jpg"]):
    kind = {1: "gray", 2: "cmyk", 3: "png"}.get(k, "rgb")
    data_fixtures.write_image(root / "images" / name, kind, seed=k)
  data_fixtures.write_corrupt(root / "images" / "e.jpg")
  (root / "train.txt").write_text(
      "# path labels\na.jpg 1 0 0\nsub/b.jpg 0 1 1\n\nc.jpg 0 0 1\ne.jpg 1 0 0\nf.jpg 0 0 0\n"
  )
  (root / "test.txt").write_text("d.png 1 1 0\ng.jpg 0 1 0\nh.jpg 0 1 0\n")  # g.jpg is missing
  (root / "database.txt").write_text(
      "a.jpg 1 0 0\nsub/b.jpg 0 1 1\nc.jpg 0 0 1\ne.jpg 1 0 0\nf.jpg 0 0 0\ni.jpg 1 1 1\n"
  )
  return root


def test_image_list_splits_follow_the_lists(list_root, tmp_path):
  builder = registry.get_builder(
      "image_list",
      tmp_path,
      data_path=list_root,
      image_root=str(list_root / "images"),
      database_list="database.txt",
      **FAST,
  )
  train, test = read_split(builder, "train"), read_split(builder, "test")
  database = read_split(builder, "database")
  check_common(3, train, test, database)
  assert ids_of(train) == ["a.jpg", "sub/b.jpg", "c.jpg"]
  assert ids_of(test) == ["d.png", "h.jpg"]
  assert ids_of(database) == ["a.jpg", "sub/b.jpg", "c.jpg", "i.jpg"]
  # e.jpg and f.jpg are listed twice but counted once.
  assert builder.info.metadata["skip_counts"] == {
      "missing_file": 1,
      "corrupt_image": 1,
      "unlabelled": 1,
  }
  np.testing.assert_array_equal(by_id(train)["sub/b.jpg"]["labels"], [0, 1, 1])
  np.testing.assert_array_equal(by_id(test)["d.png"]["labels"], [1, 1, 0])
  assert builder.info.metadata["class_names"] == ["class_0", "class_1", "class_2"]


def test_image_list_wrong_label_count_names_file_and_line(list_root, tmp_path):
  bad = tmp_path / "bad.txt"
  bad.write_text("a.jpg 1 0 0\n\nsub/b.jpg 0 1\n")
  with pytest.raises(
      ValueError, match=r"bad.txt line 3: expected an image path and 3 labels, " r"got 2"
  ):
    image_list.read_image_list(str(bad), 3, str(list_root))
  bad.write_text("a.jpg 1 0 2\n")
  with pytest.raises(ValueError, match=r"bad.txt line 1: labels must be 0 or 1, got '2'"):
    image_list.read_image_list(str(bad), 3, str(list_root))
  builder = registry.get_builder(
      "image_list",
      tmp_path / "tfds",
      prepare=False,
      data_path=list_root,
      train_list=str(bad),
      **FAST,
  )
  with pytest.raises(ValueError, match="bad.txt line 1"):
    builder.download_and_prepare()


# ---------------------------------------------------------------------------------------- MIML
MIML_ROWS = [  # image, labels, split, kind
    ("1.jpg", "1,0,0,0,0", "database", "rgb"),
    ("2.jpg", "0,1,0,0,1", "database", "gray"),
    ("3.jpg", "0,0,1,0,0", "database", "cmyk"),
    ("4.jpg", "1,0,1,0,0", "query", "png"),
    ("5.jpg", "0,0,0,1,0", "database", "corrupt"),
    ("6.jpg", "0,0,0,0,0", "database", "rgb"),
    ("7.jpg", "0,0,0,1,1", "database", "rgb"),
    ("8.jpg", "0,1,0,0,0", "query", "rgb"),
    ("9.jpg", "0,1,0,0,0", "query", "missing"),
]


@pytest.fixture(scope="module")
def miml_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("miml")
  (root / "labels.csv").write_text(
      "image,desert,mountains,sea,sunset,trees\n"
      + "".join(f"{name},{labels}\n" for name, labels, _, _ in MIML_ROWS)
  )
  (root / "split.csv").write_text(
      "image,split\n" + "".join(f"{name},{split}\n" for name, _, split, _ in MIML_ROWS)
  )
  for k, (name, _, _, kind) in enumerate(MIML_ROWS):
    if kind == "corrupt":
      data_fixtures.write_corrupt(root / "images" / name)
    elif kind != "missing":
      data_fixtures.write_image(root / "images" / name, kind, seed=k)
  return root


def test_miml_fixed_split(miml_root, tmp_path):
  builder = registry.get_builder("miml", tmp_path, data_path=miml_root, **FAST)
  train, test = read_split(builder, "train"), read_split(builder, "test")
  check_common(5, train, test)
  assert ids_of(train) == ["1.jpg", "2.jpg", "3.jpg", "7.jpg"]
  assert ids_of(test) == ["4.jpg", "8.jpg"]
  assert builder.info.metadata["skip_counts"] == {
      "missing_file": 1,
      "corrupt_image": 1,
      "unlabelled": 1,
  }
  rows = {name: [int(v) for v in labels.split(",")] for name, labels, _, _ in MIML_ROWS}
  for image_id, example in by_id(train + test).items():
    np.testing.assert_array_equal(example["labels"], rows[image_id])


def test_miml_policies_and_malformed_csv(miml_root, tmp_path):
  for policy, match in (
      ("unlabelled_policy", "has no label"),
      ("bad_image_policy", "corrupt_image=1"),
  ):
    builder = registry.get_builder(
        "miml", tmp_path / policy, prepare=False, data_path=miml_root, **{policy: "error"}, **FAST
    )
    with pytest.raises(ValueError, match=match):
      builder.download_and_prepare()
  broken = tmp_path / "broken"
  shutil.copytree(miml_root, broken)
  with open(broken / "labels.csv", "a") as f:
    f.write("10.jpg,1,0\n")
  with pytest.raises(ValueError, match=r"labels.csv line 11 has 2 labels, expected 5"):
    from iah_jax.data import miml

    miml.read_miml_table(str(broken))


MIML_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "miml"


@pytest.mark.skipif(
    not (MIML_SHARED / "labels.csv").is_file(), reason="../shared/data/miml is not present"
)
def test_real_miml_reads_all_2000_images_with_the_right_label_counts(tmp_path):
  # whole_image proposals and tiny stored images: this checks reading and counting, fast.
  builder = registry.get_builder(
      "miml",
      tmp_path,
      data_path=MIML_SHARED,
      proposal_method="whole_image",
      num_proposals=1,
      image_max_side=16,
      num_workers=-1,
      progress=False,
  )
  with open(MIML_SHARED / "labels.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  with open(MIML_SHARED / "split.csv", newline="") as f:
    split_of = {row["image"]: row["split"] for row in csv.DictReader(f)}
  classes = ["desert", "mountains", "sea", "sunset", "trees"]
  assert builder.info.metadata["skip_counts"] == {
      "missing_file": 0,
      "corrupt_image": 0,
      "unlabelled": 0,
  }
  for split, source in (("train", "database"), ("test", "query")):
    examples = read_split(builder, split)
    expected_rows = [r for r in rows if split_of[r["image"]] == source]
    assert len(examples) == {"train": 1500, "test": 500}[split] == len(expected_rows)
    assert ids_of(examples) == [r["image"] for r in expected_rows]
    counts = np.sum([e["labels"] for e in examples], axis=0)
    np.testing.assert_array_equal(counts, [sum(int(r[c]) for r in expected_rows) for c in classes])
  all_labels = np.array([[int(r[c]) for c in classes] for r in rows])
  assert (all_labels.sum(1) > 1).sum() == 457  # README: 457 images carry more than one label


# ------------------------------------------------------------------------------------ registry
def test_random_query_split_is_deterministic_disjoint_and_complete():
  records = [multilabel_builder.ImageRecord(f"r{i}", "", np.ones(2, np.uint8)) for i in range(100)]
  first = multilabel_builder.random_query_split(records, 20, seed=3)
  again = multilabel_builder.random_query_split(records, 20, seed=3)
  other = multilabel_builder.random_query_split(records, 20, seed=4)
  ids = {k: [r.image_id for r in v] for k, v in first.items()}
  assert ids == {k: [r.image_id for r in v] for k, v in again.items()}
  assert ids["test"] != [r.image_id for r in other["test"]]
  assert len(ids["test"]) == 20 and not set(ids["test"]) & set(ids["train"])
  assert sorted(ids["test"] + ids["train"], key=lambda s: int(s[1:])) == [
      r.image_id for r in records
  ]
  with pytest.raises(ValueError, match="num_queries"):
    multilabel_builder.random_query_split(records, 100, seed=0)


def test_registry_names_options_and_config_names(tmp_path, monkeypatch):
  assert set(registry.DATASET_NAMES) == {
      "voc2007",
      "voc2012",
      "mirflickr25k",
      "coco2014",
      "coco2017",
      "nuswide",
      "image_list",
      "miml",
      "synthetic_scenes",
  }
  with pytest.raises(ValueError, match="unknown dataset 'voc2010'"):
    registry.get_builder("voc2010", tmp_path)
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['num_propsals'\]"):
    registry.get_builder("miml", tmp_path, num_propsals=3)
  with pytest.raises(ValueError, match="fixes year='2007'"):
    registry.get_builder("voc2007", tmp_path, year="2012")
  with pytest.raises(ValueError, match="unlabelled_policy"):
    registry.make_config("miml", unlabelled_policy="ignore")
  base = registry.make_config("voc2007", data_path="/d", num_proposals=10)
  assert (
      base.name
      == registry.make_config(
          "voc2007", data_path="/d/", num_proposals=10, num_workers=1, progress=False
      ).name
  )
  assert base.name != registry.make_config("voc2007", data_path="/d", num_proposals=11).name
  assert base.name != registry.make_config("voc2007", data_path="/e", num_proposals=10).name
  builder = registry.get_builder("voc2012", tmp_path, prepare=False, data_path="/d")
  assert isinstance(builder, voc.IahVoc) and builder.builder_config.year == "2012"
  # synthetic_scenes goes to that module's load_builder, imported lazily.
  from iah_jax.data import synthetic_scenes

  calls = []
  monkeypatch.setattr(synthetic_scenes, "load_builder", lambda d, c: calls.append((d, c)) or "b")
  assert registry.get_builder("synthetic_scenes", tmp_path, config="default") == "b"
  assert calls == [(str(tmp_path), "default")]


def test_registry_reuses_prepared_data(miml_root, tmp_path, capsys):
  registry.get_builder("miml", tmp_path, data_path=miml_root, **FAST)
  assert "proposals:" in capsys.readouterr().out
  again = registry.get_builder("miml", tmp_path, data_path=miml_root, **FAST)
  assert "proposals:" not in capsys.readouterr().out  # nothing prepared a second time
  assert again.info.splits["train"].num_examples == 4
