"""Analytic parameters and FLOPs of any ArchSpec, per layer and total (conventions: `cost.primitives`).

A block's cost is its skeleton (the two pointwise convs, BNs and shortcut: the same for every type)
plus its type's middle, `MIDDLE_COSTS[type](spec, (T, H, W) at the block's input)`, on
`spec.inner` channels. Every type of `models.registry` has an entry (tests/test_models.py).
"""
from __future__ import annotations

import dataclasses
import math

import jax

from autox3d_jax import labels
from autox3d_jax.cost.primitives import Cost, bn_cost, depthwise_cost, pointwise_cost, se_cost
from autox3d_jax.models import registry, windows
from autox3d_jax.models.spec import ArchSpec, BlockSpec, HeadSpec, StemSpec, reduced_width


def _ceil_div(a: int, b: int) -> int:
  return -(-a // b)


def _out_thw(spec: BlockSpec, thw) -> tuple[int, int, int]:
  """(T, H, W) after the block's spatial stride."""
  s = spec.stride
  return (thw[0], _ceil_div(thw[1], s), _ceil_div(thw[2], s))


def _out_positions(spec: BlockSpec, thw) -> int:
  return math.prod(_out_thw(spec, thw))


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
  """CSTM (temporal then spatial depthwise) and CMM (1x1x1 reduce to r = inner / 16, a channel-wise
  1 x k x k conv on r channels, 1x1x1 back)."""
  p_in, p_out = thw[0] * thw[1] * thw[2], _out_positions(spec, thw)
  kt, kh, kw = spec.kernel
  r = reduced_width(spec.inner, registry.MOTION_REDUCTION)
  return (depthwise_cost((kt, 1, 1), spec.inner, p_in) + depthwise_cost((1, kh, kw), spec.inner, p_out)
          + pointwise_cost(spec.inner, r, p_in) + depthwise_cost((1, kh, kw), r, p_out)
          + pointwise_cost(r, spec.inner, p_out) + bn_cost(spec.inner) + se_cost(spec.inner, spec.se_ratio))


def _ip_csn_middle(spec, thw):
  p_in = thw[0] * thw[1] * thw[2]
  return pointwise_cost(spec.inner, spec.inner, p_in) + bn_cost(spec.inner) + _x3d_middle(spec, thw)


def _tea_middle(spec, thw):
  """Motion excitation (1x1x1 reduce to r = inner / 16 and BN, a channel-wise 1 x 3 x 3 conv on r
  channels, per frame a dense r -> inner on the pooled differences and BN) and MTA: per interleaved
  fragment of w_f channels a temporal conv at the input's positions, and for fragments 0-2 a
  spatial depthwise conv and BN."""
  p_in, p_out = thw[0] * thw[1] * thw[2], _out_positions(spec, thw)
  kt, kh, kw = spec.kernel
  r = reduced_width(spec.inner, registry.MOTION_REDUCTION)
  cost = (pointwise_cost(spec.inner, r, p_in) + bn_cost(r) + depthwise_cost((1, 3, 3), r, p_in)
          + pointwise_cost(r, spec.inner, thw[0]) + bn_cost(spec.inner) + se_cost(spec.inner, spec.se_ratio))
  parts = registry.TEA_FRAGMENTS
  for f in range(parts):
    w = len(range(f, spec.inner, parts))
    cost = cost + depthwise_cost((kt, 1, 1), w, p_in)
    if f < parts - 1:
      cost = cost + depthwise_cost((1, kh, kw), w, p_out) + bn_cost(w)
  return cost


def _token_mixer_frame(spec, thw):
  """The attention / MLP middles' parts other than the mixer: positional depthwise 1x3x3, its BN,
  bn_b and SE (`blocks.token_mixer_middle`)."""
  p = _out_positions(spec, thw)
  return (depthwise_cost((1, 3, 3), spec.inner, p) + bn_cost(spec.inner) + bn_cost(spec.inner)
          + se_cost(spec.inner, spec.se_ratio))


def _lsa_middle(spec, thw):
  """Windowed MHSA: the q/k/v projection, then per window of W positions (padded windows counted, as
  they are computed) W x W x C multiply-adds for the scores and as many for the weighted sum; the
  softmax is not counted. Params: projection and the relative-position bias table."""
  out = _out_thw(spec, thw)
  p, c = _out_positions(spec, thw), spec.inner
  window, count = windows.window_grid(spec.kernel, out)
  size = math.prod(window)
  mixer = pointwise_cost(c, 3 * c, p) + Cost(windows.bias_table_size(spec.kernel) * spec.heads,
                                              2 * count * size * size * c)
  return _token_mixer_frame(spec, thw) + mixer


def _axial_middle(spec, thw):
  """Axial MHSA: per attended axis (span > 1) of length L, a q/k/v projection and 2 x P x L x C
  multiply-adds; params per axis: projection and a (2 (span // 2) + 1, heads) bias."""
  out = _out_thw(spec, thw)
  p, c = _out_positions(spec, thw), spec.inner
  cost = _token_mixer_frame(spec, thw)
  for length, span in zip(out, spec.kernel):
    if span > 1:
      cost = cost + pointwise_cost(c, 3 * c, p) + Cost(windows.axis_table_size(span) * spec.heads, 2 * p * length * c)
  return cost


def _mlp_middle(spec, thw):
  """Windowed token-mixing MLP: per window of W positions W x W x C multiply-adds; params: one
  (W_full x W_full) matrix per head."""
  out = _out_thw(spec, thw)
  c = spec.inner
  window, count = windows.window_grid(spec.kernel, out)
  size, full = math.prod(window), math.prod(spec.kernel)
  return _token_mixer_frame(spec, thw) + Cost(spec.heads * full * full, count * size * size * c)


# block type -> cost of its middle: (spec, (T, H, W) at the block's input) -> Cost
MIDDLE_COSTS = {"x3d": _x3d_middle, "r2plus1d": _r2plus1d_middle, "csn": _x3d_middle, "ip_csn": _ip_csn_middle,
                "x2d": _x3d_middle, "stm": _stm_middle, "tea": _tea_middle, "lsa": _lsa_middle,
                "axial": _axial_middle, "mlp": _mlp_middle}


def stem_cost(stem: StemSpec, in_channels: int, thw) -> tuple[Cost, tuple[int, int, int]]:
  t, h, w = thw
  out = (t, _ceil_div(h, stem.spatial_stride), _ceil_div(w, stem.spatial_stride))
  p = out[0] * out[1] * out[2]
  k = stem.spatial_kernel
  conv_xy = Cost(k * k * in_channels * stem.width, k * k * in_channels * stem.width * p)
  return conv_xy + depthwise_cost((stem.temporal_kernel, 1, 1), stem.width, p) + bn_cost(stem.width), out


def downsample_cost(kind: str, in_width: int, width: int, thw) -> tuple[Cost, tuple[int, int, int]]:
  """Cost of a downsampling module (`models.downsample`) of `kind` from in_width to width channels at
  input (T, H, W); returns (cost, output (T, H, W)). The local path's depthwise 1x3x3 and 1x1 and the
  residual's 1x1 at the output's positions (the max pool is not counted); 'local_global' adds the
  k/v projection at the input's positions, the per-frame scores and weighted sum (2 x T x h w x H W x
  width multiply-adds; the softmax is not counted) and the output projection."""
  t, h, w = thw
  out = (t, _ceil_div(h, 2), _ceil_div(w, 2))
  p_in, p_out = t * h * w, math.prod(out)
  cost = (depthwise_cost((1, 3, 3), in_width, p_out) + bn_cost(in_width) + pointwise_cost(in_width, width, p_out)
          + pointwise_cost(in_width, width, p_out) + bn_cost(width))
  if kind == "local_global":
    cost = (cost + bn_cost(width) + bn_cost(in_width) + pointwise_cost(in_width, 2 * width, p_in)
            + Cost(0, 2 * t * out[1] * out[2] * h * w * width) + pointwise_cost(width, width, p_out))
  elif kind != "local":
    raise ValueError(f"unknown downsampling module {kind!r}")
  return cost, out


def block_cost(block: BlockSpec, in_width: int, thw) -> tuple[Cost, tuple[int, int, int]]:
  """Cost of one block given its input width and (T, H, W); returns (cost, output (T, H, W))."""
  t, h, w = thw
  out = _out_thw(block, thw)
  p_in, p_out = t * h * w, out[0] * out[1] * out[2]
  cost = pointwise_cost(in_width, block.inner, p_in) + bn_cost(block.inner)
  registry.get(block.type)   # a known type, or SpecError naming the registered ones
  cost = cost + MIDDLE_COSTS[block.type](block, thw)
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
  """Per-layer costs in network order ('stem', ['s1_dsm',] 's1_b1', ..., 'head') and their total."""
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
    if stage.downsample:
      layers[labels.downsample_module(i)], cur = downsample_cost(stage.downsample, width, stage.width, cur)
      width = stage.width
    for j, block in enumerate(stage.blocks):
      layers[labels.block(i, j)], cur = block_cost(block, width, cur)
      width = block.width
  layers["head"] = head_cost(spec.head, width, cur)
  return CostReport(layers, thw)


@dataclasses.dataclass(frozen=True)
class TemporalExtent:
  """How much of a network looks across frames, over its residual blocks (the stem and head are
  fixed by the skeleton): `mean_kt`, the mean temporal kernel size k_t of the blocks, and
  `temporal_flops_share`, the share of the blocks' multiply-adds in blocks with k_t > 1."""
  mean_kt: float
  temporal_flops_share: float
  blocks: int


def temporal_extent(spec: ArchSpec) -> TemporalExtent:
  """The TemporalExtent of `spec` at its own clip: what a search on a motion task should raise and
  one on an appearance task lower (issue #24's task-adaptation measure)."""
  report = arch_cost(spec)
  blocks = [(labels.block(i, j), b) for i, stage in enumerate(spec.stages) for j, b in enumerate(stage.blocks)]
  flops = {name: report.layers[name].flops for name, _ in blocks}
  total = sum(flops.values())
  temporal = sum(flops[name] for name, b in blocks if b.kernel[0] > 1)
  return TemporalExtent(mean_kt=sum(b.kernel[0] for _, b in blocks) / len(blocks),
                        temporal_flops_share=temporal / total if total else 0.0, blocks=len(blocks))


def count_params(params) -> int:
  """Number of scalars in a params pytree (to check the analytic count against real modules)."""
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
