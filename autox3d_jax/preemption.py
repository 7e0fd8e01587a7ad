"""SIGTERM handling for long runs (a preempted TPU VM, a supervisor stopping a job).

`SigtermFlag` is a context manager: inside it, the first SIGTERM sets `flag.raised` (the loop
finishes its step, saves and exits) and `requested()` returns True (a wait for input data gives
up: `Interrupted`); a second SIGTERM ends the process at once with exit code 143, whatever the
main thread is doing -- also while it is blocked in a C call such as an XLA compile or a
tf.data `next()`, where a Python signal handler cannot run.

How: Python runs signal handlers only in the main thread, between bytecodes. So besides the
(trivial) Python handler, the flag registers a pipe with `signal.set_wakeup_fd`: the C-level
handler writes the signal number to it immediately, and a daemon thread reading the pipe counts
the signals. Outside the main thread (a notebook worker) no handler can be installed and the
flag stays False.

Depends on nothing of the project, so both the loop kit and the data pipeline can use it.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

log = logging.getLogger(__name__)

EXIT_CODE = 143   # 128 + SIGTERM: what a supervisor expects from a process stopped by SIGTERM

_active: list["SigtermFlag"] = []


class Interrupted(RuntimeError):
  """A wait (for input data) gave up because SIGTERM was received."""


def requested() -> bool:
  """True once a SIGTERM arrived inside an active `SigtermFlag`."""
  return any(flag.raised for flag in _active)


class SigtermFlag:
  """Inside the block: SIGTERM 1 -> `raised` (finish the step, save, exit); SIGTERM 2 -> exit 143 now."""

  def __init__(self):
    self.raised = False
    self._previous_handler = None
    self._previous_fd = -1
    self._pipe: tuple[int, int] | None = None
    self._watcher: threading.Thread | None = None
    self._count = 0

  def __enter__(self):
    try:
      self._previous_handler = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:   # not the main thread: no handler can be installed here
      self._previous_handler = None
      return self
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)   # set_wakeup_fd requires it: the C handler must never block
    self._pipe = (read_fd, write_fd)
    self._previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    self._watcher = threading.Thread(target=self._watch, args=(read_fd,), name="sigterm-watcher", daemon=True)
    self._watcher.start()
    _active.append(self)
    return self

  def _handle(self, signum, frame):
    # Runs in the main thread between bytecodes: makes the flag visible at once to the code that
    # sent or awaited the signal. Counting (and the hard exit) is the watcher's job.
    self.raised = True

  def _watch(self, read_fd: int) -> None:
    while True:
      try:
        data = os.read(read_fd, 64)
      except OSError:
        return
      if not data:      # write end closed: the block was left
        return
      for signum in data:
        if signum == signal.SIGTERM:
          self._on_sigterm()

  def _on_sigterm(self) -> None:
    self._count += 1
    self.raised = True
    if self._count == 1:
      log.warning("SIGTERM: will save after the current step and exit; send SIGTERM again to exit at once")
    else:
      print("SIGTERM again: exiting now without saving; the last checkpoint written is intact",
            file=sys.stderr, flush=True)
      os._exit(EXIT_CODE)

  def __exit__(self, *exc):
    if self in _active:
      _active.remove(self)
    if self._pipe is not None:
      signal.set_wakeup_fd(self._previous_fd)
      read_fd, write_fd = self._pipe
      os.close(write_fd)
      self._watcher.join(5)
      os.close(read_fd)
      self._pipe = None
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None
