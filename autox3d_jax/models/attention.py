"""Token mixers for the attention block types: windowed and axial multi-head self-attention, and a
windowed token-mixing MLP. Pure functions on (N, T, H, W, C) tensors plus one flax module,
`TokenMixer`, that the standalone blocks and the supernet share.

Heads are *interleaved*: channel c belongs to head c mod heads (the usual layout puts head h on a
contiguous run of C / heads channels; the two differ by a fixed permutation of the projections'
columns, so they express the same functions). Interleaving is what lets the supernet share one
projection across widths and head counts: the supernet's channels are a masked prefix of its
largest width, and a prefix of n channels split mod heads is the same split a standalone block of
n channels makes. So a sampled head count regroups the largest projection's channels (TrioNet's
multi-head sharing) and one-hot supernet == derived network holds for attention too.

Windows follow Video Swin (Liu et al. 2022, `get_window_size`): a window larger than the feature
map along an axis is clipped to the map; a map that the window does not divide is zero-padded at
the end and the padded keys are masked out of the softmax (padded queries are dropped). Relative
position terms are Swin's learned bias per head and relative offset, a table of
(2 wt - 1)(2 wh - 1)(2 ww - 1) entries. The axial operator (TrioNet's global operator, after
Axial-DeepLab) attends along each axis whose span is > 1, one axis after the other, each with its
own projection, with a bias per head and relative offset clipped to +-(span // 2) (Shaw et al.
2018's clipping), so the table does not depend on the clip size. Axial-DeepLab's query / key /
value-dependent positional terms are not reproduced: the bias is the Swin form.

The MLP operator is Swin-MLP's spatial MLP (microsoft/Swin-Transformer, models/swin_mlp.py): per
head, one learned (W x W) token-mixing matrix over the W positions of a window, no bias; a clipped
window uses the sub-matrix of its positions, and zero-padded tokens contribute nothing.
Scores' memory is one (W x W) matrix per window and head, P x W per head for P positions, never
the global P x P; windowed attention holds at most SCORE_BUDGET_BYTES of them (or one window's) at
once, running the windows in chunks beyond that.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from autox3d_jax.models.windows import (axis_table_size, bias_table_size, positions, relative_axis_index,
                                        relative_bias_index, window_grid)

KINDS = ("lsa", "axial", "mlp")
_MASKED = -1e9


# ------------------------------------------------------------------------------------------ windows
def partition(x: jax.Array, window: Sequence[int]) -> jax.Array:
  """(N, T, H, W, C) -> (N * windows, wt * wh * ww, C): zero-padded at each axis's end, windows in
  (t, h, w) order, positions within a window in (t, h, w) order."""
  n, t, h, w, c = x.shape
  et, eh, ew = window
  pads = ((0, 0), (0, -t % et), (0, -h % eh), (0, -w % ew), (0, 0))
  if any(p[1] for p in pads):
    x = jnp.pad(x, pads)
  tp, hp, wp = x.shape[1:4]
  x = x.reshape(n, tp // et, et, hp // eh, eh, wp // ew, ew, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(-1, et * eh * ew, c)


def merge(windows: jax.Array, window: Sequence[int], shape: Sequence[int]) -> jax.Array:
  """The inverse of `partition` for an (N, T, H, W, C) `shape`: padding cropped off."""
  n, t, h, w, c = shape
  et, eh, ew = window
  tp, hp, wp = -(-t // et) * et, -(-h // eh) * eh, -(-w // ew) * ew
  x = windows.reshape(n, tp // et, hp // eh, wp // ew, et, eh, ew, c).transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(n, tp, hp, wp, c)[:, :t, :h, :w]


def _split_heads(x: jax.Array, heads: int) -> jax.Array:
  """(..., C) -> (..., C / heads, heads): channel c = d * heads + h goes to head h (interleaved)."""
  return x.reshape(x.shape[:-1] + (x.shape[-1] // heads, heads))


def _softmax(scores: jax.Array) -> jax.Array:
  return jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(scores.dtype)


# The most score bytes window attention holds at once (all heads): windows beyond it run in chunks
# (`window_chunk`), each chunk's scores recomputed in the backward pass instead of stored.
SCORE_BUDGET_BYTES = 32 * 2 ** 20


def window_chunk(windows: int, size: int, heads: int, itemsize: int) -> int:
  """How many windows of `size` positions one step of `window_attention` takes: all of them when
  their (size x size x heads) scores fit SCORE_BUDGET_BYTES, else as many as fit, at least one."""
  return max(1, min(windows, SCORE_BUDGET_BYTES // max(1, size * size * heads * itemsize)))


def window_attention(q, k, v, heads: int, window: Sequence[int], bias_table, scale) -> jax.Array:
  """Multi-head self-attention within windows. q, k, v: (N, T, H, W, C); bias_table:
  (bias_table_size(window), heads); scale: the scores' factor (scalar). Returns (N, T, H, W, C).
  Scores held at once: at most max(SCORE_BUDGET_BYTES, one window's); beyond that the windows run
  in chunks under `lax.map`, rematerialised in the backward pass (`jax.checkpoint`)."""
  shape = q.shape
  e, per_clip = window_grid(window, shape[1:4])
  qw, kw, vw = (_split_heads(partition(a, e), heads) for a in (q, k, v))   # (windows, W, C / heads, heads)
  bias = jnp.transpose(bias_table[relative_bias_index(e, window)], (2, 0, 1)).astype(q.dtype)   # (heads, W, W)
  padded = any(m % w for m, w in zip(shape[1:4], e))
  valid = None                                                                  # (windows, W): real positions
  if padded:
    valid = jnp.tile(partition(jnp.ones((1,) + tuple(shape[1:4]) + (1,), q.dtype), e)[..., 0] > 0, (shape[0], 1))
  scale = jnp.asarray(scale, q.dtype)

  def attend(qc, kc, vc, validc):
    scores = jnp.einsum("bqdh,bkdh->bhqk", qc, kc) * scale + bias[None]
    if padded:
      scores = jnp.where(validc[:, None, None, :], scores, jnp.asarray(_MASKED, scores.dtype))
    return jnp.einsum("bhqk,bkdh->bqdh", _softmax(scores), vc)

  n, size = qw.shape[0], qw.shape[1]
  chunk = window_chunk(n, size, heads, jnp.dtype(q.dtype).itemsize)
  if chunk >= n:
    out = attend(qw, kw, vw, valid)
  else:
    steps = -(-n // chunk)
    pad = steps * chunk - n

    def chunks(a, fill=0):
      a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1), constant_values=fill)
      return a.reshape((steps, chunk) + a.shape[1:])
    out = jax.lax.map(jax.checkpoint(lambda args: attend(*args)),
                      (chunks(qw), chunks(kw), chunks(vw), None if valid is None else chunks(valid, True)))
    out = out.reshape((steps * chunk,) + out.shape[2:])[:n]
  return merge(out.reshape(out.shape[:2] + (shape[-1],)), e, shape)


def axis_attention(q, k, v, heads: int, axis: int, span: int, bias_table, scale) -> jax.Array:
  """Multi-head self-attention along one axis (1 = t, 2 = h, 3 = w) of (N, T, H, W, C), every other
  position a separate sequence; bias_table: (2 (span // 2) + 1, heads)."""
  qa, ka, va = (_split_heads(jnp.moveaxis(a, axis, -2), heads) for a in (q, k, v))
  scores = jnp.einsum("...qdh,...kdh->...hqk", qa, ka) * jnp.asarray(scale, q.dtype)
  bias = bias_table[relative_axis_index(q.shape[axis], span)]            # (L, L, heads)
  scores = scores + jnp.transpose(bias, (2, 0, 1)).astype(q.dtype)
  out = jnp.einsum("...hqk,...kdh->...qdh", _softmax(scores), va)
  return jnp.moveaxis(out.reshape(out.shape[:-2] + (q.shape[-1],)), -2, axis)


def window_mlp(x, heads: int, window: Sequence[int], weights) -> jax.Array:
  """Per-head token mixing within windows: weights (heads, W, W) over the full window's positions."""
  shape = x.shape
  e, _ = window_grid(window, shape[1:4])
  if e != tuple(window):
    full = np.asarray(window)
    keep = np.ravel_multi_index(tuple(positions(e).T), tuple(full))
    weights = weights[:, keep][:, :, keep]
  xw = _split_heads(partition(x, e), heads)
  out = jnp.einsum("hqk,bkdh->bqdh", weights.astype(x.dtype), xw)
  return merge(out.reshape(out.shape[:2] + (shape[-1],)), e, shape)


def head_scale(channels: int, heads: int, mask=None) -> jax.Array:
  """The scores' factor 1 / sqrt(channels per head), over the active channels of `mask` (the
  supernet's masked widths) when given."""
  active = jnp.sum(mask) if mask is not None else channels
  return jax.lax.rsqrt(jnp.maximum(jnp.asarray(active, jnp.float32) / heads, 1.0))


AXES = ((1, "t"), (2, "h"), (3, "w"))


# ------------------------------------------------------------------------------------------ module
class TokenMixer(nn.Module):
  """A token mixer of one kind over candidates ((label, kernel, heads), ...) that share its
  projections. Standalone blocks pass one candidate; the supernet passes an attention family's.

  __call__(x (N, T, H, W, C), weights (len(candidates),) or None, mask (C,) or None) -> same shape:
  the weights-weighted sum of the candidates' outputs (weights None: the one candidate). mask: the
  supernet's active-channel mask (q, k, v and the output are masked; the scores' scale uses the
  active channels per head). switch: run only the heaviest-weighted candidate (`lax.switch`), for
  one-hot weights. Parameters: 'qkv' (C, 3, C) for 'lsa' and per active axis 'qkv_t' / 'qkv_h' /
  'qkv_w' for 'axial', shared by every candidate; per candidate its own relative-position bias (or
  the MLP's mixing weights) under its label ('<label>' or '<label>_<axis>').
  """
  kind: str
  candidates: tuple
  switch: bool = False
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, weights=None, mask=None):
    if self.kind not in KINDS:
      raise ValueError(f"TokenMixer kind must be one of {KINDS}, got {self.kind!r}")
    c = x.shape[-1]
    if self.dtype is not None:
      x = x.astype(self.dtype)
    branches = getattr(self, f"_{self.kind}_branches")(x, c, mask)
    if weights is None:
      return branches[0]()
    weights = weights.astype(x.dtype)
    if self.switch and len(branches) > 1 and not self.is_initializing():
      index = jnp.argmax(weights)
      return weights[index] * jax.lax.switch(index, branches)
    return sum(w * branch() for w, branch in zip(weights, branches))

  # Each builder creates the parameters (outside any switch) and returns one thunk per candidate.
  def _qkv_param(self, name, c):
    init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=0, out_axis=(1, 2))
    return self.param(name, init, (c, 3, c), jnp.float32)

  @staticmethod
  def _project(kernel, x, c, mask):
    """q, k, v of x (..., C) with one (C, 3C) matmul, masked to the active channels."""
    qkv = (x.reshape(-1, c) @ kernel.astype(x.dtype).reshape(c, 3 * c)).reshape(x.shape[:-1] + (3, c))
    q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
    if mask is None:
      return q, k, v
    m = mask.astype(x.dtype)
    return q * m, k * m, v * m


  def _lsa_branches(self, x, c, mask):
    q, k, v = self._project(self._qkv_param("qkv", c), x, c, mask)
    branches = []
    for label, window, heads in self.candidates:
      table = self.param(label, nn.initializers.truncated_normal(0.02), (bias_table_size(window), heads),
                         jnp.float32)
      branches.append(lambda w=tuple(window), h=heads, t=table: window_attention(
          q, k, v, h, w, t, head_scale(c, h, mask)))
    return branches

  def _axial_branches(self, x, c, mask):
    used = [(axis, name) for axis, name in AXES if any(window[axis - 1] > 1 for _, window, _ in self.candidates)]
    kernels = {axis: self._qkv_param(f"qkv_{name}", c) for axis, name in used}
    tables = {(label, axis): self.param(f"{label}_{name}", nn.initializers.truncated_normal(0.02),
                                        (axis_table_size(window[axis - 1]), heads), jnp.float32)
              for label, window, heads in self.candidates for axis, name in used if window[axis - 1] > 1}

    def run(label, window, heads):
      y = x
      for axis, _ in used:
        if window[axis - 1] > 1:
          q, k, v = self._project(kernels[axis], y, c, mask)
          y = axis_attention(q, k, v, heads, axis, window[axis - 1], tables[(label, axis)],
                             head_scale(c, heads, mask))
      return y

    return [lambda cand=cand: run(*cand) for cand in self.candidates]

  def _mlp_branches(self, x, c, mask):
    branches = []
    for label, window, heads in self.candidates:
      size = math.prod(window)
      weights = self.param(label, _uniform(1.0 / math.sqrt(size)), (heads, size, size), jnp.float32)
      branches.append(lambda w=tuple(window), h=heads, m=weights: window_mlp(x, h, w, m))
    return branches


def _uniform(bound: float):
  """U(-bound, bound): PyTorch's Conv1d default (fan_in = the window's positions), Swin-MLP's layer."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init
