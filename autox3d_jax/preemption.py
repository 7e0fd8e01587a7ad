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

Several processes (a multi-host slice): a SIGTERM usually reaches one host first, or only one.
Each process must then save the *same* step, since orbax's save starts with a barrier across the
processes: a process saving alone waits there while the others go on stepping. `agreement()`
gives the loop one vote per step, all-reduced over the processes (`ProcessVote`), so every
process decides to stop at the same step; a process waiting for input data after SIGTERM waits a
grace period more instead of giving up at once (`data_wait_grace_s`), see `ProcessVote`.

Depends on nothing of the project, so both the loop kit and the data pipeline can use it (jax is
imported only by the multi-process helpers).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

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


# ------------------------------------------------------------------------ several processes
DATA_GRACE_ENV_VAR = "AUTOX3D_PREEMPTION_DATA_GRACE_S"
DATA_GRACE_S = 60.0


def _process_count() -> int:
  import jax
  return jax.process_count()


def data_wait_grace_s() -> float:
  """How long a wait for input data goes on after this process got SIGTERM before it gives up
  (`Interrupted`): 0 with one process (give up at once: the loop saves what it has); with several,
  $AUTOX3D_PREEMPTION_DATA_GRACE_S seconds (default DATA_GRACE_S). Why wait: the other processes
  may already be inside this step's collectives, waiting for this one; if its batch arrives within
  the grace, the step runs and all processes agree on a step to save at (`ProcessVote`). A process
  that gives up cannot save (orbax's barrier would wait for processes that never come): the loop
  then exits 143 at once and a restart resumes from the last checkpoint. ValueError naming the
  variable when it is not a number >= 0 (checked with one process too: a setting is never ignored
  silently)."""
  raw = os.environ.get(DATA_GRACE_ENV_VAR, "")
  try:
    grace = float(raw) if raw else DATA_GRACE_S
    if not grace >= 0:
      raise ValueError
  except ValueError:
    raise ValueError(f"{DATA_GRACE_ENV_VAR}={raw!r}: pass a number of seconds >= 0") from None
  return 0.0 if _process_count() == 1 else grace


class LocalAgreement:
  """One process: the agreed flag is the local flag, read at once; no collective, no wait."""
  processes = 1

  def __call__(self, local: bool, step_outputs: Any = None) -> bool:
    return bool(local)


class ProcessVote:
  """Several processes: `vote(local, step_outputs)` -> True when some process had SIGTERM, the
  same on all of them.

  Every process calls it exactly once per step, with its own flag and the step's outputs. A call
  waits for those outputs, casts the flag as a ballot -- a jitted max over one int32 per process,
  on the first device of each process (an all-reduce of one scalar through the backend's
  collectives: gloo on CPU, ICI / DCN on TPU) -- and waits for the result. What holds:
    * agreement is exact: ballot k is the k-th collective of this program on every process and all
      of them read the same reduced value from it, so all decide to stop after the same step: a
      SIGTERM that reaches any process before it casts ballot k (right after step k) stops every
      process after step k, which all of them save;
    * on every device the order is step k, ballot k, step k + 1: the ballot is cast only once the
      step's outputs are ready here, and the next step is dispatched only once the ballot's result
      is here. Without that order the CPU runtime runs a ballot and a step that do not depend on
      each other at the same time, the processes' collectives interleave differently, and gloo
      aborts ("Received data size doesn't match expected size");
    * the cost per step is one scalar all-reduce plus the lost overlap of the host's dispatch of
      the next step with the device's computation of this one. It also bounds the steps in flight
      to one (gloo hangs with a few hundred cross-process steps queued);
    * no process can skip a ballot while the others cast it: the loop calls it every step,
      whatever its local flag. A process stuck waiting for input delays everyone's next ballot;
      see `data_wait_grace_s` for what a SIGTERM does then.

  Why not `jax.experimental.multihost_utils.reached_preemption_sync_point` (jax 0.10.2): it learns
  of the preemption from the C++ SIGTERM handler that `jax.distributed.initialize` installs (the
  preemption service); `SigtermFlag`'s handler replaces that one (it must: the second SIGTERM's
  hard exit and the early end of a wait for data need it), and then the sync point never fires.
  `main` therefore turns that service off. A flag in the coordination service's key-value store would not be exact either
  (two processes can read it at different steps).
  """

  def __init__(self):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    first: dict[int, Any] = {}
    for device in jax.devices():   # ordered by id; the first device of each process votes for it
      first.setdefault(device.process_index, device)
    self.processes = jax.process_count()
    mesh = Mesh(np.array([first[p] for p in range(self.processes)]), ("processes",))
    self._device = first[jax.process_index()]
    self._sharding = NamedSharding(mesh, PartitionSpec("processes"))
    self._reduce = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, PartitionSpec()))
    self.ballots = 0

  def __call__(self, local: bool, step_outputs: Any = None) -> bool:
    import jax
    import numpy as np
    jax.block_until_ready(step_outputs)   # the step is done on this process's devices: no overlap
    mine = jax.device_put(np.array([int(bool(local))], np.int32), self._device)
    ballot = jax.make_array_from_single_device_arrays((self.processes,), self._sharding, [mine])
    self.ballots += 1
    return bool(np.asarray(self._reduce(ballot).addressable_data(0)))


def agreement():
  """The loop's per-step preemption vote: `LocalAgreement()` with one process (no collective),
  else `ProcessVote()`. Both are called as `agreed = vote(local_flag, step_outputs)` once per
  step and have `.processes`."""
  return LocalAgreement() if _process_count() == 1 else ProcessVote()


def exit_now(message: str) -> None:
  """Print `preempted: <message>` to stderr and end the process at once with EXIT_CODE, skipping
  the interpreter's exit (with several processes, its jax.distributed shutdown is a barrier that
  the other processes, blocked in a step's collectives, would never reach)."""
  print(f"preempted: {message}", file=sys.stderr, flush=True)
  sys.stdout.flush()
  logging.shutdown()
  os._exit(EXIT_CODE)
