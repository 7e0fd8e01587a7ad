"""Cost primitives: parameters and multiply-adds of the layers every network is made of.

Convention (the X3D paper's, and fvcore's): one multiply-add = one FLOP; convolutions and
fully-connected layers (SE included) are counted; BN, activations, pooling and residual adds are not.
Parameters include BN's affine gamma/beta (as `torch.nn.Module.parameters()` does) but not its
running statistics.
"""
from __future__ import annotations

import dataclasses

from autox3d_jax.models.spec import se_width


@dataclasses.dataclass(frozen=True)
class Cost:
  """Parameters and multiply-adds (one MAC = one FLOP, the X3D convention)."""
  params: int = 0
  flops: int = 0

  def __add__(self, other: "Cost") -> "Cost":
    return Cost(self.params + other.params, self.flops + other.flops)


def depthwise_cost(kernel, channels: int, out_positions: int) -> Cost:
  """A channel-wise conv with `kernel` (t, h, w) on `channels`, evaluated at `out_positions`."""
  taps = kernel[0] * kernel[1] * kernel[2]
  return Cost(taps * channels, taps * channels * out_positions)


def pointwise_cost(c_in: int, c_out: int, positions: int) -> Cost:
  """A bias-free 1x1x1 conv (or FC layer when positions = 1)."""
  return Cost(c_in * c_out, c_in * c_out * positions)


def bn_cost(channels: int) -> Cost:
  return Cost(2 * channels, 0)  # gamma, beta; running stats are state, not parameters.


def se_cost(channels: int, ratio: float) -> Cost:
  """pytorchvideo's squeeze-excitation on `channels` (two FCs with bias), 0 when ratio is 0."""
  if ratio <= 0:
    return Cost()
  r = se_width(channels, ratio)
  return Cost(channels * r + r + r * channels + channels, 2 * channels * r)
