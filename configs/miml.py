"""IAH on the MIML natural scenes (2000 photos, 5 scene labels), small CNN from scratch, CPU.

  python -m iah_jax.main --config configs/miml.py --workdir runs/miml \
      --config.dataset.options.data_path=../shared/data/miml

or, for the benchmark table (IAH semantic hashing and random-hyperplane LSH on the same
backbone's features, MAP / wMAP / NDCG@100 / ACG@100 per bit length):

  python -m benchmarks.miml --data_path ../shared/data/miml --bits 32 --workdir runs/miml_bench

Fine-tuned comparison (the papers' protocol: every deep method starts from one classifier
network and the shallow baselines hash that network's features; no ImageNet weights here, so the
classifier is the category baseline trained on the same 1350 images, from the from-scratch
comparison's workdir, README "fine-tuned"):

  python -m iah_jax.convert.run_backbone --run_dir runs/compare_miml3/category_baseline/q32_b8 \
      --out runs/miml_classifier.npz
  python -m iah_jax.compare --config configs/miml.py --workdir runs/compare_miml_ft \
      --config.dataset.options.data_path=../shared/data/miml --bits 32 --seeds 0,1,2 --search \
      --methods dsrh,qadwh,iah,one_stage,itq_cca,itq,sh,lsh \
      --config.model.pretrained=runs/miml_classifier.npz

(1 h 30 min wall on 2 cores: 22 search trials in 33 min, 12 deep cells of 227-341 s training.)

Protocol (../shared/data/miml/README.md): training sees only the 1500 `database` images (split
"train"): the first 90% ("train[:90%]", 1350 images) are trained on, the last 10%
("train[90%:]", 150 images) are the validation carve — every `eval.every_steps` steps they are
encoded as queries against the 1350 and the checkpoints with the best validation MAP are kept.
The best one encodes the 500 `query` images (split "test") and the 1500 database images; the
queries are never used for any choice.

Data: the first run prepares the TFDS files under `config.dataset.data_dir`
(~/tensorflow_datasets): 100 selective-search proposals per image (OpenCV "fast" mode on a copy
with longer side 256, ~0.13 CPU-s per image: ~4 CPU-min for the 2000 images, cached and
resumable), images stored with longer side <= 512. Later runs reuse them.

Expected run time on a 2-core CPU (measured, README "MIML"): data preparation once ~4.6 min;
then per bit length 1500 steps with 6 validations: 267-290 s of training at 32 bits (measured
2026-12-03 on a 2-core Xeon, a low-priority job beside it; 18-23 min wall on an older machine
shared with another job), evaluation 5-10 s. The main job trains all four bit lengths: ~20 min
wall (estimated from the 32-bit time).
"""

from iah_jax.config import base_config


def get_config():
  config = base_config()
  config.method = "iah"

  config.dataset.name = "miml"
  config.dataset.options.data_path = ""  # required: ../shared/data/miml
  # Paper-like region proposals: selective search, top 100 after NMS (the "generic" generator
  # is ~30x cheaper to prepare but its boxes ignore the image content).
  config.dataset.options.proposal_method = "selective_search"
  config.dataset.options.num_proposals = 100
  config.dataset.options.selective_search_mode = "fast"
  config.dataset.options.search_max_side = 256
  config.dataset.options.num_workers = -1  # proposal preparation on every core
  config.dataset.train_split = "train[:90%]"  # 1350 of the 1500 database images
  config.dataset.validation_split = "train[90%:]"  # 150: model selection, never the queries
  config.dataset.database_split = "train"  # all 1500 database images
  config.dataset.query_split = "test"  # the 500 query images
  # Scene labels are mostly colour and coarse layout: 64 x 64 keeps them and costs 0.35 CPU-s
  # per step against 0.77 at 96 x 96 (same network).
  config.dataset.image_size = 64
  config.dataset.shuffle_buffer = 1500  # the whole training set

  config.model.backbone = "small_cnn"  # no ImageNet weights here (in-domain: see the docstring)
  # Four stages: an 8 x 8 feature map at 64 x 64 whose cells see ~30 x 30 pixels (scene labels
  # are wide regions); about as cheap as three stages, better in our runs (see the docstring).
  config.model.backbone_options.widths = (32, 64, 128, 256)
  config.model.backbone_options.convs_per_stage = 1
  config.model.pretrained = ""

  config.semantic_bits = (16, 32, 48, 64)  # q
  config.bits_per_category = (4, 8, 12, 16)  # b = q / 4

  config.batch_size = 32
  config.num_train_steps = 1500  # 35 epochs of the 1350 training images
  # From scratch, so a larger rate than the paper's fine-tuning 1e-4; 1350 // 32 = 42 steps per
  # epoch: lr / 10 at step 1260 (30 epochs).
  config.optimizer.learning_rate = 0.01
  config.optimizer.decay_every_epochs = 30.0
  config.log_every = 50
  config.eval.every_steps = 250  # 6 validations, ~10 CPU-s each
  config.eval.batch_size = 100
  config.eval.ks = (100,)
  # `iah_jax.compare --search` budget per (method, q): 3 learning rates (x0.3, x1, x3 of 0.01),
  # then x0.3 and x3 of each of the method's main loss weights (one or two), each trial a third
  # of the schedule (500 steps, lr / 10 at step 420) scored by its best validation MAP (the
  # validation carve; never the queries): 5 trials (IAH: 7) of 500 steps, 27 in all, 43 min
  # wall for the five deep methods at one q (measured, README). Short trials can favour a rate
  # the full schedule does not (QaDWH: 0.03 at 500 steps, 0.01 by the full schedule's validation
  # MAP); --config.search.num_train_steps=0 trains every trial the full schedule (~3x the time).
  config.search.learning_rate_scales = (0.3, 1.0, 3.0)
  config.search.weight_scales = (0.3, 3.0)
  config.search.num_train_steps = 500
  return config
