"""Weight-sharing supernet over a SearchSpace, with static shapes under jit.

forward(x, arch) where `arch` maps every decision label to a probability vector over its choices
(one-hot for single-path samples, soft for Gumbel-softmax), plus optional integer channel shifts:
  * width / expansion -> channel masks over the largest width (FBNetV2 DMasking): the mask is the
    expectation of the candidates' prefix masks, so a soft sample costs what a one-hot one does;
  * kernels of one block family -> one depthwise conv with the mixed, zero-padded kernel
    (conv is linear in its weights); different families (x3d, r2plus1d, ...) -> gated sum;
  * SE ratio -> gated sum of the SE variants (SE is cheap: it acts on pooled features);
  * windows / heads of one attention or MLP family -> one shared projection, gated sum of the
    candidates' outputs (or only the sampled one, exclusive); see `models.attention`;
  * stage depth -> block j is gated by P(depth > j) against the identity;
  * downsampling module (UniNet's, `models.downsample`) -> gated sum of the kinds, which share the
    local path and the residual; its input and output channels masked like the blocks'.
With `exclusive=True` (strategies whose samples are one-hot and need no gradient w.r.t. the arch
weights: probabilistic/REINFORCE, SPOS) each block runs only the sampled family through
`lax.switch`, so a step costs about what the sampled child costs, and K groups run one after the
other (an unrolled `lax.scan`) so every group's switch index stays a scalar; the result is the same as the gated
sum for one-hot weights.
Every middle is the same function the standalone network uses (`models.blocks`), only given layers
that mix and mask. So a one-hot arch gives the derived network's logits (see `derive.py`).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from autox3d_jax.cpu.compile_once import run_once
from autox3d_jax.models.blocks import MIDDLES
from autox3d_jax import labels
from autox3d_jax.models.attention import TokenMixer
from autox3d_jax.models.builder import Head, Stem
from autox3d_jax.models.downsample import Downsample
from autox3d_jax.models.layers import MaskedBatchNorm, Pointwise, depthwise_init
from autox3d_jax.models.spec import BlockSpec, reduced_width, se_width
from autox3d_jax.ops.depthwise import depthwise_conv3d
from autox3d_jax.search.space import Op, SearchSpace, inner_width

Arch = Mapping[str, jax.Array]


# --------------------------------------------------------------------------------- static tables
def prefix_masks(sizes, max_size: int) -> np.ndarray:
  """(len(sizes), max_size) float32: row i keeps the first sizes[i] channels."""
  return (np.arange(max_size)[None, :] < np.asarray(sizes)[:, None]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class StageTables:
  """Per-stage constants: widths and the inner / SE masks for every (width, expansion[, ratio])."""
  max_width: int
  max_inner: int
  max_se: int
  width_masks: np.ndarray       # (W, max_width)
  inner_masks: np.ndarray       # (W, E, max_inner)
  se_masks: np.ndarray          # (W, E, R, max_se)


def stage_tables(space: SearchSpace, i: int) -> StageTables:
  c = space.config
  widths = c.stage_widths[i]
  inner = np.array([[inner_width(w, e) for e in c.expansions] for w in widths])
  se = np.array([[[se_width(int(n), r) for r in c.se_ratios] for n in row] for row in inner])
  max_w, max_inner, max_se = max(widths), int(inner.max()), max(int(se.max()), 1)
  return StageTables(max_w, max_inner, max_se, prefix_masks(widths, max_w),
                     prefix_masks(inner.ravel(), max_inner).reshape(inner.shape + (max_inner,)),
                     prefix_masks(se.ravel(), max_se).reshape(se.shape + (max_se,)))


def families(ops) -> dict[str, list[int]]:
  """Group op indices by their middle function: ops of one family share everything but kernels.
  The family is named after its first op's type ('x3d' holds x3d and x2d ops)."""
  out: dict[str, list[int]] = {}
  by_middle: dict = {}
  for k, op in enumerate(ops):
    middle = MIDDLES[op.type]
    name = by_middle.setdefault(middle, op.type)
    out.setdefault(name, []).append(k)
  return out


def roll_mask(mask: jax.Array, shift) -> jax.Array:
  return mask if shift is None else jnp.roll(mask, shift, axis=-1)


# ------------------------------------------------------------------------------------------ layers
def pad_kernel(kernel: jax.Array, box) -> jax.Array:
  """Zero-pad an odd kernel (kt, kh, kw, C) symmetrically to the odd bounding box `box`."""
  pads = [((b - k) // 2, (b - k) // 2) for k, b in zip(kernel.shape[:3], box)] + [(0, 0)]
  return jnp.pad(kernel, pads)


class MixedDepthwise(nn.Module):
  """One depthwise conv whose kernel is the probability-weighted sum of the candidates' kernels.
  Params: one kernel per candidate op, named by the op's label."""
  candidates: tuple            # ((label, kernel shape), ...)
  stride: int = 1
  init_name: str = "default"

  @nn.compact
  def __call__(self, x, weights: jax.Array):
    c = x.shape[-1]
    box = tuple(max(k[a] for _, k in self.candidates) for a in range(3))
    init = depthwise_init(self.init_name)
    mixed = 0.0
    for (label, shape), w in zip(self.candidates, weights):
      mixed = mixed + w * pad_kernel(self.param(label, init, tuple(shape) + (c,), jnp.float32), box)
    return depthwise_conv3d(x, mixed.astype(x.dtype), self.stride)


class SuperSqueezeExcite(nn.Module):
  """SE at the largest reduced width; each ratio masks the reduced units it uses.
  y_out = p(off) * y + sum_r p(r) * y * gate_r(y), computed in y's dtype."""
  ratio_probs: jax.Array       # (R,)
  ratio_masks: jax.Array       # (R, max_se): reduced-unit mask of each ratio (zero row for ratio 0)
  ratios: tuple
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, y):
    c = y.shape[-1]
    s = jnp.mean(y, axis=(1, 2, 3), keepdims=True)
    reduce = nn.Dense(self.ratio_masks.shape[-1], dtype=self.dtype, name="reduce")
    expand = nn.Dense(c, dtype=self.dtype, name="expand")
    probs, masks = self.ratio_probs.astype(y.dtype), self.ratio_masks.astype(y.dtype)
    out = 0.0
    for k, ratio in enumerate(self.ratios):
      if ratio <= 0:
        out = out + probs[k] * y
      else:
        gate = jax.nn.sigmoid(expand(nn.relu(reduce(s)) * masks[k]))
        out = out + probs[k] * y * gate.astype(y.dtype)
    return out


class SuperLayers:
  """The supernet's layer factory for one family's middle (mirrors `blocks.StandaloneLayers`)."""

  def __init__(self, ops: list[Op], op_weights, inner_mask, family_active, se, stride, train, dtype=None,
               exclusive=False):
    self.ops, self.op_weights, self.inner_mask = ops, op_weights, inner_mask
    self.family_active, self.se_args, self.train, self.dtype = family_active, se, train, dtype
    self.exclusive = exclusive

  def depthwise(self, name, kernel_fn, stride, init="default"):
    candidates = tuple((op.label, kernel_fn(op.kernel)) for op in self.ops)
    conv = MixedDepthwise(candidates, stride, init, name=name)
    return lambda y: conv(y, self.op_weights)

  def bn(self, name):
    return MaskedBatchNorm(self.inner_mask, self.family_active, self.train, name=name)

  def se(self, name):
    return SuperSqueezeExcite(*self.se_args, dtype=self.dtype, name=name)

  def dense(self, name, features):
    return nn.Dense(features, use_bias=False, dtype=self.dtype, name=name)

  def fragment(self, index, parts):
    """The factory for channels index::parts (TEA's fragments): the masks sliced the same way."""
    view = copy.copy(self)
    view.inner_mask = self.inner_mask[index::parts]
    return view

  def reduced(self, ratio):
    """The factory for the middle's reduced bottleneck (`models.layers.reduced_width` of the active
    inner width): its mask keeps that many leading channels, as the derived block has."""
    view = copy.copy(self)
    active = jnp.sum(self.inner_mask)
    size = reduced_width(self.inner_mask.shape[-1], ratio)
    view.inner_mask = (jnp.arange(size) < jnp.maximum(1.0, jnp.floor(active / ratio))).astype(jnp.float32)
    return view

  def mask(self, y):
    """y with the inactive channels zeroed."""
    return y * self.inner_mask.astype(y.dtype)

  def token_mixer(self, name, kind):
    """The family's attention / MLP candidates over one shared projection (multi-head sharing);
    exclusive: only the sampled candidate runs."""
    candidates = tuple((op.label, op.kernel, op.heads) for op in self.ops)
    mixer = TokenMixer(kind, candidates, switch=self.exclusive, dtype=self.dtype, name=name)
    return lambda y: mixer(y, self.op_weights, self.inner_mask)


class FamilyMiddle(nn.Module):
  """The middle of one block family, run with the family's mixed kernels and masks."""
  family: str
  ops: tuple
  stride: int
  train: bool
  dtype: jnp.dtype | None = None
  exclusive: bool = False

  @nn.compact
  def __call__(self, y, op_weights, inner_mask, family_active, se_args):
    layers = SuperLayers(list(self.ops), op_weights, inner_mask, family_active, se_args, self.stride,
                         self.train, self.dtype, self.exclusive)
    first = self.ops[0]
    # The middles read only type-independent fields of the spec (type, stride); kernels and heads
    # come from layers.
    template = BlockSpec(first.type, first.kernel, width=1, inner=1, stride=self.stride)
    return MIDDLES[first.type](layers, y, template)


class SuperBlock(nn.Module):
  """Block position (i, j) at its largest size; everything a sample decides arrives as weights."""
  space: SearchSpace
  stage: int
  block: int
  train: bool = False
  exclusive: bool = False
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, arch: Arch, prev_width_probs, shifts: Mapping | None = None):
    c, i, j = self.space.config, self.stage, self.block
    t = stage_tables(self.space, i)
    shifts = shifts or {}
    p_w, p_e = arch[labels.width(i)], arch[labels.block_decision(i, j, "expansion")]
    p_op, p_se = arch[labels.block_decision(i, j, "op")], arch[labels.block_decision(i, j, "se")]
    # The stage's first block strides and projects, unless a downsampling module precedes it.
    strided = j == 0 and not c.downsample
    stride = 2 if strided else 1

    width_mask = roll_mask(p_w @ t.width_masks, shifts.get(labels.width(i)))
    inner_mask = roll_mask(jnp.einsum("w,e,wec->c", p_w, p_e, t.inner_masks),
                           shifts.get(labels.block_decision(i, j, "expansion")))
    se_masks = jnp.einsum("w,e,werc->rc", p_w, p_e, t.se_masks)

    shortcut = x
    if strided:
      shortcut = Pointwise(t.max_width, stride, self.dtype, name="shortcut")(x)
      # pytorchvideo: projection BN only when the width changes; gate it by P(width changes).
      p_change = self._width_change_prob(prev_width_probs, p_w)
      normed = MaskedBatchNorm(width_mask, p_change, self.train, name="shortcut_bn")(shortcut)
      gate = p_change.astype(x.dtype)
      shortcut = gate * normed + (1 - gate) * shortcut * width_mask.astype(x.dtype)

    y = Pointwise(t.max_inner, dtype=self.dtype, name="conv_a")(x)
    y = nn.relu(MaskedBatchNorm(inner_mask, 1.0, self.train, name="bn_a")(y))
    groups = list(families(c.ops).items())

    def family_branch(family, members):
      def run(mdl, y, p_op, inner_mask, p_se, se_masks):
        w_f = p_op[jnp.array(members)]
        p_f = jnp.sum(w_f)
        middle = FamilyMiddle(family, tuple(c.ops[k] for k in members), stride, self.train, self.dtype,
                              self.exclusive, name=family)
        return p_f.astype(y.dtype) * middle(y, w_f / jnp.maximum(p_f, 1e-12), inner_mask, p_f,
                            (p_se, se_masks, c.se_ratios))
      return run

    branches = [family_branch(f, m) for f, m in groups]
    operands = (y, p_op, inner_mask, p_se, se_masks)
    if self.exclusive and len(groups) > 1 and not self.is_initializing():
      chosen = jnp.argmax(jnp.stack([jnp.sum(p_op[jnp.array(m)]) for _, m in groups]))
      out = nn.switch(chosen, branches, self, *operands)
    else:
      out = sum(branch(self, *operands) for branch in branches)
    y = Pointwise(t.max_width, dtype=self.dtype, name="conv_c")(out)
    y = MaskedBatchNorm(width_mask, 1.0, self.train, name="bn_c")(y)
    y = nn.relu(y + shortcut)
    if j >= c.min_depths[i]:
      depths = np.array(self.space.by_label[labels.depth(i)].choices)
      keep = jnp.sum(arch[labels.depth(i)] * (depths > j)).astype(x.dtype)
      y = keep * y + (1 - keep) * x
    return y

  def _width_change_prob(self, prev_width_probs, p_w):
    c, i = self.space.config, self.stage
    prev_widths = np.array([c.stem.width]) if i == 0 else np.array(c.stage_widths[i - 1])
    differs = (prev_widths[:, None] != np.array(c.stage_widths[i])[None, :]).astype(np.float32)
    return jnp.einsum("a,b,ab->", prev_width_probs, p_w, differs)


class Supernet(nn.Module):
  """The weight-sharing supernet of `space`: stem -> a super block at every block position -> head.

  __call__(x (N, T, H, W, C), arch, train, shifts) -> logits (N, classes). `arch` maps each decision
  label to its weights over the choices (one-hot for a sampled architecture, soft for a relaxed
  one); with a one-hot arch the logits equal those of `space.to_arch(point)` built standalone with
  the inherited weights (`derive.inherit_variables`). K architectures at once: `apply_groups`.
  shifts: fair-channel rolls per width / expansion decision, or None. exclusive: run only the
  sampled family in each block (one-hot archs only; see the module docstring).
  dtype: the compute dtype (None = float32; jnp.bfloat16 for mixed precision): activations and
  matmuls in it; parameters, BN statistics, the arch weights' arithmetic and the logits in float32.
  """
  space: SearchSpace
  exclusive: bool = False
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, arch: Arch, train: bool = False, shifts: Mapping | None = None):
    c = self.space.config
    if self.dtype is not None:
      x = x.astype(self.dtype)
    x = Stem(c.stem, self.dtype, name="stem")(x, train)
    prev = jnp.ones((1,), jnp.float32)
    rolls = shifts or {}
    for i in range(self.space.num_stages):
      if c.downsample:
        in_mask = None if i == 0 else roll_mask(prev @ stage_tables(self.space, i - 1).width_masks,
                                                rolls.get(labels.width(i - 1)))
        out_mask = roll_mask(arch[labels.width(i)] @ stage_tables(self.space, i).width_masks,
                             rolls.get(labels.width(i)))
        x = Downsample(c.downsample[i], max(c.stage_widths[i]), c.downsample_heads, self.dtype,
                       name=labels.downsample_module(i))(x, train, arch[labels.downsample(i)], in_mask, out_mask)
      for j in range(c.max_depths[i]):
        x = SuperBlock(self.space, i, j, train, self.exclusive, self.dtype, name=labels.block(i, j))(
            x, arch, prev, shifts)
      self.sow("intermediates", labels.stage_output(i), x)   # as VideoNet's (feature distillation)
      prev = arch[labels.width(i)]
    return Head(c.head, self.dtype, name="head")(x, train)


# ------------------------------------------------------------------------------------ arch helpers
def one_hot_arch(space: SearchSpace, point: Mapping[str, int]) -> dict[str, jax.Array]:
  return {d.label: jax.nn.one_hot(int(point[d.label]), d.size, dtype=jnp.float32)
          for d in space.decisions}


def uniform_arch(space: SearchSpace) -> dict[str, jax.Array]:
  return {d.label: jnp.full((d.size,), 1.0 / d.size, jnp.float32) for d in space.decisions}


def init_supernet(space: SearchSpace, rng: jax.Array, batch_size: int = 1) -> dict:
  """{'params', 'batch_stats'} of the supernet (abstract-shape dummy input, jitted init)."""
  model = Supernet(space)
  c = space.config
  x = jnp.zeros((batch_size, c.num_frames, c.crop_size, c.crop_size, c.in_channels), jnp.float32)
  return run_once(lambda r: model.init(r, x, uniform_arch(space), train=False), rng)


def apply_groups(model: Supernet, variables, x, archs, train: bool, rngs=None, shifts=None):
  """Run K architectures in one forward: x (N, ...) is split into K equal groups, archs/shifts have
  a leading K axis. Returns (logits (N, classes), new batch_stats averaged over the groups)."""
  logits, stats, _ = apply_groups_with_features(model, variables, x, archs, train, rngs, shifts, stages=())
  return logits, stats


def apply_groups_with_features(model: Supernet, variables, x, archs, train: bool, rngs=None, shifts=None,
                               stages: tuple[int, ...] = ()):
  """`apply_groups`, plus the outputs of `stages` (0-based stage indices): returns (logits, new
  batch_stats, {stage index: (K, N / K, T, H, W, C_max) feature map}), each group's map at the
  supernet's largest width (channels beyond the sampled width are zero)."""
  k = jax.tree_util.tree_leaves(archs)[0].shape[0]
  n = x.shape[0]
  if n % k:
    raise ValueError(f"batch of {n} clips cannot be split into {k} architecture groups")
  xg = x.reshape((k, n // k) + x.shape[1:])
  mutable = (["batch_stats"] if train else []) + (["intermediates"] if stages else [])

  def one(xi, arch, shift, rng):
    r = None if rngs is None else {"dropout": rng}
    if not mutable:
      return model.apply(variables, xi, arch, False, shift), {}
    out, updates = model.apply(variables, xi, arch, train, shift, rngs=r if train else None, mutable=mutable)
    sown = updates.get("intermediates", {})
    return out, {"batch_stats": updates.get("batch_stats", {}),
                 "features": {i: sown[labels.stage_output(i)][0] for i in stages}}

  rng_keys = jnp.zeros((k, 2), jnp.uint32) if rngs is None else jax.random.split(rngs["dropout"], k)
  if model.exclusive:
    # One group after the other: under vmap the switch index would be batched and every branch run.
    # Fully unrolled: a rolled loop adds several times the unrolled one's overhead over one group
    # of the whole batch. Unrolled compiles longer, but its faster steps repay that within a
    # demo-length search, so every longer search favours unrolling (benchmarks/RESULTS.md,
    # 'Supernet step vs its largest child' and 'Start-up of the search').
    _, (logits, updates) = jax.lax.scan(lambda c, a: (c, one(*a)), None, (xg, archs, shifts, rng_keys),
                                        unroll=k)
  else:
    logits, updates = jax.vmap(one, in_axes=(0, 0, 0 if shifts is not None else None, 0))(
        xg, archs, shifts, rng_keys)
  logits = logits.reshape((n,) + logits.shape[2:])
  stats = jax.tree_util.tree_map(lambda s: jnp.mean(s, 0), updates.get("batch_stats")) if train else None
  return logits, stats, updates.get("features", {})
