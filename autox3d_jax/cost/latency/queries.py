"""What a latency table holds: the distinct pieces (stem, blocks, heads) the networks of a space are made of.

A block's latency depends only on (type, kernel, in_width, width, inner, se_ratio, stride, input
T/H/W) -- plus batch size and dtype, which are fixed for a whole table -- so `block_key` of those is
the table's key, and all blocks 2.. of a stage share one set of keys.

`network_queries(space, spec)` walks one network: its blocks as (BlockSpec, in_width, thw) and its
head as (width, thw); a network's predicted latency sums exactly these look-ups.
`required_queries(space)` is the union of `network_queries` over networks that put every
(previous width, width, op, expansion, SE) combination at every block position, i.e. every look-up
the search's `CostTable` makes (tests/test_latency.py checks the two sets are equal). It goes
through `space.to_arch`, so the block rules (inner width, strides) are the space's own.

Pure functions of the space (duck-typed: `.config`, `.decisions`, `.num_stages`, `.to_arch`); no
flax, no timing.
"""
from __future__ import annotations

import itertools

from autox3d_jax import labels
from autox3d_jax.models import registry
from autox3d_jax.models.spec import ArchSpec, BlockSpec

# Table names of the pieces that are not blocks (`arch_pieces`, `measure_modules` items).
STEM_ITEM, HEAD_ITEM = "__stem__", "__head__|w"


def block_key(spec: BlockSpec, in_width: int, thw) -> str:
  """Self-describing key of one block measurement (batch size and dtype are table-wide, in meta)."""
  t, h, w = (int(v) for v in thw)
  return (f"{registry.op_label(spec.type, spec.kernel, spec.heads)}|in{int(in_width)}|w{spec.width}|i{spec.inner}"
          f"|se{float(spec.se_ratio):.6g}|s{spec.stride}|{t}x{h}x{w}")


def network_queries(space, spec: ArchSpec) -> tuple[list[tuple[BlockSpec, int, tuple]], tuple[int, tuple]]:
  """The table look-ups of one network of `space`: ([(block spec, in_width, (T, H, W)), ...] in
  network order, (final width, head input (T, H, W))). The stem is one fixed piece per space."""
  c = space.config
  t, h = c.num_frames, -(-c.crop_size // c.stem.spatial_stride)
  width = c.stem.width
  blocks = []
  if any(stage.downsample for stage in spec.stages):
    raise ValueError(f"{spec.name}: the latency table has no entries for downsampling modules")
  for block in spec.blocks:
    blocks.append((block, int(width), (int(t), int(h), int(h))))
    h, width = -(-h // block.stride), block.width
  return blocks, (int(width), (int(t), int(h), int(h)))


def _covering_points(space):
  """Points that, together, put every (previous stage width, width, op, expansion, SE) at every block
  position: per stage i and combination, stage i at its maximum depth with all its blocks on that
  combination, stage i-1 on that previous width, every other decision at index 0."""
  c = space.config
  by_kind = {"op": len(c.ops), "expansion": len(c.expansions), "se": len(c.se_ratios)}
  for i in range(space.num_stages):
    prev = range(len(c.stage_widths[i - 1])) if i > 0 else (None,)
    for a, b, *choice in itertools.product(prev, range(len(c.stage_widths[i])),
                                           *(range(n) for n in by_kind.values())):
      choice = dict(zip(by_kind, choice))
      point = {}
      for d in space.decisions:
        if d.block is not None:
          point[d.label] = choice[d.kind] if d.stage == i else 0
        elif d.label == labels.width(i):
          point[d.label] = b
        elif d.label == labels.depth(i):
          point[d.label] = d.size - 1
        elif a is not None and d.label == labels.width(i - 1):
          point[d.label] = a
        else:
          point[d.label] = 0
      yield point


def required_queries(space) -> tuple[dict, list, tuple]:
  """Every distinct piece the networks of `space` contain, i.e. every look-up `CostTable.build` makes.

  Returns (blocks: {block_key: (BlockSpec, in_width, thw)}, head_widths: sorted [w, ...], head_thw).
  """
  blocks: dict[str, tuple] = {}
  heads: dict[int, tuple] = {}
  for point in _covering_points(space):
    net_blocks, (width, thw) = network_queries(space, space.to_arch(point))
    for spec, in_width, block_thw in net_blocks:
      blocks.setdefault(block_key(spec, in_width, block_thw), (spec, in_width, block_thw))
    heads[width] = thw
  head_thw = next(iter(heads.values()))
  return blocks, sorted(heads), head_thw

