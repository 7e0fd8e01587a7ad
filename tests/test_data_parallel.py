"""Ordered process-parallel map used by the dataset builder and the converter."""
import time

import pytest

from autox3d_jax.data import parallel, testing


def test_ordered_and_equal_to_serial():
  items = list(range(12))
  assert list(parallel.ordered_map(testing.square_or_die, items, 2, window=3)) == [x * x for x in items]
  assert list(parallel.ordered_map(testing.square_or_die, items, 1)) == [x * x for x in items]


def test_a_crashing_item_is_reported_not_fatal():
  items = [1, 2, -1, 3, 4]
  out = list(parallel.ordered_map(testing.square_or_die, items, 2, window=4, on_crash=lambda x: ("crashed", x)))
  assert out == [1, 4, ("crashed", -1), 9, 16]
  with pytest.raises(Exception, match="if __name__ == '__main__'"):   # the usual cause, named
    list(parallel.ordered_map(testing.square_or_die, [1, -1], 2))


def test_a_worker_dying_between_submissions_is_handled_in_order():
  """A race seen in a full test run: a worker dies while the consumer holds the previous result,
  so the next submission meets a broken pool. That must become the dying item's crash report, in
  order, not an exception out of the generator."""
  out = parallel.ordered_map(testing.square_or_die, [0, -1, 2, 3], 2, window=2,
                             on_crash=lambda x: ("crashed", x))
  assert next(out) == 0
  time.sleep(3.0)        # item -1 has killed its worker by now; resuming submits item 2
  assert list(out) == [("crashed", -1), 4, 9]


def test_no_worker_or_manager_thread_outlives_the_call():
  """After a crash (a broken pool, rebuilt), every worker process of every pool is gone and no
  pool's manager thread is left running: nothing for the interpreter's exit to wait on (a left
  worker once hung the test command after its summary)."""
  import multiprocessing as mp
  import threading
  from concurrent.futures.process import _ExecutorManagerThread

  def non_daemon_threads():
    return {t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()}
  before = non_daemon_threads()
  out = list(parallel.ordered_map(testing.square_or_die, [1, -1, 2, -1, 3], 2, window=3,
                                  on_crash=lambda x: ("crashed", x)))
  assert out == [1, ("crashed", -1), 4, ("crashed", -1), 9]
  deadline = time.time() + 20
  while time.time() < deadline and (mp.active_children() or any(
      isinstance(t, _ExecutorManagerThread) and t.is_alive() for t in threading.enumerate())):
    time.sleep(0.2)
  assert mp.active_children() == []
  assert not [t for t in threading.enumerate() if isinstance(t, _ExecutorManagerThread) and t.is_alive()]
  assert non_daemon_threads() <= before      # no thread the interpreter's exit would join


def test_workers_of_a_shut_down_pool_are_killed_from_the_table_taken_before_shutdown():
  """shutdown() drops the pool's worker table (`_processes` becomes None), so killing 'the pool's
  workers' after it killed nothing; the table taken before shutdown still reaches a busy worker."""
  import multiprocessing as mp
  from concurrent.futures import ProcessPoolExecutor
  pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
  pool.submit(time.sleep, 60)
  deadline = time.time() + 30
  while not pool._processes and time.time() < deadline:
    time.sleep(0.05)
  table = pool._processes
  workers = list(table.values())
  pool.shutdown(wait=False, cancel_futures=True)
  assert pool._processes is None
  parallel._kill_workers([table])
  # The pool's manager thread may reap the worker concurrently with _kill_workers' join, and a
  # Popen.poll that loses that race reports it alive once: wait a moment for the reaped state.
  deadline = time.time() + 10   # the worker sleeps 60 s: only the kill ends it this soon
  while any(w.is_alive() for w in workers) and time.time() < deadline:
    time.sleep(0.05)
  assert workers and not any(w.is_alive() for w in workers)
