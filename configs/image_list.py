"""IAH on your own images: train / query (/ database) list files, one `path 0 1 0 ...` per line.

  python -m iah_jax.main --config configs/image_list.py --workdir runs/mine \
      --config.dataset.options.data_path=/data/mine

Data (iah_jax/data/image_list.py): `data_path` holds the list files `train.txt` (training images,
also the retrieval database) and `test.txt` (queries); each line is an image path relative to
`image_root` (default `data_path`; absolute paths work too) followed by its 0/1 labels, one per
class, e.g. `photos/beach_01.jpg 0 1 0 0 1`. Lines starting with "#" are comments. Options, all
settable as --config.dataset.options.NAME=VALUE (an unknown name is refused with the list):
  train_list, query_list      list files (relative to data_path or absolute)
  database_list               a separate database list; then also --config.dataset.database_split=database
  image_root                  where the image paths start
  num_classes                 label count (0: from the first line); class_names_file names them
                              (one per line), else class_0, class_1, ...
  proposal_method             selective_search (default, paper-like), generic (~30x cheaper to
                              prepare, boxes ignore the content) or whole_image (no proposals)
  num_proposals               N per image (paper: 100)
Images without any label are counted and left out (`unlabelled_policy`: skip | error | keep);
missing or corrupt image files are counted too (`bad_image_policy`: skip | error). A list line
that does not parse stops the run before any work with the file and line named. The prepared
data (under config.dataset.data_dir) follow the lists: editing a label, deleting a line or
replacing an image prepares them again on the next run (proposals of unchanged images are reused
from the cache).

Model selection (optional): --config.dataset.train_split='train[:90%]'
--config.dataset.validation_split='train[90%:]' keeps the checkpoint with the best MAP of the
last 10% of the training list against the first 90% (queries are never used for it).

Backbones: `configs/image_list.py` (= `configs/image_list.py:small_cnn`) trains a four-stage
small CNN from scratch at 64 x 64, the CPU setting (as configs/miml.py). With few images,
fine-tune an ImageNet GoogLeNet instead (transfer; the paper's setting), on a GPU/TPU:

  python -m iah_jax.main --config configs/image_list.py:googlenet --workdir runs/mine_gnet \
      --config.dataset.options.data_path=/data/mine --config.model.pretrained=googlenet.npz

where googlenet.npz is torchvision's ImageNet GoogLeNet converted once (any machine with torch):
  python -c "import torch, torchvision; torch.save(torchvision.models.googlenet(
      weights='IMAGENET1K_V1').state_dict(), 'googlenet.pth')"
  python -m iah_jax.convert.torchvision_googlenet --pth googlenet.pth --out googlenet.npz
The converted weights are GoogLeNet's, so this file needs config.model.backbone='googlenet'
(a file's marker names its backbone; another is refused); the backbone is loaded strictly (every
weight must fit) and the method's head starts from its random init. The same works for every
deep method: --config.method=one_stage | dsrh | qadwh | category_baseline (each keeps its
backbone under `backbone`, where the weights go).

Without ImageNet weights (small CNN, CPU), pretrain in-domain instead: train a classifier on the
same training list, export its backbone, and fine-tune the hashing method from it (on MIML this
lifts DSRH and QaDWH well above training from scratch; README "fine-tuned"):

  python -m iah_jax.main --config configs/image_list.py --workdir runs/mine_cls \
      --config.dataset.options.data_path=/data/mine --config.method=category_baseline
  python -m iah_jax.convert.run_backbone --run_dir runs/mine_cls/q32_b8 --out mine_cls.npz
  python -m iah_jax.main --config configs/image_list.py --workdir runs/mine_dsrh \
      --config.dataset.options.data_path=/data/mine --config.method=dsrh \
      --config.model.pretrained=mine_cls.npz

One model is trained (q = 32 semantic bits, b = 8 per category); all four paper lengths:
--config.semantic_bits='(16, 32, 48, 64)' --config.bits_per_category='(4, 8, 12, 16)'.

Expected run time on a 2-core CPU, small CNN (measured on MIML's 2000 photos with the same
network, configs/miml.py): preparing the data once ~0.13 CPU-s per image with selective search
(~0.004 with `generic`), then ~0.35 CPU-s per train step: the 1500 steps here ~9 CPU-min,
~5-6 min wall on an idle machine (estimated from the CPU time), plus ~10 s of evaluation per
1000 images. The GoogLeNet variant takes several seconds per step on this CPU; on one V100-class
GPU ~30-60 ms per step (an estimate from the FLOPs, as configs/voc07.py): ~2-4 min for its
3000 steps.
"""

from iah_jax.config import base_config


def get_config(backbone: str = "small_cnn"):
  config = base_config()
  config.method = "iah"

  config.dataset.name = "image_list"
  options = config.dataset.options
  options.data_path = ""  # required: the directory holding the list files
  options.train_list = "train.txt"
  options.query_list = "test.txt"
  options.database_list = ""  # "": the training images are the database (paper protocol)
  options.image_root = ""  # "": data_path
  options.num_classes = 0  # 0: from the first line of the training list
  options.class_names_file = ""
  options.proposal_method = "selective_search"
  options.num_proposals = 100
  options.selective_search_mode = "fast"
  options.search_max_side = 256
  options.num_workers = -1  # proposal preparation on every core
  config.dataset.train_split = "train"
  config.dataset.database_split = "train"
  config.dataset.query_split = "test"

  config.semantic_bits = (32,)
  config.bits_per_category = (8,)
  config.batch_size = 32
  config.log_every = 50
  config.eval.ks = (100,)

  if backbone == "small_cnn":
    config.dataset.image_size = 64
    config.model.backbone = "small_cnn"
    config.model.backbone_options.widths = (32, 64, 128, 256)  # as configs/miml.py
    config.model.backbone_options.convs_per_stage = 1
    config.num_train_steps = 1500
    # From scratch: a larger rate than the paper's fine-tuning 1e-4.
    config.optimizer.learning_rate = 0.01
    # lr / 10 once, at step 1260 (as configs/miml.py's 30 epochs of 42 steps), whatever the
    # list's size: an epoch-based decay on a 130-image list (4 steps per epoch) decays every
    # 120 steps and leaves the rate at 1e-10 by step 1000 (benchmarks/small_many_label.py).
    config.optimizer.decay_every_steps = 1260
    config.checkpoint_every = 500
  elif backbone == "googlenet":
    config.dataset.image_size = 224  # GoogLeNet's ImageNet resolution, 7 x 7 feature map
    config.model.backbone = "googlenet"
    # torchvision's ImageNet weights (IMAGENET1K_V1) expect GoogLeNet's transform_input.
    config.model.backbone_options.transform_input = True
    config.model.pretrained = ""  # the converted weights, see the docstring
    config.num_train_steps = 3000
    # The paper's fine-tuning recipe (SGD, lr 1e-4, / 10 every 30 epochs); not tuned here.
    config.optimizer.learning_rate = 1e-4
    config.optimizer.decay_every_epochs = 30.0
    config.checkpoint_every = 1000
  else:
    raise ValueError(f"configs/image_list.py:{backbone}: choose small_cnn or googlenet")
  return config
