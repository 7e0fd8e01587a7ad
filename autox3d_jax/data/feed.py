"""Iterate a tf.data pipeline so that the caller's wait for the next batch can end early.

A training loop blocked in a tf.data `next()` is inside a C call: no Python signal handler runs
and nothing notices that the stream will never deliver (every record invalid, every shard's
first header corrupt: the filters drop everything, forever). `guarded_batches` fetches each
batch in a helper thread, on demand (no batch is held beyond what the pipeline itself
prefetches), while the caller's thread waits in short slices and checks, between them:

  * SIGTERM (`autox3d_jax.preemption.requested()`): raises `preemption.Interrupted`, so the loop
    can save what it has and exit -- at once with one process; with several, after waiting
    `preemption.data_wait_grace_s()` more for the batch (the others may be inside this step's
    collectives, waiting for this process: a batch that arrives lets the step run and all
    processes agree on the step to save);
  * a stall: the pipeline skipped a whole pass over this host's records (plus the records that
    may be in flight) without producing one valid clip. The stream is then stopped (the
    pipeline's `stop` variable ends it, so the helper thread ends too) and `NoValidInputError`
    names the split and the counts;
  * a long wait with nothing skipped (a slow file system): a log line every `warn_every_s`.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Iterator

from autox3d_jax import preemption
from autox3d_jax.data import registry

log = logging.getLogger(__name__)

_END = object()


class NoValidInputError(registry.DatasetError):
  """The input pipeline went through a whole pass over its records without one valid clip."""


def guarded_batches(dataset, stats, *, what: str, pass_size: int, in_flight: int,
                    poll_s: float = 0.5, warn_every_s: float = 60.0) -> Iterator[dict[str, Any]]:
  """Yield `dataset.as_numpy_iterator()`'s batches, giving up on SIGTERM or a stall (see module doc).

  stats: the pipeline's `PipelineStats` (its counters measure progress; its `stop` ends the stream).
  what: how the error names the input, e.g. 'moving_digits/train (host 0/1)'.
  pass_size: records this host reads per pass; in_flight: records that may sit between the
    counters (parallel decodes, a batch being assembled) -- the stall bound is their sum.
  """
  requests: queue.Queue = queue.Queue()
  results: queue.Queue = queue.Queue()
  closed = threading.Event()

  def produce():
    iterator = iter(dataset.as_numpy_iterator())
    while not closed.is_set():
      try:
        requests.get(timeout=poll_s)
      except queue.Empty:
        continue
      try:
        results.put(next(iterator, _END))
      except BaseException as e:   # handed to the caller's thread, which raises it
        results.put(e)
        return

  thread = threading.Thread(target=produce, name=f"input-{what}", daemon=True)
  thread.start()
  watch = _StallWatch(stats, what, pass_size + in_flight, pass_size)
  grace_s = preemption.data_wait_grace_s()
  try:
    while True:
      requests.put(True)
      waited_since = time.monotonic()
      warned_at = waited_since
      sigterm_seen_at = None   # when this wait first saw SIGTERM: its grace counts from there
      watch.reset()
      while True:
        try:
          item = results.get(timeout=poll_s)
          break
        except queue.Empty:
          pass
        if preemption.requested():
          if sigterm_seen_at is None:
            sigterm_seen_at = time.monotonic()
            if grace_s > 0:
              log.warning("SIGTERM while waiting for %s: waiting up to %g s more for it, so that all "
                          "processes can save the same step (%s)", what, grace_s, preemption.DATA_GRACE_ENV_VAR)
          if time.monotonic() - sigterm_seen_at >= grace_s:
            raise preemption.Interrupted(f"SIGTERM while waiting for {what}")
        watch.check()
        now = time.monotonic()
        if now - warned_at >= warn_every_s:
          warned_at = now
          log.warning("still waiting for the next batch of %s after %.0f s (%s)", what, now - waited_since,
                      stats.summary())
      if item is _END:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    closed.set()


class _StallWatch:
  """Raises NoValidInputError once `bound` records were skipped with no valid clip since."""

  def __init__(self, stats, what: str, bound: int, pass_size: int):
    self.stats, self.what, self.bound, self.pass_size = stats, what, bound, pass_size
    self.successes, self.skipped = None, None

  def _read(self) -> tuple[int, int]:
    s = self.stats
    successes = int(s.decode_successes.numpy())
    skipped = int(s.invalid_records.numpy()) + int(s.lost_records.numpy()) + (int(s.decode_attempts.numpy()) - successes)
    return successes, skipped

  def reset(self) -> None:
    """A batch was delivered: a valid clip was seen; count skips from here."""
    self.successes, self.skipped = self._read()

  def check(self) -> None:
    successes, skipped = self._read()
    if successes != self.successes:
      self.successes, self.skipped = successes, skipped
      return
    if skipped - self.skipped >= self.bound:
      self.stats.stop.assign(True)
      raise NoValidInputError(
          f"{self.what}: no valid clip in a whole pass over its {self.pass_size} records: "
          f"{skipped - self.skipped} records skipped in a row ({self.stats.summary()}). Every record is "
          f"invalid or unreadable: rebuild the dataset (the embedded ones: delete their data_dir), "
          f"reconvert the videos (python -m autox3d_jax.data.convert), or point config.data.data_dir "
          f"at an intact copy.")

