"""Makes the repository root importable for the tests (``import iah_jax`` without installing).

torchvision (test-only) must be imported before TensorFlow: importing it afterwards crashes the
process inside triton's extension loading (seen with torch 2.14.1 + tensorflow-cpu 2.21).
"""

try:
  import torchvision  # noqa: F401  pylint: disable=unused-import
except ImportError:  # torch is optional: its tests skip
  pass
