"""The fine-grained search space (AutoX3D), declared as data.

Skeleton: X3D's stem, four stages (first block of each strided by 2), and head, all fixed.
Decisions, each with a stable label used in logs, checkpoints, cost tables and plots:
  s{i}_width            output width of stage i (every block of a stage shares it: residuals)
  s{i}_depth            number of blocks kept in stage i (blocks beyond it are identities)
  s{i}_b{j}_op          block type + kernel (t, h, w) of block j
  s{i}_b{j}_expansion   inner width = int(expansion * stage width)
  s{i}_b{j}_se          squeeze-excitation ratio (0 = off)
A point (label -> choice index) maps to an ArchSpec; the X3D family are points of the default space.
Decisions are hierarchical: block j's decisions do not matter when j >= s{i}_depth.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

from autox3d_jax.models import registry, zoo
from autox3d_jax.models.builder import block_name
from autox3d_jax.models.spec import (ArchSpec, BlockSpec, HeadSpec, SpecError, StageSpec, StemSpec)


@dataclasses.dataclass(frozen=True)
class Op:
  """A candidate for a block's type/kernel decision."""
  type: str
  kernel: tuple[int, int, int]

  def __post_init__(self):
    object.__setattr__(self, "kernel", tuple(int(k) for k in self.kernel))

  @property
  def label(self) -> str:
    return f"{self.type}_{''.join(map(str, self.kernel))}"


@dataclasses.dataclass(frozen=True)
class Decision:
  label: str
  kind: str           # 'width' | 'depth' | 'op' | 'expansion' | 'se'
  choices: tuple
  stage: int
  block: int | None = None

  @property
  def size(self) -> int:
    return len(self.choices)


# The AutoX3D block-type/kernel candidates: 3D depthwise kt in {3,5} x k in {3,5}, 2D-only k in {3,5}
# (kt = 1), factorized (2+1)D. X3D's own block is ('x3d', (3, 3, 3)).
AUTOX3D_OPS = (
    Op("x3d", (3, 3, 3)), Op("x3d", (5, 3, 3)), Op("x3d", (3, 5, 5)), Op("x3d", (5, 5, 5)),
    Op("x2d", (1, 3, 3)), Op("x2d", (1, 5, 5)), Op("r2plus1d", (3, 3, 3)),
)


@dataclasses.dataclass(frozen=True)
class SpaceConfig:
  """Everything that defines a space; plain data (configs build it, JSON can hold it)."""
  num_frames: int = 13
  crop_size: int = 160
  stem: StemSpec = StemSpec()
  stage_widths: tuple[tuple[int, ...], ...] = ((12, 18, 24, 30, 36), (24, 36, 48, 60, 72),
                                               (48, 72, 96, 120, 144), (96, 144, 192, 240, 288))
  min_depths: tuple[int, ...] = (1, 2, 5, 3)
  max_depths: tuple[int, ...] = (5, 10, 25, 15)
  expansions: tuple[float, ...] = (1.5, 2.25, 3.0, 4.5, 6.0)
  se_ratios: tuple[float, ...] = (0.0, 1 / 16, 1 / 4)
  ops: tuple[Op, ...] = AUTOX3D_OPS
  head: HeadSpec = HeadSpec()
  in_channels: int = 3

  def __post_init__(self):
    object.__setattr__(self, "stage_widths", tuple(tuple(int(w) for w in ws) for ws in self.stage_widths))
    object.__setattr__(self, "min_depths", tuple(self.min_depths))
    object.__setattr__(self, "max_depths", tuple(self.max_depths))
    object.__setattr__(self, "expansions", tuple(float(e) for e in self.expansions))
    object.__setattr__(self, "se_ratios", tuple(float(r) for r in self.se_ratios))
    object.__setattr__(self, "ops", tuple(o if isinstance(o, Op) else Op(*o) for o in self.ops))

  def validate(self) -> "SpaceConfig":
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
    for op in self.ops:
      # Validates type and kernel through the same path an ArchSpec uses.
      BlockSpec(op.type, op.kernel, width=8, inner=8).validate(f"ops[{op.label}]")
    self.stem.validate()
    self.head.validate()
    return self


def inner_width(width: int, expansion: float) -> int:
  """X3D's rule: int(expansion * width) (pytorchvideo `int(bottleneck_factor * dim_out)`)."""
  return max(1, int(expansion * width))


class SearchSpace:
  """Decisions of a SpaceConfig and the point <-> ArchSpec mapping."""

  def __init__(self, config: SpaceConfig):
    self.config = config.validate()
    decisions = []
    for i, widths in enumerate(config.stage_widths):
      decisions.append(Decision(f"s{i + 1}_width", "width", widths, i))
      decisions.append(Decision(f"s{i + 1}_depth", "depth",
                                tuple(range(config.min_depths[i], config.max_depths[i] + 1)), i))
      for j in range(config.max_depths[i]):
        prefix = block_name(i, j)
        decisions.append(Decision(f"{prefix}_op", "op", config.ops, i, j))
        decisions.append(Decision(f"{prefix}_expansion", "expansion", config.expansions, i, j))
        decisions.append(Decision(f"{prefix}_se", "se", config.se_ratios, i, j))
    self.decisions: tuple[Decision, ...] = tuple(decisions)
    self.by_label: dict[str, Decision] = {d.label: d for d in decisions}

  @property
  def labels(self) -> list[str]:
    return [d.label for d in self.decisions]

  @property
  def num_stages(self) -> int:
    return len(self.config.stage_widths)

  def block_decisions(self, stage: int, block: int) -> dict[str, Decision]:
    prefix = block_name(stage, block)
    return {kind: self.by_label[f"{prefix}_{kind}"] for kind in ("op", "expansion", "se")}

  # ------------------------------------------------------------------------------------ size
  def size(self) -> int:
    """Number of distinct architectures (skipped blocks' decisions do not create new ones)."""
    c = self.config
    per_block = len(c.ops) * len(c.expansions) * len(c.se_ratios)
    total = 1
    for i in range(self.num_stages):
      depths = sum(per_block ** d for d in range(c.min_depths[i], c.max_depths[i] + 1))
      total *= len(c.stage_widths[i]) * depths
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
    depth = self.by_label[f"s{d.stage + 1}_depth"].choices[int(point[f"s{d.stage + 1}_depth"])]
    return d.block < depth

  def to_arch(self, point: Mapping[str, int], name: str = "searched") -> ArchSpec:
    self.check_point(point)
    c = self.config
    stages = []
    for i in range(self.num_stages):
      width = c.stage_widths[i][int(point[f"s{i + 1}_width"])]
      depth = self.by_label[f"s{i + 1}_depth"].choices[int(point[f"s{i + 1}_depth"])]
      blocks = []
      for j in range(depth):
        prefix = block_name(i, j)
        op = c.ops[int(point[f"{prefix}_op"])]
        expansion = c.expansions[int(point[f"{prefix}_expansion"])]
        blocks.append(BlockSpec(type=op.type, kernel=op.kernel, width=width,
                                inner=inner_width(width, expansion),
                                se_ratio=c.se_ratios[int(point[f"{prefix}_se"])], stride=2 if j == 0 else 1))
      stages.append(StageSpec(tuple(blocks)))
    return ArchSpec(name=name, num_frames=c.num_frames, crop_size=c.crop_size, stem=c.stem,
                    stages=tuple(stages), head=c.head, in_channels=c.in_channels).validate()

  def point_of(self, spec: ArchSpec) -> dict[str, int]:
    """Inverse of `to_arch`; raises SpecError naming what the space cannot represent."""
    c = self.config
    if (spec.num_frames, spec.crop_size) != (c.num_frames, c.crop_size):
      raise SpecError(f"{spec.name}: input {spec.num_frames}x{spec.crop_size} differs from the space's "
                      f"{c.num_frames}x{c.crop_size}")
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
      point[f"s{i + 1}_width"] = index(f"s{i + 1}_width", stage.width)
      point[f"s{i + 1}_depth"] = index(f"s{i + 1}_depth", len(stage.blocks))
      for j in range(c.max_depths[i]):
        prefix = block_name(i, j)
        if j >= len(stage.blocks):
          point.update({f"{prefix}_op": 0, f"{prefix}_expansion": 0, f"{prefix}_se": 0})
          continue
        b = stage.blocks[j]
        if b.width != stage.width or b.stride != (2 if j == 0 else 1):
          raise SpecError(f"{spec.name}: block {prefix} width/stride is outside the skeleton")
        point[f"{prefix}_op"] = index(f"{prefix}_op", Op(b.type, b.kernel))
        expansion = [e for e in c.expansions if inner_width(b.width, e) == b.inner]
        if not expansion:
          raise SpecError(f"{spec.name}: {prefix} inner width {b.inner} is no expansion of {b.width} "
                          f"among {c.expansions}")
        point[f"{prefix}_expansion"] = c.expansions.index(expansion[0])
        point[f"{prefix}_se"] = index(f"{prefix}_se", b.se_ratio)
    return point

  def canonical(self, point: Mapping[str, int]) -> dict[str, int]:
    """Inactive decisions set to 0, so equal architectures have equal points."""
    return {l: (int(v) if self.active(point, l) else 0) for l, v in point.items()}

  def largest_point(self) -> dict[str, int]:
    """Every decision at its costliest choice (ops: the one with the most kernel taps)."""
    taps = [o.kernel[0] * o.kernel[1] * o.kernel[2] for o in self.config.ops]
    point = {}
    for d in self.decisions:
      if d.kind == "op":
        point[d.label] = taps.index(max(taps))
      else:
        point[d.label] = d.size - 1
    return point


def x3d_space_config(variant: str = "S", **overrides) -> SpaceConfig:
  """The default AutoX3D space at an X3D variant's input size (X3D-`variant` is a point of it)."""
  row = zoo.X3D_VARIANTS[variant.upper()]
  return SpaceConfig(**{"num_frames": row["frames"], "crop_size": row["crop"], **overrides})


def space_config_from_dict(d: Mapping) -> SpaceConfig:
  d = dict(d)
  if "stem" in d and isinstance(d["stem"], Mapping):
    d["stem"] = StemSpec(**d["stem"])
  if "head" in d and isinstance(d["head"], Mapping):
    d["head"] = HeadSpec(**d["head"])
  if "ops" in d:
    d["ops"] = tuple(Op(o["type"], o["kernel"]) if isinstance(o, Mapping) else Op(*o) for o in d["ops"])
  return SpaceConfig(**d)


def ops_from_strings(ops: Sequence[str]) -> tuple[Op, ...]:
  """Parse 'x3d:3x3x3' style strings (used by configs) into Ops, validating the type name."""
  out = []
  for s in ops:
    try:
      type_name, kernel = s.split(":")
      k = tuple(int(v) for v in kernel.lower().split("x"))
    except ValueError:
      raise SpecError(f"op '{s}' must look like 'x3d:3x3x3'") from None
    registry.get(type_name)
    out.append(Op(type_name, k))
  return tuple(out)
