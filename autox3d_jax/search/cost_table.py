"""Cost of every block position for every combination of its decisions, and its expectation.

A block's cost depends only on its own decisions (op, expansion, SE), its stage's width, the previous
stage's width (first block only: the projection) and whether it is kept. Tabulating that product
(at most W_prev x W x E x O x S entries) makes the expected cost under independent categorical
decisions *exact* and differentiable: one einsum per block. The metric is pluggable: analytic FLOPs
or params, or a measured latency table (`cost.latency`) through the same `block_fn` hook.

A space that searches input axes (`search.inputs`) gets one such table per (frames, crop) setting
(the stride changes no cost); its expected cost is the mixture over the input decisions'
probabilities, still exact, and a point's cost is its own setting's table.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from autox3d_jax.cost import analytic
from autox3d_jax import labels
from autox3d_jax.models.spec import BlockSpec
from autox3d_jax.search.inputs import ClipInput
from autox3d_jax.search.space import SearchSpace, inner_width

# block_fn(block spec, input width, input (T, H, W)) -> cost; stem_fn() -> cost; head_fn(width) -> cost
BlockFn = Callable[[BlockSpec, int, tuple], float]


def analytic_fns(space: SearchSpace, metric: str):
  if metric not in ("flops", "params"):
    raise ValueError(f"analytic cost metric must be 'flops' or 'params', got '{metric}'")
  c = space.config
  thw0 = (c.num_frames, c.crop_size, c.crop_size)

  def stem_fn():
    return getattr(analytic.stem_cost(c.stem, c.in_channels, thw0)[0], metric)

  def block_fn(spec, in_width, thw):
    return getattr(analytic.block_cost(spec, in_width, thw)[0], metric)

  def head_fn(width, thw):
    return getattr(analytic.head_cost(c.head, width, thw), metric)

  return stem_fn, block_fn, head_fn


@dataclasses.dataclass
class CostTable:
  """stem: scalar; blocks[label]: array (Wprev, W, E, O, S) (Wprev = 1 but for a stage's strided first
  block); head: array (W_last,), at the space's reference clip. variants: {(frames, crop): CostTable
  at that clip} when the space searches input axes, else empty. downsample[label]: array
  (Wprev, W, D) of each stage's downsampling-module decision, when the space has them."""
  space: SearchSpace
  stem: float
  blocks: dict
  head: np.ndarray
  metric: str
  variants: dict = dataclasses.field(default_factory=dict)
  downsample: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def build(cls, space: SearchSpace, metric: str = "flops", fns=None) -> "CostTable":
    if space.config.input_axes:
      return cls._build_with_inputs(space, metric, fns)
    stem_fn, block_fn, head_fn = fns or analytic_fns(space, metric)
    c = space.config
    if c.downsample and fns is not None:
      raise ValueError("a measured cost table has no entries for downsampling modules (config.space.downsample): "
                       "search on the analytic 'flops' or 'params'")
    t, h = c.num_frames, -(-c.crop_size // c.stem.spatial_stride)
    blocks, cache, downsample = {}, {}, {}
    prev_widths = (c.stem.width,)
    for i, widths in enumerate(c.stage_widths):
      in_thw = (t, h, h)
      h = -(-h // 2)
      if c.downsample:
        downsample[labels.downsample(i)] = np.array(
            [[[getattr(analytic.downsample_cost(kind, a, b, in_thw)[0], metric) for kind in c.downsample[i]]
              for b in widths] for a in prev_widths], np.float64)
      for j in range(c.max_depths[i]):
        strided = j == 0 and not c.downsample
        thw = in_thw if strided else (t, h, h)
        key = (i, strided)
        if key not in cache:
          cache[key] = cls._block_table(c, widths, prev_widths if strided else None, thw, 2 if strided else 1,
                                        block_fn)
        blocks[labels.block(i, j)] = cache[key]
      prev_widths = widths
    head = np.array([head_fn(w, (t, h, h)) for w in c.stage_widths[-1]], np.float64)
    return cls(space, float(stem_fn()), blocks, head, metric, downsample=downsample)

  @classmethod
  def _build_with_inputs(cls, space: SearchSpace, metric: str, fns) -> "CostTable":
    if fns is not None:
      raise ValueError("a cost table over input axes is built from the analytic costs at each clip; a measured "
                       "table holds one clip (config.search.cost_metric = 'latency' cannot search input axes)")
    ref = space.config.reference_input
    axes = space.config.input_axes
    variants = {(f, c): cls.build(space.at_input(ClipInput(f, ref.stride, c)), metric)
                for f in axes.get("frames", (ref.frames,)) for c in axes.get("crop", (ref.crop,))}
    own = variants[(ref.frames, ref.crop)]
    return cls(space, own.stem, own.blocks, own.head, metric, variants, own.downsample)

  def _input_weight(self, probs, kind: str, value: int):
    label = labels.input_decision(kind)
    if label not in probs:
      return 1.0
    return probs[label][self.space.by_label[label].choices.index(value)]

  @classmethod
  def from_latency(cls, space: SearchSpace, table, subtract_overhead: bool = True) -> "CostTable":
    """The table in milliseconds from a measured `cost.latency.LatencyTable` (duck-typed: its
    `cost_fns` hooks, so this module loads no model code): `.expected(probs)` is the exact,
    differentiable E[latency]. Raises KeyError (saying 'rebuild') for a table of another space."""
    return cls.build(space, "latency", fns=table.cost_fns(subtract_overhead))

  @staticmethod
  def _block_table(c, widths, prev_widths, thw, stride, block_fn) -> np.ndarray:
    n_prev = len(prev_widths) if prev_widths is not None else 1
    table = np.zeros((n_prev, len(widths), len(c.expansions), len(c.ops), len(c.se_ratios)))
    for a in range(n_prev):
      for b, w in enumerate(widths):
        w_in = prev_widths[a] if prev_widths is not None else w
        for e, expansion in enumerate(c.expansions):
          for o, op in enumerate(c.ops):
            for s, ratio in enumerate(c.se_ratios):
              spec = op.block(w, inner_width(w, expansion), ratio, stride)
              table[a, b, e, o, s] = block_fn(spec, w_in, thw)
    return table

  # ------------------------------------------------------------------------------- evaluation
  def keep_prob(self, probs: Mapping[str, jax.Array], i: int, j: int):
    c = self.space.config
    if j < c.min_depths[i]:
      return 1.0
    depths = np.array(self.space.by_label[labels.depth(i)].choices)
    return jnp.sum(probs[labels.depth(i)] * (depths > j))

  def expected(self, probs: Mapping[str, jax.Array]) -> jax.Array:
    """Exact E[cost] under independent categorical decisions with these probabilities."""
    if self.variants:
      return sum(self._input_weight(probs, "frames", f) * self._input_weight(probs, "crop", c) * t.expected(probs)
                 for (f, c), t in self.variants.items())
    c = self.space.config
    total = jnp.asarray(self.stem, jnp.float32)
    for i in range(self.space.num_stages):
      p_w = probs[labels.width(i)]
      p_prev = probs[labels.width(i - 1)] if i > 0 else jnp.ones((1,), jnp.float32)
      if self.downsample:
        label = labels.downsample(i)
        total = total + jnp.einsum("a,b,d,abd->", p_prev, p_w, probs[label],
                                   jnp.asarray(self.downsample[label], jnp.float32))
      for j in range(c.max_depths[i]):
        prefix = labels.block(i, j)
        table = jnp.asarray(self.blocks[prefix], jnp.float32)
        if j == 0 and not self.downsample:
          cost = jnp.einsum("a,b,e,o,s,abeos->", p_prev, p_w, probs[labels.block_decision(i, j, "expansion")],
                            probs[labels.block_decision(i, j, "op")], probs[labels.block_decision(i, j, "se")], table)
        else:
          cost = jnp.einsum("b,e,o,s,beos->", p_w, probs[labels.block_decision(i, j, "expansion")], probs[labels.block_decision(i, j, "op")],
                            probs[labels.block_decision(i, j, "se")], table[0])
        total = total + self.keep_prob(probs, i, j) * cost
    return total + jnp.dot(probs[labels.width(self.space.num_stages - 1)], jnp.asarray(self.head, jnp.float32))

  def of_point(self, point: Mapping[str, int]) -> float:
    """Cost of one architecture (a point), from the table: `expected` at the point's one-hot
    probabilities bit for bit (float32, accumulated in network order as `expected` does), computed
    by indexing (microseconds; evolution and ranking studies call it thousands of times)."""
    if self.variants:
      clip = self.space.input_of(point)
      return self.variants[(clip.frames, clip.crop)].of_point(point)
    c, space = self.space.config, self.space
    f32 = np.float32
    total = f32(self.stem)
    prev = 0
    for i in range(space.num_stages):
      w = int(point[labels.width(i)])
      depth_label = labels.depth(i)
      depth = space.by_label[depth_label].choices[int(point[depth_label])] if depth_label in space.by_label \
          else c.max_depths[i]
      if self.downsample:
        label = labels.downsample(i)
        total = f32(total + f32(self.downsample[label][prev, w, int(point[label])]))
      for j in range(max(depth, c.min_depths[i])):
        idx = tuple(int(point[labels.block_decision(i, j, k)]) for k in ("expansion", "op", "se"))
        table = self.blocks[labels.block(i, j)]
        total = f32(total + f32(table[(prev, w) + idx] if table.shape[0] > 1 else table[(0, w) + idx]))
      prev = w
    return float(f32(total + f32(self.head[int(point[labels.width(space.num_stages - 1)])])))

  def extreme(self, largest: bool = False) -> tuple[float, dict[str, int]]:
    """The exact cheapest (or costliest) architecture of the space and its cost.

    Why not the all-index-0 / largest point: with a measured latency table, or ops of different
    cost (x2d is cheaper than x3d), neither is the extreme. The cost is additive over blocks once
    the stage widths are fixed, so a dynamic programme over the stage widths is exact: per
    (previous width, width) each block takes its best (expansion, op, SE) and each stage its best
    depth. Decisions that do not matter (blocks beyond the depth) are left at index 0. Over input
    axes: the extreme over the (frames, crop) settings, at the reference stride."""
    if self.variants:
      ref = self.space.config.reference_input
      found = [(t.extreme(largest), key) for key, t in self.variants.items()]
      (cost, point), (frames, crop) = (max if largest else min)(found, key=lambda x: x[0][0])
      return cost, {**point, **self.space.input_point(ClipInput(frames, ref.stride, crop))}
    c = self.space.config
    best = np.argmax if largest else np.argmin
    pick = np.max if largest else np.min
    score = {}         # stage i -> (W_prev, W) cost and the choices behind it
    for i in range(self.space.num_stages):
      depths = np.array(self.space.by_label[labels.depth(i)].choices)
      per_block, choices = [], []
      n_prev = 1 if i == 0 else len(c.stage_widths[i - 1])        # previous-width choices (A)
      for j in range(c.max_depths[i]):
        table = self.blocks[labels.block(i, j)]                   # (A, W, E, O, S); unstrided blocks A = 1
        if table.shape[0] != n_prev:
          table = np.broadcast_to(table[:1], (n_prev,) + table.shape[1:])
        flat = table.reshape(table.shape[:2] + (-1,))
        per_block.append(pick(flat, axis=-1))
        choices.append(best(flat, axis=-1))
      cum = np.cumsum(np.stack(per_block), axis=0)               # cum[j]: blocks 0..j kept
      by_depth = cum[depths - 1]                                 # (D, A, W)
      depth_index = best(by_depth, axis=0)
      stage_cost = pick(by_depth, axis=0)
      module = None
      if self.downsample:
        table_d = self.downsample[labels.downsample(i)]           # (A, W, kinds)
        stage_cost, module = stage_cost + pick(table_d, axis=-1), best(table_d, axis=-1)
      score[i] = (stage_cost, depth_index, choices, table.shape[2:], module)
    # Chain over stages: value[b] = best cost of the stem and stages 0..i ending at width index b.
    value, back = np.array([self.stem]), []
    for i in range(self.space.num_stages):
      stage_cost = score[i][0]                                   # (A, W)
      total = value[:, None] + stage_cost
      back.append(best(total, axis=0))
      value = pick(total, axis=0)
    value = value + self.head
    b = int(best(value))
    cost = float(value[b])
    point = {d.label: 0 for d in self.space.decisions}
    for i in reversed(range(self.space.num_stages)):
      a = int(back[i][b])
      _, depth_index, choices, (n_e, n_o, n_s), module = score[i]
      d = int(depth_index[a, b])
      point[labels.width(i)], point[labels.depth(i)] = b, d
      if module is not None:
        point[labels.downsample(i)] = int(module[a, b])
      depth = self.space.by_label[labels.depth(i)].choices[d]
      for j in range(depth):
        e, o, s_ = np.unravel_index(int(choices[j][a, b]), (n_e, n_o, n_s))
        for kind, index in (("expansion", e), ("op", o), ("se", s_)):
          point[labels.block_decision(i, j, kind)] = int(index)
      b = a
    return cost, point
