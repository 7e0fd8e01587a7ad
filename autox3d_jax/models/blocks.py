"""Residual video blocks. Each is registered once in `models.registry` under its name.

All blocks share one skeleton (X3D's bottleneck), and differ in the spatiotemporal middle:
    x -> 1x1x1 (inner) -> BN -> ReLU -> [middle: depthwise convs, BN, SE, activation]
      -> 1x1x1 (width) -> BN -> (+ shortcut) -> ReLU
The shortcut is a strided 1x1x1 conv when the stride is 2 or the width changes, followed by BN only
when the width changes (pytorchvideo's `create_x3d_res_block`; SlowFast's X3D always adds the BN).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from autox3d_jax.models.layers import (DepthwiseConv3D, Pointwise, SqueezeExcite, batch_norm, swish)
from autox3d_jax.models.spec import BlockSpec


class ResidualBlock(nn.Module):
  """The shared skeleton; subclasses implement `middle` (inner -> inner channels)."""
  spec: BlockSpec
  dtype: jnp.dtype | None = None

  def middle(self, x, train: bool):
    raise NotImplementedError

  @nn.compact
  def __call__(self, x, train: bool = False):
    spec = self.spec
    in_width = x.shape[-1]
    shortcut = x
    if spec.stride != 1 or in_width != spec.width:
      shortcut = Pointwise(spec.width, spec.stride, self.dtype, name="shortcut")(x)
      if in_width != spec.width:  # pytorchvideo: the projection has BN only when the width changes.
        shortcut = batch_norm(train, "shortcut_bn", self.dtype)(shortcut)
    y = Pointwise(spec.inner, dtype=self.dtype, name="conv_a")(x)
    y = nn.relu(batch_norm(train, "bn_a", self.dtype)(y))
    y = self.middle(y, train)
    y = Pointwise(spec.width, dtype=self.dtype, name="conv_c")(y)
    y = batch_norm(train, "bn_c", self.dtype)(y)
    return nn.relu(y + shortcut)


class X3DBlock(ResidualBlock):
  """X3D: depthwise kt x k x k -> BN -> SE -> Swish (pytorchvideo `create_x3d_bottleneck_block`)."""

  def middle(self, y, train):
    y = DepthwiseConv3D(self.spec.kernel, self.spec.stride, self.dtype, name="conv_b")(y)
    y = batch_norm(train, "bn_b", self.dtype)(y)
    if self.spec.se_ratio > 0:
      y = SqueezeExcite(self.spec.se_ratio, self.dtype, name="se")(y)
    return swish(y)


class Factorized2Plus1DBlock(ResidualBlock):
  """R(2+1)D-style factorisation, depthwise: spatial 1 x k x k -> BN -> ReLU -> temporal kt x 1 x 1."""

  def middle(self, y, train):
    kt, kh, kw = self.spec.kernel
    y = DepthwiseConv3D((1, kh, kw), self.spec.stride, self.dtype, name="conv_b_spatial")(y)
    y = nn.relu(batch_norm(train, "bn_b_spatial", self.dtype)(y))
    y = DepthwiseConv3D((kt, 1, 1), 1, self.dtype, name="conv_b")(y)
    y = batch_norm(train, "bn_b", self.dtype)(y)
    if self.spec.se_ratio > 0:
      y = SqueezeExcite(self.spec.se_ratio, self.dtype, name="se")(y)
    return swish(y)


class ChannelSeparatedBlock(ResidualBlock):
  """ir-CSN: the bottleneck's 3D conv made depthwise, ReLU throughout (no Swish)."""

  def middle(self, y, train):
    y = DepthwiseConv3D(self.spec.kernel, self.spec.stride, self.dtype, name="conv_b")(y)
    y = batch_norm(train, "bn_b", self.dtype)(y)
    if self.spec.se_ratio > 0:
      y = SqueezeExcite(self.spec.se_ratio, self.dtype, name="se")(y)
    return nn.relu(y)


class Frame2DBlock(X3DBlock):
  """X3D block restricted to 2D ops (kernel 1 x k x k): the 'standard ops only' deployment target.

  Frames never interact inside the block; temporal modelling is left to the stem and the head.
  """


class STMBlock(ResidualBlock):
  """STM (Jiang et al. 2019): channel-wise spatiotemporal module + channel-wise motion module.

  CSTM: depthwise temporal kt x 1 x 1 then depthwise spatial 1 x k x k. CMM: the difference of
  consecutive frames' features after a depthwise 1 x k x k conv (a cheap motion cue). Their sum
  replaces the bottleneck's 3D conv.
  """

  def middle(self, y, train):
    kt, kh, kw = self.spec.kernel
    cstm = DepthwiseConv3D((kt, 1, 1), 1, self.dtype, name="cstm_t")(y)
    cstm = DepthwiseConv3D((1, kh, kw), self.spec.stride, self.dtype, name="conv_b")(cstm)
    moved = DepthwiseConv3D((1, kh, kw), self.spec.stride, self.dtype, name="cmm_s")(y)
    motion = jnp.concatenate([moved[:, 1:] - moved[:, :-1], jnp.zeros_like(moved[:, :1])], axis=1)
    y = batch_norm(train, "bn_b", self.dtype)(cstm + motion)
    if self.spec.se_ratio > 0:
      y = SqueezeExcite(self.spec.se_ratio, self.dtype, name="se")(y)
    return nn.relu(y)


class TEABlock(ResidualBlock):
  """TEA (Li et al. 2020), depthwise: motion excitation gates channels by feature-level temporal
  differences, then the X3D depthwise conv aggregates.

  ME: pooled difference of consecutive frames -> 1x1x1 -> sigmoid -> channel gate (x * (1 + gate)).
  """

  def middle(self, y, train):
    diff = jnp.concatenate([y[:, 1:] - y[:, :-1], jnp.zeros_like(y[:, :1])], axis=1)
    pooled = jnp.mean(diff, axis=(2, 3), keepdims=True)
    gate = jax.nn.sigmoid(nn.Dense(y.shape[-1], use_bias=False, dtype=self.dtype, name="me")(pooled))
    y = y * (1.0 + gate)
    y = DepthwiseConv3D(self.spec.kernel, self.spec.stride, self.dtype, name="conv_b")(y)
    y = batch_norm(train, "bn_b", self.dtype)(y)
    if self.spec.se_ratio > 0:
      y = SqueezeExcite(self.spec.se_ratio, self.dtype, name="se")(y)
    return swish(y)
