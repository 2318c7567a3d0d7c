"""Console output of the command-line entry points (main, compare, benchmarks)."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from absl import logging as absl_logging
from tqdm.contrib.logging import logging_redirect_tqdm


@contextlib.contextmanager
def progress_logging() -> Iterator[logging.Logger]:
  """The "iah_jax" logger at INFO with timestamps, printed above the tqdm progress bars; the
  libraries' (orbax, TFDS) chatter only from WARNING."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  logger = logging.getLogger("iah_jax")
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False
  try:
    with logging_redirect_tqdm(loggers=[logger]):
      yield logger
  finally:
    logger.removeHandler(handler)
