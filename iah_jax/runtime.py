"""Process-wide runtime setup for the command-line entry points (main, compare, benchmarks).

`configure()` is called first thing in an entry point's `main()`, before JAX or TensorFlow run
anything (both start their thread pools lazily, on first use). It sizes the thread pools for the
machine and keeps the allocator from returning memory to the kernel after every step:

- XLA's CPU pool gets `threads` threads (through XLA's `NPROC` variable, read when the CPU client
  starts); TensorFlow, which only decodes data here, gets one inter-op and one intra-op thread, and
  tf.data pipelines built with `data_options()` a private pool of `threads` threads with one
  thread per op. TensorFlow's and XLA's own defaults each take every core, so on a small machine
  the two pools (plus tf.data's autotuned map threads) fight over the same cores.
- glibc malloc keeps freed memory: XLA:CPU allocates each step's temporaries (about 140 MB for
  the default config) from its pool threads, and glibc serves such blocks from fresh `mmap`s
  that it unmaps again on free, so every step page-faulted in 35,000 zeroed pages (a third of the
  job's CPU time was system time). One malloc arena with high mmap / trim thresholds reuses them.
- A persistent XLA compilation cache (re-runs, resumed jobs and the test suite skip compiles).

Overrides (environment variables, read by `settings_from_env`):
  IAH_JAX_THREADS=N                XLA / tf.data threads (default: the CPUs this process may use)
  IAH_JAX_COMPILATION_CACHE=DIR    cache directory (default ~/.cache/iah_jax/xla; "" = none)
  IAH_JAX_RUNTIME=default          change nothing: the libraries' own defaults
Variables the user already set (NPROC, OMP_NUM_THREADS, JAX_COMPILATION_CACHE_DIR) are kept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import logging
import os
from typing import Mapping

logger = logging.getLogger("iah_jax")

DEFAULT_COMPILATION_CACHE = os.path.join("~", ".cache", "iah_jax", "xla")

# mallopt(3) parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Blocks up to this size come from the heap and stay there after free (glibc's own ceiling for
# the mmap threshold on 64-bit is 32 MB only when it adjusts it by itself; set, any value works).
_KEEP_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
  """What `configure` applies; `enabled=False` leaves every library default alone."""

  enabled: bool = True
  threads: int = 1
  tf_threads: int = 1  # TensorFlow inter- and intra-op pools (TF only decodes data)
  compilation_cache: str = ""  # "" = no persistent compilation cache
  tune_malloc: bool = True


_applied: RuntimeSettings | None = None


def available_cpus() -> int:
  """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # not Linux
    return max(1, os.cpu_count() or 1)


def settings_from_env(environ: Mapping[str, str] | None = None) -> RuntimeSettings:
  """The settings for this machine with the IAH_JAX_* overrides of the module docstring.

  Raises ValueError naming the variable when a value is unusable.
  """
  environ = os.environ if environ is None else environ
  mode = environ.get("IAH_JAX_RUNTIME", "tuned")
  if mode not in ("tuned", "default"):
    raise ValueError(f"IAH_JAX_RUNTIME must be 'tuned' or 'default', got {mode!r}")
  threads_text = environ.get("IAH_JAX_THREADS", "")
  if threads_text:
    try:
      threads = int(threads_text)
    except ValueError:
      threads = 0
    if threads < 1:
      raise ValueError(f"IAH_JAX_THREADS must be a positive integer, got {threads_text!r}")
  else:
    threads = available_cpus()
  cache = environ.get("IAH_JAX_COMPILATION_CACHE", DEFAULT_COMPILATION_CACHE)
  return RuntimeSettings(
      enabled=mode == "tuned",
      threads=threads,
      compilation_cache=os.path.expanduser(cache) if cache else "",
  )


def configure(settings: RuntimeSettings | None = None) -> RuntimeSettings:
  """Applies `settings` (default: `settings_from_env()`) to this process; returns them.

  Call before JAX or TensorFlow run anything: thread pools already started keep their size
  (a warning says so). A second call does nothing and returns the first call's settings.
  """
  global _applied
  if _applied is not None:
    return _applied
  settings = settings_from_env() if settings is None else settings
  _applied = settings
  if not settings.enabled:
    return settings
  if settings.tune_malloc:
    _keep_freed_memory()
  os.environ.setdefault(
      "NPROC", str(settings.threads)
  )  # XLA:CPU's pool (xla DefaultThreadPoolSize)
  os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads))  # OpenCV, faiss
  _configure_tensorflow(settings.tf_threads)
  if settings.compilation_cache:
    _configure_compilation_cache(settings.compilation_cache)
  return settings


def configure_entry_point() -> RuntimeSettings:
  """`configure()` for a command-line `main()`: a bad IAH_JAX_* value ends in one usage message
  naming the variable (absl's UsageError: non-zero exit, no traceback)."""
  from absl import app

  try:
    return configure()
  except ValueError as error:
    raise app.UsageError(str(error)) from None


def applied() -> RuntimeSettings | None:
  """The settings `configure` applied in this process, or None when it was not called."""
  return _applied


def data_options():
  """tf.data.Options for the input pipelines: ordered parallel maps (the exact-resume guarantee
  of the training order), and a private pool of the configured size with one thread per op (the
  tf.data defaults for those when `configure` was not called: tests, library use)."""
  import tensorflow as tf

  options = tf.data.Options()
  options.deterministic = True
  if _applied is not None and _applied.enabled:
    options.threading.private_threadpool_size = _applied.threads
    options.threading.max_intra_op_parallelism = 1
  return options


def _keep_freed_memory() -> None:
  """One malloc arena whose freed blocks stay in the process (see the module docstring)."""
  path = ctypes.util.find_library("c")
  try:
    libc = ctypes.CDLL(path)
    mallopt = libc.mallopt
  except (OSError, AttributeError, TypeError):  # not glibc: nothing to tune
    return
  for parameter, value in (
      (_M_ARENA_MAX, 1),
      (_M_MMAP_THRESHOLD, _KEEP_BYTES),
      (_M_TRIM_THRESHOLD, _KEEP_BYTES),
  ):
    if mallopt(parameter, value) != 1:
      logger.warning("mallopt(%d, %d) failed; memory is returned to the OS", parameter, value)


def _configure_tensorflow(threads: int) -> None:
  import tensorflow as tf

  try:
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
  except RuntimeError:  # TensorFlow's runtime already started: its pools keep their size
    logger.warning("TensorFlow already initialised: its thread pools keep their default size")


def _configure_compilation_cache(directory: str) -> None:
  import jax

  if jax.config.jax_compilation_cache_dir:  # the user's JAX_COMPILATION_CACHE_DIR wins
    return
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as error:
    logger.warning("no persistent compilation cache (%s)", error)
    return
  jax.config.update("jax_compilation_cache_dir", directory)
  # Cache every compile that takes a while (the train and encode steps), not the tiny ones.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
