"""Wall and CPU time per phase (iah_jax.phases), with a clock the test drives."""

from iah_jax import phases


class FakeClock:

  def __init__(self):
    self.now = [0.0, 0.0, 0.0]  # wall, user, system

  def __call__(self):
    return tuple(self.now)

  def advance(self, wall, user, system=0.0):
    self.now = [self.now[0] + wall, self.now[1] + user, self.now[2] + system]


def test_nested_phases_charge_the_innermost_and_add_up():
  clock = FakeClock()
  timer = phases.PhaseTimer(clock=clock)
  clock.advance(1.0, 0.5)  # before any phase: "other"
  with timer.phase("train"):
    clock.advance(10.0, 18.0, 1.0)
    with timer.phase("checkpoints"):
      clock.advance(2.0, 1.0, 0.5)
    clock.advance(3.0, 6.0)
  with timer.phase("checkpoints"):
    clock.advance(1.0, 0.5)
  assert timer.totals["train"].wall == 13.0
  assert timer.totals["train"].cpu == 25.0 and timer.totals["train"].system == 1.0
  assert timer.totals["checkpoints"].wall == 3.0 and timer.totals["checkpoints"].cpu == 2.0
  assert timer.totals["checkpoints"].count == 2
  total = timer.elapsed()
  assert (total.wall, total.cpu) == (17.0, 27.5)
  report = timer.report()
  rows = {line.split()[0]: line.split()[1:] for line in report.splitlines()[2:]}
  assert rows["train"][:2] == ["13.0", "25.0"]
  assert rows["other"][:2] == ["1.0", "0.5"]  # the time outside every phase
  assert rows["total"][:2] == ["17.0", "27.5"]


def test_an_exception_still_closes_the_phase():
  clock = FakeClock()
  timer = phases.PhaseTimer(clock=clock)
  try:
    with timer.phase("evaluate"):
      clock.advance(2.0, 2.0)
      raise RuntimeError("boom")
  except RuntimeError:
    pass
  with timer.phase("encode"):
    clock.advance(1.0, 1.0)
  assert timer.totals["evaluate"].wall == 2.0 and timer.totals["encode"].wall == 1.0


def test_timed_decorator_and_the_real_clock():
  timer = phases.default_timer()

  @phases.timed("test-busy-loop")
  def busy():
    return sum(range(2_000_000))

  busy()
  totals = timer.totals["test-busy-loop"]
  assert totals.count == 1 and totals.cpu > 0 and totals.wall > 0
  # The process-wide timer counts from the process start: imports included.
  assert timer.elapsed().cpu >= totals.cpu
