"""IAH on the MIML natural scenes (draft)."""

from iah_jax.config import base_config


def get_config():
  config = base_config()
  config.dataset.name = "miml"
  config.dataset.options.data_path = "../shared/data/miml"
  config.dataset.train_split = "train[:90%]"
  config.dataset.validation_split = "train[90%:]"
  config.dataset.database_split = "train"
  config.dataset.query_split = "test"
  config.dataset.image_size = 96
  config.dataset.shuffle_buffer = 1500
  config.model.backbone = "small_cnn"
  config.model.backbone_options.widths = (32, 64, 128)
  config.model.backbone_options.convs_per_stage = 1
  config.semantic_bits = (32,)
  config.bits_per_category = (8,)
  config.batch_size = 32
  config.num_train_steps = 2000
  config.optimizer.learning_rate = 0.01
  config.optimizer.decay_every_epochs = 30.0
  config.log_every = 50
  config.eval.every_steps = 200
  config.eval.ks = (100,)
  return config
