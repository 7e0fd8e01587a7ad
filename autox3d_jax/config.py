"""The one place defaults live: `base_config()` returns every key a run may read, and `validate()`
rejects bad values before anything compiles, naming the key and what is allowed.

Config files in `configs/` start from `base_config()` and override; the returned ConfigDict is locked,
so `--config.sarch.steps=...` (a typo) fails at parse time instead of being silently ignored. Code
reads keys as plain attributes (`cfg.search.steps`), never `cfg.get(key, default)`: a default that
is not here does not exist.

Each strategy's own settings live in its sub-section (`search.probabilistic.*`, `search.spos.*`,
`search.dnas.*`, `search.gdas.*`, `search.msg.*`); `validate()` rejects a changed sub-section of a
strategy that is not the one selected, so no setting is silently ignored.

Imports only ml_collections: parsing a config loads neither flax nor the model stack. The names
below (modes, strategies, penalties) are checked against the registries they mirror by
tests/test_config.py.
"""
from __future__ import annotations

import math
import re

import ml_collections

MODES = ("search", "train", "eval", "report", "demo", "latency", "summary", "export", "import")
STRATEGIES = ("probabilistic", "dnas", "gdas", "spos", "msg")   # the weight-sharing (supernet) strategies
# search.strategy: a supernet strategy, or X3D's stepwise expansion (search/expansion.py), which
# trains stand-alone candidates instead of a supernet.
SEARCH_STRATEGIES = STRATEGIES + ("x3d_expansion",)
# X3D's expansion axes, the factors that each about double X2D's FLOPs (search/expansion.py says why)
# and the selection rules; search/expansion.py takes them from here.
EXPANSION_AXES = ("temporal", "fast", "spatial", "width", "bottleneck", "depth")
EXPANSION_FACTORS = {"temporal": 2.0, "fast": 2.0, "spatial": math.sqrt(2), "width": math.sqrt(2),
                     "bottleneck": 2.25, "depth": 2.2}
EXPANSION_SELECTIONS = ("gain_per_cost", "accuracy")
# How an expansion candidate is trained: from scratch, or from the trained network it expands (models/morph.py).
EXPANSION_SCORERS = ("standalone", "inherited")
PENALTIES = ("none", "hinge", "absolute", "fbnet")
COST_METRICS = ("flops", "params", "latency")
EXPORT_FORMATS = ("stablehlo", "saved_model", "tflite", "torch")   # mode=export; autox3d_jax/export writes them
IMPORT_LAYOUTS = ("auto", "pytorchvideo", "slowfast")   # mode=import (autox3d_jax/pretrained.py)
EXPORT_INPUTS = ("uint8", "float32")
# Strategies whose architecture gradient flows through relaxed / straight-through weights.
GRADIENT_STRATEGIES = ("dnas", "gdas", "msg")
# Strategies whose weight step trains sampled single paths (search.sandwich, search.largest_warmup_steps).
SINGLE_PATH_WEIGHT_STEP = ("probabilistic", "spos")


class ConfigError(ValueError):
  """A config value is invalid; the message names the key and what is allowed."""


def optimizer_section(lr: float, warmup_steps: int, weight_decay: float = 5e-5, momentum: float = 0.9,
                      grad_clip: float = 0.0) -> ml_collections.ConfigDict:
  """The schema every weight optimizer shares (`train.optim.make_optimizer` reads it): SGD with
  Nesterov momentum, linear warm-up then cosine decay, decoupled weight decay, optional global-norm
  gradient clipping (0 = off)."""
  return ml_collections.ConfigDict(dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                        warmup_steps=warmup_steps, grad_clip=grad_clip))


def task_section(dataset: str, *, loss: str = "cross_entropy", metric: str = "top1", scale_jitter: tuple = (),
                 cost_target: float = 0.0, target_arch: str = "", weight: float = 1.0) -> ml_collections.ConfigDict:
  """One task of a multi-task search (`config.tasks.<name>`; `autox3d_jax.tasks` reads it): its
  dataset, a registered loss and metric, its scale jitter (() = config.data's), its own cost
  target (both 0 / '' = config.search's) and its share of the supernet's weight loss."""
  return ml_collections.ConfigDict(dict(dataset=dataset, loss=loss, metric=metric, scale_jitter=tuple(scale_jitter),
                                        cost_target=cost_target, target_arch=target_arch, weight=weight))


def _temperature_section() -> ml_collections.ConfigDict:
  """Gumbel temperature of the gradient strategies: exp (FBNet) tau_max * exp(-tau_decay * step),
  floored at tau_min, or linear (GDAS) tau_max -> tau_min over search.steps."""
  return ml_collections.ConfigDict(dict(tau_schedule="exp", tau_max=5.0, tau_min=0.1, tau_decay=0.0))


def _expansion_section() -> ml_collections.ConfigDict:
  """search.strategy = 'x3d_expansion' (search/expansion.py): X3D's stepwise expansion from `base`
  (X2D: every factor 1, one frame at 112 px) over `skeleton` (X3D's), one candidate per axis and
  step trained stand-alone for `train_steps` (0 = train.steps) with config.train's recipe, up to
  config.search.cost_target / target_arch, then backward contraction onto it."""
  return ml_collections.ConfigDict(dict(
      base=ml_collections.ConfigDict(dict(frames=1, sampling_stride=16, crop=112, width=2.0, bottleneck=1.0,
                                          depth=1.0)),
      skeleton=ml_collections.ConfigDict(dict(stem_base=12, stage_bases=(12, 24, 48, 96), stage_repeats=(1, 2, 5, 3),
                                              kernel=(3, 3, 3), se_ratio=1 / 16, head_width=2048, dropout=0.5,
                                              width_divisor=8)),
      axes=EXPANSION_AXES,
      factors=ml_collections.ConfigDict(dict(EXPANSION_FACTORS)),
      max_span=0,                     # source frames one clip may cover, (frames-1) x stride + 1; 0 = no limit
      max_crop=0, max_width=0.0, max_bottleneck=0.0, max_depth=0.0,   # 0 = no limit
      crop_divisor=8,                 # crops are multiples of it
      train_steps=0,                  # per candidate; 0 = train.steps (warm-up scaled in proportion)
      scorer="standalone",            # standalone (each candidate from scratch) | inherited (from the trained
                                      # network it expands, function-preserving: models/morph.py; the base from scratch)
      inherited_steps=0,              # scorer=inherited: steps per inheriting candidate; 0 = train_steps
      selection="gain_per_cost"))     # gain_per_cost (top-1 gain per doubling of cost) | accuracy


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = "demo"
  c.seed = 0
  c.log_every_steps = 10
  c.resume = ""                      # keys allowed to differ from the checkpoint's run ('search.steps,seed')
  c.compilation_cache = ""           # JAX's persistent compilation cache: '' = the user's cache dir, 'off', or a dir

  c.data = ml_collections.ConfigDict(dict(
      name="moving_digits/motion",   # moving_digits/<config>, a converted dataset's name under data_dir, or tfds:<name>
      data_dir="",                   # '' = ~/tensorflow_datasets (or $TFDS_DATA_DIR)
      train_split="train", eval_split="validation",
      arch_val_fraction=0.2,          # held-out part of train for the architecture step (FBNet: 20%)
      num_frames=16, sampling_stride=1, crop_size=56, scale_jitter=(56, 72),
      batch_size=16,                  # global batch; each host reads batch_size / process_count
      eval_batch_size=16, num_temporal_views=1, num_spatial_crops=1,
      shuffle_buffer=512, build_if_missing=True,
      max_skipped_fraction=0.01))    # warn when more of the records read were skipped (corrupt / invalid)

  c.space = ml_collections.ConfigDict(dict(
      num_frames=-1, crop_size=-1,    # -1: take data.num_frames / data.crop_size
      stem_width=24,
      stage_widths=((12, 18, 24, 30, 36), (24, 36, 48, 60, 72), (48, 72, 96, 120, 144),
                    (96, 144, 192, 240, 288)),
      min_depths=(1, 2, 5, 3), max_depths=(5, 10, 25, 15),
      expansions=(1.5, 2.25, 3.0, 4.5, 6.0), se_ratios=(0.0, 1 / 16, 1 / 4),
      # 'type:t x h x w' per op (types: models/registry.py); the attention types add their heads,
      # 'lsa:2x5x5:h3', and their kernel is a window (axial: axis spans).
      ops=("x3d:3x3x3", "x3d:5x3x3", "x3d:3x5x5", "x3d:5x5x5", "x2d:1x3x3", "x2d:1x5x5", "r2plus1d:3x3x3"),
      conv5_width=432, head_width=2048, dropout=0.5, num_classes=-1,   # -1: from the dataset
      # Input axes searched with the network (probabilistic / spos; one input setting per step):
      # ascending choices that include data's value; () = fixed at data.num_frames / sampling_stride / crop_size.
      input_frames=(), input_strides=(), input_crops=(),
      # UniNet's downsampling module before each stage, searched per stage: one tuple of kinds per
      # stage among 'local' and 'local_global' (per-frame global attention with downsample_heads
      # heads); () = none, each stage's first block strides (X3D).
      downsample=(), downsample_heads=0))

  c.search = ml_collections.ConfigDict(dict(
      strategy="probabilistic", steps=600, num_groups=4,
      arch_warmup_steps=200,          # the architecture is frozen while the weights warm up
      cost_metric="flops",            # flops | params | latency (measured table, see mode=latency)
      cost_target=0.0,                # absolute target in table units; 0 = from target_arch
      target_arch="",                 # 'X3D': the target is the X3D-like point's cost in this space
      penalty="hinge", penalty_weight=1.0,
      ssr_weight=0.0,                 # dnas/gdas/msg: weight of the solution-space regulariser (our reading of SSR)
      fbnet=ml_collections.ConfigDict(dict(
          alpha=0.2, beta=0.6,        # search.penalty=fbnet: loss = CE * alpha * log(cost)^beta
          cost_unit=0.0)),            # cost unit of the log; 0 = the metric's: 1e6 FLOPs/params, 1 ms
      sandwich=False,                 # probabilistic/spos: weight-step group 0 = the largest architecture
      distill="none",                 # none | inplace (BigNAS, needs sandwich): the groups share the clips, the last
                                      # trains the smallest child, all but group 0 learn group 0's soft predictions
      largest_warmup_steps=0,         # probabilistic/spos: the first N weight steps train only the largest
      sandwich_ops=(),                # ops the sandwich's / warm-up's largest and smallest children use
                                      # ('x3d:5x3x3', ...; () = every op of config.space.ops)
      fair_channels=True,             # single-path strategies: roll channel masks (fair channel selection)
      derive="mode",                  # mode (argmax of the distribution) | evolution (SPOS)
      derive_within_target=True,      # mode above the cost target -> the most likely arch within it
      init_from="",                   # a checkpoint dir (mode=import's or a training run's): its network's weights
                                      # start the supernet at that network's point (search/adapt.py)
      init_new_blocks="identity",     # init_from: blocks deeper than the network's: identity | copy_last (FNA)
      # FlowNAS's feature alignment distillation (train/teacher.py): a trained network's stage outputs
      # guide every weight step; channel-max maps compared, so the teacher's widths may differ.
      feature_distill=ml_collections.ConfigDict(dict(
          teacher="",                 # a checkpoint dir (a training run's, or mode=import's); '' = off
          weight=1.0,                 # weight of the feature distance in the weight loss
          stages=(-1,))),             # stages whose outputs align (-1 = the last, FlowNAS's choice)
      tasks="",                       # comma-separated config.tasks names: one multi-task search (FBNetV5), a head
                                      # and an architecture per task; '' = the single task of config.data
      probabilistic=ml_collections.ConfigDict(dict(
          estimator="reinforce",      # reinforce (with baseline) | parsec (importance weights)
          baseline_decay=0.95, entropy_weight=0.0,
          shared_val_batch=True,      # score all K samples on the same val clips
          adaptive_samples=True,      # FP-NAS: number of distinct samples follows the entropy
          min_samples=1)),
      spos=ml_collections.ConfigDict(dict(
          cost_bins=0,                # > 0: uniform over that many cost bins (SPOS's FLOPs-bin sampling)
          bin_candidates=16,
          # TrioNet's hierarchical sampling: each block's op type uniformly, then one of its ops
          # (windows / heads / kernels), so a type with many variants is not trained more often.
          hierarchical=False)),
      dnas=_temperature_section(),
      gdas=_temperature_section(),
      # msg.supernet_distill: MSG-DAS's super-net guidance distillation, our reading (its formula is not
      # public): weight of KL(soft supernet || each sampled sub-graph) in the weight loss; 0 = off.
      msg=ml_collections.ConfigDict(dict(**_temperature_section().to_dict(), supernet_distill=0.0)),
      evolution=ml_collections.ConfigDict(dict(
          population=50, iterations=20, top_k=10, mutants=25, crossovers=25, mutation_prob=0.1,
          bn_batches=20, eval_batches=4)),
      x3d_expansion=_expansion_section(),
      weight_opt=optimizer_section(lr=0.1, warmup_steps=0),
      arch_opt=ml_collections.ConfigDict(dict(lr=0.025, beta1=0.9, beta2=0.999))))   # Adam on the logits

  c.train = ml_collections.ConfigDict(dict(
      arch="",                        # train/eval mode: an ArchSpec JSON path or zoo name ('x3d_s')
      steps=1000, label_smoothing=0.0,
      dtype="float32",                # float32 | bfloat16: compute dtype of the search and training steps
      init_from_supernet=False,       # train mode: start from the weights of workdir's search checkpoint
      init_from="",                   # train mode: start from a checkpoint dir (mode=import's, or a training run's)
      seeds=1,                        # demo: retrain each network with seeds seed .. seed+N-1, report the mean
      optimizer=optimizer_section(lr=0.1, warmup_steps=50)))
  c.tasks = ml_collections.ConfigDict()   # name -> task_section(...): the tasks config.search.tasks may name
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=100, keep=3))
  c.eval = ml_collections.ConfigDict(dict(
      checkpoint=""))                 # mode=eval: a checkpoint dir (mode=import's or a training run's); '' = train.arch's run
  c.pretrained = ml_collections.ConfigDict(dict(
      source="",                      # mode=import: a pytorchvideo / SlowFast X3D checkpoint (.pyth / .pt)
      variant="",                     # the network it holds: x3d_xs | x3d_s | x3d_m | x3d_l or an ArchSpec JSON
      layout="auto",                  # auto | pytorchvideo | slowfast
      trust_pickle=False,             # True: unpickle any object (runs the file's code; trusted files only)
      dir=""))                        # '' = workdir/pretrained/<network name>
  c.latency = ml_collections.ConfigDict(dict(
      backend="jax",                  # jax (XLA on this device) | tflite (each piece as a TFLite model, 1 thread)
      batch_size=1, repeats=5, warmup=2,
      min_time_s=0.2,                 # each timing repeats until it has run this long (<= 200 repeats)
      statistic="median",             # median | mean of the repeats, per table entry
      dtype="float32",                # float32 | bfloat16: the dtype the table is measured in
      num_archs=30, seed=0,           # mode=latency: random architectures timed end to end
      path=""))                       # '' = workdir/latency_table.json
  c.export = ml_collections.ConfigDict(dict(
      formats="stablehlo,saved_model,tflite",   # mode=export: comma-separated, see autox3d_jax/export
      weights="trained",              # trained (a training checkpoint of train.arch) | random (size/latency only)
      checkpoint="",                  # weights=trained: a checkpoint dir (mode=import's or a training run's); '' = train.arch's run
      input="uint8",                  # uint8: frames 0..255, normalised inside | float32: normalised clips
      batch_size=1,
      int8=False,                     # also an int8 post-training-quantised TFLite model (needs 'tflite')
      calibration_batches=4,          # train-split batches the int8 quantisation calibrates on
      eval_clips=256,                 # int8: top-1 of the float and int8 TFLite models on this many eval clips
      dir=""))                        # '' = workdir/export/<network name>
  c.mesh = ml_collections.ConfigDict(dict(
      model=1,                        # devices on the 'model' axis (tensor-parallel); the rest form 'data'
      fsdp=True,                      # split parameters and optimizer state over 'data' too (ZeRO-3 / FSDP)
      shard_min_size=2 ** 14))        # arrays with fewer elements stay replicated
  return c


# ----------------------------------------------------------------------------------------- checks
def _choice(value, allowed, key):
  if value not in allowed:
    raise ConfigError(f"config.{key} = {value!r} is not allowed; choose one of {sorted(allowed)}")


def _number(c, key, *, low=None, high=None, low_open=False, integer=False, prefix=""):
  """config.<prefix><key> must be a finite number (an int when `integer`) within [low, high] (or
  (low, ...); `c` is the config or, with `prefix`, the section the key is in."""
  value = c
  for part in key.split("."):
    value = value[part]
  key = prefix + key
  if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
    raise ConfigError(f"config.{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
  if not math.isfinite(value):
    raise ConfigError(f"config.{key} must be finite, got {value!r}")
  if low is not None and (value < low or (low_open and value == low)):
    raise ConfigError(f"config.{key} must be {'>' if low_open else '>='} {low}, got {value!r}")
  if high is not None and value > high:
    raise ConfigError(f"config.{key} must be <= {high}, got {value!r}")


def _positive_int(c, key, prefix=""):
  _number(c, key, low=1, integer=True, prefix=prefix)


def _optimizer(c, key):
  _number(c, f"{key}.lr", low=0, low_open=True)
  _number(c, f"{key}.momentum", low=0, high=1)
  _number(c, f"{key}.weight_decay", low=0)
  _number(c, f"{key}.warmup_steps", low=0, integer=True)
  _number(c, f"{key}.grad_clip", low=0)


def _unused_sections(c):
  """A strategy sub-section changed from its default while another strategy runs would be ignored."""
  defaults = base_config().search
  for name in SEARCH_STRATEGIES:
    if name in c.search and name != c.search.strategy and c.search[name].to_dict() != defaults[name].to_dict():
      changed = sorted(k for k, v in c.search[name].items() if v != defaults[name][k])
      raise ConfigError(f"config.search.{name}.{changed[0]} is set but config.search.strategy is "
                        f"{c.search.strategy!r}: it only applies to strategy={name!r}")
  if c.search.strategy not in SINGLE_PATH_WEIGHT_STEP:
    for key in ("sandwich", "largest_warmup_steps", "distill", "sandwich_ops"):
      if c.search[key] != defaults[key]:
        raise ConfigError(f"config.search.{key} applies to strategies {list(SINGLE_PATH_WEIGHT_STEP)}, "
                          f"not to {c.search.strategy!r}")
  if c.search.ssr_weight != defaults.ssr_weight and c.search.strategy not in GRADIENT_STRATEGIES:
    raise ConfigError(f"config.search.ssr_weight regularises the soft architecture weights of strategies "
                      f"{list(GRADIENT_STRATEGIES)}, not of {c.search.strategy!r}")
  if c.search.penalty == "fbnet" and c.search.strategy not in GRADIENT_STRATEGIES:
    raise ConfigError(f"config.search.penalty = 'fbnet' (a loss factor on the architecture gradient) "
                      f"applies to strategies {list(GRADIENT_STRATEGIES)}, not to {c.search.strategy!r}; "
                      "use 'hinge' or 'absolute'")
  if c.search.penalty != "fbnet" and c.search.fbnet.to_dict() != defaults.fbnet.to_dict():
    raise ConfigError(f"config.search.fbnet.* is set but config.search.penalty is {c.search.penalty!r}: "
                      "it only applies to penalty='fbnet'")


def validate(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Check values (unknown keys are already rejected by the locked ConfigDict); returns `c`."""
  _choice(c.mode, MODES, "mode")
  s = c.search
  _choice(s.strategy, SEARCH_STRATEGIES, "search.strategy")
  _choice(s.penalty, PENALTIES, "search.penalty")
  _choice(s.cost_metric, COST_METRICS, "search.cost_metric")
  _choice(s.probabilistic.estimator, ("reinforce", "parsec"), "search.probabilistic.estimator")
  for name in ("dnas", "gdas", "msg"):
    _choice(s[name].tau_schedule, ("exp", "linear"), f"search.{name}.tau_schedule")
  _choice(s.derive, ("mode", "evolution"), "search.derive")
  _choice(s.distill, ("none", "inplace"), "search.distill")
  if s.distill == "inplace" and not s.sandwich:
    raise ConfigError("config.search.distill = 'inplace' distils from the largest child, which only the sandwich rule "
                      "trains: set config.search.sandwich=True")
  if s.distill == "inplace" and s.num_groups < 2:
    raise ConfigError(f"config.search.distill = 'inplace' needs config.search.num_groups >= 2 (a teacher and a "
                      f"student), got {s.num_groups}")
  sandwich_ops = tuple(s.sandwich_ops)
  if sandwich_ops:
    if not all(isinstance(o, str) and o for o in sandwich_ops):
      raise ConfigError(f"config.search.sandwich_ops must be a tuple of op names of config.space.ops such as "
                        f"'x3d:5x3x3', got {sandwich_ops!r}")
    if not s.sandwich and s.largest_warmup_steps <= 0:
      raise ConfigError("config.search.sandwich_ops picks the ops of the sandwich's and the warm-up's largest "
                        "child, but neither is on: set config.search.sandwich=True or "
                        "config.search.largest_warmup_steps > 0, or leave sandwich_ops empty")
  _choice(c.train.dtype, ("float32", "bfloat16"), "train.dtype")
  _choice(c.latency.dtype, ("float32", "bfloat16"), "latency.dtype")
  _choice(c.latency.backend, ("jax", "tflite"), "latency.backend")
  if c.latency.backend == "tflite" and c.latency.dtype != "float32":
    raise ConfigError(f"config.latency.backend = 'tflite' times float32 TFLite models, but config.latency.dtype is "
                      f"{c.latency.dtype!r}: set config.latency.dtype=float32")
  _choice(c.latency.statistic, ("median", "mean"), "latency.statistic")
  for key in ("search.steps", "search.num_groups", "data.batch_size", "data.eval_batch_size", "data.num_frames",
              "data.crop_size", "data.sampling_stride", "train.steps", "train.seeds", "log_every_steps",
              "checkpoint.every_steps", "checkpoint.keep", "mesh.model", "mesh.shard_min_size", "latency.batch_size",
              "latency.repeats", "search.probabilistic.min_samples"):
    _positive_int(c, key)
  _optimizer(c, "search.weight_opt")
  _optimizer(c, "train.optimizer")
  _number(c, "search.arch_opt.lr", low=0, low_open=True)
  for key in ("search.arch_opt.beta1", "search.arch_opt.beta2", "search.probabilistic.baseline_decay",
              "data.max_skipped_fraction"):
    _number(c, key, low=0, high=1)
  for key in ("search.fbnet.cost_unit", "search.arch_warmup_steps", "search.ssr_weight", "search.msg.supernet_distill",
              "search.largest_warmup_steps", "search.cost_target", "search.penalty_weight",
              "train.label_smoothing"):
    _number(c, key, low=0)
  searching = c.mode in ("search", "demo")
  if searching and c.data.batch_size % c.search.num_groups:
    raise ConfigError(f"config.data.batch_size ({c.data.batch_size}) must be divisible by "
                      f"config.search.num_groups ({c.search.num_groups}): each group is one architecture")
  if not 0 < c.data.arch_val_fraction < 1:
    raise ConfigError(f"config.data.arch_val_fraction must be in (0, 1), got {c.data.arch_val_fraction}")
  if searching and c.search.penalty in ("hinge", "absolute") and c.search.cost_target <= 0 and not c.search.target_arch \
      and not task_names(c):   # a multi-task search's tasks may bring their own targets (check_tasks)
    raise ConfigError("config.search.penalty needs a target: set config.search.cost_target or "
                      "config.search.target_arch (e.g. 'X3D')")
  _scale_jitter(tuple(c.data.scale_jitter), "data.scale_jitter", c.data.crop_size)
  _ranges(c)
  _export_section(c.export)
  _weights_sources(c)
  _space_section(c.space)
  _input_axes(c)
  _downsample_costs(c)
  _resume_keys(c)
  _unused_sections(c)
  if s.strategy == "x3d_expansion":
    _expansion(c)
  check_tasks(c)
  return c


def _scale_jitter(jitter: tuple, key: str, crop_size: int) -> None:
  """config.<key> must be (min, max) short-side sizes with crop_size <= min <= max."""
  if len(jitter) != 2 or not all(_is_number(v) for v in jitter):
    raise ConfigError(f"config.{key} must be (min, max) short-side sizes, got {jitter!r}")
  lo, hi = jitter
  if not crop_size <= lo <= hi:
    raise ConfigError(f"config.{key} {jitter} must satisfy config.data.crop_size ({crop_size}) <= min <= max")


TASK_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"


def task_names(c: ml_collections.ConfigDict) -> list[str]:
  """config.search.tasks as a list of names, in order ([] = a single-task search)."""
  return [n.strip() for n in c.search.tasks.split(",")] if c.search.tasks.strip() else []


def check_tasks(c: ml_collections.ConfigDict) -> None:
  """config.search.tasks and config.tasks (a multi-task search, `autox3d_jax.tasks`): each name
  once, each with a config.tasks section of `task_section`'s keys and sane values, tasks defined
  only when named, and a run that can serve several tasks. The losses and metrics are checked
  against their registries by `tasks.tasks_of`."""
  names = task_names(c)
  if not names:
    if c.tasks.keys():
      raise ConfigError(f"config.tasks defines {sorted(c.tasks.keys())} but config.search.tasks names none: set "
                        f"config.search.tasks={','.join(sorted(c.tasks.keys()))} to search them (or remove config.tasks)")
    return
  defaults = task_section("")
  seen = set()
  for name in names:
    if not re.match(TASK_NAME_PATTERN, name):
      raise ConfigError(f"config.search.tasks = {c.search.tasks!r}: {name!r} is not a task name (a letter, then "
                        "letters, digits or '_'), comma-separated")
    if name in seen:
      raise ConfigError(f"config.search.tasks = {c.search.tasks!r} names the task {name!r} twice; each task gets one "
                        "head and one architecture: name it once")
    seen.add(name)
    if name not in c.tasks:
      raise ConfigError(f"config.search.tasks names {name!r}, which config.tasks does not define (defined: "
                        f"{sorted(c.tasks.keys()) or 'none'}); add config.tasks.{name} = config.task_section(<dataset>)")
    t, key = c.tasks[name], f"tasks.{name}"
    if not isinstance(t, ml_collections.ConfigDict):
      raise ConfigError(f"config.{key} must be a section made by config.task_section(<dataset>), got {t!r}")
    unknown = sorted(set(t.keys()) - set(defaults.keys()))
    if unknown:
      raise ConfigError(f"config.{key}.{unknown[0]} is not a task key; a task has {sorted(defaults.keys())}")
    missing = sorted(set(defaults.keys()) - set(t.keys()))
    if missing:
      raise ConfigError(f"config.{key} has no {missing[0]!r}; make it with config.task_section(<dataset>)")
    if not isinstance(t.dataset, str) or not t.dataset:
      raise ConfigError(f"config.{key}.dataset is empty; name the task's dataset (e.g. 'moving_digits/motion_small')")
    _number(c, f"{key}.weight", low=0, low_open=True)
    _number(c, f"{key}.cost_target", low=0)
    if tuple(t.scale_jitter):   # () = config.data's
      _scale_jitter(tuple(t.scale_jitter), f"{key}.scale_jitter", c.data.crop_size)
    if c.search.penalty in ("hinge", "absolute") and t.cost_target <= 0 and not t.target_arch \
        and c.search.cost_target <= 0 and not c.search.target_arch:
      raise ConfigError(f"config.search.penalty needs a target for task {name!r}: set config.{key}.cost_target or "
                        f".target_arch, or config.search.cost_target / target_arch for every task")
  _multitask_run(c, names)


def _multitask_run(c, names):
  """What a multi-task search cannot do (yet), named before anything is built."""
  tasks = len(names)
  if c.mode != "search":
    raise ConfigError(f"config.search.tasks runs a multi-task search in mode 'search', not {c.mode!r}; "
                      "benchmarks/bench_multitask.py retrains each task's network")
  if c.search.strategy not in STRATEGIES:
    raise ConfigError(f"config.search.tasks needs a supernet strategy {list(STRATEGIES)}, not "
                      f"{c.search.strategy!r}")
  if c.search.num_groups % tasks:
    raise ConfigError(f"config.search.num_groups = {c.search.num_groups} must be divisible by the {tasks} tasks of "
                      f"config.search.tasks: each task trains num_groups / {tasks} architectures per step")
  # data.batch_size divides by num_groups (checked above), so each task reads batch_size / T clips.
  unsupported = [("search.cost_metric", c.search.cost_metric == "latency",
                  "the latency table is measured with one head; use 'flops' or 'params'"),
                 ("search.distill", c.search.distill != "none", "in-place distillation is single-task; use 'none'"),
                 ("search.init_from", bool(c.search.init_from), "a pretrained network has one head; leave it ''"),
                 ("search.feature_distill.teacher", bool(c.search.feature_distill.teacher),
                  "the teacher guides one task's supernet; leave it ''"),
                 ("search.msg.supernet_distill", c.search.msg.supernet_distill != 0,
                  "the super-net guidance is single-task; use 0")]
  unsupported += [(f"space.{k}", bool(tuple(c.space[k])), "input axes are searched single-task; use ()")
                  for k in INPUT_AXIS_KEYS]
  for key, bad, why in unsupported:
    if bad:
      raise ConfigError(f"config.{key} is not supported with config.search.tasks (a multi-task search): {why}")


# search.* keys an expansion reads; the rest drive the supernet and must stay at their defaults.
_EXPANSION_READS = ("strategy", "cost_metric", "cost_target", "target_arch", "x3d_expansion")


def _expansion(c):
  """search.strategy = 'x3d_expansion': mode search only, an analytic cost metric and a target, the
  supernet's settings untouched, and the section's values in range (the procedure's own checks --
  axes' reach, the target against the base -- run in `search.expansion.check` before training)."""
  if c.mode != "search":
    raise ConfigError(f"config.search.strategy = 'x3d_expansion' runs in mode 'search', not {c.mode!r} (the demo "
                      "searches with a supernet)")
  _choice(c.search.cost_metric, ("flops", "params"), "search.cost_metric")
  if c.search.cost_target <= 0 and not c.search.target_arch:
    raise ConfigError("config.search.strategy = 'x3d_expansion' expands up to a cost target: set "
                      "config.search.cost_target or config.search.target_arch")
  defaults = base_config().search
  for key in defaults:
    if key in _EXPANSION_READS or key in STRATEGIES:
      continue
    value, default = c.search[key], defaults[key]
    if isinstance(value, ml_collections.ConfigDict):
      value, default = value.to_dict(), default.to_dict()
    if value != default:
      raise ConfigError(f"config.search.{key} is a supernet setting; search.strategy = 'x3d_expansion' trains "
                        "stand-alone candidates and would ignore it: leave it at its default")
  e = c.search.x3d_expansion
  p = "search.x3d_expansion."
  for key in ("frames", "sampling_stride", "crop"):
    _positive_int(c, f"{p}base.{key}")
  for key in ("width", "bottleneck", "depth"):
    _number(c, f"{p}base.{key}", low=0, low_open=True)
  for key in ("stem_base", "head_width", "width_divisor"):
    _positive_int(c, f"{p}skeleton.{key}")
  _number(c, f"{p}skeleton.se_ratio", low=0, high=1)
  _number(c, f"{p}skeleton.dropout", low=0, high=1)
  sk = e.skeleton
  for key in ("stage_bases", "stage_repeats", "kernel"):
    values = tuple(sk[key])
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
      raise ConfigError(f"config.{p}skeleton.{key} must hold positive integers, got {values!r}")
  if len(sk.stage_bases) != len(sk.stage_repeats):
    raise ConfigError(f"config.{p}skeleton.stage_repeats {tuple(sk.stage_repeats)} must have one entry per stage "
                      f"of config.{p}skeleton.stage_bases {tuple(sk.stage_bases)}")
  if len(tuple(sk.kernel)) != 3 or any(k % 2 == 0 for k in sk.kernel):
    raise ConfigError(f"config.{p}skeleton.kernel must be 3 odd sizes (t, h, w), got {tuple(sk.kernel)!r}")
  axes = tuple(e.axes)
  if not axes or len(set(axes)) != len(axes):
    raise ConfigError(f"config.{p}axes must name distinct axes of {list(EXPANSION_AXES)}, got {axes!r}")
  for axis in axes:
    _choice(axis, EXPANSION_AXES, f"{p}axes")
  for axis in EXPANSION_AXES:
    _number(c, f"{p}factors.{axis}")
    if not e.factors[axis] > 1:
      raise ConfigError(f"config.{p}factors.{axis} = {e.factors[axis]!r} must be > 1 (an expansion grows its axis)")
  for key in ("max_span", "max_crop", "train_steps"):
    _number(c, f"{p}{key}", low=0, integer=True)
  for key in ("max_width", "max_bottleneck", "max_depth"):
    _number(c, f"{p}{key}", low=0)
  _positive_int(c, f"{p}crop_divisor")
  _choice(e.selection, EXPANSION_SELECTIONS, f"{p}selection")
  _choice(e.scorer, EXPANSION_SCORERS, f"{p}scorer")
  _number(c, f"{p}inherited_steps", low=0, integer=True)
  if e.inherited_steps and e.scorer != "inherited":
    raise ConfigError(f"config.{p}inherited_steps = {e.inherited_steps} is set but config.{p}scorer is "
                      f"{e.scorer!r}: it is the training length of candidates that inherit their parent's "
                      f"weights; set config.{p}scorer=inherited or leave inherited_steps at 0")


X3D_TARGETS = ("X3D", "X3D-XS", "X3D-S", "X3D-M", "X3D-L")


def _ranges(c):
  """The numeric and string settings the checks in `validate` above do not cover."""
  for key in ("data.name", "data.train_split", "data.eval_split"):
    if not _get(c, key).strip():
      raise ConfigError(f"config.{key} is empty")
  for key in ("data.num_temporal_views", "latency.num_archs", "search.evolution.population",
              "search.evolution.top_k", "search.evolution.bn_batches", "search.evolution.eval_batches",
              "search.spos.bin_candidates"):
    _positive_int(c, key)
  _choice(c.data.num_spatial_crops, (1, 3), "data.num_spatial_crops")
  for key in ("seed", "latency.seed", "data.shuffle_buffer", "latency.warmup", "search.spos.cost_bins",
              "search.evolution.iterations", "search.evolution.mutants", "search.evolution.crossovers"):
    _number(c, key, low=0, integer=True)
  _number(c, "latency.min_time_s", low=0)
  _number(c, "search.evolution.mutation_prob", low=0, high=1)
  _number(c, "train.label_smoothing", low=0, high=1)
  _number(c, "search.probabilistic.entropy_weight")
  _number(c, "search.fbnet.alpha", low=0, low_open=True)
  _number(c, "search.fbnet.beta", low=0)
  for name in ("dnas", "gdas", "msg"):
    _number(c, f"search.{name}.tau_max", low=0, low_open=True)
    _number(c, f"search.{name}.tau_min", low=0, low_open=True)
    _number(c, f"search.{name}.tau_decay", low=0)
    if c.search[name].tau_min > c.search[name].tau_max:
      raise ConfigError(f"config.search.{name}.tau_min ({c.search[name].tau_min}) must be <= "
                        f"config.search.{name}.tau_max ({c.search[name].tau_max})")
  e = c.search.evolution
  if e.top_k > e.population:
    raise ConfigError(f"config.search.evolution.top_k ({e.top_k}) must be <= config.search.evolution.population "
                      f"({e.population})")
  if c.search.strategy == "probabilistic" and c.search.probabilistic.min_samples > c.search.num_groups:
    raise ConfigError(f"config.search.probabilistic.min_samples ({c.search.probabilistic.min_samples}) must be <= "
                      f"config.search.num_groups ({c.search.num_groups}): a step draws at most num_groups samples")
  if c.search.target_arch and c.search.target_arch.upper() not in X3D_TARGETS:
    raise ConfigError(f"config.search.target_arch = {c.search.target_arch!r} is not allowed; choose '' (use "
                      f"config.search.cost_target) or one of {list(X3D_TARGETS)}")


def _export_section(e):
  """config.export: known formats (at least one), a weights source, an input kind, an int8 model only
  together with 'tflite'."""
  formats = [f.strip() for f in str(e.formats).split(",") if f.strip()]
  if not formats:
    raise ConfigError(f"config.export.formats is empty; pass a comma-separated subset of {list(EXPORT_FORMATS)}")
  for f in formats:
    _choice(f, EXPORT_FORMATS, "export.formats")
  _choice(e.weights, ("trained", "random"), "export.weights")
  _choice(e.input, EXPORT_INPUTS, "export.input")
  for key in ("batch_size", "calibration_batches", "eval_clips"):
    _positive_int(e, key, prefix="export.")
  if not isinstance(e.int8, bool):
    raise ConfigError(f"config.export.int8 must be True or False, got {e.int8!r}")
  if e.int8 and "tflite" not in formats:
    raise ConfigError("config.export.int8 = True quantises the TFLite model: add 'tflite' to config.export.formats")
  defaults = base_config().export
  for key in ("calibration_batches", "eval_clips"):
    if not e.int8 and e[key] != defaults[key]:
      raise ConfigError(f"config.export.{key} is set but config.export.int8 is False: it only applies to the int8 "
                        f"TFLite model")
  if e.weights == "random" and e.checkpoint:
    raise ConfigError("config.export.checkpoint is set but config.export.weights is 'random': set "
                      "config.export.weights=trained to export that checkpoint's weights")


def _weights_sources(c):
  """Keys that read or write network weights apply to one mode each: set in another, they would be ignored."""
  defaults = base_config()
  if c.mode != "import":
    changed = sorted(k for k, v in c.pretrained.items() if v != defaults.pretrained[k])
    if changed:
      raise ConfigError(f"config.pretrained.{changed[0]} is set but config.mode is {c.mode!r}: config.pretrained "
                        f"describes mode=import")
  _choice(c.pretrained.layout, IMPORT_LAYOUTS, "pretrained.layout")
  if not isinstance(c.pretrained.trust_pickle, bool):
    raise ConfigError(f"config.pretrained.trust_pickle must be True or False, got {c.pretrained.trust_pickle!r}")
  if c.train.init_from and c.mode != "train":
    raise ConfigError(f"config.train.init_from is set but config.mode is {c.mode!r}: it applies to mode=train "
                      f"(for mode=eval use config.eval.checkpoint, for mode=export config.export.checkpoint)")
  if c.train.init_from and c.train.init_from_supernet:
    raise ConfigError("config.train.init_from and config.train.init_from_supernet are both set: choose one source "
                      "of initial weights")
  if c.search.init_from and c.mode not in ("search", "demo"):
    raise ConfigError(f"config.search.init_from is set but config.mode is {c.mode!r}: it starts a search "
                      f"(mode=search or demo); to fine-tune a network use config.train.init_from")
  _choice(c.search.init_new_blocks, ("identity", "copy_last"), "search.init_new_blocks")
  if not c.search.init_from and c.search.init_new_blocks != defaults.search.init_new_blocks:
    raise ConfigError("config.search.init_new_blocks is set but config.search.init_from is empty: it says how a "
                      "pretrained network fills the supernet's deeper blocks")
  if c.eval.checkpoint and c.mode != "eval":
    raise ConfigError(f"config.eval.checkpoint is set but config.mode is {c.mode!r}: it applies to mode=eval")
  _feature_distill(c, defaults.search.feature_distill)


def _feature_distill(c, defaults) -> None:
  """config.search.feature_distill: a teacher only for a search; weight and stages only with one."""
  fd = c.search.feature_distill
  if not isinstance(fd.teacher, str):
    raise ConfigError(f"config.search.feature_distill.teacher must be a checkpoint directory (a string), got "
                      f"{fd.teacher!r}")
  if fd.teacher and c.mode not in ("search", "demo"):
    raise ConfigError(f"config.search.feature_distill.teacher is set but config.mode is {c.mode!r}: it guides a "
                      f"search's supernet (mode=search or demo)")
  if not fd.teacher:
    changed = sorted(k for k, v in fd.items() if k != "teacher" and v != defaults[k])
    if changed:
      raise ConfigError(f"config.search.feature_distill.{changed[0]} is set but config.search.feature_distill.teacher "
                        f"is empty: set the teacher (a trained network's checkpoint directory) or leave it at "
                        f"{defaults[changed[0]]!r}")
  _number(c, "search.feature_distill.weight", low=0, low_open=True)
  stages = fd.stages
  if not isinstance(stages, (tuple, list)) or not stages:
    raise ConfigError(f"config.search.feature_distill.stages must be a non-empty tuple of stage indices "
                      f"(-1 = the last), got {stages!r}")
  if fd.teacher and len(c.space.stage_widths):   # an empty space is named by the space's own check
    feature_stages(tuple(stages), len(c.space.stage_widths))


def feature_stages(stages, num_stages: int) -> tuple[int, ...]:
  """config.search.feature_distill.stages as sorted 0-based indices (negative ones count from the
  last stage); ConfigError naming the key when one is out of range or repeated."""
  out = []
  for s in stages:
    if isinstance(s, bool) or not isinstance(s, int) or not -num_stages <= s < num_stages:
      raise ConfigError(f"config.search.feature_distill.stages holds {s!r}: each entry is a stage index in "
                        f"[{-num_stages}, {num_stages}) of the space's {num_stages} stages (-1 = the last)")
    out.append(s % num_stages)
  if len(set(out)) != len(out) or not out:
    raise ConfigError(f"config.search.feature_distill.stages = {tuple(stages)!r} must name one or more distinct "
                      f"stages (-1 = the last, FlowNAS's choice)")
  return tuple(sorted(out))


def _space_section(s):
  """Shapes and ranges of config.space (the space builder checks the op names)."""
  for key in ("stem_width", "conv5_width", "head_width"):
    _positive_int(s, key, prefix="space.")
  for key in ("num_frames", "crop_size", "num_classes"):
    if s[key] != -1:
      _positive_int(s, key, prefix="space.")
  _number(s, "dropout", low=0, high=1, prefix="space.")
  if s.dropout >= 1:
    raise ConfigError(f"config.space.dropout must be < 1, got {s.dropout}")
  stages = tuple(s.stage_widths)
  if not stages or not all(isinstance(w, tuple) and w and all(_is_int(v) and v >= 1 for v in w) for w in stages):
    raise ConfigError(f"config.space.stage_widths must be one non-empty tuple of positive channel counts per "
                      f"stage, got {stages!r}")
  for key in ("min_depths", "max_depths"):
    depths = tuple(s[key])
    if len(depths) != len(stages) or not all(_is_int(d) and d >= 1 for d in depths):
      raise ConfigError(f"config.space.{key} must hold one integer >= 1 per stage ({len(stages)} stages), "
                        f"got {depths!r}")
  for i, (lo, hi) in enumerate(zip(s.min_depths, s.max_depths)):
    if lo > hi:
      raise ConfigError(f"config.space.min_depths[{i}] ({lo}) must be <= config.space.max_depths[{i}] ({hi})")
  for key, high in (("expansions", None), ("se_ratios", 1)):
    values = tuple(s[key])
    ok = values and all(_is_number(v) and math.isfinite(v) and (v > 0 if key == "expansions" else 0 <= v < high)
                        for v in values)
    if not ok:
      raise ConfigError(f"config.space.{key} must be a non-empty tuple of "
                        f"{'positive numbers' if key == 'expansions' else 'numbers in [0, 1)'}, got {values!r}")
  ops = tuple(s.ops)
  if not ops or not all(isinstance(o, str) and o for o in ops):
    raise ConfigError(f"config.space.ops must be a non-empty tuple of op names such as 'x3d:3x3x3', got {ops!r}")
  downsample = tuple(s.downsample)
  kinds = DOWNSAMPLE_KINDS
  if downsample and (len(downsample) != len(stages) or not all(
      isinstance(k, tuple) and k and len(set(k)) == len(k) and all(v in kinds for v in k) for k in downsample)):
    raise ConfigError(f"config.space.downsample must be () or one tuple of distinct kinds among {list(kinds)} per "
                      f"stage ({len(stages)} stages), e.g. {(('local',),) * (len(stages) - 1) + (kinds,)}; got "
                      f"{downsample!r}")
  if not _is_int(s.downsample_heads) or s.downsample_heads < 0:
    raise ConfigError(f"config.space.downsample_heads must be an integer >= 0, got {s.downsample_heads!r}")
  needs_heads = any("local_global" in k for k in downsample)
  if needs_heads != (s.downsample_heads > 0):
    raise ConfigError(f"config.space.downsample_heads ({s.downsample_heads}) must be > 0 exactly when a stage of "
                      f"config.space.downsample can choose 'local_global' (its attention heads)")


# models.spec.DOWNSAMPLE_KINDS (this module imports no model code; tests/test_config.py checks they agree).
DOWNSAMPLE_KINDS = ("local", "local_global")

# Strategies that can search the input axes: one input setting per step, drawn inside the step from
# the distribution (probabilistic) or uniformly (spos, whose evolution then scores each candidate at
# its own input). The gradient strategies relax every decision into a weighted mixture, which a clip
# shape cannot be.
INPUT_AXIS_STRATEGIES = ("probabilistic", "spos")
INPUT_AXIS_KEYS = {"input_frames": "num_frames", "input_strides": "sampling_stride", "input_crops": "crop_size"}


def _input_axes(c):
  """config.space.input_*: ascending distinct positive integers that include the reference clip's
  value (data's, or space.num_frames / crop_size when set), strides multiples of the smallest, and a
  run that can search them (a sampling strategy, an analytic cost metric)."""
  searched = [k for k in INPUT_AXIS_KEYS if tuple(c.space[k])]
  for key in searched:
    values, ref_key = tuple(c.space[key]), INPUT_AXIS_KEYS[key]
    if not all(_is_int(v) and v >= 1 for v in values) or list(values) != sorted(set(values)):
      raise ConfigError(f"config.space.{key} must be ascending distinct positive integers, got {values!r}")
    own = c.space[ref_key] if ref_key in c.space and c.space[ref_key] > 0 else None
    reference, where = (own, f"config.space.{ref_key}") if own else (c.data[ref_key], f"config.data.{ref_key}")
    if reference not in values:
      raise ConfigError(f"config.space.{key} = {values} must include {where} ({reference}): that is the reference "
                        f"clip, where the X3D-like baseline and the cost target are taken")
  strides = tuple(c.space.input_strides)
  if strides and all(_is_int(v) and v >= 1 for v in strides) and any(v % strides[0] for v in strides):
    raise ConfigError(f"config.space.input_strides = {strides}: every stride must be a multiple of the smallest "
                      f"({strides[0]}), so that every clip is cut from one decoded clip")
  if not searched:
    return
  if c.mode == "latency":
    raise ConfigError(f"config.space.{searched[0]} with mode 'latency': the latency table is measured at one clip; "
                      "clear the config.space.input_* keys to measure the space at config.data's clip")
  if c.search.strategy not in INPUT_AXIS_STRATEGIES:
    raise ConfigError(f"config.space.{searched[0]} searches an input axis, one input setting per step, which "
                      f"strategies {list(INPUT_AXIS_STRATEGIES)} support, not {c.search.strategy!r} (a gradient "
                      "strategy mixes every choice, and a clip shape cannot be mixed)")
  if c.search.cost_metric == "latency":
    raise ConfigError(f"config.space.{searched[0]} with config.search.cost_metric = 'latency': the latency table "
                      "is measured at one clip; use 'flops' or 'params' when searching input axes")


def _downsample_costs(c):
  """The latency table times blocks only: a space with downsampling modules is searched on FLOPs or
  params, and mode=latency does not measure it."""
  if not tuple(c.space.downsample):
    return
  if c.mode == "latency" or c.search.cost_metric == "latency":
    raise ConfigError("config.space.downsample with a latency table (mode 'latency' or config.search.cost_metric = "
                      "'latency'): the table has no entries for downsampling modules; search on 'flops' or "
                      "'params', or clear config.space.downsample")


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _get(c, key):
  value = c
  for part in key.split("."):
    value = value[part]
  return value


def _leaf_keys(node, prefix: str = "") -> set[str]:
  out = set()
  for k, v in node.items():
    out |= _leaf_keys(v, f"{prefix}{k}.") if isinstance(v, ml_collections.ConfigDict) else {f"{prefix}{k}"}
  return out


def _resume_keys(c):
  """config.resume names config keys (or 'code_version') that a resumed run may change."""
  known = _leaf_keys(base_config()) | {"code_version"}
  for name in (k.strip() for k in c.resume.split(",")):
    if name and name not in known:
      raise ConfigError(f"config.resume names {name!r}, which is not a config key; it takes comma-separated "
                        f"keys such as 'search.steps,train.steps' (or 'code_version')")


# ------------------------------------------------------------------------------- config arguments
def parse_config_arg(arg: str, where: str, *, options: dict | None = None, flags: tuple[str, ...] = (),
                     variants: tuple[str, ...] = ()) -> dict:
  """The argument of a config file (`configs/x.py:ARG`), parsed one way for every config.

  ARG is comma-separated: `name=value` sets an option (`options` maps each name to its allowed
  values, or None for any string), a bare `name` sets a flag (True) or, for configs with
  `variants`, picks the variant (at most one; the first of `variants` is the default).
  Returns {option: value or None, flag: bool, 'variant': str}; anything else raises ValueError
  naming `where` and what it accepts.
  """
  options = dict(options or {})
  out: dict = {name: None for name in options}
  out.update({name: False for name in flags})
  if variants:
    out["variant"] = variants[0]
  accepted = ([f"{n}=<{'|'.join(v) if v else 'value'}>" for n, v in options.items()] + list(flags)
              + ([f"one of {list(variants)}"] if variants else []))
  chosen_variant = False
  for part in filter(None, (p.strip() for p in arg.split(","))):
    name, eq, value = part.partition("=")
    if eq and name in options:
      if options[name] and value not in options[name]:
        raise ValueError(f"{where}: {name}={value!r} is not allowed; choose one of {list(options[name])}")
      out[name] = value
    elif not eq and name in flags:
      out[name] = True
    elif not eq and name in variants and not chosen_variant:
      out["variant"], chosen_variant = name, True
    else:
      raise ValueError(f"{where}: cannot parse {part!r} in {arg!r}; it accepts {', '.join(accepted)}")
  return out
