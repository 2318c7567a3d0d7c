"""TensorBoard events of a resumed run: the steps a killed session logged after its last
checkpoint are dropped before the resumed session logs them again."""

import os

import tensorflow as tf

from iah_jax import summaries


def log_session(directory, steps, offset):
  writer = tf.summary.create_file_writer(str(directory))
  with writer.as_default():
    for step in steps:
      tf.summary.scalar("loss", float(step) + offset, step=step)
  writer.close()


def event_files(directory):
  return sorted(name for name in os.listdir(directory) if name.startswith("events.out"))


def test_resumed_session_leaves_one_value_per_step(tmp_path):
  log_session(tmp_path, range(1, 9), offset=0.5)  # killed after step 8, last checkpoint 4
  assert summaries.drop_events_after(str(tmp_path), 4) == 4
  log_session(tmp_path, range(5, 11), offset=0.25)  # the resumed session replays 5..8
  assert len(event_files(tmp_path)) == 2
  losses = summaries.read_scalars(str(tmp_path))["loss"]
  assert losses == [(step, step + 0.5) for step in range(1, 5)] + [
      (step, step + 0.25) for step in range(5, 11)
  ]
  # Raw events, as any reader sees them: each step once.
  steps = [
      event.step
      for name in event_files(tmp_path)
      for event in tf.compat.v1.train.summary_iterator(str(tmp_path / name))
      if event.HasField("summary")
  ]
  assert steps == list(range(1, 11))


def test_a_record_cut_short_by_a_kill_is_dropped_with_the_later_steps(tmp_path):
  log_session(tmp_path, range(1, 7), offset=0.0)
  (name,) = event_files(tmp_path)
  path = tmp_path / name
  path.write_bytes(path.read_bytes()[:-7])  # the kill came in the middle of the last record
  assert summaries.read_scalars(str(tmp_path))["loss"][-1] == (5, 5.0)
  assert summaries.drop_events_after(str(tmp_path), 3) == 2  # steps 4, 5 (6 was cut)
  steps = [event.step for event in tf.compat.v1.train.summary_iterator(str(path))]
  assert steps == [0, 1, 2, 3]  # the file-version record, then the kept steps: readable to the end


def test_nothing_to_drop_leaves_the_files_untouched(tmp_path):
  log_session(tmp_path, range(1, 4), offset=0.0)
  (name,) = event_files(tmp_path)
  before = (tmp_path / name).stat().st_mtime_ns
  assert summaries.drop_events_after(str(tmp_path), 3) == 0
  assert (tmp_path / name).stat().st_mtime_ns == before
  assert summaries.drop_events_after(str(tmp_path / "absent"), 0) == 0
