"""The one registry of block types: name -> flax module, analytic cost of its middle, validation.

Names are resolved here and nowhere else. A block's cost is split as skeleton (the two pointwise
convs, BNs and shortcut: same for every type, in `cost.analytic`) + middle (type-specific, here),
so the search space and the cost model stay in step with the modules.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from autox3d_jax.models import blocks
from autox3d_jax.models.spec import BlockSpec, SpecError, se_width


@dataclasses.dataclass(frozen=True)
class Cost:
  """Parameters and multiply-adds (one MAC = one FLOP, the X3D convention)."""
  params: int = 0
  flops: int = 0

  def __add__(self, other: "Cost") -> "Cost":
    return Cost(self.params + other.params, self.flops + other.flops)


def depthwise_cost(kernel, channels: int, out_positions: int) -> Cost:
  taps = kernel[0] * kernel[1] * kernel[2]
  return Cost(taps * channels, taps * channels * out_positions)


def bn_cost(channels: int) -> Cost:
  return Cost(2 * channels, 0)  # gamma, beta; running stats are state, not parameters.


def se_cost(channels: int, ratio: float) -> Cost:
  if ratio <= 0:
    return Cost()
  r = se_width(channels, ratio)
  return Cost(channels * r + r + r * channels + channels, 2 * channels * r)


@dataclasses.dataclass(frozen=True)
class BlockType:
  name: str
  middle: Callable             # middle(layers, y, spec): see models.blocks
  # (spec, (T, H, W) at the block's input) -> cost of the middle on `spec.inner` channels.
  middle_cost: Callable[[BlockSpec, tuple[int, int, int]], Cost]
  spatial_only: bool = False   # True: the kernel must be 1 x k x k (2D ops only).
  summary: str = ""

  @property
  def module(self):
    """Every type shares the skeleton module; the middle is looked up by `spec.type`."""
    return blocks.ResidualBlock

  def validate(self, spec: BlockSpec, where: str) -> None:
    if self.spatial_only and spec.kernel[0] != 1:
      raise SpecError(f"{where}: block type '{self.name}' is 2D-only, kernel t must be 1, got {spec.kernel}")


def _out_positions(spec: BlockSpec, thw) -> int:
  t, h, w = thw
  s = spec.stride
  return t * (-(-h // s)) * (-(-w // s))


def _x3d_middle(spec, thw):
  p = _out_positions(spec, thw)
  return (depthwise_cost(spec.kernel, spec.inner, p) + bn_cost(spec.inner)
          + se_cost(spec.inner, spec.se_ratio))


def _r2plus1d_middle(spec, thw):
  p = _out_positions(spec, thw)
  kt, kh, kw = spec.kernel
  return (depthwise_cost((1, kh, kw), spec.inner, p) + bn_cost(spec.inner)
          + depthwise_cost((kt, 1, 1), spec.inner, p) + bn_cost(spec.inner)
          + se_cost(spec.inner, spec.se_ratio))


def _stm_middle(spec, thw):
  p_in, p_out = thw[0] * thw[1] * thw[2], _out_positions(spec, thw)
  kt, kh, kw = spec.kernel
  return (depthwise_cost((kt, 1, 1), spec.inner, p_in) + depthwise_cost((1, kh, kw), spec.inner, p_out)
          + depthwise_cost((1, kh, kw), spec.inner, p_out) + bn_cost(spec.inner)
          + se_cost(spec.inner, spec.se_ratio))


def _tea_middle(spec, thw):
  excite = Cost(spec.inner * spec.inner, spec.inner * spec.inner * thw[0])
  return excite + _x3d_middle(spec, thw)


_REGISTRY: dict[str, BlockType] = {}


def register(block_type: BlockType) -> BlockType:
  if block_type.name in _REGISTRY:
    raise ValueError(f"block type '{block_type.name}' registered twice")
  _REGISTRY[block_type.name] = block_type
  return block_type


def get(name: str) -> BlockType:
  try:
    return _REGISTRY[name]
  except KeyError:
    raise SpecError(f"unknown block type '{name}'; registered: {sorted(_REGISTRY)}") from None


def names() -> list[str]:
  return sorted(_REGISTRY)


register(BlockType("x3d", blocks.x3d_middle, _x3d_middle,
                   summary="X3D bottleneck: depthwise kt x k x k, SE, Swish"))
register(BlockType("r2plus1d", blocks.r2plus1d_middle, _r2plus1d_middle,
                   summary="(2+1)D depthwise: 1 x k x k then kt x 1 x 1"))
register(BlockType("csn", blocks.csn_middle, _x3d_middle,
                   summary="ir-CSN: depthwise kt x k x k, ReLU"))
register(BlockType("x2d", blocks.x3d_middle, _x3d_middle, spatial_only=True,
                   summary="2D-only X3D block (1 x k x k)"))
register(BlockType("stm", blocks.stm_middle, _stm_middle,
                   summary="STM: channel-wise spatiotemporal + motion modules"))
register(BlockType("tea", blocks.tea_middle, _tea_middle,
                   summary="TEA: motion excitation + depthwise aggregation"))
