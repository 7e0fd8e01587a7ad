"""Analytic parameters and FLOPs of any ArchSpec, per layer and total.

Convention (the X3D paper's, and fvcore's): one multiply-add = one FLOP; counted over convolutions and
fully-connected layers (SE included); BN, activations, pooling and residual adds are not counted.
Parameters include BN's affine gamma/beta (as `torch.nn.Module.parameters()` does) but not its
running statistics.
"""
from __future__ import annotations

import dataclasses

from autox3d_jax.models import registry
from autox3d_jax.models.builder import block_name
from autox3d_jax.models.registry import Cost, bn_cost, depthwise_cost
from autox3d_jax.models.spec import ArchSpec, BlockSpec, HeadSpec, StemSpec


def _ceil_div(a: int, b: int) -> int:
  return -(-a // b)


def pointwise_cost(c_in: int, c_out: int, positions: int) -> Cost:
  return Cost(c_in * c_out, c_in * c_out * positions)


def stem_cost(stem: StemSpec, in_channels: int, thw) -> tuple[Cost, tuple[int, int, int]]:
  t, h, w = thw
  out = (t, _ceil_div(h, stem.spatial_stride), _ceil_div(w, stem.spatial_stride))
  p = out[0] * out[1] * out[2]
  k = stem.spatial_kernel
  conv_xy = Cost(k * k * in_channels * stem.width, k * k * in_channels * stem.width * p)
  return conv_xy + depthwise_cost((stem.temporal_kernel, 1, 1), stem.width, p) + bn_cost(stem.width), out


def block_cost(block: BlockSpec, in_width: int, thw) -> tuple[Cost, tuple[int, int, int]]:
  """Cost of one block given its input width and (T, H, W); returns (cost, output (T, H, W))."""
  t, h, w = thw
  out = (t, _ceil_div(h, block.stride), _ceil_div(w, block.stride))
  p_in, p_out = t * h * w, out[0] * out[1] * out[2]
  cost = pointwise_cost(in_width, block.inner, p_in) + bn_cost(block.inner)
  cost = cost + registry.get(block.type).middle_cost(block, thw)
  cost = cost + pointwise_cost(block.inner, block.width, p_out) + bn_cost(block.width)
  if block.stride != 1 or in_width != block.width:
    cost = cost + pointwise_cost(in_width, block.width, p_out)
    if in_width != block.width:
      cost = cost + bn_cost(block.width)
  return cost, out


def head_cost(head: HeadSpec, in_width: int, thw) -> Cost:
  p = thw[0] * thw[1] * thw[2]
  return (pointwise_cost(in_width, head.conv5_width, p) + bn_cost(head.conv5_width)
          + pointwise_cost(head.conv5_width, head.head_width, 1)
          + Cost(head.head_width * head.num_classes + head.num_classes, head.head_width * head.num_classes))


@dataclasses.dataclass(frozen=True)
class CostReport:
  """Per-layer costs in network order ('stem', 's1_b1', ..., 'head') and their total."""
  layers: dict[str, Cost]
  input_thw: tuple[int, int, int]

  @property
  def total(self) -> Cost:
    total = Cost()
    for c in self.layers.values():
      total = total + c
    return total

  @property
  def params(self) -> int:
    return self.total.params

  @property
  def flops(self) -> int:
    return self.total.flops

  @property
  def gflops(self) -> float:
    return self.flops / 1e9


def arch_cost(spec: ArchSpec, num_frames: int | None = None, crop_size: int | None = None) -> CostReport:
  """Cost at the spec's own clip size, or at another (e.g. the test crop)."""
  crop = crop_size or spec.crop_size
  thw = (num_frames or spec.num_frames, crop, crop)
  layers: dict[str, Cost] = {}
  layers["stem"], cur = stem_cost(spec.stem, spec.in_channels, thw)
  width = spec.stem.width
  for i, stage in enumerate(spec.stages):
    for j, block in enumerate(stage.blocks):
      layers[block_name(i, j)], cur = block_cost(block, width, cur)
      width = block.width
  layers["head"] = head_cost(spec.head, width, cur)
  return CostReport(layers, thw)


def count_params(params) -> int:
  """Number of scalars in a params pytree (to check the analytic count against real modules)."""
  import jax
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
