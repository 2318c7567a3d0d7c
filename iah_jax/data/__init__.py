"""Datasets (TFDS builders), region proposals and the tf.data input pipeline."""
