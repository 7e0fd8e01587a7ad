"""The one registry of block types: the names a BlockSpec's `type` may take, and their constraints.

Flax-free and cost-free, so specs, configs, costs and reports can check a name without loading a
model. Each registered type has a middle in `models.blocks.MIDDLES` (its layers) and an analytic
cost in `cost.analytic.MIDDLE_COSTS`; tests/test_models.py checks the three tables name the same
types. A block is the shared skeleton (two pointwise convs, BNs, shortcut) around its type's middle.
"""
from __future__ import annotations

import dataclasses

from autox3d_jax.models.spec import ArchSpec, BlockSpec, SpecError


@dataclasses.dataclass(frozen=True)
class BlockType:
  """A block type's name and the rules its BlockSpec must follow.

  spatial_only: the kernel must be 1 x k x k (2D ops). attention: the type mixes tokens with
  `spec.heads` heads (>= 1, dividing `spec.inner`) and its `kernel` is a window or an axis span, of
  any size; every other type is a convolution, with odd kernels (symmetric SAME padding) and no
  heads.
  """
  name: str
  spatial_only: bool = False
  attention: bool = False
  summary: str = ""

  def validate(self, spec: BlockSpec, where: str) -> None:
    if self.spatial_only and spec.kernel[0] != 1:
      raise SpecError(f"{where}: block type '{self.name}' is 2D-only, kernel t must be 1, got {spec.kernel}")
    if not self.attention:
      for k, axis in zip(spec.kernel, "thw"):
        if k % 2 == 0:
          raise SpecError(f"{where}.kernel[{axis}] must be odd (symmetric SAME padding), got {k}")
      if spec.heads:
        raise SpecError(f"{where}.heads = {spec.heads}: block type '{self.name}' is a convolution and has no "
                        "heads; set heads to 0")
      return
    if spec.heads < 1:
      raise SpecError(f"{where}: block type '{self.name}' needs heads >= 1 (the op string's ':h<heads>'), "
                      f"got {spec.heads}")
    if spec.inner % spec.heads:
      raise SpecError(f"{where}: {spec.heads} heads do not divide the inner width {spec.inner} of block type "
                      f"'{self.name}'; choose heads that divide every inner width")


_REGISTRY: dict[str, BlockType] = {}

# TEA's multiple temporal aggregation splits a block's channels into this many fragments.
TEA_FRAGMENTS = 4
# STM's and TEA's motion modules work on a 16x channel reduction (both papers' r = 16).
MOTION_REDUCTION = 16


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


def op_label(type_name: str, kernel, heads: int = 0) -> str:
  """The stable label of a block type + kernel (+ heads): 'x3d_333', 'lsa_244_h2'. It names an op's
  own parameters in the supernet and in a standalone block (the attention types' tables)."""
  base = f"{type_name}_{''.join(map(str, kernel))}"
  return f"{base}_h{heads}" if heads else base


def names() -> list[str]:
  return sorted(_REGISTRY)


def check_block(block: BlockSpec, where: str = "block") -> BlockSpec:
  """`block`'s structural checks plus its type's: registered, and its kernel allowed."""
  block.validate(where)
  get(block.type).validate(block, where)
  return block


def check_arch(spec: ArchSpec) -> ArchSpec:
  """`spec.validate()` plus every block's type checks; returns `spec`."""
  spec.validate()
  for i, stage in enumerate(spec.stages):
    for j, block in enumerate(stage.blocks):
      get(block.type).validate(block, f"stages[{i}].blocks[{j}]")
  return spec


register(BlockType("x3d", summary="X3D bottleneck: depthwise kt x k x k, SE, Swish"))
register(BlockType("r2plus1d", summary="(2+1)D depthwise: 1 x k x k then kt x 1 x 1"))
register(BlockType("csn", summary="ir-CSN: depthwise kt x k x k, ReLU"))
register(BlockType("ip_csn", summary="ip-CSN: 1x1x1 conv + BN, then depthwise kt x k x k, ReLU"))
register(BlockType("x2d", spatial_only=True, summary="2D-only X3D block (1 x k x k)"))
register(BlockType("stm", summary="STM: channel-wise spatiotemporal + motion modules"))
register(BlockType("tea", summary="TEA: motion excitation + depthwise aggregation"))
register(BlockType("lsa", attention=True,
                   summary="local multi-head self-attention in t x h x w windows, relative position bias"))
register(BlockType("axial", attention=True,
                   summary="axial (global) multi-head self-attention along t, h, w; kernel: 1 = axis off, "
                           "else clipped relative positions"))
register(BlockType("mlp", attention=True, summary="per-head token-mixing MLP in t x h x w windows (Swin-MLP)"))
