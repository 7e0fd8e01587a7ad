"""Config -> the objects a run needs: search space, cost table, target, baseline, input pipelines.

Kept apart from the loops so Colab and tests build exactly what `main.py` builds.
"""
from __future__ import annotations

import math
import os

import jax
import ml_collections

from autox3d_jax.data import pipeline as data_pipeline
from autox3d_jax.data import registry as data_registry
from autox3d_jax.models.spec import HeadSpec, StemSpec
from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.space import SearchSpace, SpaceConfig, ops_from_strings


def num_classes(cfg: ml_collections.ConfigDict) -> int:
  if cfg.space.num_classes > 0:
    return int(cfg.space.num_classes)
  return data_registry.get_source(cfg.data.name, cfg.data.train_split, cfg.data.data_dir or None).num_classes


def build_space(cfg: ml_collections.ConfigDict, classes: int | None = None) -> SearchSpace:
  s = cfg.space
  return SearchSpace(SpaceConfig(
      num_frames=s.num_frames if s.num_frames > 0 else cfg.data.num_frames,
      crop_size=s.crop_size if s.crop_size > 0 else cfg.data.crop_size,
      stem=StemSpec(width=s.stem_width),
      stage_widths=tuple(tuple(w) for w in s.stage_widths),
      min_depths=tuple(s.min_depths), max_depths=tuple(s.max_depths),
      expansions=tuple(s.expansions), se_ratios=tuple(s.se_ratios), ops=ops_from_strings(s.ops),
      head=HeadSpec(conv5_width=s.conv5_width, head_width=s.head_width, dropout=s.dropout,
                    num_classes=classes or num_classes(cfg))))


def latency_table_path(cfg: ml_collections.ConfigDict, workdir: str | None) -> str | None:
  """config.latency.path, else `workdir/latency_table.json` (where mode=latency writes it)."""
  if cfg.latency.path:
    return cfg.latency.path
  return os.path.join(workdir, "latency_table.json") if workdir else None


def build_cost_table(space: SearchSpace, cfg: ml_collections.ConfigDict, workdir: str | None = None) -> CostTable:
  """The search's cost table. 'latency' reuses the measured table when it matches this backend and
  space, else measures one and saves it; with several processes process 0's table is broadcast, so
  every host compiles the same costs into the step."""
  metric = cfg.search.cost_metric
  if metric == "latency":
    from autox3d_jax.cost import latency
    table = latency.load_or_build(space, cfg.latency, latency_table_path(cfg, workdir))
    table = latency.share_across_processes(table)
    return CostTable.build(space, "latency", fns=latency.latency_fns(table))
  return CostTable.build(space, metric)



def x3d_like_point(space: SearchSpace) -> dict[str, int]:
  """X3D's design rules inside `space`: x3d 3x3x3 blocks, expansion 2.25, SE 1/16 on every other
  block, the middle width choice, and X3D-S's depths (3, 5, 11, 7) clipped to the space. In the
  default space this is exactly X3D-S."""
  c = space.config
  x3d_depths = (3, 5, 11, 7)

  def nearest(values, target):
    return min(range(len(values)), key=lambda k: abs(values[k] - target))

  ops = [o.label for o in c.ops]
  op = ops.index("x3d_333") if "x3d_333" in ops else 0
  point = {}
  for i in range(space.num_stages):
    point[f"s{i + 1}_width"] = len(c.stage_widths[i]) // 2
    depths = space.by_label[f"s{i + 1}_depth"].choices
    want = x3d_depths[i] if i < len(x3d_depths) else depths[-1]
    point[f"s{i + 1}_depth"] = nearest(depths, want)
    for j in range(c.max_depths[i]):
      point[f"s{i + 1}_b{j + 1}_op"] = op
      point[f"s{i + 1}_b{j + 1}_expansion"] = nearest(c.expansions, 2.25)
      point[f"s{i + 1}_b{j + 1}_se"] = nearest(c.se_ratios, 1 / 16 if j % 2 == 0 else 0.0)
  return point


def resolve_cost_target(space: SearchSpace, table: CostTable, cfg: ml_collections.ConfigDict) -> float:
  """The absolute target in table units: config.search.cost_target, or the cost of target_arch
  ('X3D' = the X3D-like point of this space). A target below the space's cheapest architecture is
  rejected here, before anything compiles: no search could meet it."""
  if cfg.search.cost_target > 0:
    target = float(cfg.search.cost_target)
  elif cfg.search.target_arch:
    target = table.of_point(x3d_like_point(space))
  else:
    return 0.0
  cheapest, _ = table.extreme(largest=False)
  if target < cheapest:
    from autox3d_jax.config import ConfigError
    raise ConfigError(f"config.search.cost_target = {target:.6g} ({table.metric}) is below the cheapest "
                      f"architecture of the search space ({cheapest:.6g}); raise the target or widen the "
                      f"space (smaller config.space.stage_widths / min_depths)")
  return target


def per_host_batch(global_batch: int) -> int:
  if global_batch % jax.process_count():
    raise ValueError(f"global batch {global_batch} is not divisible by {jax.process_count()} processes")
  return global_batch // jax.process_count()


def train_pipeline(cfg, split: str, *, seed_offset: int = 0, start_step: int = 0, batch_size: int | None = None):
  d = cfg.data
  return data_pipeline.make_train_pipeline(
      d.name, batch_size=per_host_batch(batch_size or d.batch_size), data_dir=d.data_dir or None, split=split,
      num_frames=d.num_frames, sampling_stride=d.sampling_stride, crop_size=d.crop_size,
      scale_jitter=tuple(d.scale_jitter), shuffle_buffer=d.shuffle_buffer, seed=cfg.seed + seed_offset,
      deterministic=True, start_step=start_step)


def eval_pipeline(cfg, split: str | None = None):
  d = cfg.data
  return data_pipeline.make_eval_pipeline(
      d.name, batch_size=per_host_batch(d.eval_batch_size), data_dir=d.data_dir or None,
      split=split or d.eval_split, num_frames=d.num_frames, sampling_stride=d.sampling_stride,
      crop_size=d.crop_size, short_side=int(math.ceil(d.scale_jitter[0])),
      num_temporal_views=d.num_temporal_views, num_spatial_crops=d.num_spatial_crops)


def ensure_dataset(cfg) -> None:
  """Build the embedded dataset when it is missing (config.data.build_if_missing); real datasets
  raise the registry's error, which names the conversion command."""
  try:
    data_registry.get_source(cfg.data.name, cfg.data.train_split, cfg.data.data_dir or None)
  except data_registry.DataError if hasattr(data_registry, "DataError") else Exception:
    name = cfg.data.name
    if not (cfg.data.build_if_missing and name.startswith("moving_digits")):
      raise
    from autox3d_jax.data import moving_digits
    config_name = name.split("/", 1)[1] if "/" in name else "motion"
    moving_digits.build_moving_digits(config_name, cfg.data.data_dir or None)
