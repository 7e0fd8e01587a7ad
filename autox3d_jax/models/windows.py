"""Window geometry of the attention and MLP block types, numpy only (costs and the space's checks
read it without loading a model): clipping a window to a feature map, counting windows, and the
relative-position index tables. Conventions: `models.attention`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def clip_window(window: Sequence[int], thw: Sequence[int]) -> tuple[int, int, int]:
  """The window actually used on a (T, H, W) map: each axis clipped to the map (Video Swin)."""
  return tuple(min(int(w), int(m)) for w, m in zip(window, thw))


def window_grid(window: Sequence[int], thw: Sequence[int]) -> tuple[tuple[int, int, int], int]:
  """(clipped window, number of windows per clip) on a (T, H, W) map, counting padded windows."""
  e = clip_window(window, thw)
  return e, math.prod(-(-m // w) for m, w in zip(thw, e))


def positions(window: Sequence[int]) -> np.ndarray:
  """(W, 3) integer (t, h, w) coordinates of a window's positions, in partition order."""
  return np.stack(np.meshgrid(*[np.arange(k) for k in window], indexing="ij"), -1).reshape(-1, 3)


def relative_bias_index(window: Sequence[int], full: Sequence[int]) -> np.ndarray:
  """(W, W) index into a bias table of `full`'s (2w-1)(2h-1)(2w-1) offsets for every (query, key)
  pair of the (possibly clipped) `window`."""
  pos = positions(window)
  rel = pos[:, None, :] - pos[None, :, :] + (np.asarray(full) - 1)
  sizes = 2 * np.asarray(full) - 1
  return (rel[..., 0] * sizes[1] + rel[..., 1]) * sizes[2] + rel[..., 2]


def bias_table_size(window: Sequence[int]) -> int:
  return math.prod(2 * int(k) - 1 for k in window)


def axis_table_size(span: int) -> int:
  """Entries of an axial bias table: relative offsets -R..R, R = span // 2."""
  return 2 * (int(span) // 2) + 1


def relative_axis_index(length: int, span: int) -> np.ndarray:
  """(L, L) index into a (2 R + 1) bias table, R = span // 2: key offset - query offset, clipped."""
  r = span // 2
  pos = np.arange(length)
  return np.clip(pos[None, :] - pos[:, None], -r, r) + r
