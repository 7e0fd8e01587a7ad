"""What many test files share: toy search spaces, a tiny search config, fake batches.

Import from a test file as `import toys` (pytest puts tests/ on sys.path). Each toy is small enough
to compile in seconds on the CPU; pick the smallest one that exercises what a test checks.
"""
from __future__ import annotations

from typing import Iterator

import ml_collections
import numpy as np

from autox3d_jax import config as config_lib
from autox3d_jax.models.spec import HeadSpec, StemSpec
from autox3d_jax.search.space import Op, SearchSpace, space_config

X3D, X2D, R2P1D = Op("x3d", (3, 3, 3)), Op("x2d", (1, 3, 3)), Op("r2plus1d", (3, 3, 3))
ALL_OPS = (X3D, Op("x3d", (5, 3, 3)), Op("x3d", (3, 5, 5)), X2D, R2P1D, Op("csn", (3, 3, 3)),
           Op("stm", (3, 3, 3)), Op("tea", (3, 3, 3)))


def space(**overrides) -> SearchSpace:
  """2 stages of 2-3 widths, depths 1-2, 3 expansions, SE on/off, x3d / x2d / (2+1)D at 4x32^2,
  5 classes. Any SpaceConfig field can be overridden."""
  kw = dict(num_frames=4, crop_size=32, stem=StemSpec(width=8), stage_widths=((8, 12, 16), (16, 24, 32)),
            min_depths=(1, 1), max_depths=(2, 2), expansions=(1.5, 2.25, 3.0), se_ratios=(0.0, 0.25),
            ops=(X3D, X2D, R2P1D), head=HeadSpec(conv5_width=24, head_width=32, num_classes=5))
  kw.update(overrides)
  return SearchSpace(space_config(**kw))


def tiny_space(**overrides) -> SearchSpace:
  """The smallest toy (4x16^2 clips, 2 ops, 2 choices per decision): for compiled steps."""
  kw = dict(num_frames=4, crop_size=16, stage_widths=((8, 12), (16, 24)), max_depths=(1, 2),
            expansions=(1.5, 3.0), ops=(X3D, X2D),
            head=HeadSpec(conv5_width=16, head_width=16, dropout=0.0, num_classes=5))
  kw.update(overrides)
  return space(**kw)


def all_ops_space(**overrides) -> SearchSpace:
  """Every registered block type (and kernels) in one space: for per-type equivalences."""
  kw = dict(max_depths=(2, 3), se_ratios=(0.0, 1 / 16, 1 / 4), ops=ALL_OPS,
            head=HeadSpec(conv5_width=24, head_width=32, dropout=0.5, num_classes=5))
  kw.update(overrides)
  return space(**kw)


def set_keys(cfg: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """cfg with dotted keys set ('probabilistic.estimator': 'parsec'); an unknown key raises."""
  for key, value in overrides.items():
    *parents, name = key.split(".")
    node = cfg
    for p in parents:
      node = node[p]
    if name not in node:
      raise KeyError(f"no config key {key!r}")
    node[name] = value
  return cfg


def search_config(strategy: str, **overrides) -> ml_collections.ConfigDict:
  """`base_config().search` for `strategy`: 8 groups, no penalty, fixed temperature 1 -> 0.1,
  fair channels off, 300 steps; then `overrides` (dotted keys: set_keys)."""
  cfg = config_lib.base_config().search
  settings = {"strategy": strategy, "num_groups": 8, "penalty": "none", "fair_channels": False, "steps": 300}
  if strategy in ("dnas", "gdas", "msg"):
    settings.update({f"{strategy}.tau_max": 1.0, f"{strategy}.tau_min": 0.1, f"{strategy}.tau_decay": 0.0})
  if strategy == "probabilistic":
    settings.update({"probabilistic.min_samples": 2})
  return set_keys(cfg, {**settings, **overrides})


def batches(n: int, batch: int = 8, classes: int = 3, shape=(4, 16, 16, 3), seed: int = 0) -> Iterator[dict]:
  """`n` fake batches {'video', 'label'} whose videos carry a class-dependent offset, so a loss
  can fall."""
  rng = np.random.default_rng(seed)
  for _ in range(n):
    labels = rng.integers(0, classes, batch)
    video = rng.normal(size=(batch,) + tuple(shape)).astype(np.float32) + labels[:, None, None, None, None]
    yield {"video": video, "label": labels.astype(np.int32)}


def random_point(space: SearchSpace, rng: np.random.Generator) -> dict[str, int]:
  """A uniformly random point (label -> choice index) of `space`, inactive decisions included."""
  return {d.label: int(rng.integers(d.size)) for d in space.decisions}


def planted_best(space: SearchSpace) -> dict[str, int]:
  """One 'best' choice per decision, never index 0 (so uniform or all-zero starts are not already
  there; a one-choice decision gets 0); crc32 of the label, not hash(), so it is the same in every
  process."""
  import zlib
  return {d.label: (zlib.crc32(d.label.encode()) % (d.size - 1)) + 1 if d.size > 1 else 0
          for d in space.decisions}
