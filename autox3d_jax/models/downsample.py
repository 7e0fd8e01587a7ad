"""UniNet's downsampling modules (DSM) between stages, for video clips.

UniNet (Liu et al., ECCV 2022; Sense-X/UniNet `uninet.py`, `LocalDSM` / `LocalGlobalDSM`) searches,
per stage, which module halves the feature map before the stage's blocks:

  local         out = [dw 1x3x3 stride 2 -> BN -> 1x1](x) + [max-pool 1x3x3 stride 2 -> 1x1](x)
  local_global  q   = [dw 1x3x3 stride 2 -> BN -> 1x1 -> norm](x)          (the local path, as query)
                k,v = [norm -> linear](x)                                   (at full resolution)
                out = proj(MHSA(q, k, v)) + [max-pool 1x3x3 stride 2 -> 1x1](x)

Adapted to this project, and where we depart from the code:
  * video: the 3x3 kernels and the pool are 1x3x3 (spatial only; T is kept, as in X3D), and the
    global attention runs within each frame: every downsampled position of frame t attends to all
    positions of frame t. Attending across all frames would hold (T H W / 4) x (T H W) scores per
    head, hundreds of MiB per clip at X3D-S's stage 1.
  * UniNet's LayerNorms (q and k/v) and its conv biases are BNs here, and a BN follows the sum
    (`bn_local` / `bn_global`), as everywhere in the project's blocks: per-channel statistics keep
    the supernet's masked widths exact and fold into the convs for export.
  * heads are a setting (UniNet's head_dim is fixed at 32), interleaved like the attention blocks'
    (`models.attention`), so the supernet's masked prefix of channels splits into heads as the
    derived network's does; no relative-position bias (UniNet's DSM has none).

`Downsample` serves the standalone network (one kind) and the supernet (every kind of the stage's
decision, the local path and the residual shared, masks on the input and output channels), so a
one-hot supernet computes the derived network by construction.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from autox3d_jax.models.attention import _softmax, _split_heads, head_scale
from autox3d_jax.models.layers import DepthwiseConv3D, MaskedBatchNorm, on_channels
from autox3d_jax.models.spec import DOWNSAMPLE_KINDS


def max_pool_3x3(x: jax.Array) -> jax.Array:
  """1 x 3 x 3 max pool, stride (1, 2, 2), padding 1 (PyTorch's MaxPool2d(3, 2, 1): pads with -inf)."""
  return nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding=((0, 0), (1, 1), (1, 1)))


def frame_attention(q: jax.Array, k: jax.Array, v: jax.Array, heads: int, scale) -> jax.Array:
  """Multi-head attention within each frame: q (N, T, h, w, C) attends to k, v (N, T, H, W, C) of the
  same frame; heads interleaved (channel c in head c mod heads). Returns (N, T, h, w, C)."""
  n, t, h, w, c = q.shape
  qf = _split_heads(q.reshape(n * t, h * w, c), heads)
  kf, vf = (_split_heads(a.reshape(n * t, -1, c), heads) for a in (k, v))
  scores = jnp.einsum("bqdh,bkdh->bhqk", qf, kf) * jnp.asarray(scale, q.dtype)
  out = jnp.einsum("bhqk,bkdh->bqdh", _softmax(scores), vf)
  return out.reshape(n, t, h, w, c)


class Downsample(nn.Module):
  """A downsampling module over `kinds` (one for a standalone network; the stage's choices in the
  supernet), mapping (N, T, H, W, C_in) to (N, T, ceil(H / 2), ceil(W / 2), width).

  __call__(x, train, weights=None, in_mask=None, out_mask=None): weights (len(kinds),) mix the kinds'
  outputs (None: the one kind); in_mask / out_mask zero the inactive input / output channels (the
  supernet's widths). heads: the attention heads of 'local_global'.
  Parameters: 'down_dw', 'down_bn', 'down_proj' (the local path), 'res_proj' (the residual),
  'bn_local'; for 'local_global' also 'q_bn', 'kv_bn', 'kv' (C_in, 2, width), 'proj', 'bn_global'.
  """
  kinds: tuple
  width: int
  heads: int = 0
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, train: bool = False, weights=None, in_mask=None, out_mask=None):
    bad = [k for k in self.kinds if k not in DOWNSAMPLE_KINDS]
    if bad or not self.kinds:
      raise ValueError(f"Downsample kinds must be among {list(DOWNSAMPLE_KINDS)}, got {list(self.kinds)}")
    if self.dtype is not None:
      x = x.astype(self.dtype)
    weights = jnp.ones((1,), jnp.float32) if weights is None else weights
    active = dict(zip(self.kinds, weights))

    def dense(name, features):
      return lambda y: on_channels(nn.Dense(features, use_bias=False, dtype=self.dtype, name=name), y)

    def bn(name, mask, on=1.0):
      return MaskedBatchNorm(mask, on, train, name=name)

    local = DepthwiseConv3D((1, 3, 3), 2, self.dtype, name="down_dw")(x)
    local = dense("down_proj", self.width)(bn("down_bn", in_mask)(local))
    residual = dense("res_proj", self.width)(max_pool_3x3(x))
    out = 0.0
    if "local" in active:
      w = active["local"]
      out = out + w.astype(x.dtype) * bn("bn_local", out_mask, w)(local + residual)
    if "local_global" in active:
      w = active["local_global"]
      q = bn("q_bn", out_mask, w)(local)
      init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=0, out_axis=(1, 2))
      kernel = self.param("kv", init, (x.shape[-1], 2, self.width), jnp.float32).astype(x.dtype)
      kv = bn("kv_bn", in_mask, w)(x)
      kv = (kv.reshape(-1, x.shape[-1]) @ kernel.reshape(x.shape[-1], 2 * self.width)).reshape(
          x.shape[:-1] + (2, self.width))
      k, v = kv[..., 0, :], kv[..., 1, :]
      if out_mask is not None:
        k, v = k * out_mask.astype(x.dtype), v * out_mask.astype(x.dtype)
      attended = dense("proj", self.width)(frame_attention(q, k, v, self.heads,
                                                           head_scale(self.width, self.heads, out_mask)))
      out = out + w.astype(x.dtype) * bn("bn_global", out_mask, w)(attended + residual)
    return out
