"""Residual video blocks: one skeleton, and per block type a *middle* registered in `registry`.

Skeleton (X3D's bottleneck), shared by every type:
    x -> 1x1x1 (inner) -> BN -> ReLU -> middle (inner -> inner) -> 1x1x1 (width) -> BN -> (+ shortcut) -> ReLU
The shortcut is a strided 1x1x1 conv when the stride is 2 or the width changes, followed by BN only
when the width changes (pytorchvideo's `create_x3d_res_block`; SlowFast's X3D always adds the BN).

A middle is a plain function `middle(layers, y, spec)` that builds its layers through `layers`
(depthwise conv, BN, SE, dense, token mixer). The standalone network passes `StandaloneLayers`; the supernet passes
layers that mix candidate kernels and mask channels. One definition of each block type serves both,
which is what makes "one-hot supernet == derived network" hold by construction. `MIDDLES` maps
each type of `models.registry` to its middle.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from autox3d_jax.models import registry
from autox3d_jax.models.attention import TokenMixer
from autox3d_jax.models.layers import (DepthwiseConv3D, Pointwise, SqueezeExcite, batch_norm, on_channels,
                                       swish)
from autox3d_jax.models.spec import BlockSpec, reduced_width

KernelFn = Callable[[tuple], tuple]


def spatial_3x3(k):
  """A fixed 1 x 3 x 3 kernel whatever the op's (the attention types' positional conv, TEA's K)."""
  return (1, 3, 3)


def full_kernel(k):
  return tuple(k)


def spatial_kernel(k):
  return (1, k[1], k[2])


def temporal_kernel(k):
  return (k[0], 1, 1)


class StandaloneLayers:
  """Layer factory for a concrete block (must be used inside the block's compact __call__)."""

  def __init__(self, spec: BlockSpec, train: bool, dtype=None):
    self.spec, self.train, self.dtype = spec, train, dtype

  def depthwise(self, name: str, kernel_fn: KernelFn, stride: int, init: str = "default"):
    return DepthwiseConv3D(kernel_fn(self.spec.kernel), stride, self.dtype, init_name=init, name=name)

  def bn(self, name: str):
    return batch_norm(self.train, name, self.dtype)

  def se(self, name: str):
    if self.spec.se_ratio <= 0:
      return lambda y: y
    return SqueezeExcite(self.spec.se_ratio, self.dtype, name=name)

  def dense(self, name: str, features: int):
    return nn.Dense(features, use_bias=False, dtype=self.dtype, name=name)

  def fragment(self, index: int, parts: int):
    """The factory for channels index::parts (TEA's fragments); a concrete block has no masks."""
    return self

  def reduced(self, ratio: int):
    """The factory for a `reduced_width(channels, ratio)`-channel bottleneck inside the middle (STM's
    and TEA's motion modules); a concrete block has no masks."""
    return self

  def mask(self, y):
    return y

  def token_mixer(self, name: str, kind: str):
    s = self.spec
    return TokenMixer(kind, ((registry.op_label(s.type, s.kernel, s.heads), s.kernel, s.heads),),
                      dtype=self.dtype, name=name)


# ------------------------------------------------------------------------------------------ middles
def x3d_middle(layers, y, spec: BlockSpec):
  """X3D: depthwise kt x k x k -> BN -> SE -> Swish (pytorchvideo `create_x3d_bottleneck_block`)."""
  y = layers.depthwise("conv_b", full_kernel, spec.stride)(y)
  y = layers.bn("bn_b")(y)
  return swish(layers.se("se")(y))


def r2plus1d_middle(layers, y, spec: BlockSpec):
  """R(2+1)D factorisation, depthwise: spatial 1 x k x k -> BN -> ReLU -> temporal kt x 1 x 1."""
  y = layers.depthwise("conv_b_spatial", spatial_kernel, spec.stride)(y)
  y = nn.relu(layers.bn("bn_b_spatial")(y))
  y = layers.depthwise("conv_b", temporal_kernel, 1)(y)
  y = layers.bn("bn_b")(y)
  return swish(layers.se("se")(y))


def csn_middle(layers, y, spec: BlockSpec):
  """ir-CSN: the bottleneck's 3D conv made depthwise, ReLU throughout (no Swish)."""
  y = layers.depthwise("conv_b", full_kernel, spec.stride)(y)
  y = layers.bn("bn_b")(y)
  return nn.relu(layers.se("se")(y))


def ip_csn_middle(layers, y, spec: BlockSpec):
  """ip-CSN (interaction-preserved): a 1x1x1 conv -> BN before the depthwise kt x k x k (VMZ's
  IPConv3DDepthwise, no ReLU between them), then ir-CSN's BN -> ReLU."""
  y = on_channels(layers.dense("conv_ip", y.shape[-1]), y)
  y = layers.bn("bn_ip")(y)
  return csn_middle(layers, y, spec)


def _frame_difference(y, later=None):
  """Feature-level motion cue: later[t+1] - y[t] (later defaults to y), zero for the last frame
  (keeps T)."""
  later = y if later is None else later
  return jnp.concatenate([later[:, 1:] - y[:, :-1], jnp.zeros_like(y[:, :1])], axis=1)


def stm_middle(layers, y, spec: BlockSpec):
  """STM (Jiang et al. 2019; the facts in shared/REFERENCES-round2.md, from paper summaries), with
  depthwise spatial convs:
    * CSTM: a channel-wise temporal kt x 1 x 1 conv (shift-initialised: a quarter of the channels
      reads t-1, a quarter t+1, the rest t, as the paper) then a depthwise 1 x k x k conv;
    * CMM: a 1x1x1 conv reduces the channels 16x, H_t = K * F_{t+1} - F_t with K a channel-wise
      1 x k x k conv on frame t+1 (the last step zero), and a 1x1x1 conv restores the channels;
    * the two summed (the paper's choice over concatenation) -> BN -> SE -> ReLU."""
  cstm = layers.depthwise("cstm_t", temporal_kernel, 1, init="stm_shift")(y)
  cstm = layers.depthwise("conv_b", spatial_kernel, spec.stride)(cstm)
  small = layers.reduced(registry.MOTION_REDUCTION)
  r = on_channels(small.dense("cmm_reduce", reduced_width(y.shape[-1], registry.MOTION_REDUCTION)), y)
  moved = small.depthwise("cmm_s", spatial_kernel, spec.stride)(r)
  motion = _frame_difference(r[:, :, ::spec.stride, ::spec.stride], later=moved)
  motion = on_channels(layers.dense("cmm_expand", y.shape[-1]), small.mask(motion))
  y = layers.bn("bn_b")(cstm + motion)
  return nn.relu(layers.se("se")(y))


def _fragments(y, parts: int):
  """Channel c of (..., C) goes to fragment c mod parts (interleaved, so a prefix of the channels keeps
  its split: the supernet's masked widths split as the derived network's do)."""
  return [y[..., f::parts] for f in range(parts)]


def _interleave(fragments, channels: int):
  """The inverse of `_fragments`: (..., C) with fragment f's k-th channel at k * parts + f."""
  size = fragments[0].shape[-1]
  padded = [jnp.pad(f, [(0, 0)] * (f.ndim - 1) + [(0, size - f.shape[-1])]) for f in fragments]
  return jnp.stack(padded, axis=-1).reshape(fragments[0].shape[:-1] + (size * len(fragments),))[..., :channels]


def _avg_pool_3x3(y, stride: int):
  """3 x 3 spatial average pool, padding 1 counted (PyTorch's AvgPool2d default), stride `stride`."""
  return nn.avg_pool(y, (1, 3, 3), strides=(1, stride, stride), padding=((0, 0), (1, 1), (1, 1)),
                     count_include_pad=True)


def tea_middle(layers, y, spec: BlockSpec):
  """TEA (Li et al. 2020; Phoenix1327/tea-action-recognition `Bottle2neckShift`, `MEModule`), with
  depthwise spatial convs:
    * motion excitation (the code's MEModule): a 1x1x1 conv reduces the channels 16x -> BN; a
      channel-wise 1 x 3 x 3 conv K on frame t+1 gives K * F_{t+1} - F_t (the last step zero);
      spatial average -> 1x1x1 conv back to the channels -> BN -> sigmoid - 0.5 = gate;
      y + y * gate;
    * multiple temporal aggregation: the channels split into 4 fragments (interleaved); fragments
      0-2 run a channel-wise temporal kt x 1 x 1 conv (identity-initialised, the code's 'fixed'),
      a depthwise 1 x k x k (strided), BN and ReLU, each fragment's input plus the previous
      fragment's output (Res2Net's hierarchy; not in a strided block, as in the code); the last
      fragment runs the temporal conv only (shift-initialised, the code's 'shift': half the
      channels read t+1, half t-1), then in a strided block a 3 x 3 average pool; the fragments
      are put back in place -> SE."""
  small = layers.reduced(registry.MOTION_REDUCTION)
  r = on_channels(small.dense("me_reduce", reduced_width(y.shape[-1], registry.MOTION_REDUCTION)), y)
  r = small.bn("me_bn1")(r)
  moved = small.depthwise("me_s", spatial_3x3, 1)(r)
  pooled = jnp.mean(_frame_difference(r, later=moved), axis=(2, 3), keepdims=True)
  gate = layers.dense("me_expand", y.shape[-1])(small.mask(pooled))
  gate = jax.nn.sigmoid(layers.bn("me_bn2")(gate)) - 0.5
  y = y + y * gate
  outs, previous = [], None
  for f, part in enumerate(_fragments(y, registry.TEA_FRAGMENTS)):
    view = layers.fragment(f, registry.TEA_FRAGMENTS)
    if previous is not None and spec.stride == 1:
      part = view.mask(part + previous[..., :part.shape[-1]])
    last = f == registry.TEA_FRAGMENTS - 1
    part = view.depthwise(f"mta_t{f}", temporal_kernel, 1, init="shift" if last else "identity")(part)
    if f == registry.TEA_FRAGMENTS - 1:
      part = _avg_pool_3x3(part, spec.stride) if spec.stride > 1 else part
    else:
      part = view.depthwise(f"mta_s{f}", spatial_kernel, spec.stride)(part)
      part = nn.relu(view.bn(f"mta_bn{f}")(part))
    outs.append(part)
    previous = part
  return nn.relu(layers.se("se")(_interleave(outs, y.shape[-1])))


def token_mixer_middle(layers, y, spec: BlockSpec):
  """The attention and MLP types (`models.attention`): a depthwise 1 x 3 x 3 positional conv (UniNet's
  and CPVT's conditional position encoding; it carries the block's stride) -> BN -> the token mixer
  of `spec.type` -> BN -> SE -> Swish. The skeleton's two pointwise convs around it are the
  transformer's MLP (UniNet's unified form: expansion and width mean the same for every op type)."""
  y = layers.depthwise("pos", spatial_3x3, spec.stride)(y)
  y = layers.bn("bn_pos")(y)
  y = layers.token_mixer("mixer", spec.type)(y)
  y = layers.bn("bn_b")(y)
  return swish(layers.se("se")(y))


# One function per token-mixer type, not one shared: the supernet groups ops into families by their
# middle function, and each type's mixer has its own parameters.
def lsa_middle(layers, y, spec):
  return token_mixer_middle(layers, y, spec)


def axial_middle(layers, y, spec):
  return token_mixer_middle(layers, y, spec)


def mlp_middle(layers, y, spec):
  return token_mixer_middle(layers, y, spec)


# block type (a name of `models.registry`) -> its middle
MIDDLES = {"x3d": x3d_middle, "r2plus1d": r2plus1d_middle, "csn": csn_middle, "ip_csn": ip_csn_middle,
           "x2d": x3d_middle, "stm": stm_middle, "tea": tea_middle, "lsa": lsa_middle, "axial": axial_middle,
           "mlp": mlp_middle}


# ---------------------------------------------------------------------------------------- skeleton
class ResidualBlock(nn.Module):
  """A concrete block: skeleton + the registered middle of `spec.type`."""
  spec: BlockSpec
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    spec = self.spec
    in_width = x.shape[-1]
    shortcut = x
    if spec.stride != 1 or in_width != spec.width:
      shortcut = Pointwise(spec.width, spec.stride, self.dtype, name="shortcut")(x)
      if in_width != spec.width:
        shortcut = batch_norm(train, "shortcut_bn", self.dtype)(shortcut)
    y = Pointwise(spec.inner, dtype=self.dtype, name="conv_a")(x)
    y = nn.relu(batch_norm(train, "bn_a", self.dtype)(y))
    y = MIDDLES[spec.type](StandaloneLayers(spec, train, self.dtype), y, spec)
    y = Pointwise(spec.width, dtype=self.dtype, name="conv_c")(y)
    y = batch_norm(train, "bn_c", self.dtype)(y)
    return nn.relu(y + shortcut)
