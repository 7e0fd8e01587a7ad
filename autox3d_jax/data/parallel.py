"""Ordered parallel map over processes that survives crashing workers.

`multiprocessing.Pool` hangs forever when a worker dies (a segfault in a video decoder, a child
that cannot start); `ProcessPoolExecutor` raises `BrokenProcessPool` instead, which this wrapper
turns into a per-item failure: the pool is rebuilt, the other in-flight items are retried, and
an item that breaks a pool twice is reported through `on_crash` rather than aborting the run.
Children are started with *spawn*: the parent may run TensorFlow/JAX threads, which fork() would
copy in a broken state.
"""
from __future__ import annotations

import collections
import multiprocessing as mp
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator


# The worker tables ({pid: Process}) of every pool discarded after a crash, kept until exit.
_BROKEN_WORKERS: list = []


def _kill_workers(worker_tables, grace_s: float = 2.0) -> None:
  """Terminate (then kill) every worker still alive in these worker tables of broken pools.

  Why: a pool that broke can keep a worker that never got its termination (one spawned by a
  submit racing the breakage): the pool's manager thread then joins it forever, and the
  interpreter hangs at exit in concurrent.futures' exit hook. The tables are the pools' private
  `_processes` dicts, taken *before* shutdown (which sets the attribute to None) -- the same dict
  objects the manager threads join, so a late-spawned worker is in them too.
  """
  for table in worker_tables:
    for proc in list((table or {}).values()):
      if proc.is_alive():
        proc.terminate()
        proc.join(grace_s)
        if proc.is_alive():
          proc.kill()
          proc.join(grace_s)


def _kill_broken_workers_at_exit() -> None:
  _kill_workers(_BROKEN_WORKERS)


# Registered after concurrent.futures.process's own exit hook, so it runs before it (LIFO): the
# broken pools' manager threads that hook joins can then finish.
threading._register_atexit(_kill_broken_workers_at_exit)   # pylint: disable=protected-access


def ordered_map(fn: Callable, items: Iterable, workers: int, *, initializer: Callable | None = None,
                initargs: tuple = (), window: int | None = None,
                on_crash: Callable[[Any], Any] | None = None) -> Iterator:
  """Yields fn(item) for every item, in order, computing up to `window` items ahead in `workers`
  processes. If a worker process dies on an item, yields on_crash(item) (or re-raises when
  on_crash is None). workers <= 1 runs in this process."""
  if workers <= 1:
    if initializer is not None:
      initializer(*initargs)
    for item in items:
      yield fn(item)
    return
  window = window or 2 * workers
  ctx = mp.get_context("spawn")

  def new_pool():
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=initargs)

  pool = new_pool()
  broken: list = []                 # worker tables of the pools discarded after a crash

  def discard(old):
    workers = getattr(old, "_processes", None)    # before shutdown, which drops the attribute
    old.shutdown(wait=False, cancel_futures=True)
    broken.append(workers)
    _BROKEN_WORKERS.append(workers)
    _kill_workers([workers])
    return new_pool()

  pending: collections.deque = collections.deque()
  source = iter(items)
  try:
    def submit(item):
      # A worker may die between two submissions: the pool is then broken and submit() raises.
      # Hand the breakage to the item's future, so the loop below deals with it in order.
      try:
        return pool.submit(fn, item)
      except BrokenProcessPool as e:
        failed = Future()
        failed.set_exception(e)
        return failed

    def fill():
      while len(pending) < window:
        try:
          item = next(source)
        except StopIteration:
          return
        pending.append([item, submit(item)])

    fill()
    while pending:
      item, future = pending.popleft()
      try:
        result = future.result()
      except BrokenProcessPool:
        # Some in-flight item killed its worker. Retry this one alone in a fresh pool: if that
        # breaks too, it is the culprit; then resubmit the other in-flight items.
        pool = discard(pool)
        try:
          result = pool.submit(fn, item).result()
        except BrokenProcessPool as e:
          pool = discard(pool)
          if on_crash is None:
            raise BrokenProcessPool(
                f"{e} Workers are started with spawn, which re-imports the main module: called from "
                f"a script, the call must sit under `if __name__ == '__main__':` (or pass workers=1)."
            ) from e
          result = on_crash(item)
        for e in pending:
          e[1] = submit(e[0])
      yield result
      fill()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
    _kill_workers(broken)
