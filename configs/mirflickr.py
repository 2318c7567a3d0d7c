"""IAH at paper scale on MIRFLICKR-25K, 38 labels (Lai et al. 2016, section V): GoogLeNet, N = 100.

  python -m iah_jax.main --config configs/mirflickr.py --workdir runs/mirflickr \
      --config.dataset.options.data_path=/data/mirflickr25k \
      --config.model.pretrained=googlenet.npz

Data: extract mirflickr25k.zip and mirflickr25k_annotations_v080.zip side by side, so that
`data_path` holds mirflickr/im1.jpg ... im25000.jpg and mirflickr25k_annotations_v080/<concept>.txt
(and <concept>_r1.txt). The first run prepares the TFDS files under `config.dataset.data_dir`
(~/tensorflow_datasets): N = 100 selective-search proposals per image on every core (cached), then
the records; later runs reuse them. Labels: the paper's 38 (the 24 "potential" concepts, then the
14 "relevant" `_r1` ones; order in iah_jax/data/mirflickr.py). The paper's counts (Table I: 2000
queries, 23,000 training / database images) keep the images without any label (~5,000 of the
25,000): `unlabelled_policy="keep"` stores them in split "unlabelled" and the database is
"train+unlabelled" (23,000), where an unlabelled image is a negative for every query. The 2000
random queries (split "test") are drawn from the ~20,000 labelled images, the other ~18,000
labelled ones are split "train", the training set (the training pipeline refuses images without
a label; IAH's label loss has nothing to learn from them). `unlabelled_policy="skip"` with
`database_split="train"` gives the common hashing-literature protocol (~18,000 database images).
MIRFLICKR has no object boxes, so "difficult" objects do not arise.

ImageNet weights (the paper fine-tunes a pretrained GoogLeNet): convert torchvision's `googlenet`
state_dict once, on any machine with torch,

  python -c "import torch, torchvision; torch.save(torchvision.models.googlenet(
      weights='IMAGENET1K_V1').state_dict(), 'googlenet.pth')"
  python -m iah_jax.convert.torchvision_googlenet --pth googlenet.pth --out googlenet.npz

(the file torchvision caches, ~/.cache/torch/hub/checkpoints/googlenet-1378be20.pth, works as
--pth too), then pass --config.model.pretrained=googlenet.npz: the backbone is loaded strictly, the
IAH head starts from its random init. Training and loading need neither torch nor the network.
Without the flag the backbone trains from scratch, which is not the paper's setting.

Schedule: ~18,000 // 32 = ~560 steps per epoch, so 15,000 steps are ~27 epochs and the paper's
"lr / 10 every 30 epochs" never triggers: the whole run is at lr 1e-4 (kept as the paper states
it). One model is trained per (q, b) pair: 4 x 15,000 steps.

Expected run time (an estimate from the network's FLOPs, not measured: this project has no GPU):
as configs/voc07.py, ~30-60 ms per step on one V100-class GPU in float32 (~10-25 ms on an A100
with 8+ CPU cores decoding JPEGs), ~10-15 min per model, ~1 h for the four. Preparing the data
(once): selective search at ~0.13 CPU-s per image, ~55 CPU-min for 25,000 images (~7 min on 8
cores). On a 2-core CPU use configs/default.py.

Mixed precision (GPU/TPU): --config.model.dtype=bfloat16 computes in bfloat16 with float32
parameters, BatchNorm statistics and losses. Keep float32 on CPU.
At scale (several GPUs or hosts, TPU pods): see launch/README.md.
"""

from configs import voc07


def get_config():
  config = voc07.get_config()  # the paper's recipe; only the data differ
  config.dataset.name = "mirflickr25k"
  del config.dataset.options["difficult_as_label"]  # VOC only
  config.dataset.options.num_labels = 38  # paper: 38 labels (24 gives the common setting)
  # The paper's 23,000 database images: the unlabelled ones kept as negatives (see above).
  config.dataset.options.unlabelled_policy = "keep"
  config.dataset.database_split = "train+unlabelled"
  return config
