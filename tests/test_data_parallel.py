"""Ordered process-parallel map used by the dataset builder and the converter."""
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
  with pytest.raises(Exception):
    list(parallel.ordered_map(testing.square_or_die, [1, -1], 2))
