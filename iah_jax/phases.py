"""Where a job's time goes: wall and CPU seconds (user + system) accumulated per named phase.

  with phases.phase("train steps"):
    ...
  print(phases.report())

Phases nest: time inside an inner phase counts for the inner one only, so the phases add up to
the time covered. CPU time is the whole process's (`getrusage(RUSAGE_SELF)`: every thread,
XLA's pool, tf.data's and orbax's background threads included), charged to the phase that is
running at the time. One process-wide `PhaseTimer` (`default_timer()`), or your own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import resource
import time
from typing import Callable, Iterator


@dataclasses.dataclass
class PhaseTotals:
  wall: float = 0.0
  user: float = 0.0
  system: float = 0.0
  count: int = 0

  @property
  def cpu(self) -> float:
    return self.user + self.system


def _process_clock() -> tuple[float, float, float]:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return time.perf_counter(), usage.ru_utime, usage.ru_stime


def process_start() -> tuple[float, float, float]:
  """`_process_clock()` as it read when this process started (Linux; elsewhere: now)."""
  now = time.perf_counter()
  try:
    with open("/proc/self/stat") as file:
      # Field 22 (after the parenthesised command name) is the start time in clock ticks.
      start_ticks = int(file.read().rsplit(")", 1)[1].split()[19])
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError, AttributeError):
    return _process_clock()
  return now - max(age, 0.0), 0.0, 0.0


class PhaseTimer:
  """Accumulates wall / user / system seconds per phase name (see the module docstring).

  `start` is what the totals count from (default: now); `process_start()` counts the whole
  process, imports included.
  """

  def __init__(
      self,
      clock: Callable[[], tuple[float, float, float]] = _process_clock,
      start: tuple[float, float, float] | None = None,
  ):
    self._clock = clock
    self._start = clock() if start is None else start
    self.totals: dict[str, PhaseTotals] = {}
    self._stack: list[str] = []
    self._mark = self._clock()

  def _charge(self) -> None:
    """Adds the time since the last mark to the running phase; moves the mark."""
    now = self._clock()
    if self._stack:
      totals = self.totals.setdefault(self._stack[-1], PhaseTotals())
      totals.wall += now[0] - self._mark[0]
      totals.user += now[1] - self._mark[1]
      totals.system += now[2] - self._mark[2]
    self._mark = now

  @contextlib.contextmanager
  def phase(self, name: str) -> Iterator[None]:
    self._charge()
    self._stack.append(name)
    self.totals.setdefault(name, PhaseTotals()).count += 1
    try:
      yield
    finally:
      self._charge()
      self._stack.pop()

  def elapsed(self) -> PhaseTotals:
    """Wall, user and system seconds since the timer was made (or reset)."""
    now = self._clock()
    return PhaseTotals(
        wall=now[0] - self._start[0],
        user=now[1] - self._start[1],
        system=now[2] - self._start[2],
    )

  def reset(self, start: tuple[float, float, float] | None = None) -> None:
    """Forgets every phase; totals count from `start` (default: now)."""
    self.__init__(self._clock, start)

  def report(self, title: str = "time by phase") -> str:
    """A table of every phase (wall s, CPU s = user + system) and the total since the start."""
    total = self.elapsed()
    covered = PhaseTotals()
    lines = [
        f"{title} (load average {_load_average()}):",
        f"  {'phase':<16} {'wall s':>9} {'CPU s':>9} {'user':>9} {'system':>9}",
    ]

    def row(name: str, totals: PhaseTotals) -> str:
      return (
          f"  {name:<16} {totals.wall:>9.1f} {totals.cpu:>9.1f} {totals.user:>9.1f} "
          f"{totals.system:>9.1f}"
      )

    for name, totals in self.totals.items():
      lines.append(row(name, totals))
      covered.wall += totals.wall
      covered.user += totals.user
      covered.system += totals.system
    rest = PhaseTotals(
        wall=total.wall - covered.wall,
        user=total.user - covered.user,
        system=total.system - covered.system,
    )
    lines.append(row("other", rest))
    lines.append(row("total", total))
    return "\n".join(lines)


def _load_average() -> str:
  try:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())
  except OSError:
    return "n/a"


_default = PhaseTimer(start=process_start())


def default_timer() -> PhaseTimer:
  """The process-wide timer; its totals count from the start of the process."""
  return _default


def phase(name: str):
  """`default_timer().phase(name)`."""
  return _default.phase(name)


def report(title: str = "time by phase") -> str:
  return _default.report(title)


def timed(name: str) -> Callable[[Callable], Callable]:
  """Decorator: every call of the function runs inside `phase(name)` of the default timer."""

  def decorate(function: Callable) -> Callable:
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
      with _default.phase(name):
        return function(*args, **kwargs)

    return wrapper

  return decorate
