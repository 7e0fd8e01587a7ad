"""Small layers shared by every block: pointwise conv, depthwise conv, BN, SE, activations.

Pointwise (1x1x1) convs are `Dense` on the channel axis: the same math and parameter count as
a 1x1x1 Conv3d, but a plain matmul on every backend (XLA's CPU conv path is much slower).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from autox3d_jax.ops.depthwise import depthwise_conv3d, output_shape
from autox3d_jax.models.spec import se_width

# PyTorch BatchNorm3d defaults (momentum 0.1 <=> flax 0.9) so imported weights and stats agree.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def batch_norm(train: bool, name: str | None = None, dtype=None) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                      dtype=dtype, name=name)


class MaskedBatchNorm(nn.Module):
  """Flax BatchNorm's math (fast variance, same names) with a channel mask.

  Output channels outside the mask are zeroed (BN would turn zeros into `bias`), and running
  statistics are updated only for channels that are active *and* when the layer is `active`
  (a family the sample did not choose must not drag its statistics towards zero).
  """
  mask: jax.Array | None = None
  active: jax.Array | float = 1.0
  train: bool = False

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    if self.train:
      xf = x.astype(jnp.float32)
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(xf, axes)
      var = jnp.maximum(0.0, jnp.mean(jnp.square(xf), axes) - jnp.square(mean))
      if not self.is_initializing():
        update = jnp.asarray(self.active, jnp.float32) > 0
        if self.mask is not None:
          update = update & (self.mask > 0)
        ra_mean.value = jnp.where(update, BN_MOMENTUM * ra_mean.value + (1 - BN_MOMENTUM) * mean,
                                  ra_mean.value)
        ra_var.value = jnp.where(update, BN_MOMENTUM * ra_var.value + (1 - BN_MOMENTUM) * var,
                                 ra_var.value)
    else:
      mean, var = ra_mean.value, ra_var.value
    mul = scale * jax.lax.rsqrt(var + BN_EPSILON)
    y = (x - mean.astype(x.dtype)) * mul.astype(x.dtype) + bias.astype(x.dtype)
    return y if self.mask is None else y * self.mask.astype(x.dtype)


def swish(x: jax.Array) -> jax.Array:
  return x * jax.nn.sigmoid(x)


ACTIVATIONS = {"relu": nn.relu, "swish": swish}


def on_channels(dense: nn.Module, x: jax.Array) -> jax.Array:
  """Apply a Dense layer to (..., C) as one 2-D matmul (M, C) @ (C, F).

  Why: on a 5-D input the weight gradient contracts over four leading axes, and XLA's CPU backend
  then materialises a transposed copy of the output gradient before the matmul (a sizeable share
  of an X3D-S step). Flattened to 2-D, the same matmul needs no transposed copy (fwd+bwd about
  twice as fast on XLA's CPU backend; benchmarks/RESULTS.md, 'Pointwise convs as 2-D matmuls').
  Same parameters.
  """
  lead = x.shape[:-1]
  y = dense(x.reshape((-1, x.shape[-1])))
  return y.reshape(lead + (y.shape[-1],))


class Pointwise(nn.Module):
  """1x1x1 conv without bias (optionally spatially strided, as a projection shortcut)."""
  features: int
  stride: int = 1
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x):
    if self.stride > 1:
      x = x[:, :, ::self.stride, ::self.stride, :]
    return on_channels(nn.Dense(self.features, use_bias=False, dtype=self.dtype, name="conv"), x)


def spatial_conv_patches(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """A 1 x k x k conv (symmetric k//2 padding, spatial stride) as patches @ kernel.

  Why: for the stem's 3 input channels XLA's CPU conv is slow, above all its weight gradient; as
  patches and one matmul the stem's fwd+bwd is an order of magnitude faster (benchmarks/RESULTS.md,
  'the stem's spatial conv as patches @ kernel'). The patches are the k*k shifted, strided slices
  side by side on the channel axis, (k*k*C_in / stride^2) x the input's size, cheap for a
  3-channel input.
  """
  _, kh, kw, cin, features = kernel.shape
  n, t, ho, wo, _ = output_shape(x.shape, kernel.shape, stride)   # same padding rule as the depthwise op
  xp = jnp.pad(x, ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  cols = [xp[:, :, b:b + stride * (ho - 1) + 1:stride, c:c + stride * (wo - 1) + 1:stride, :]
          for b in range(kh) for c in range(kw)]
  patches = jnp.concatenate(cols, axis=-1).reshape((-1, kh * kw * cin))
  return (patches @ kernel.reshape((kh * kw * cin, features))).reshape((n, t, ho, wo, features))


class SpatialConv(nn.Module):
  """1 x k x k conv, no bias, spatial stride, symmetric k//2 padding (the stem's `conv_xy`).

  Same parameter ("kernel", (1, k, k, C_in, F)) and initialiser as `nn.Conv`. impl: 'auto' runs
  `spatial_conv_patches` on CPU and XLA's conv elsewhere; 'patches' / 'lax' force one.
  """
  features: int
  kernel_size: int = 3
  stride: int = 1
  dtype: jnp.dtype | None = None
  impl: str = "auto"

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (1, k, k, x.shape[-1], self.features),
                        jnp.float32)
    if self.dtype is not None:
      x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    impl = self.impl
    if impl == "auto":
      impl = "patches" if jax.default_backend() == "cpu" else "lax"
    if impl == "patches":
      return spatial_conv_patches(x, kernel, self.stride)
    if impl != "lax":
      raise ValueError(f"SpatialConv impl must be 'auto', 'patches' or 'lax', got {impl!r}")
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(1, self.stride, self.stride),
        padding=[(0, 0), (k // 2, k // 2), (k // 2, k // 2)],
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def depthwise_init(name: str = "default"):
  """Initialiser of a depthwise kernel (kt, kh, kw, C).
  default: PyTorch's for Conv3d(groups=C), kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in)).
  identity: a temporal kernel that passes frame t through (TEA's 'fixed' mode, [0, 1, 0]).
  shift: the first half of the channels takes frame t+1, the second half frame t-1 (TEA's 'shift'
  mode, [0, 0, 1] / [1, 0, 0]; TSM's shift as a trainable conv).
  stm_shift: the first quarter takes t-1, the last quarter t+1, the middle half t (STM's CSTM init).
  The conv is a correlation: kernel tap i reads frame t + i - kt // 2."""
  if name == "default":
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=(0, 1, 2), out_axis=3)
  if name not in ("identity", "shift", "stm_shift"):
    raise ValueError(f"depthwise init must be 'default', 'identity', 'shift' or 'stm_shift', got {name!r}")

  def init(key, shape, dtype=jnp.float32):
    kt, kh, kw, c = shape
    t, h, w = kt // 2, kh // 2, kw // 2
    # tap per channel: 0 = frame t, +1 = t+1, -1 = t-1
    if name == "identity" or kt == 1:
      taps = jnp.zeros((c,), jnp.int32)
    elif name == "shift":
      taps = jnp.where(jnp.arange(c) < c // 2, 1, -1)
    else:
      taps = jnp.where(jnp.arange(c) < c // 4, -1, jnp.where(jnp.arange(c) >= c - c // 4, 1, 0))
    return jnp.zeros(shape, dtype).at[t + taps, h, w, jnp.arange(c)].set(1.0)
  return init


class DepthwiseConv3D(nn.Module):
  """Channel-wise conv with kernel (kt, kh, kw, C); spatial stride; symmetric k//2 padding;
  `init_name` one of `depthwise_init`'s."""
  kernel_size: Sequence[int]
  stride: int = 1
  dtype: jnp.dtype | None = None
  init_name: str = "default"

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    kernel = self.param("kernel", depthwise_init(self.init_name), tuple(self.kernel_size) + (c,), jnp.float32)
    if self.dtype is not None:
      x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    return depthwise_conv3d(x, kernel, self.stride)


class SqueezeExcite(nn.Module):
  """pytorchvideo's SE: global pool -> FC (bias) -> ReLU -> FC (bias) -> sigmoid gate."""
  ratio: float
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2, 3))   # (N, C): the FCs on 2-D, which every exporter handles
    s = nn.Dense(se_width(c, self.ratio), dtype=self.dtype, name="reduce")(s)
    s = nn.relu(s)
    s = nn.Dense(c, dtype=self.dtype, name="expand")(s)
    return x * jax.nn.sigmoid(s)[:, None, None, None, :]
