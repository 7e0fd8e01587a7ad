"""The X3D family as rows of one table, decoded into ArchSpecs by one function.

Facts from the SlowFast / pytorchvideo source (see shared/REFERENCES.md): stem 3 -> 24, stage widths
24/48/96/192, inner = int(2.25 x width) = 54/108/216/432, depths [3,5,11,7] (XS/S/M) and
[5,10,25,15] (L), SE 1/16 on blocks 0, 2, 4, ... of each stage, stride 2 in the first block of each
stage, head conv5 432 -> 2048 -> classes, dropout 0.5. Frames / crop are each variant's training clip.
"""
from __future__ import annotations

from autox3d_jax.models.spec import ArchSpec, HeadSpec, StemSpec, uniform_stage

# name: (frames, train crop, test crop, depths). All share the widths below.
X3D_VARIANTS = {
    "XS": dict(frames=4, crop=160, test_crop=182, depths=(3, 5, 11, 7)),
    "S": dict(frames=13, crop=160, test_crop=182, depths=(3, 5, 11, 7)),
    "M": dict(frames=16, crop=224, test_crop=256, depths=(3, 5, 11, 7)),
    "L": dict(frames=16, crop=312, test_crop=356, depths=(5, 10, 25, 15)),
}
X3D_STAGE_WIDTHS = (24, 48, 96, 192)
X3D_BOTTLENECK_FACTOR = 2.25
X3D_SE_RATIO = 1 / 16
X3D_HEAD_WIDTH = 2048


def x3d(variant: str = "S", num_classes: int = 400, *, block_type: str = "x3d",
        num_frames: int | None = None, crop_size: int | None = None, dropout: float = 0.5,
        depths: tuple[int, ...] | None = None, widths: tuple[int, ...] | None = None,
        kernel: tuple[int, int, int] = (3, 3, 3)) -> ArchSpec:
  """X3D-`variant` as an ArchSpec. Every structural number can be overridden (for tiny models)."""
  try:
    row = X3D_VARIANTS[variant.upper()]
  except KeyError:
    raise ValueError(f"unknown X3D variant '{variant}'; known: {sorted(X3D_VARIANTS)}") from None
  depths = tuple(depths or row["depths"])
  widths = tuple(widths or X3D_STAGE_WIDTHS)
  if len(depths) != len(widths):
    raise ValueError(f"depths {depths} and widths {widths} must have the same length")
  stages = tuple(
      uniform_stage(block_type, depth=d, width=w, inner=int(X3D_BOTTLENECK_FACTOR * w),
                    kernel=kernel, se_ratio=X3D_SE_RATIO, stride=2)
      for d, w in zip(depths, widths))
  conv5 = int(X3D_BOTTLENECK_FACTOR * widths[-1])
  return ArchSpec(
      name=f"X3D-{variant.upper()}", num_frames=num_frames or row["frames"],
      crop_size=crop_size or row["crop"], stem=StemSpec(width=widths[0]),
      stages=stages,
      head=HeadSpec(conv5_width=conv5, head_width=X3D_HEAD_WIDTH, dropout=dropout, num_classes=num_classes),
  ).validate()


def test_crop(variant: str) -> int:
  return X3D_VARIANTS[variant.upper()]["test_crop"]


def get(name: str, num_classes: int = 400) -> ArchSpec:
  """Zoo lookup by name: 'x3d_s', 'X3D-S', 'S' all work."""
  key = name.upper().replace("X3D", "").strip("-_ ")
  return x3d(key, num_classes)


def names() -> list[str]:
  return [f"x3d_{v.lower()}" for v in X3D_VARIANTS]
