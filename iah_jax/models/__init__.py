"""Flax Linen modules: backbones (a small CPU CNN, GoogLeNet) and the IAH network."""
