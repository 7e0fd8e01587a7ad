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
