"""What the serving command lines share: user-facing errors end in one line and exit code 2."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from iah_jax.serving.errors import ServingError

EXIT_BAD_INPUT = 2


@contextlib.contextmanager
def user_errors(command: str) -> Iterator[None]:
  """Turns a ServingError into "<command>: error: <message>" on stderr and exit code 2, without
  a traceback (anything else is a bug and keeps its traceback)."""
  try:
    yield
  except ServingError as err:
    print(f"{command}: error: {err}", file=sys.stderr, flush=True)
    sys.exit(EXIT_BAD_INPUT)
