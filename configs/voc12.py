"""IAH at paper scale on PASCAL VOC 2012 (Lai et al. 2016, section V): GoogLeNet, N = 100.

  python -m iah_jax.main --config configs/voc12.py --workdir runs/voc12 \
      --config.dataset.options.data_path=/data/VOCdevkit \
      --config.model.pretrained=googlenet.npz

Data: extract VOCtrainval_11-May-2012.tar (VOCdevkit/VOC2012 with Annotations/, JPEGImages/,
ImageSets/Main/) and pass that directory, its VOCdevkit/ or VOCdevkit/VOC2012/ as `data_path`.
The first run prepares the TFDS files under `config.dataset.data_dir` (~/tensorflow_datasets): it
parses the annotations, computes N = 100 selective-search proposals per image on every core and
caches them, then writes the records; later runs reuse them. Pool (paper): only the 11,540
trainval images (VOC2012 test has no public annotations); 2000 random queries (split "test"), the
other 9540 are the training set and the retrieval database (split "train"). Labels: an image is
positive for every class it has an object of, objects marked "difficult" included
(`difficult_as_label=True`, TFDS's `labels` convention; the paper does not say; set it False to
drop them). See iah_jax/data/voc.py.

ImageNet weights (the paper fine-tunes a pretrained GoogLeNet): convert torchvision's `googlenet`
state_dict once, on any machine with torch,

  python -c "import torch, torchvision; torch.save(torchvision.models.googlenet(
      weights='IMAGENET1K_V1').state_dict(), 'googlenet.pth')"
  python -m iah_jax.convert.torchvision_googlenet --pth googlenet.pth --out googlenet.npz

(the file torchvision caches, ~/.cache/torch/hub/checkpoints/googlenet-1378be20.pth, works as
--pth too), then pass --config.model.pretrained=googlenet.npz: the backbone is loaded strictly, the
IAH head starts from its random init. Training and loading need neither torch nor the network.
Without the flag the backbone trains from scratch, which is not the paper's setting.

Schedule: 9540 // 32 = 298 steps per epoch, so lr 1e-4 drops to 1e-5 at step 8940 (30 epochs) and
15,000 steps are about 50 epochs. One model is trained per (q, b) pair: 4 x 15,000 steps.

Expected run time (an estimate from the network's FLOPs, not measured: this project has no GPU):
as configs/voc07.py, ~30-60 ms per step on one V100-class GPU in float32 (~10-25 ms on an A100
with 8+ CPU cores decoding JPEGs), ~10-15 min per model, ~1 h for the four. Preparing the data
(once): selective search at ~0.13 CPU-s per image, ~25 CPU-min for 11,540 images (~3 min on 8
cores). On a 2-core CPU use configs/default.py.

Mixed precision (GPU/TPU): --config.model.dtype=bfloat16 computes in bfloat16 with float32
parameters, BatchNorm statistics and losses. Keep float32 on CPU.
At scale (several GPUs or hosts, TPU pods): see launch/README.md.
"""

from configs import voc07


def get_config():
  config = voc07.get_config()  # the paper's recipe; only the data differ
  config.dataset.name = "voc2012"
  return config
