"""One builder: any ArchSpec -> a flax.linen module (params and batch_stats pytrees).

Layered as stem / stages (an optional downsampling module, `models.downsample`, then registered
blocks) / head, each a separate module so a caller can swap
one part. Parameter names ('stem', 's{i}_b{j}', 'head') are stable: the supernet uses the same names,
which is what lets weights be inherited from it.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from autox3d_jax import labels
from autox3d_jax.cpu.compile_once import run_once
from autox3d_jax.models import registry
from autox3d_jax.models.blocks import ResidualBlock
from autox3d_jax.models.downsample import Downsample
from autox3d_jax.models.layers import DepthwiseConv3D, SpatialConv, batch_norm, on_channels
from autox3d_jax.models.spec import ArchSpec, HeadSpec, SpecError, StemSpec


class Stem(nn.Module):
  """conv 1 x k x k (stride 1,s,s) 3 -> width, depthwise k_t x 1 x 1, BN, ReLU."""
  spec: StemSpec
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    k, s = self.spec.spatial_kernel, self.spec.spatial_stride
    x = SpatialConv(self.spec.width, k, s, self.dtype, name="conv_xy")(x)
    x = DepthwiseConv3D((self.spec.temporal_kernel, 1, 1), 1, self.dtype, name="conv_t")(x)
    return nn.relu(batch_norm(train, "bn", self.dtype)(x))


class Head(nn.Module):
  """X3D head: conv5 -> BN -> ReLU -> global average pool -> FC -> ReLU -> dropout -> classifier."""
  spec: HeadSpec
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = on_channels(nn.Dense(self.spec.conv5_width, use_bias=False, dtype=self.dtype, name="conv5"), x)
    x = nn.relu(batch_norm(train, "conv5_bn", self.dtype)(x))
    x = jnp.mean(x, axis=(1, 2, 3))
    x = nn.relu(nn.Dense(self.spec.head_width, use_bias=False, dtype=self.dtype, name="fc1")(x))
    x = nn.Dropout(self.spec.dropout, deterministic=not train)(x)
    # Logits in float32 whatever the compute dtype: the loss and softmax need the range.
    return nn.Dense(self.spec.num_classes, dtype=jnp.float32, name="classifier")(x)


class VideoNet(nn.Module):
  """The network an ArchSpec describes. Input (N, T, H, W, C) float; output logits (N, classes).
  Each stage's output is sown as 'intermediates' / `labels.stage_output(i)` (apply with
  mutable=['intermediates'] to read them; otherwise they cost nothing)."""
  spec: ArchSpec
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    if x.ndim != 5 or x.shape[-1] != self.spec.in_channels:
      raise SpecError(f"{self.spec.name} expects clips shaped (N, T, H, W, {self.spec.in_channels}), "
                      f"got {x.shape}")
    if self.dtype is not None:
      x = x.astype(self.dtype)
    x = Stem(self.spec.stem, self.dtype, name="stem")(x, train)
    for i, stage in enumerate(self.spec.stages):
      if stage.downsample:
        x = Downsample((stage.downsample,), stage.width, stage.downsample_heads, self.dtype,
                       name=labels.downsample_module(i))(x, train)
      for j, block in enumerate(stage.blocks):
        x = ResidualBlock(block, self.dtype, name=labels.block(i, j))(x, train)
      self.sow("intermediates", labels.stage_output(i), x)   # kept only when 'intermediates' is mutable
    return Head(self.spec.head, self.dtype, name="head")(x, train)


def build(spec: ArchSpec, dtype: jnp.dtype | None = None) -> VideoNet:
  """Validate `spec` and return its module (call `.init` / `.apply` as usual)."""
  return VideoNet(registry.check_arch(spec), dtype)


def variable_shapes(spec: ArchSpec) -> dict:
  """{'params', 'batch_stats'} of `build(spec)` as ShapeDtypeStructs (traced, not compiled or run)."""
  model = build(spec)
  x = jax.ShapeDtypeStruct((1,) + spec.input_shape, jnp.float32)
  return jax.eval_shape(lambda r, x: model.init(r, x, train=False), jax.random.PRNGKey(0), x)


def init_variables(spec: ArchSpec, rng: jax.Array, batch_size: int = 1, num_frames: int | None = None,
                   crop_size: int | None = None) -> dict:
  """Initialise {'params', 'batch_stats'} with an abstract-shape dummy clip (no big allocation)."""
  model = build(spec)
  shape = (batch_size, num_frames or spec.num_frames, crop_size or spec.crop_size,
           crop_size or spec.crop_size, spec.in_channels)
  return run_once(lambda r: model.init(r, jnp.zeros(shape, jnp.float32), train=False), rng)
