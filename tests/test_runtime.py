"""Process-wide runtime setup (iah_jax.runtime): the configured thread counts are what the
process runs with, the overrides parse, and malloc keeps freed blocks."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from iah_jax import runtime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_settings_from_env_defaults_and_overrides(tmp_path):
  default = runtime.settings_from_env({})
  assert default.enabled and default.threads == runtime.available_cpus()
  assert default.tf_threads == 1
  assert default.compilation_cache == os.path.expanduser(runtime.DEFAULT_COMPILATION_CACHE)
  chosen = runtime.settings_from_env(
      {"IAH_JAX_THREADS": "3", "IAH_JAX_COMPILATION_CACHE": str(tmp_path)}
  )
  assert chosen.threads == 3 and chosen.compilation_cache == str(tmp_path)
  assert runtime.settings_from_env({"IAH_JAX_COMPILATION_CACHE": ""}).compilation_cache == ""
  assert not runtime.settings_from_env({"IAH_JAX_RUNTIME": "default"}).enabled


@pytest.mark.parametrize(
    "environ, variable",
    [
        ({"IAH_JAX_THREADS": "0"}, "IAH_JAX_THREADS"),
        ({"IAH_JAX_THREADS": "two"}, "IAH_JAX_THREADS"),
        ({"IAH_JAX_RUNTIME": "fast"}, "IAH_JAX_RUNTIME"),
    ],
)
def test_bad_override_names_the_variable(environ, variable):
  with pytest.raises(ValueError, match=variable):
    runtime.settings_from_env(environ)


_PROBE = textwrap.dedent("""
    import collections, json, os, sys
    sys.path.insert(0, {repo!r})
    from iah_jax import runtime
    settings = runtime.configure()
    import jax, jax.numpy as jnp
    import tensorflow as tf
    from iah_jax.data import pipeline  # noqa: F401
    # Start both runtimes: XLA's CPU client and a tf.data pipeline built with data_options().
    jax.jit(lambda x: x @ x)(jnp.ones((64, 64))).block_until_ready()
    dataset = tf.data.Dataset.range(64).map(lambda x: x * 2, num_parallel_calls=tf.data.AUTOTUNE)
    options = runtime.data_options()
    sum(int(x) for x in dataset.with_options(options))
    threads = collections.Counter(
        open(f"/proc/self/task/{{task}}/comm").read().strip()
        for task in os.listdir("/proc/self/task")
    )
    print(json.dumps({{
        "xla_threads": threads["tf_XLAEigen"],
        "tf_inter": tf.config.threading.get_inter_op_parallelism_threads(),
        "tf_intra": tf.config.threading.get_intra_op_parallelism_threads(),
        "data_private_pool": options.threading.private_threadpool_size,
        "data_intra_op": options.threading.max_intra_op_parallelism,
        "cache_dir": jax.config.jax_compilation_cache_dir,
        "threads": settings.threads,
    }}))
    """)


def _probe(environ: dict) -> dict:
  env = {
      key: value
      for key, value in os.environ.items()
      if key not in ("NPROC", "OMP_NUM_THREADS", "JAX_COMPILATION_CACHE_DIR", "XLA_FLAGS")
  }
  env.update(environ)
  result = subprocess.run(
      [sys.executable, "-c", _PROBE.format(repo=REPO)],
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_configure_applies_the_thread_counts(tmp_path):
  cache = tmp_path / "xla_cache"
  probe = _probe({"IAH_JAX_THREADS": "3", "IAH_JAX_COMPILATION_CACHE": str(cache)})
  assert probe["threads"] == 3
  assert probe["xla_threads"] == 3  # XLA's CPU pool has the configured size
  assert probe["tf_inter"] == 1 and probe["tf_intra"] == 1
  assert probe["data_private_pool"] == 3 and probe["data_intra_op"] == 1
  assert probe["cache_dir"] == str(cache) and cache.is_dir()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_default_mode_changes_nothing(tmp_path):
  probe = _probe({"IAH_JAX_RUNTIME": "default", "IAH_JAX_COMPILATION_CACHE": str(tmp_path / "c")})
  assert probe["tf_inter"] == 0 and probe["tf_intra"] == 0  # TensorFlow's own choice
  assert probe["data_private_pool"] is None
  assert probe["cache_dir"] is None
  assert not (tmp_path / "c").exists()


_MALLOC_PROBE = textwrap.dedent("""
    import ctypes, ctypes.util, resource, sys, threading
    sys.path.insert(0, {repo!r})
    from iah_jax import runtime
    if sys.argv[1] == "tuned":
      runtime._keep_freed_memory()  # what configure() does first; no TensorFlow import
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 80_000_000

    def work():
      for _ in range(20):  # 80 MB blocks written and freed in a non-main thread, as XLA does
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)

    worker = threading.Thread(target=work)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    worker.start(); worker.join()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """)


def test_tuned_malloc_reuses_freed_blocks():
  def faults(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _MALLOC_PROBE.format(repo=REPO), mode],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.strip().splitlines()[-1])

  pages_per_block = 80_000_000 // 4096
  untuned, tuned = faults("default"), faults("tuned")
  # Without tuning every block is a fresh mmap whose pages fault in again; tuned, only the first.
  assert untuned > 10 * pages_per_block
  assert tuned < 3 * pages_per_block
