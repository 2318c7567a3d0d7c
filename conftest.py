"""Makes the repository root importable for the tests (``import iah_jax`` without installing).

One persistent XLA compilation cache for the whole session, in a fresh temporary directory (so a
run starts cold, as in CI): many tests compile the same small train / encode steps, in this process
and in the subprocesses they start (which inherit JAX_COMPILATION_CACHE_DIR; `iah_jax.runtime`
leaves a user's JAX_COMPILATION_CACHE_DIR in place). Set IAH_JAX_TEST_COMPILATION_CACHE=0 to test
without it.

torchvision (test-only) must be imported before TensorFlow: importing it afterwards crashes the
process inside triton's extension loading (seen with torch 2.14.1 + tensorflow-cpu 2.21).
"""

try:
  import torchvision  # noqa: F401  pylint: disable=unused-import
except ImportError:  # torch is optional: its tests skip
  pass

import os
import shutil
import tempfile

if os.environ.get("IAH_JAX_TEST_COMPILATION_CACHE", "1") != "0":
  _CACHE_DIR = tempfile.mkdtemp(prefix="iah_jax_test_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
  # Tests compile many sub-second steps; keep those too (the library's own default is 1 s).
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.3"

  def pytest_unconfigure(config):  # pylint: disable=unused-argument
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)
