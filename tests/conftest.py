"""Shared fixtures: a tiny embedded dataset prepared once per test session."""

import pytest


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """A TFDS data_dir holding the synthetic scenes' "tiny" config (96 train / 32 test images)."""
  from iah_jax.data import synthetic_scenes

  data_dir = tmp_path_factory.mktemp("tfds")
  synthetic_scenes.load_builder(str(data_dir), "tiny")
  return str(data_dir)
