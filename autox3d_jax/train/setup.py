"""Config -> the objects a run needs: search space, cost table, target, baseline, input pipelines.

Kept apart from the loops so Colab and tests build exactly what `main.py` builds.
"""
from __future__ import annotations

import dataclasses
import math
import os

import jax
import ml_collections

from autox3d_jax import labels, paths
from autox3d_jax.config import ConfigError, task_names
from autox3d_jax.cost import latency
from autox3d_jax.data import pipeline as data_pipeline
from autox3d_jax.data import registry as data_registry
from autox3d_jax.models import zoo
from autox3d_jax.models.spec import ArchSpec
from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.space import SearchSpace, space_config_from_section
from autox3d_jax.train import partitioning


def num_classes(cfg: ml_collections.ConfigDict) -> int:
  if cfg.space.num_classes > 0:
    return int(cfg.space.num_classes)
  return data_registry.get_source(cfg.data.name, cfg.data.train_split, cfg.data.data_dir or None).num_classes


def build_space(cfg: ml_collections.ConfigDict, classes: int | None = None) -> SearchSpace:
  """The search space config.space describes, at config.data's clip unless config.space sets its
  own (with config.data's sampling stride: the reference clip of the input axes), with `classes`
  (default: config.space.num_classes, else the dataset's) outputs."""
  s = cfg.space
  return SearchSpace(space_config_from_section(
      s, num_frames=s.num_frames if s.num_frames > 0 else cfg.data.num_frames,
      crop_size=s.crop_size if s.crop_size > 0 else cfg.data.crop_size, num_classes=classes or num_classes(cfg),
      sampling_stride=cfg.data.sampling_stride))


def load_arch(name_or_path: str, num_classes: int | None = None) -> ArchSpec:
  """An ArchSpec JSON file, or a zoo name ('x3d_s')."""
  if paths.is_remote(name_or_path) or os.path.exists(name_or_path):
    spec = ArchSpec.load(name_or_path)
    if num_classes and spec.head.num_classes != num_classes:
      spec = spec.replace(head=spec.head.__class__(**{**spec.head.__dict__, "num_classes": num_classes}))
    return spec
  try:
    return zoo.get(name_or_path, num_classes or 400)
  except ValueError:
    raise ConfigError(f"config.train.arch = {name_or_path!r} is neither an ArchSpec JSON file nor a zoo name "
                     f"{zoo.names()}") from None


def network_spec(cfg: ml_collections.ConfigDict, imported: ArchSpec | None = None,
                 classes: int | None = None) -> ArchSpec:
  """The standalone network of modes train / eval / export: config.train.arch (a zoo name or an
  ArchSpec file), or when that is '' the architecture of an imported weights checkpoint
  (`imported`, `train.weights.arch_of`), else X3D-S; at config.data's clip, with `classes` outputs
  (None: the zoo's 400 / the file's / the checkpoint's own)."""
  if cfg.train.arch or imported is None:
    spec = load_arch(cfg.train.arch or "x3d_s", classes)
  else:
    spec = imported if classes is None else imported.replace(head=dataclasses.replace(imported.head,
                                                                                        num_classes=classes))
  return spec.replace(num_frames=cfg.data.num_frames, crop_size=cfg.data.crop_size)


def clip_config(cfg: ml_collections.ConfigDict, clip) -> ml_collections.ConfigDict:
  """A copy of config at `clip` (a `search.inputs.ClipInput`: frames, sampling stride, crop), its
  scale jitter scaled by crop / config.data.crop_size (the field of view kept): how a network is
  trained and evaluated at its own input."""
  c = cfg.copy_and_resolve_references()
  scale = clip.crop / cfg.data.crop_size
  c.data.num_frames = clip.frames
  c.data.sampling_stride = clip.stride
  c.data.crop_size = clip.crop
  c.data.scale_jitter = tuple(max(clip.crop, round(v * scale)) for v in cfg.data.scale_jitter)
  return c


def search_data_config(cfg: ml_collections.ConfigDict, space: SearchSpace) -> ml_collections.ConfigDict:
  """config whose data section decodes what the search step reads: the space's superclip when it
  searches input axes (`SearchSpace.superclip`, every input setting cut from it in the step),
  else config itself."""
  if not space.input_labels:
    return cfg
  return clip_config(cfg, space.superclip())


def latency_table_path(cfg: ml_collections.ConfigDict, workdir: str | None) -> str | None:
  """config.latency.path, else `workdir/latency_table.json` (where mode=latency writes it; a
  gs:// workdir gives a gs:// path, read and written through `autox3d_jax.paths`)."""
  from autox3d_jax import paths
  if cfg.latency.path:
    return cfg.latency.path
  return paths.join(workdir, "latency_table.json") if workdir else None


def build_cost_table(space: SearchSpace, cfg: ml_collections.ConfigDict, workdir: str | None = None) -> CostTable:
  """The search's cost table. 'latency' reuses the measured table when it matches this backend and
  space, else measures one and saves it; with several processes process 0's table is broadcast, so
  every host compiles the same costs into the step."""
  metric = cfg.search.cost_metric
  if metric == "latency":
    table = latency.load_or_build(space, cfg.latency, latency_table_path(cfg, workdir))
    table = latency.share_across_processes(table)
    return CostTable.build(space, "latency", fns=latency.latency_fns(table))
  return CostTable.build(space, metric)



def x3d_like_point(space: SearchSpace, depths: tuple[int, ...] | None = None) -> dict[str, int]:
  """X3D's design rules inside `space`: x3d 3x3x3 blocks, expansion 2.25, SE 1/16 on every other
  block, the middle width choice, and `depths` (default X3D-S's (3, 5, 11, 7)) clipped to the
  space, at the reference clip. In the default space at an X3D variant's input, `depths=` that variant's gives exactly it."""
  c = space.config
  x3d_depths = tuple(depths or zoo.X3D_VARIANTS["S"]["depths"])

  def nearest(values, target):
    return min(range(len(values)), key=lambda k: abs(values[k] - target))

  ops = [o.label for o in c.ops]
  op = ops.index("x3d_333") if "x3d_333" in ops else 0
  point = {}
  for i in range(space.num_stages):
    point[labels.width(i)] = len(c.stage_widths[i]) // 2
    depth_choices = space.by_label[labels.depth(i)].choices
    want = x3d_depths[i] if i < len(x3d_depths) else depth_choices[-1]
    point[labels.depth(i)] = nearest(depth_choices, want)
    if c.downsample:   # X3D has none: the cheapest module, the local one
      kinds = c.downsample[i]
      point[labels.downsample(i)] = kinds.index("local") if "local" in kinds else 0
    for j in range(c.max_depths[i]):
      point[labels.block_decision(i, j, "op")] = op
      point[labels.block_decision(i, j, "expansion")] = nearest(c.expansions, 2.25)
      point[labels.block_decision(i, j, "se")] = nearest(c.se_ratios, 1 / 16 if j % 2 == 0 else 0.0)
  point.update(space.input_point(c.reference_input))   # the reference clip (config.data's)
  return point


def target_point(space: SearchSpace, target_arch: str) -> dict[str, int]:
  """The point config.search.target_arch names: 'X3D' = the X3D-like point (X3D-S's depths), or
  'X3D-XS' / 'X3D-S' / 'X3D-M' / 'X3D-L' = that variant's depths (its FLOPs when the space sits at
  its input)."""
  if target_arch.upper() == "X3D":
    return x3d_like_point(space)
  variant = target_arch.upper().replace("X3D", "").strip("-_ ")
  if variant not in zoo.STANDARD_WIDTH_VARIANTS:
    raise ConfigError(f"config.search.target_arch = {target_arch!r} is not 'X3D' or one of "
                      f"{['X3D-' + v for v in zoo.STANDARD_WIDTH_VARIANTS]}")
  return x3d_like_point(space, zoo.X3D_VARIANTS[variant]["depths"])


def resolve_cost_target(space: SearchSpace, table: CostTable, cfg: ml_collections.ConfigDict) -> float:
  """The absolute target in table units: config.search.cost_target, or the cost of target_arch
  (`target_point`). A target below the space's cheapest architecture is
  rejected here, before anything compiles: no search could meet it."""
  if cfg.search.cost_target > 0:
    target = float(cfg.search.cost_target)
  elif cfg.search.target_arch:
    target = table.of_point(target_point(space, cfg.search.target_arch))
  else:
    return 0.0
  cheapest, _ = table.extreme(largest=False)
  if target < cheapest:
    raise ConfigError(f"config.search.cost_target = {target:.6g} ({table.metric}) is below the cheapest "
                      f"architecture of the search space ({cheapest:.6g}); raise the target or widen the "
                      f"space (smaller config.space.stage_widths / min_depths)")
  return target


def compilation_cache_dir(cfg) -> str | None:
  """Where JAX's persistent compilation cache lives: config.compilation_cache, '' = the user's cache
  directory ($XDG_CACHE_HOME or ~/.cache, then autox3d_jax/jax), 'off' = no cache (None)."""
  value = cfg.compilation_cache.strip()
  if value == "off":
    return None
  if value:
    return value
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "autox3d_jax", "jax")


def enable_compilation_cache(cfg) -> str | None:
  """Turn on JAX's persistent compilation cache (compile once per machine: a rerun, a resumed run
  and the next seed load the compiled step instead of compiling it again). Call before the first
  compile. Programs with host callbacks (the CPU depthwise kernels) are not cached by JAX, so on
  CPU it helps the programs without them; on TPU/GPU it covers the steps. Returns the directory."""
  directory = compilation_cache_dir(cfg)
  if directory is None:
    return None
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory


def check_space(cfg) -> None:
  """Build config.space's search space (the class count stood in for when it comes from the
  dataset) so that a bad op name or shape, or a config.search.sandwich_ops op the space lacks,
  fails before any dataset build, as a ConfigError."""
  if cfg.mode not in ("search", "demo", "latency"):
    return
  from autox3d_jax.models.spec import SpecError
  from autox3d_jax.search.space import ops_from_strings
  try:
    space = build_space(cfg, classes=cfg.space.num_classes if cfg.space.num_classes > 0 else 2)
  except SpecError as e:
    raise ConfigError(f"config.space: {e}") from None
  if tuple(cfg.search.sandwich_ops):
    try:
      space.largest_point(ops_from_strings(cfg.search.sandwich_ops))
    except (SpecError, ValueError) as e:
      raise ConfigError(f"config.search.sandwich_ops: {e}") from None


def check_devices(cfg) -> None:
  """The config fits this slice: config.mesh.model divides the device count, and the global
  batches divide over the processes and the mesh's data axis. Raises ConfigError naming the key
  (before any dataset build or compile; main calls it right after `config.validate`)."""
  n, hosts, model = jax.device_count(), jax.process_count(), cfg.mesh.model
  if n % model:
    raise ConfigError(f"config.mesh.model = {model} does not divide the {n} devices; use a divisor of {n}")
  data_axis = n // model
  keys = ["data.batch_size"] + (["data.eval_batch_size"] if cfg.mode in ("train", "eval", "demo") else [])
  # A multi-task search reads batch_size / T clips per task, each task's batch sharded on its own.
  tasks = len(task_names(cfg)) if cfg.mode == "search" else 0
  for key in keys:
    batch = cfg.data[key.split(".")[1]]
    share = batch // tasks if key == "data.batch_size" and tasks else batch
    for parts, what in ((hosts, f"{hosts} processes"), (data_axis, f"the mesh's data axis ({n} devices / "
                                                                   f"config.mesh.model {model} = {data_axis})")):
      if share % parts:
        per_task = f" (batch_size / {tasks} tasks = {share} clips per task)" if share != batch else ""
        raise ConfigError(f"config.{key} = {batch}{per_task} is not divisible by {what}; use a multiple of "
                          f"{parts * (tasks or 1)}")


def per_host_batch(global_batch: int) -> int:
  if global_batch % jax.process_count():
    raise ValueError(f"global batch {global_batch} is not divisible by {jax.process_count()} processes")
  return global_batch // jax.process_count()


def train_pipeline_args(cfg, split: str, *, seed_offset: int = 0, start_step: int = 0) -> dict:
  """The keyword arguments of `data.pipeline.make_train_pipeline` for this host: config.data's clip,
  augmentation and batch (divided over the processes), seed config.seed + seed_offset, resumed at
  `start_step`."""
  d = cfg.data
  return dict(name=d.name, batch_size=per_host_batch(d.batch_size), data_dir=d.data_dir or None, split=split,
              num_frames=d.num_frames, sampling_stride=d.sampling_stride, crop_size=d.crop_size,
              scale_jitter=tuple(d.scale_jitter), shuffle_buffer=d.shuffle_buffer, seed=cfg.seed + seed_offset,
              deterministic=True, start_step=start_step)


def train_pipeline(cfg, split: str, *, seed_offset: int = 0, start_step: int = 0):
  """The shuffled, augmented training batches of `split` (see `train_pipeline_args`)."""
  args = train_pipeline_args(cfg, split, seed_offset=seed_offset, start_step=start_step)
  return data_pipeline.make_train_pipeline(args.pop("name"), **args)


def eval_pipeline_args(cfg, split: str | None = None) -> dict:
  """The keyword arguments of `data.pipeline.make_eval_pipeline`: config.data's eval split (or
  `split`), eval batch per host, and its multi-view protocol (short side = scale_jitter's min)."""
  d = cfg.data
  return dict(name=d.name, batch_size=per_host_batch(d.eval_batch_size), data_dir=d.data_dir or None,
              split=split or d.eval_split, num_frames=d.num_frames, sampling_stride=d.sampling_stride,
              crop_size=d.crop_size, short_side=int(math.ceil(d.scale_jitter[0])),
              num_temporal_views=d.num_temporal_views, num_spatial_crops=d.num_spatial_crops)


def eval_pipeline(cfg, split: str | None = None):
  """Evaluation batches (every video once, padded with mask=False; see `eval_pipeline_args`)."""
  args = eval_pipeline_args(cfg, split)
  return data_pipeline.make_eval_pipeline(args.pop("name"), **args)


def make_mesh(cfg):
  """The device mesh of a run: ('data', 'model') with config.mesh.model devices on 'model'."""
  return partitioning.make_mesh(model=cfg.mesh.model)


def sharding_rule(cfg, mesh, params) -> partitioning.ShardingRule:
  """config.mesh's parameter rule, checked against `params` (arrays or their abstract shapes):
  ConfigError naming config.mesh.model when the 'model' axis would split no parameter."""
  rule = partitioning.ShardingRule.from_config(cfg)
  try:
    partitioning.check_model_axis(params, mesh, rule)
  except partitioning.MeshRuleError as e:
    raise ConfigError(str(e)) from None
  return rule


BFLOAT16_BACKENDS = ("tpu", "gpu", "cuda", "rocm", "cpu")   # XLA computes bfloat16 on these (CPU: emulated)


def compute_dtype(cfg):
  """config.train.dtype as the networks' compute dtype: jnp.bfloat16, or None (= float32).
  Parameters, BN statistics, logits and the loss stay float32 either way."""
  return jax.numpy.bfloat16 if cfg.train.dtype == "bfloat16" else None


def check_dtype(cfg) -> None:
  """config.train.dtype = 'bfloat16' needs a backend XLA computes bfloat16 on: ConfigError naming
  the key otherwise (before any compile). On the CPU it runs, emulated: the depthwise convs'
  host kernels compute in float32 and the matmuls are usually slower than in float32."""
  if cfg.train.dtype != "bfloat16":
    return
  backend = jax.default_backend()
  if backend not in BFLOAT16_BACKENDS:
    raise ConfigError(f"config.train.dtype = 'bfloat16' is not supported on the {backend!r} backend (supported: "
                      f"{', '.join(BFLOAT16_BACKENDS)}); use config.train.dtype='float32'")


def check_sharding(cfg) -> None:
  """Before any dataset build or compile: with config.mesh.model > 1, the network the mode
  trains (the supernet of config.space, or config.train.arch) must have a parameter the 'model'
  axis splits. Abstract shapes only (`jax.eval_shape`: traced, not compiled)."""
  if cfg.mesh.model <= 1 or cfg.mode not in ("search", "demo", "train", "eval"):
    return
  if cfg.mode in ("search", "demo"):
    from autox3d_jax.search import supernet as sn
    space = build_space(cfg, classes=cfg.space.num_classes if cfg.space.num_classes > 0 else 2)
    c = space.config
    clip = jax.ShapeDtypeStruct((1, c.num_frames, c.crop_size, c.crop_size, c.in_channels), jax.numpy.float32)
    params = jax.eval_shape(lambda x: sn.Supernet(space).init(jax.random.PRNGKey(0), x, sn.uniform_arch(space),
                                                              train=False), clip)["params"]
  else:
    from autox3d_jax.models import builder
    spec = load_arch(cfg.train.arch or "x3d_s")
    params = builder.variable_shapes(spec)["params"]
  sharding_rule(cfg, make_mesh(cfg), params)


def ensure_dataset(cfg) -> None:
  """Build the embedded dataset when it is missing (config.data.build_if_missing and a dataset
  plug-in can generate it); real datasets raise the registry's DatasetError, which names the
  conversion command."""
  data_dir = cfg.data.data_dir or None
  try:
    data_registry.get_source(cfg.data.name, cfg.data.train_split, data_dir)
  except data_registry.DatasetError:
    build = data_registry.builder_for(cfg.data.name) if cfg.data.build_if_missing else None
    if build is None:
      raise
    build(data_dir)
  if cfg.mode in ("train", "eval", "demo"):   # these evaluate: a missing eval split must not wait for the end
    data_registry.get_source(cfg.data.name, cfg.data.eval_split, data_dir)
