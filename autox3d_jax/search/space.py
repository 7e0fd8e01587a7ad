"""The fine-grained search space (AutoX3D), declared as data.

Skeleton: X3D's stem, four stages (first block of each strided by 2), and head, all fixed.
Decisions, each with a stable label used in logs, checkpoints, cost tables and plots:
  s{i}_width            output width of stage i (every block of a stage shares it: residuals)
  s{i}_depth            number of blocks kept in stage i (blocks beyond it are identities)
  s{i}_b{j}_op          block type + kernel (t, h, w) of block j
  s{i}_b{j}_expansion   inner width = int(expansion * stage width)
  s{i}_b{j}_se          squeeze-excitation ratio (0 = off)
  input_frames / input_stride / input_crop   the clip's input axes, when the space searches them
                        (`search.inputs`; one input setting per step)
A point (label -> choice index) maps to an ArchSpec; the X3D family are points of the default space.
Decisions are hierarchical: block j's decisions do not matter when j >= s{i}_depth.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from autox3d_jax.cost.analytic import MIDDLE_COSTS
from autox3d_jax.models import registry, zoo
from autox3d_jax import labels
from autox3d_jax.config import base_config
from autox3d_jax.models.spec import (DOWNSAMPLE_KINDS, ArchSpec, BlockSpec, HeadSpec, SpecError, StageSpec,
                                     StemSpec)
from autox3d_jax.search.inputs import ClipInput, superclip


@dataclasses.dataclass(frozen=True)
class Op:
  """A candidate for a block's type/kernel decision: a block type, its kernel (a window or axis span
  for the attention types) and, for those, its heads (0 otherwise).
  Config string: 'x3d:3x3x3', or 'lsa:2x4x4:h2' with heads."""
  type: str
  kernel: tuple[int, int, int]
  heads: int = 0

  def __post_init__(self):
    object.__setattr__(self, "kernel", tuple(int(k) for k in self.kernel))
    object.__setattr__(self, "heads", int(self.heads))

  @property
  def label(self) -> str:
    return registry.op_label(self.type, self.kernel, self.heads)

  @property
  def string(self) -> str:
    """The config string `ops_from_strings` parses back to this op."""
    base = f"{self.type}:{'x'.join(map(str, self.kernel))}"
    return f"{base}:h{self.heads}" if self.heads else base

  def block(self, width: int, inner: int, se_ratio: float = 0.0, stride: int = 1) -> BlockSpec:
    """This op as a block of the given widths."""
    return BlockSpec(type=self.type, kernel=self.kernel, width=width, inner=inner, se_ratio=se_ratio,
                     stride=stride, heads=self.heads)

  @classmethod
  def of(cls, block: BlockSpec) -> "Op":
    return cls(block.type, block.kernel, block.heads)


@dataclasses.dataclass(frozen=True)
class Decision:
  label: str
  kind: str           # 'width' | 'depth' | 'downsample' | 'op' | 'expansion' | 'se' | 'input'
  choices: tuple
  stage: int
  block: int | None = None

  @property
  def size(self) -> int:
    return len(self.choices)


@dataclasses.dataclass(frozen=True)
class SpaceConfig:
  """Everything that defines a space; plain data (configs build it, JSON can hold it).

  No field has a default here: the defaults live in `config.base_config().space`, and
  `space_config(**overrides)` builds a SpaceConfig from them."""
  num_frames: int
  crop_size: int
  stem: StemSpec
  stage_widths: tuple[tuple[int, ...], ...]
  min_depths: tuple[int, ...]
  max_depths: tuple[int, ...]
  expansions: tuple[float, ...]
  se_ratios: tuple[float, ...]
  ops: tuple[Op, ...]
  head: HeadSpec
  # The reference clip's sampling stride, and the searched input axes: () = fixed at the reference
  # (num_frames, sampling_stride, crop_size), else ascending choices that include it.
  sampling_stride: int
  input_frames: tuple[int, ...]
  input_strides: tuple[int, ...]
  input_crops: tuple[int, ...]
  # UniNet's downsampling modules: per stage, the kinds (DOWNSAMPLE_KINDS) its decision chooses from;
  # () = none (X3D: each stage's first block strides). downsample_heads: 'local_global''s heads.
  downsample: tuple[tuple[str, ...], ...]
  downsample_heads: int
  in_channels: int = 3

  def __post_init__(self):
    object.__setattr__(self, "stage_widths", tuple(tuple(int(w) for w in ws) for ws in self.stage_widths))
    object.__setattr__(self, "min_depths", tuple(self.min_depths))
    object.__setattr__(self, "max_depths", tuple(self.max_depths))
    object.__setattr__(self, "expansions", tuple(float(e) for e in self.expansions))
    object.__setattr__(self, "se_ratios", tuple(float(r) for r in self.se_ratios))
    object.__setattr__(self, "ops", tuple(o if isinstance(o, Op) else Op(*o) for o in self.ops))
    for name in ("input_frames", "input_strides", "input_crops"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    object.__setattr__(self, "downsample", tuple(tuple(kinds) for kinds in self.downsample))

  @property
  def input_axes(self) -> dict[str, tuple[int, ...]]:
    """{kind: choices} of the searched input axes (kinds of labels.INPUT_KINDS), in that order."""
    axes = {"frames": self.input_frames, "stride": self.input_strides, "crop": self.input_crops}
    return {k: v for k, v in axes.items() if v}

  @property
  def reference_input(self) -> ClipInput:
    return ClipInput(self.num_frames, self.sampling_stride, self.crop_size)

  def validate(self) -> "SpaceConfig":
    for name in ("num_frames", "crop_size", "in_channels"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SpecError(f"{name} must be a positive integer, got {value!r}")
    n = len(self.stage_widths)
    if not (len(self.min_depths) == len(self.max_depths) == n) or n == 0:
      raise SpecError(f"stage_widths, min_depths and max_depths need one entry per stage, got "
                      f"{n}, {len(self.min_depths)}, {len(self.max_depths)}")
    for i, (lo, hi) in enumerate(zip(self.min_depths, self.max_depths)):
      if not 1 <= lo <= hi:
        raise SpecError(f"stage {i}: need 1 <= min_depth <= max_depth, got {lo}, {hi}")
    for i, ws in enumerate(self.stage_widths):
      if not ws or len(set(ws)) != len(ws) or min(ws) <= 0:
        raise SpecError(f"stage_widths[{i}] must be distinct positive widths, got {ws}")
    for name in ("expansions", "se_ratios", "ops"):
      values = getattr(self, name)
      if not values or len(set(values)) != len(values):
        raise SpecError(f"{name} must be a non-empty list of distinct values, got {values}")
    if min(self.expansions) <= 0:
      raise SpecError(f"expansions must be positive, got {self.expansions}")
    if not all(0.0 <= r < 1.0 for r in self.se_ratios):
      raise SpecError(f"se_ratios must be in [0, 1), got {self.se_ratios}")
    for op in self.ops:
      # Validates type, kernel and heads through the same path an ArchSpec uses.
      registry.check_block(op.block(width=8, inner=8 * max(op.heads, 1)), f"ops[{op.label}]")
    self._validate_token_mixers()
    self._validate_downsample()
    self.stem.validate()
    self.head.validate()
    self._validate_inputs()
    return self

  def stage_maps(self, frames: int | None = None, crop: int | None = None) -> list[tuple[int, int, int]]:
    """(T, H, W) of each stage's output for a clip of `frames` x `crop`^2 (default: the reference
    clip's): the stem's stride, then stride 2 per stage."""
    side = math.ceil((crop or self.crop_size) / self.stem.spatial_stride)
    maps = []
    for _ in self.stage_widths:
      side = math.ceil(side / 2)
      maps.append((frames or self.num_frames, side, side))
    return maps

  def _validate_token_mixers(self) -> None:
    """Attention / MLP ops: heads divide every inner width of the space, and a window fits the largest
    feature map a block sees (stage 0's, at the largest clip), where it is clipped the least."""
    mixers = [op for op in self.ops if registry.get(op.type).attention]
    if not mixers:
      return
    inners = sorted({inner_width(w, e) for ws in self.stage_widths for w in ws for e in self.expansions})
    largest = self.stage_maps(max(self.input_frames or (self.num_frames,)),
                              max(self.input_crops or (self.crop_size,)))[0]
    for op in mixers:
      bad = [n for n in inners if n % op.heads]
      if bad:
        raise SpecError(f"ops[{op.label}]: {op.heads} heads do not divide the inner widths {bad} of this space "
                        f"(inner = int(expansion * width) over stage_widths x expansions); choose heads that "
                        f"divide all of {inners}, or other widths / expansions")
      if op.type != "axial" and any(k > m for k, m in zip(op.kernel, largest)):
        raise SpecError(f"ops[{op.label}]: window {'x'.join(map(str, op.kernel))} is larger than the largest "
                        f"feature map of the space ({'x'.join(map(str, largest))}, stage 0), so it would be "
                        f"clipped at every block; use a window of at most that size")

  def _validate_downsample(self) -> None:
    """downsample: one non-empty tuple of distinct known kinds per stage (or none at all); heads
    positive and dividing the stage's widths where 'local_global' is a choice, 0 where it is not."""
    heads = self.downsample_heads
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 0:
      raise SpecError(f"downsample_heads must be a non-negative integer, got {heads!r}")
    if not self.downsample:
      if heads:
        raise SpecError(f"downsample_heads = {heads} is set but downsample is empty: set downsample, or 0 heads")
      return
    if len(self.downsample) != len(self.stage_widths):
      raise SpecError(f"downsample needs one tuple of kinds per stage ({len(self.stage_widths)}), got "
                      f"{len(self.downsample)}: {self.downsample}")
    for i, kinds in enumerate(self.downsample):
      if not kinds or len(set(kinds)) != len(kinds) or any(k not in DOWNSAMPLE_KINDS for k in kinds):
        raise SpecError(f"downsample[{i}] must be distinct kinds among {list(DOWNSAMPLE_KINDS)}, got {kinds}")
    with_attention = [i for i, kinds in enumerate(self.downsample) if "local_global" in kinds]
    if not with_attention and heads:
      raise SpecError(f"downsample_heads = {heads} is set but no stage can choose 'local_global': use 0")
    for i in with_attention:
      bad = [w for w in self.stage_widths[i] if heads <= 0 or w % heads]
      if bad:
        raise SpecError(f"downsample[{i}] can choose 'local_global', whose downsample_heads ({heads}) must be "
                        f"positive and divide the stage's widths; it does not divide {bad} of {self.stage_widths[i]}")

  def _validate_inputs(self) -> None:
    reference = {"frames": self.num_frames, "stride": self.sampling_stride, "crop": self.crop_size}
    if not isinstance(self.sampling_stride, int) or self.sampling_stride <= 0:
      raise SpecError(f"sampling_stride must be a positive integer, got {self.sampling_stride!r}")
    for kind, choices in self.input_axes.items():
      name = f"input_{kind}s" if kind != "frames" else "input_frames"
      if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in choices) or \
          list(choices) != sorted(set(choices)):
        raise SpecError(f"{name} must be ascending distinct positive integers, got {choices}")
      if reference[kind] not in choices:
        raise SpecError(f"{name} = {choices} must include the reference clip's {kind} ({reference[kind]}): the "
                        f"X3D-like baseline and the cost target are taken there")
    strides = self.input_strides
    if strides and any(s % strides[0] for s in strides):
      raise SpecError(f"input_strides = {strides}: every stride must be a multiple of the smallest ({strides[0]}), "
                      f"so that each clip is cut from one decoded clip")


def inner_width(width: int, expansion: float) -> int:
  """X3D's rule: int(expansion * width) (pytorchvideo `int(bottleneck_factor * dim_out)`)."""
  return max(1, int(expansion * width))


class SearchSpace:
  """The decisions of a SpaceConfig and the point <-> ArchSpec mapping.

  Takes a SpaceConfig (validated here). Holds `decisions` (each a label, kind, choices, stage,
  block) in a fixed order and `by_label`. A *point* is {label: choice index} for every decision;
  `to_arch(point)` gives its ArchSpec, `point_of(spec)` the inverse, `canonical(point)` zeroes the
  decisions of blocks beyond a stage's depth (so equal networks have equal points), `size()`
  counts distinct networks, `largest_point()` is the costliest choice everywhere (`smallest_point()` the cheapest).
  """

  def __init__(self, config: SpaceConfig):
    self.config = config.validate()
    decisions = []
    for i, widths in enumerate(config.stage_widths):
      decisions.append(Decision(labels.width(i), "width", widths, i))
      decisions.append(Decision(labels.depth(i), "depth",
                                tuple(range(config.min_depths[i], config.max_depths[i] + 1)), i))
      if config.downsample:
        decisions.append(Decision(labels.downsample(i), "downsample", config.downsample[i], i))
      for j in range(config.max_depths[i]):
        decisions.append(Decision(labels.block_decision(i, j, "op"), "op", config.ops, i, j))
        decisions.append(Decision(labels.block_decision(i, j, "expansion"), "expansion", config.expansions, i, j))
        decisions.append(Decision(labels.block_decision(i, j, "se"), "se", config.se_ratios, i, j))
    for kind, choices in config.input_axes.items():
      decisions.append(Decision(labels.input_decision(kind), "input", choices, -1))
    self.decisions: tuple[Decision, ...] = tuple(decisions)
    self.by_label: dict[str, Decision] = {d.label: d for d in decisions}

  @property
  def labels(self) -> list[str]:
    return [d.label for d in self.decisions]

  @property
  def num_stages(self) -> int:
    return len(self.config.stage_widths)

  # ---------------------------------------------------------------------------------- inputs
  @property
  def input_labels(self) -> list[str]:
    """Labels of the searched input axes ([] when the space searches none)."""
    return [d.label for d in self.decisions if d.kind == "input"]

  def input_of(self, point: Mapping[str, int]) -> ClipInput:
    """The clip setting of `point`: its input decisions' choices, the reference clip's elsewhere."""
    ref = self.config.reference_input
    value = {kind: self.by_label[labels.input_decision(kind)].choices[int(point[labels.input_decision(kind)])]
             for kind in self.config.input_axes}
    return ClipInput(value.get("frames", ref.frames), value.get("stride", ref.stride), value.get("crop", ref.crop))

  def input_point(self, clip: ClipInput) -> dict[str, int]:
    """The input decisions' indices of `clip` ({} without input axes); SpecError when a value is not a choice."""
    out = {}
    for kind, value in (("frames", clip.frames), ("stride", clip.stride), ("crop", clip.crop)):
      label = labels.input_decision(kind)
      if label in self.by_label:
        choices = self.by_label[label].choices
        if value not in choices:
          raise SpecError(f"input {kind} {value} is not among the space's choices {choices}")
        out[label] = choices.index(value)
    return out

  def superclip(self) -> ClipInput:
    """The clip the input pipeline decodes: every input setting of the space can be cut from it
    (`search.inputs.select_clip`); the reference clip when no input axis is searched."""
    axes, ref = self.config.input_axes, self.config.reference_input
    return superclip(axes.get("frames", (ref.frames,)), axes.get("stride", (ref.stride,)), axes.get("crop", (ref.crop,)))

  def input_settings(self) -> list[dict[str, int]]:
    """Every combination of the input decisions' indices, as partial points ([{}] without input axes)."""
    out = [{}]
    for label in self.input_labels:
      out = [{**p, label: k} for p in out for k in range(self.by_label[label].size)]
    return out

  def at_input(self, clip: ClipInput) -> "SearchSpace":
    """This space with the input fixed at `clip` (no input decisions): its networks, costs and cost
    table at that clip."""
    return SearchSpace(dataclasses.replace(self.config, num_frames=clip.frames, crop_size=clip.crop,
                                           sampling_stride=clip.stride, input_frames=(), input_strides=(),
                                           input_crops=()))

  def block_decisions(self, stage: int, block: int) -> dict[str, Decision]:
    return {kind: self.by_label[labels.block_decision(stage, block, kind)] for kind in ("op", "expansion", "se")}

  # ------------------------------------------------------------------------------------ size
  def size(self) -> int:
    """Number of distinct architectures (skipped blocks' decisions do not create new ones)."""
    c = self.config
    per_block = len(c.ops) * len(c.expansions) * len(c.se_ratios)
    total = 1
    for i in range(self.num_stages):
      depths = sum(per_block ** d for d in range(c.min_depths[i], c.max_depths[i] + 1))
      total *= len(c.stage_widths[i]) * depths
    for choices in c.input_axes.values():
      total *= len(choices)
    for kinds in c.downsample:
      total *= len(kinds)
    return total

  def log10_size(self) -> float:
    return math.log10(self.size())

  # ---------------------------------------------------------------------------------- points
  def check_point(self, point: Mapping[str, int]) -> None:
    missing = [l for l in self.labels if l not in point]
    if missing:
      raise SpecError(f"point is missing decisions {missing[:5]}{'...' if len(missing) > 5 else ''}")
    for label, index in point.items():
      d = self.by_label.get(label)
      if d is None:
        raise SpecError(f"point has unknown decision '{label}'")
      if not 0 <= int(index) < d.size:
        raise SpecError(f"point['{label}'] = {index} is out of range [0, {d.size})")

  def active(self, point: Mapping[str, int], label: str) -> bool:
    """Whether a decision matters for this point (hierarchy: blocks beyond the stage depth don't)."""
    d = self.by_label[label]
    if d.block is None:
      return True
    depth = self.by_label[labels.depth(d.stage)].choices[int(point[labels.depth(d.stage)])]
    return d.block < depth

  def to_arch(self, point: Mapping[str, int], name: str = "searched") -> ArchSpec:
    self.check_point(point)
    c = self.config
    stages = []
    for i in range(self.num_stages):
      width = c.stage_widths[i][int(point[labels.width(i)])]
      depth = self.by_label[labels.depth(i)].choices[int(point[labels.depth(i)])]
      blocks = []
      for j in range(depth):
        op = c.ops[int(point[labels.block_decision(i, j, "op")])]
        expansion = c.expansions[int(point[labels.block_decision(i, j, "expansion")])]
        blocks.append(op.block(width, inner_width(width, expansion),
                               c.se_ratios[int(point[labels.block_decision(i, j, "se")])],
                               stride=2 if j == 0 and not c.downsample else 1))
      kind = c.downsample[i][int(point[labels.downsample(i)])] if c.downsample else ""
      stages.append(StageSpec(tuple(blocks), kind, c.downsample_heads if kind == "local_global" else 0))
    clip = self.input_of(point)
    return ArchSpec(name=name, num_frames=clip.frames, crop_size=clip.crop, stem=c.stem,
                    stages=tuple(stages), head=c.head, in_channels=c.in_channels).validate()

  def point_of(self, spec: ArchSpec, sampling_stride: int | None = None) -> dict[str, int]:
    """Inverse of `to_arch`; raises SpecError naming what the space cannot represent. An ArchSpec
    records no sampling stride: `sampling_stride` (default the reference clip's) gives it."""
    c = self.config
    clip = ClipInput(spec.num_frames, sampling_stride or c.sampling_stride, spec.crop_size)
    fixed = {"frames": (clip.frames, c.num_frames), "stride": (clip.stride, c.sampling_stride),
             "crop": (clip.crop, c.crop_size)}
    for kind, (value, ref) in fixed.items():
      if kind not in c.input_axes and value != ref:
        what = (f"stride {clip.stride} differs from the space's {c.sampling_stride}" if kind == "stride" else
                f"input {spec.num_frames}x{spec.crop_size} differs from the space's {c.num_frames}x{c.crop_size}")
        raise SpecError(f"{spec.name}: {what}")
    try:
      inputs = self.input_point(clip)
    except SpecError as e:
      raise SpecError(f"{spec.name}: {e}") from None
    if spec.stem != c.stem or spec.head != c.head:
      raise SpecError(f"{spec.name}: stem/head differ from the space's skeleton")
    if len(spec.stages) != self.num_stages:
      raise SpecError(f"{spec.name}: {len(spec.stages)} stages, the space has {self.num_stages}")

    def index(label, value):
      choices = self.by_label[label].choices
      for k, choice in enumerate(choices):
        if choice == value or (isinstance(value, float) and math.isclose(choice, value)):
          return k
      raise SpecError(f"{spec.name}: {label} = {value!r} is not among the choices {choices}")

    point = {}
    for i, stage in enumerate(spec.stages):
      point[labels.width(i)] = index(labels.width(i), stage.width)
      point[labels.depth(i)] = index(labels.depth(i), len(stage.blocks))
      if c.downsample:
        point[labels.downsample(i)] = index(labels.downsample(i), stage.downsample)
        if stage.downsample_heads != (c.downsample_heads if stage.downsample == "local_global" else 0):
          raise SpecError(f"{spec.name}: stage {labels.stage(i)}'s downsampling module has "
                          f"{stage.downsample_heads} heads, the space's {c.downsample_heads}")
      elif stage.downsample:
        raise SpecError(f"{spec.name}: stage {labels.stage(i)} has a downsampling module ({stage.downsample!r}); "
                        "the space has none")
      for j in range(c.max_depths[i]):
        prefix = labels.block(i, j)
        if j >= len(stage.blocks):
          point.update({labels.block_decision(i, j, "op"): 0, labels.block_decision(i, j, "expansion"): 0, labels.block_decision(i, j, "se"): 0})
          continue
        b = stage.blocks[j]
        if b.width != stage.width or b.stride != (2 if j == 0 and not c.downsample else 1):
          raise SpecError(f"{spec.name}: block {prefix} width/stride is outside the skeleton")
        point[labels.block_decision(i, j, "op")] = index(labels.block_decision(i, j, "op"), Op.of(b))
        expansion = [e for e in c.expansions if inner_width(b.width, e) == b.inner]
        if not expansion:
          raise SpecError(f"{spec.name}: {prefix} inner width {b.inner} is no expansion of {b.width} "
                          f"among {c.expansions}")
        point[labels.block_decision(i, j, "expansion")] = c.expansions.index(expansion[0])
        point[labels.block_decision(i, j, "se")] = index(labels.block_decision(i, j, "se"), b.se_ratio)
    point.update(inputs)
    return point

  def canonical(self, point: Mapping[str, int]) -> dict[str, int]:
    """Inactive decisions set to 0, so equal architectures have equal points."""
    return {l: (int(v) if self.active(point, l) else 0) for l, v in point.items()}

  def stage_maps(self) -> list[tuple[int, int, int]]:
    """(T, H, W) of each stage's output at the reference clip (`SpaceConfig.stage_maps`)."""
    return self.config.stage_maps()

  def _op_costs(self, stage: int) -> list[int]:
    """Multiply-adds of each op's middle in `stage` at its largest width and expansion, at the stage's
    map: the order of the ops' costs there (a conv's grows with its taps, attention's with its
    window)."""
    c = self.config
    width = max(c.stage_widths[stage])
    inner = max(inner_width(width, e) for e in c.expansions)
    thw = self.stage_maps()[stage]
    return [MIDDLE_COSTS[o.type](o.block(width, inner), thw).flops for o in c.ops]

  def _op_choices(self, ops) -> list[int]:
    """Indices into config.ops of `ops` (None = every op); ValueError naming an op not in the space."""
    if ops is None:
      return list(range(len(self.config.ops)))
    index = {op: k for k, op in enumerate(self.config.ops)}
    missing = [op.string for op in ops if op not in index]
    if missing or not ops:
      raise ValueError(f"ops {missing or '()'} are not among the space's ops {[o.string for o in self.config.ops]}")
    return sorted({index[op] for op in ops})

  def _extreme_point(self, ops, pick) -> dict[str, int]:
    allowed = self._op_choices(ops)
    costs = [np.asarray(self._op_costs(i))[allowed] for i in range(self.num_stages)]

    def choice(d):
      if d.kind == "op":
        return allowed[int(pick(costs[d.stage]))]
      if d.kind == "downsample":   # 'local_global' is 'local' plus attention
        return int(pick([DOWNSAMPLE_KINDS.index(k) for k in d.choices]))
      return d.size - 1 if pick is np.argmax else 0
    return {d.label: choice(d) for d in self.decisions}

  def largest_point(self, ops=None) -> dict[str, int]:
    """Every decision at its costliest choice (ops: the one whose middle costs most in that stage;
    for convolutions the most kernel taps). `ops` (a sequence of `Op`s of the space; None = all)
    restricts the op decisions to those ops: the sandwich rule's largest child in a space whose
    costliest op trains slowly (`config.search.sandwich_ops`)."""
    return self._extreme_point(ops, np.argmax)

  def smallest_point(self, ops=None) -> dict[str, int]:
    """Every decision at its cheapest choice (ops: the cheapest middle in that stage, among `ops` when
    given; choices are in increasing order, so index 0 elsewhere)."""
    return self._extreme_point(ops, np.argmin)


def space_config_from_section(section, *, num_frames: int | None = None, crop_size: int | None = None,
                              num_classes: int | None = None, sampling_stride: int | None = None) -> SpaceConfig:
  """A SpaceConfig from a `config.space` section. num_frames / crop_size / num_classes replace the
  section's when given (the section's -1 means 'from the data' and must then be given);
  sampling_stride is the reference clip's (config.data's; None = base_config()'s)."""
  s = section

  def pick(given, own, key):
    value = given if given is not None else own
    if value is None or value <= 0:
      raise SpecError(f"config.space.{key} = {own} needs a value from the data (pass {key}=...)")
    return int(value)

  return SpaceConfig(
      num_frames=pick(num_frames, s.num_frames, "num_frames"), crop_size=pick(crop_size, s.crop_size, "crop_size"),
      stem=StemSpec(width=s.stem_width),
      stage_widths=tuple(tuple(w) for w in s.stage_widths),
      min_depths=tuple(s.min_depths), max_depths=tuple(s.max_depths),
      expansions=tuple(s.expansions), se_ratios=tuple(s.se_ratios), ops=ops_from_strings(s.ops),
      head=HeadSpec(conv5_width=s.conv5_width, head_width=s.head_width, dropout=s.dropout,
                    num_classes=pick(num_classes, s.num_classes, "num_classes")),
      sampling_stride=int(sampling_stride if sampling_stride is not None else base_config().data.sampling_stride),
      input_frames=tuple(s.input_frames), input_strides=tuple(s.input_strides), input_crops=tuple(s.input_crops),
      downsample=tuple(tuple(kinds) for kinds in s.downsample), downsample_heads=int(s.downsample_heads))


def space_config(**overrides) -> SpaceConfig:
  """The default space (`config.base_config().space`: AutoX3D's space around X3D-S at 13x160^2,
  400 classes) with dataclass fields replaced by `overrides`."""
  from_defaults = space_config_from_section(base_config().space, num_frames=13, crop_size=160, num_classes=400)
  return dataclasses.replace(from_defaults, **overrides)


def x3d_space_config(variant: str = "S", **overrides) -> SpaceConfig:
  """The default AutoX3D space at an X3D variant's input size (X3D-`variant` is a point of it)."""
  row = zoo.X3D_VARIANTS[variant.upper()]
  return space_config(**{"num_frames": row["frames"], "crop_size": row["crop"], **overrides})


def space_config_from_dict(d: Mapping) -> SpaceConfig:
  """A SpaceConfig from its `dataclasses.asdict` JSON; one written before the input axes or the
  downsampling modules existed gets base_config()'s (none searched, data's default stride, no
  modules)."""
  d = dict(d)
  defaults = base_config()
  d.setdefault("sampling_stride", defaults.data.sampling_stride)
  for key in ("input_frames", "input_strides", "input_crops", "downsample", "downsample_heads"):
    d.setdefault(key, defaults.space[key])
  for key in ("input_frames", "input_strides", "input_crops"):
    d[key] = tuple(d[key])
  if "stem" in d and isinstance(d["stem"], Mapping):
    d["stem"] = StemSpec(**d["stem"])
  if "head" in d and isinstance(d["head"], Mapping):
    d["head"] = HeadSpec(**d["head"])
  if "ops" in d:
    d["ops"] = tuple(Op(o["type"], o["kernel"], o.get("heads", 0)) if isinstance(o, Mapping) else Op(*o)
                     for o in d["ops"])
  return SpaceConfig(**d)


def ops_from_strings(ops: Sequence[str]) -> tuple[Op, ...]:
  """Parse 'x3d:3x3x3' style strings (used by configs) into Ops, validating the type name; the
  attention types add their heads, 'lsa:2x4x4:h2'."""
  out = []
  for s in ops:
    try:
      type_name, kernel, *rest = s.split(":")
      k = tuple(int(v) for v in kernel.lower().split("x"))
      if len(rest) > 1 or (rest and not rest[0].lower().startswith("h")):
        raise ValueError(s)
      heads = int(rest[0][1:]) if rest else 0
    except ValueError:
      raise SpecError(f"op '{s}' must look like 'x3d:3x3x3', or 'lsa:2x4x4:h2' for an attention type with "
                      "its heads") from None
    registry.get(type_name)
    out.append(Op(type_name, k, heads))
  return tuple(out)
