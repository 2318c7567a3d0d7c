"""TensorBoard event files of a run that may be killed and resumed.

A session killed after its last checkpoint (step s) has already logged steps > s; the resumed
session logs them again. `tf.summary` has no purge and TensorBoard's readers differ in what they
do with repeated steps, so before a session writes, `drop_events_after(directory, s)` rewrites
the run's event files without the summaries of steps > s: every step then has exactly one value,
whatever reads the files. A record cut short by the kill (the file's last) goes too.
"""

from __future__ import annotations

import glob
import logging
import os

logger = logging.getLogger("iah_jax")

EVENT_FILE_PATTERN = "events.out.tfevents.*"


def drop_events_after(directory: str, step: int) -> int:
  """Rewrites the event files in `directory` keeping the events of steps <= `step` (and the
  file-version records); returns the number of summary events dropped."""
  import tensorflow as tf  # TensorBoard's file format; TF is already the data dependency

  gfile = tf.io.gfile
  if not gfile.isdir(directory):
    return 0
  dropped = 0
  for path in sorted(gfile.glob(os.path.join(glob.escape(directory), EVENT_FILE_PATTERN))):
    kept, removed, truncated = [], 0, False
    try:
      for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        if event.HasField("summary") and event.step > step:
          removed += 1
        else:
          kept.append(record.numpy())
    except tf.errors.DataLossError:  # the last record of a killed writer, cut short
      truncated = True
    if not removed and not truncated:
      continue
    partial = path + ".partial"  # the file is rewritten whole or not at all
    with tf.io.TFRecordWriter(partial) as writer:
      for record in kept:
        writer.write(record)
    gfile.rename(partial, path, overwrite=True)
    dropped += removed
  if dropped:
    logger.info(
        "TensorBoard: dropped %d events of steps > %d (logged before the resume)", dropped, step
    )
  return dropped


def read_scalars(directory: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} of the scalar summaries in `directory`'s event files, in
  file order (what a reader of the run sees)."""
  import tensorflow as tf

  scalars: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(tf.io.gfile.glob(os.path.join(glob.escape(directory), EVENT_FILE_PATTERN))):
    try:
      for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
          number = (
              float(tf.make_ndarray(value.tensor))
              if value.HasField("tensor")
              else float(value.simple_value)
          )
          scalars.setdefault(value.tag, []).append((int(event.step), number))
    except tf.errors.DataLossError:  # a record cut short by a kill ends the file
      pass
  return scalars
