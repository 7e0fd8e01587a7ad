"""The X3D family as rows of X3D's six expansion factors, decoded into ArchSpecs by one function.

X3D (Feichtenhofer, CVPR 2020) describes every network by six factors over one skeleton: frames
(gamma_t), sampling stride (1 / frame rate, gamma_tau), crop (gamma_s), width (gamma_w), bottleneck
width (gamma_b) and depth (gamma_d). `X3DFactors` holds them, `X3DSkeleton` the skeleton, and
`from_factors` builds the network, following pytorchvideo's `create_x3d` (shared/REFERENCES-round2.md
section 1): stem width round_width(12, gamma_w); stage i width round_width(base_i, gamma_w) with bases
12/24/48/96; inner width int(gamma_b x width); depths ceil(gamma_d x 1/2/5/3); SE 1/16 on blocks 0, 2,
4, ... of each stage; stride 2 in each stage's first block; head conv5 = the last inner width -> 2048
-> classes, dropout 0.5. X3D-XS/S/M/L are SlowFast's configs (WIDTH 2.0, BOTTLENECK 2.25, DEPTH 2.2 /
5.0); X2D, the expansion's start, is every factor 1 with one frame at 112 pixels (widths 24..192
because the bases are stated at gamma_w = 2's halves, as in SlowFast).

X3D-XL is in neither SlowFast nor pytorchvideo (SlowFast issue #355). We define it as X3D-L expanded
along X-Width: gamma_w 2.0 -> 2.9. With pytorchvideo's rounding (multiples of 8) every gamma_w in
[2.875, 2.917) gives the same network, whose FLOPs are the paper's to its printed digits (35.84 G at
312 pixels, 48.4 G at the 356-pixel test crop) and whose 11.10 M parameters are 0.9% above the
paper's 11.0 M (tests/test_models.py pins all three). SlowFast's own rounding (to 1 channel) fits no
factor that exactly: 2.87 gives 35.92 G / 10.96 M.
"""
from __future__ import annotations

import dataclasses
import math

from autox3d_jax.models.spec import ArchSpec, HeadSpec, StemSpec, round_width, uniform_stage


@dataclasses.dataclass(frozen=True)
class X3DFactors:
  """One network of the X3D family by its six expansion axes: the clip (frames sampled every
  `sampling_stride` frames, `crop` pixels square) and the network (width, bottleneck and depth
  multipliers of the skeleton)."""
  frames: int
  sampling_stride: int
  crop: int
  width: float
  bottleneck: float
  depth: float

  @property
  def span(self) -> int:
    """Frames of the source video one clip covers: (frames - 1) x stride + 1."""
    return (self.frames - 1) * self.sampling_stride + 1


@dataclasses.dataclass(frozen=True)
class X3DSkeleton:
  """What the factors multiply: the stem's and each stage's base width, each stage's base number of
  blocks, the block (type, kernel, SE), the head and the channel rounding. The default is X3D's."""
  stem_base: int = 12
  stage_bases: tuple[int, ...] = (12, 24, 48, 96)
  stage_repeats: tuple[int, ...] = (1, 2, 5, 3)
  block_type: str = "x3d"
  kernel: tuple[int, int, int] = (3, 3, 3)
  se_ratio: float = 1 / 16
  head_width: int = 2048
  dropout: float = 0.5
  width_divisor: int = 8

  def __post_init__(self):
    if len(self.stage_bases) != len(self.stage_repeats):
      raise ValueError(f"stage_bases {self.stage_bases} and stage_repeats {self.stage_repeats} must have the "
                       "same length")


def depths_of(skeleton: X3DSkeleton, depth_factor: float) -> tuple[int, ...]:
  """Blocks per stage: ceil(depth factor x base repeats), as X3D's `_round_repeats`."""
  return tuple(int(math.ceil(depth_factor * r)) for r in skeleton.stage_repeats)


def widths_of(skeleton: X3DSkeleton, width_factor: float) -> tuple[int, tuple[int, ...]]:
  """(stem width, stage widths) at `width_factor`, rounded as pytorchvideo's `round_width`."""
  rnd = lambda base: round_width(base, width_factor, divisor=skeleton.width_divisor)  # noqa: E731
  return rnd(skeleton.stem_base), tuple(rnd(b) for b in skeleton.stage_bases)


def from_factors(factors: X3DFactors, num_classes: int = 400, skeleton: X3DSkeleton = X3DSkeleton(),
                 name: str = "") -> ArchSpec:
  """The network `factors` describe on `skeleton`, at their clip (frames x crop)."""
  stem, widths = widths_of(skeleton, factors.width)
  inners = [int(factors.bottleneck * w) for w in widths]
  stages = tuple(
      uniform_stage(skeleton.block_type, depth=d, width=w, inner=n, kernel=skeleton.kernel,
                    se_ratio=skeleton.se_ratio, stride=2)
      for d, w, n in zip(depths_of(skeleton, factors.depth), widths, inners))
  return ArchSpec(
      name=name or f"X3D[{factors.frames}x{factors.sampling_stride},{factors.crop},w{factors.width:g},"
                   f"b{factors.bottleneck:g},d{factors.depth:g}]",
      num_frames=factors.frames, crop_size=factors.crop, stem=StemSpec(width=stem), stages=stages,
      head=HeadSpec(conv5_width=inners[-1], head_width=skeleton.head_width, dropout=skeleton.dropout,
                    num_classes=num_classes),
  ).validate()


# SlowFast configs/Kinetics/X3D_*.yaml (frames x stride, train / 3-crop test crop, factors); XL as above.
X3D_ROWS = {
    "XS": (X3DFactors(4, 12, 160, 2.0, 2.25, 2.2), 182),
    "S": (X3DFactors(13, 6, 160, 2.0, 2.25, 2.2), 182),
    "M": (X3DFactors(16, 5, 224, 2.0, 2.25, 2.2), 256),
    "L": (X3DFactors(16, 5, 312, 2.0, 2.25, 5.0), 356),
    "XL": (X3DFactors(16, 5, 312, 2.9, 2.25, 5.0), 356),
}
# X2D: every factor 1, one frame (its stride is not X3D's: one frame has none; 1 here).
X2D = X3DFactors(frames=1, sampling_stride=1, crop=112, width=2.0, bottleneck=1.0, depth=1.0)

# name: dict(frames, sampling_stride, crop, test_crop, depths, factors): what configs read per variant.
X3D_VARIANTS = {
    v: dict(frames=f.frames, sampling_stride=f.sampling_stride, crop=f.crop, test_crop=test,
            depths=depths_of(X3DSkeleton(), f.depth), factors=f)
    for v, (f, test) in X3D_ROWS.items()}
# The variants whose widths are X3D's standard 24/48/96/192 (gamma_w = 2): the points of the
# default AutoX3D search space.
STANDARD_WIDTH_VARIANTS = tuple(v for v, row in X3D_VARIANTS.items() if row["factors"].width == 2.0)


def x3d(variant: str = "S", num_classes: int = 400, *, block_type: str = "x3d",
        num_frames: int | None = None, crop_size: int | None = None, dropout: float = 0.5,
        depths: tuple[int, ...] | None = None, widths: tuple[int, ...] | None = None,
        kernel: tuple[int, int, int] = (3, 3, 3)) -> ArchSpec:
  """X3D-`variant` as an ArchSpec. Every structural number can be overridden (for tiny models):
  `widths` are the stage widths (the stem takes the first), `depths` the blocks per stage."""
  try:
    factors = X3D_VARIANTS[variant.upper()]["factors"]
  except KeyError:
    raise ValueError(f"unknown X3D variant '{variant}'; known: {sorted(X3D_VARIANTS)}") from None
  skeleton = X3DSkeleton(block_type=block_type, kernel=tuple(kernel), dropout=dropout)
  spec = from_factors(factors, num_classes, skeleton, name=f"X3D-{variant.upper()}")
  if depths is None and widths is None:
    return dataclasses.replace(spec, num_frames=num_frames or spec.num_frames,
                               crop_size=crop_size or spec.crop_size).validate()
  depths = tuple(depths or [len(s.blocks) for s in spec.stages])
  widths = tuple(widths or [s.blocks[0].width for s in spec.stages])
  if len(depths) != len(widths):
    raise ValueError(f"depths {depths} and widths {widths} must have the same length")
  stages = tuple(
      uniform_stage(block_type, depth=d, width=w, inner=int(factors.bottleneck * w), kernel=kernel,
                    se_ratio=skeleton.se_ratio, stride=2)
      for d, w in zip(depths, widths))
  return dataclasses.replace(
      spec, num_frames=num_frames or spec.num_frames, crop_size=crop_size or spec.crop_size,
      stem=StemSpec(width=widths[0]), stages=stages,
      head=dataclasses.replace(spec.head, conv5_width=int(factors.bottleneck * widths[-1]))).validate()


def test_crop(variant: str) -> int:
  return X3D_VARIANTS[variant.upper()]["test_crop"]


def get(name: str, num_classes: int = 400) -> ArchSpec:
  """Zoo lookup by name: 'x3d_s', 'X3D-S', 'S' all work."""
  key = name.upper().replace("X3D", "").strip("-_ ")
  return x3d(key, num_classes)


def names() -> list[str]:
  return [f"x3d_{v.lower()}" for v in X3D_VARIANTS]
