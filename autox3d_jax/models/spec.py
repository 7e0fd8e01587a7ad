"""ArchSpec: one concrete video network as plain, typed, JSON-round-trippable data.

Every network in the project -- the X3D family, a searched architecture, a retrained baseline -- is an
ArchSpec, and one builder (`models.builder`) turns any ArchSpec into a flax module. Keeping the network
as data (not code) is what lets the search space, the cost model, reports and checkpoints all agree.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Sequence


class SpecError(ValueError):
  """An ArchSpec (or part of one) is malformed; the message names the field."""


def round_width(width: float, multiplier: float, min_width: int = 8, divisor: int = 8) -> int:
  """Channel rounding used by X3D / pytorchvideo (`round_width`): nearest multiple of `divisor`."""
  if not multiplier:
    return int(width)
  width *= multiplier
  min_width = min_width or divisor
  width_out = max(min_width, int(width + divisor / 2) // divisor * divisor)
  if width_out < 0.9 * width:
    width_out += divisor
  return int(width_out)


def se_width(inner: int, se_ratio: float) -> int:
  """Bottleneck width of a squeeze-excitation unit on `inner` channels (0 when SE is off)."""
  return round_width(inner, se_ratio) if se_ratio > 0 else 0


def reduced_width(channels: int, ratio: int) -> int:
  """Channels of a ratio-x reduction inside a middle (STM's and TEA's motion modules: C / 16), at least 1."""
  return max(1, channels // ratio)


def _check_positive_int(value: Any, where: str) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise SpecError(f"{where} must be a positive integer, got {value!r}")


@dataclasses.dataclass(frozen=True)
class StemSpec:
  """Stem: spatial conv 1 x k x k (stride 1,s,s) then depthwise temporal conv k_t x 1 x 1, BN, ReLU."""
  width: int = 24
  spatial_kernel: int = 3
  temporal_kernel: int = 5
  spatial_stride: int = 2

  def validate(self, where: str = "stem") -> None:
    _check_positive_int(self.width, f"{where}.width")
    for name in ("spatial_kernel", "temporal_kernel"):
      k = getattr(self, name)
      _check_positive_int(k, f"{where}.{name}")
      if k % 2 == 0:
        raise SpecError(f"{where}.{name} must be odd (symmetric SAME padding), got {k}")
    if self.spatial_stride not in (1, 2):
      raise SpecError(f"{where}.spatial_stride must be 1 or 2, got {self.spatial_stride}")


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """One residual block. `type` is a key of the block registry; the rest are its hyper-parameters.

  kernel: (t, h, w) of the block's spatiotemporal (depthwise) conv, or for the attention and MLP
  types their window / axes (`models.registry` says which). width: output channels.
  inner: expanded (bottleneck) channels. se_ratio: squeeze-excitation ratio, 0 = no SE.
  stride: spatial stride of the block (temporal stride is always 1, as in X3D).
  heads: attention heads of the attention and MLP types (they split `inner`), 0 for the others.
  A projection shortcut is used exactly when the stride is 2 or the width changes.
  """
  type: str
  kernel: tuple[int, int, int]
  width: int
  inner: int
  se_ratio: float = 0.0
  stride: int = 1
  heads: int = 0

  def __post_init__(self):
    # JSON gives lists; keep the spec hashable and comparable.
    object.__setattr__(self, "kernel", tuple(int(k) for k in self.kernel))

  @property
  def expansion(self) -> float:
    return self.inner / self.width

  def validate(self, where: str = "block") -> None:
    """Structural checks; whether `type` is registered, and its own rules (odd conv kernels, heads
    that divide `inner`), are `models.registry.check_block`'s job."""
    if len(self.kernel) != 3:
      raise SpecError(f"{where}.kernel must be (t, h, w), got {self.kernel!r}")
    for k, axis in zip(self.kernel, "thw"):
      _check_positive_int(k, f"{where}.kernel[{axis}]")
    _check_positive_int(self.width, f"{where}.width")
    _check_positive_int(self.inner, f"{where}.inner")
    if not 0.0 <= self.se_ratio < 1.0:
      raise SpecError(f"{where}.se_ratio must be in [0, 1), got {self.se_ratio}")
    if self.stride not in (1, 2):
      raise SpecError(f"{where}.stride must be 1 or 2, got {self.stride}")
    if not isinstance(self.heads, int) or isinstance(self.heads, bool) or self.heads < 0:
      raise SpecError(f"{where}.heads must be a non-negative integer, got {self.heads!r}")


# UniNet's downsampling modules (`models.downsample`): '' = none (the stage's first block strides).
DOWNSAMPLE_KINDS = ("local", "local_global")


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """A stage: its blocks, and optionally a downsampling module before them (UniNet's DSM,
  `models.downsample`): downsample '' (X3D: the first block strides and projects), 'local' or
  'local_global'; the module then halves H and W and maps to the stage's width, and the first block
  has stride 1. downsample_heads: the attention heads of 'local_global' (they split the width), else 0."""
  blocks: tuple[BlockSpec, ...]
  downsample: str = ""
  downsample_heads: int = 0

  def __post_init__(self):
    object.__setattr__(self, "blocks", tuple(self.blocks))

  @property
  def width(self) -> int:
    return self.blocks[-1].width

  @property
  def stride(self) -> int:
    """The stage's spatial stride: its downsampling module's 2, else the product of its blocks'."""
    return 2 if self.downsample else math.prod(b.stride for b in self.blocks)

  def validate(self, where: str = "stage") -> None:
    if self.downsample not in ("",) + DOWNSAMPLE_KINDS:
      raise SpecError(f"{where}.downsample must be '' or one of {list(DOWNSAMPLE_KINDS)}, got {self.downsample!r}")
    heads = self.downsample_heads
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 0:
      raise SpecError(f"{where}.downsample_heads must be a non-negative integer, got {heads!r}")
    if self.downsample and self.blocks and self.blocks[0].stride != 1:
      raise SpecError(f"{where}: the downsampling module strides, so blocks[0].stride must be 1, got "
                      f"{self.blocks[0].stride}")
    if self.downsample == "local_global" and (heads <= 0 or self.blocks and self.blocks[0].width % heads):
      raise SpecError(f"{where}.downsample_heads ({heads}) must be positive and divide the stage's width "
                      f"{self.blocks[0].width if self.blocks else '?'} for 'local_global'")
    if self.downsample != "local_global" and heads:
      raise SpecError(f"{where}.downsample_heads must be 0 unless downsample is 'local_global', got {heads}")


@dataclasses.dataclass(frozen=True)
class HeadSpec:
  """X3D head: conv5 1x1x1 -> BN -> ReLU -> global pool -> FC head_width -> ReLU -> dropout -> FC classes."""
  conv5_width: int = 432
  head_width: int = 2048
  dropout: float = 0.5
  num_classes: int = 400

  def validate(self, where: str = "head") -> None:
    _check_positive_int(self.conv5_width, f"{where}.conv5_width")
    _check_positive_int(self.head_width, f"{where}.head_width")
    _check_positive_int(self.num_classes, f"{where}.num_classes")
    if not 0.0 <= self.dropout < 1.0:
      raise SpecError(f"{where}.dropout must be in [0, 1), got {self.dropout}")


@dataclasses.dataclass(frozen=True)
class ArchSpec:
  """A whole network plus the clip it was designed for (frames x crop x crop, RGB)."""
  name: str
  num_frames: int
  crop_size: int
  stem: StemSpec
  stages: tuple[StageSpec, ...]
  head: HeadSpec
  in_channels: int = 3

  def __post_init__(self):
    object.__setattr__(self, "stages", tuple(self.stages))

  # ----------------------------------------------------------------------------------------- queries
  @property
  def blocks(self) -> list[BlockSpec]:
    return [b for s in self.stages for b in s.blocks]

  @property
  def depths(self) -> list[int]:
    return [len(s.blocks) for s in self.stages]

  @property
  def input_shape(self) -> tuple[int, int, int, int]:
    """(T, H, W, C) of one training clip."""
    return (self.num_frames, self.crop_size, self.crop_size, self.in_channels)

  def replace(self, **changes) -> "ArchSpec":
    return dataclasses.replace(self, **changes)

  # -------------------------------------------------------------------------------------- validation
  def validate(self) -> "ArchSpec":
    """Structural checks: raises SpecError naming the first bad field; returns self so it can be
    chained. `models.registry.check_arch` adds the block types' checks (the builder calls it)."""
    _check_positive_int(self.num_frames, "num_frames")
    _check_positive_int(self.crop_size, "crop_size")
    _check_positive_int(self.in_channels, "in_channels")
    self.stem.validate()
    if not self.stages:
      raise SpecError("stages must not be empty")
    size = math.ceil(self.crop_size / self.stem.spatial_stride)
    for i, stage in enumerate(self.stages):
      if not stage.blocks:
        raise SpecError(f"stages[{i}] has no blocks")
      for j, block in enumerate(stage.blocks):
        block.validate(f"stages[{i}].blocks[{j}]")
      stage.validate(f"stages[{i}]")
      size = math.ceil(size / 2) if stage.downsample else size
      for block in stage.blocks:
        size = math.ceil(size / block.stride)
    if size < 1:
      raise SpecError(f"crop_size {self.crop_size} is too small for the network's total stride")
    self.head.validate()
    return self

  # ------------------------------------------------------------------------------------------- JSON
  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    for stage in d["stages"]:
      for block in stage["blocks"]:
        block["kernel"] = list(block["kernel"])
    return d

  def to_json(self, indent: int | None = 2) -> str:
    return json.dumps(self.to_dict(), indent=indent)

  @classmethod
  def from_dict(cls, d: dict) -> "ArchSpec":
    try:
      d = dict(d)
      stages = tuple(StageSpec(tuple(BlockSpec(**b) for b in s["blocks"]),
                               **{k: v for k, v in s.items() if k != "blocks"}) for s in d.pop("stages"))
      stem = StemSpec(**d.pop("stem"))
      head = HeadSpec(**d.pop("head"))
      return cls(stem=stem, stages=stages, head=head, **d)
    except (TypeError, KeyError) as e:
      raise SpecError(f"not a valid ArchSpec dict: {e}") from e

  @classmethod
  def from_json(cls, text: str) -> "ArchSpec":
    return cls.from_dict(json.loads(text))

  def save(self, path: str) -> None:
    """Write the JSON to `path` (local or gs://), atomically."""
    from autox3d_jax import paths
    paths.write_text(path, self.to_json())

  @classmethod
  def load(cls, path: str) -> "ArchSpec":
    from autox3d_jax import paths
    return cls.from_json(paths.read_text(path))


def uniform_stage(block_type: str, depth: int, width: int, inner: int, kernel: Sequence[int],
                  se_ratio: float, stride: int, se_every: int = 2) -> StageSpec:
  """A stage of `depth` equal blocks, the first strided, SE on blocks 0, se_every, 2*se_every, ..."""
  blocks = []
  for j in range(depth):
    blocks.append(BlockSpec(type=block_type, kernel=tuple(kernel), width=width, inner=inner,
                            se_ratio=se_ratio if j % se_every == 0 else 0.0,
                            stride=stride if j == 0 else 1))
  return StageSpec(tuple(blocks))
