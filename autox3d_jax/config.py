"""The one place defaults live: `base_config()` returns every key a run may read, and `validate()`
rejects bad values before anything compiles, naming the key and what is allowed.

Config files in `configs/` start from `base_config()` and override; the returned ConfigDict is locked,
so `--config.sarch.steps=...` (a typo) fails at parse time instead of being silently ignored.
"""
from __future__ import annotations

import ml_collections

from autox3d_jax.search.strategies import PENALTIES, STRATEGIES

MODES = ("search", "train", "eval", "report", "demo", "latency", "summary")


class ConfigError(ValueError):
  pass


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = "demo"
  c.seed = 0
  c.log_every_steps = 10

  c.data = ml_collections.ConfigDict(dict(
      name="moving_digits/motion",   # moving_digits/<config>, a converted dataset's name under data_dir, or tfds:<name>
      data_dir="",                   # '' = ~/tensorflow_datasets (or $TFDS_DATA_DIR)
      train_split="train", eval_split="validation",
      arch_val_fraction=0.2,          # held-out part of train for the architecture step (FBNet: 20%)
      num_frames=16, sampling_stride=1, crop_size=56, scale_jitter=(56, 72),
      batch_size=16,                  # global batch; each host reads batch_size / process_count
      eval_batch_size=16, num_temporal_views=1, num_spatial_crops=1,
      shuffle_buffer=512, build_if_missing=True))

  c.space = ml_collections.ConfigDict(dict(
      num_frames=-1, crop_size=-1,    # -1: take data.num_frames / data.crop_size
      stem_width=24,
      stage_widths=((12, 18, 24, 30, 36), (24, 36, 48, 60, 72), (48, 72, 96, 120, 144),
                    (96, 144, 192, 240, 288)),
      min_depths=(1, 2, 5, 3), max_depths=(5, 10, 25, 15),
      expansions=(1.5, 2.25, 3.0, 4.5, 6.0), se_ratios=(0.0, 1 / 16, 1 / 4),
      ops=("x3d:3x3x3", "x3d:5x3x3", "x3d:3x5x5", "x3d:5x5x5", "x2d:1x3x3", "x2d:1x5x5", "r2plus1d:3x3x3"),
      conv5_width=432, head_width=2048, dropout=0.5, num_classes=-1))   # -1: from the dataset

  c.search = ml_collections.ConfigDict(dict(
      strategy="probabilistic", steps=600, num_groups=4, arch_warmup_steps=200,
      cost_metric="flops",            # flops | params | latency (measured table, see mode=latency)
      cost_target=0.0,                # absolute target in table units; 0 = from target_arch
      target_arch="",                 # e.g. 'X3D-S': the target is that network's cost in this space
      penalty="hinge", penalty_weight=1.0,
      cost_unit=0.0,                  # fbnet penalty's unit; 0 = the metric's: 1e6 FLOPs/params, 1 ms
      fbnet_alpha=0.2, fbnet_beta=0.6,
      tau_schedule="exp", tau_max=5.0, tau_min=0.1, tau_decay=0.0, total_steps=600,
      estimator="reinforce", baseline_decay=0.95, entropy_weight=0.0,
      sandwich=False,                 # probabilistic/spos: weight-step group 0 = the largest architecture
      largest_warmup_steps=0,         # probabilistic/spos: the first N weight steps train only the largest
      shared_val_batch=True,          # probabilistic: score all K samples on the same val clips
      adaptive_samples=True, min_samples=1, val_examples_per_group=1,
      fair_channels=True, cost_bins=0, bin_candidates=16,
      derive="mode",                  # mode (argmax of the distribution) | evolution (SPOS)
      derive_within_target=True,      # mode above the cost target -> the most likely arch within it
      evolution=ml_collections.ConfigDict(dict(
          population=50, iterations=20, top_k=10, mutants=25, crossovers=25, mutation_prob=0.1,
          bn_batches=20, eval_batches=4))))

  c.weight_opt = ml_collections.ConfigDict(dict(lr=0.1, momentum=0.9, weight_decay=5e-5, warmup_steps=0,
                                                grad_clip=0.0))
  c.arch_opt = ml_collections.ConfigDict(dict(lr=0.025, beta1=0.9, beta2=0.999))
  c.train = ml_collections.ConfigDict(dict(
      arch="",                        # train/eval mode: an ArchSpec JSON path or zoo name ('x3d_s')
      steps=1000, lr=0.1, warmup_steps=50, weight_decay=5e-5, label_smoothing=0.0,
      dtype="float32", init_from_supernet=False, baseline="X3D-S", eval_every_steps=0,
      # demo: retrain each network with seeds seed, seed+1, ...; the report gives every seed's top-1
      # and their mean. One seed is a lottery on the embedded tasks (the same network spread by 11
      # points over 5 seeds on speed_small, session 8), larger than most architecture differences.
      seeds=1))
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=100, keep=3))
  c.latency = ml_collections.ConfigDict(dict(batch_size=1, repeats=5, warmup=2, path=""))
  c.mesh = ml_collections.ConfigDict(dict(model=1))
  return c


def _choice(cfg_value, allowed, key):
  if cfg_value not in allowed:
    raise ConfigError(f"config.{key} = {cfg_value!r} is not allowed; choose one of {sorted(allowed)}")


def _positive(value, key, allow_zero=False):
  if not (value > 0 or (allow_zero and value == 0)):
    raise ConfigError(f"config.{key} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def validate(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Check values (unknown keys are already rejected by the locked ConfigDict)."""
  _choice(c.mode, MODES, "mode")
  _choice(c.search.strategy, STRATEGIES, "search.strategy")
  _choice(c.search.penalty, PENALTIES, "search.penalty")
  _choice(c.search.cost_metric, ("flops", "params", "latency"), "search.cost_metric")
  _choice(c.search.estimator, ("reinforce", "parsec"), "search.estimator")
  _choice(c.search.tau_schedule, ("exp", "linear"), "search.tau_schedule")
  _choice(c.search.derive, ("mode", "evolution"), "search.derive")
  _choice(c.train.dtype, ("float32", "bfloat16"), "train.dtype")
  for key in ("search.steps", "search.num_groups", "data.batch_size", "data.num_frames", "data.crop_size",
              "train.steps", "train.seeds", "weight_opt.lr", "arch_opt.lr", "train.lr"):
    section, name = key.split(".")
    _positive(c[section][name], key)
  _positive(c.search.cost_unit, "search.cost_unit", allow_zero=True)
  _positive(c.search.arch_warmup_steps, "search.arch_warmup_steps", allow_zero=True)
  _positive(c.search.largest_warmup_steps, "search.largest_warmup_steps", allow_zero=True)
  searching = c.mode in ("search", "demo")
  if searching and c.data.batch_size % c.search.num_groups:
    raise ConfigError(f"config.data.batch_size ({c.data.batch_size}) must be divisible by "
                      f"config.search.num_groups ({c.search.num_groups}): each group is one architecture")
  if not 0 < c.data.arch_val_fraction < 1:
    raise ConfigError(f"config.data.arch_val_fraction must be in (0, 1), got {c.data.arch_val_fraction}")
  if searching and c.search.penalty in ("hinge", "absolute") and c.search.cost_target <= 0 and not c.search.target_arch:
    raise ConfigError("config.search.penalty needs a target: set config.search.cost_target or "
                      "config.search.target_arch (e.g. 'X3D-S')")
  lo, hi = c.data.scale_jitter
  if not (c.data.crop_size <= lo <= hi):
    raise ConfigError(f"config.data.scale_jitter {tuple(c.data.scale_jitter)} must satisfy crop_size "
                      f"({c.data.crop_size}) <= min <= max")
  return c
