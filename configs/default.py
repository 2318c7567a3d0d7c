"""Default: IAH on the embedded synthetic multi-object scenes, small CNN, CPU.

  python -m iah_jax.main --config configs/default.py --workdir runs/default

Generates the dataset into ~/tensorflow_datasets on first use (no download), then trains one model
per bit length (q = 16, 32, 48, 64 semantic bits; b = 4, 8, 12, 16 bits per category), evaluates
the held-out test split (queries) against the train split (database) and writes
runs/default/results.json. Expected run time on a 2-core CPU: see README ("Results").
"""

from iah_jax.config import base_config


def get_config():
  config = base_config()
  config.dataset.name = "synthetic_scenes"
  config.dataset.config = "default"  # 4000 train / 500 test images, 64 x 64, 100 proposals
  config.dataset.image_size = 64

  config.model.backbone = "small_cnn"
  config.model.backbone_options.widths = (16, 32, 64)  # feature map 16 x 16 at 64 x 64 input

  config.batch_size = 32
  config.num_train_steps = 1000
  # Trained from scratch (no ImageNet weights on CPU), so a larger rate than the paper's 1e-4.
  config.optimizer.learning_rate = 0.01
  config.optimizer.decay_every_epochs = 6.0  # 125 steps per epoch: lr / 10 at steps 750
  config.log_every = 100
  config.checkpoint_every = 500
  config.eval.ks = (100,)
  return config
