"""IAH at paper scale on PASCAL VOC 2007 (Lai et al. 2016, section V): GoogLeNet, N = 100.

  python -m iah_jax.main --config configs/voc07.py --workdir runs/voc07 \
      --config.dataset.options.data_path=/data/VOCdevkit \
      --config.model.pretrained=googlenet.npz

Data: extract VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar into one directory (they
merge into VOCdevkit/VOC2007 with Annotations/, JPEGImages/, ImageSets/Main/) and pass that
directory, its VOCdevkit/ or VOCdevkit/VOC2007/ as `data_path`. The first run prepares the TFDS
files under `config.dataset.data_dir` (~/tensorflow_datasets): it parses the annotations, computes
N = 100 selective-search proposals per image on every core and caches them, then writes the
records; later runs (any workdir) reuse them. Pool: trainval + test = 9963 images; 2000 random
queries (split "test"), the other 7963 are the training set and the retrieval database (split
"train"). Labels: an image is positive for every class it has an object of, objects marked
"difficult" included (`difficult_as_label=True`, TFDS's `labels` convention; the paper does not
say; set it False to drop them). See iah_jax/data/voc.py.

ImageNet weights (the paper fine-tunes a pretrained GoogLeNet): convert torchvision's `googlenet`
state_dict once, on any machine with torch,

  python -c "import torch, torchvision; torch.save(torchvision.models.googlenet(
      weights='IMAGENET1K_V1').state_dict(), 'googlenet.pth')"
  python -m iah_jax.convert.torchvision_googlenet --pth googlenet.pth --out googlenet.npz

(the file torchvision caches, ~/.cache/torch/hub/checkpoints/googlenet-1378be20.pth, works as
--pth too), then pass --config.model.pretrained=googlenet.npz: the backbone is loaded strictly, the
IAH head starts from its random init. Training and loading need neither torch nor the network.
Without the flag the backbone trains from scratch, which is not the paper's setting.

Schedule: 7963 // 32 = 248 steps per epoch, so lr 1e-4 drops to 1e-5 at step 7440 (30 epochs) and
to 1e-6 at step 14880 (60 epochs, the last 120 of the 15,000 steps). One model is trained per
(q, b) pair: 4 x 15,000 steps.

Expected run time (an estimate from the network's FLOPs, not measured: this project has no GPU):
GoogLeNet's train step at 32 x 224 x 224 is ~0.3 TFLOP, i.e. ~30-60 ms per step on one V100-class
GPU in float32 (~10-25 ms on an A100, where JPEG decoding needs 8+ CPU cores to keep up), so
~10-15 min per model and ~1 h for the four, plus about a minute per model to encode the database
and the queries. Preparing the data (once) is dominated by selective search, ~0.13 CPU-s per
image at search_max_side 256 (measured here with benchmarks/proposal_cost.py on MIML photos):
~22 CPU-min for the 9963 images, ~3 min on 8 cores. On a 2-core CPU one train step at this scale
takes several seconds: use configs/default.py there.

Mixed precision (GPU/TPU): --config.model.dtype=bfloat16 computes in bfloat16 with float32
parameters, BatchNorm statistics and losses; about 2x faster on A100/TPU. Keep float32 on CPU.
At scale (several GPUs or hosts, TPU pods): see launch/README.md.
"""

from iah_jax.config import base_config


def get_config():
  config = base_config()
  config.method = "iah"

  config.dataset.name = "voc2007"
  config.dataset.options.data_path = ""  # required: see the docstring
  config.dataset.options.difficult_as_label = True
  # Paper: GOP proposals, NMS, top N = 100. We use selective search (OpenCV, "fast" mode, run on
  # a copy with longer side 256), also cut to the top 100 boxes; any method fits (METHODS.md 1.1).
  config.dataset.options.proposal_method = "selective_search"
  config.dataset.options.num_proposals = 100
  config.dataset.options.selective_search_mode = "fast"
  config.dataset.options.search_max_side = 256
  config.dataset.options.num_queries = 2000  # paper: 2000 random test queries
  config.dataset.options.query_seed = 0
  config.dataset.options.num_workers = -1  # proposal preparation on every core
  # The paper does not give its input size; 224 x 224 is GoogLeNet's ImageNet resolution and
  # gives a 7 x 7 feature map, so SPP's 4 x 4 bins of a box smaller than ~2/7 of the image fall
  # on single cells. 448 (14 x 14 map) pools small objects more finely at ~4x the compute.
  # Images are resized to a square (proposals are image fractions, so they stay valid).
  config.dataset.image_size = 224

  config.model.backbone = "googlenet"
  # True: torchvision's ImageNet weights (IMAGENET1K_V1) expect GoogLeNet's transform_input.
  config.model.backbone_options.transform_input = True
  config.model.pretrained = ""  # converted ImageNet weights, see the docstring
  config.model.reduced_maps = 32  # paper: 32 maps after the last inception block
  config.model.spp_levels = (4, 3, 2, 1)  # 30 bins: d = 32 * 30 = 960
  config.model.output_bound = "tanh"  # codes 1[s > 0] (METHODS.md 1.9, our choice)
  config.model.dtype = "float32"  # "bfloat16" on GPU/TPU: mixed precision

  # Table II's code lengths q. b (bits per category) pairs with q as b = q / 4: the paper's
  # category-aware results (Fig. 8) use b = 4, 8 and 12; 16 completes the pattern.
  config.semantic_bits = (16, 32, 48, 64)
  config.bits_per_category = (4, 8, 12, 16)

  # Paper (section V-B): SGD, base lr 1e-4, / 10 every 30 epochs, batch 32, 15,000 iterations,
  # all triplets of each batch (eq. 9 weights). Momentum 0.9 is Caffe's usual; weight decay 0
  # (the paper gives neither).
  config.optimizer.learning_rate = 1e-4
  config.optimizer.decay_every_epochs = 30.0
  config.optimizer.decay_factor = 0.1
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 0.0
  config.batch_size = 32  # global: split over all devices and hosts
  config.num_train_steps = 15_000

  config.log_every = 100
  config.checkpoint_every = 1000
  config.eval.batch_size = 128
  config.eval.ks = (100, 1000)  # NDCG@k / ACG@k; MAP is over the whole database
  return config
