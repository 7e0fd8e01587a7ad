"""The config schema: one source of defaults, every key read, names that match their registries.

`test_every_key_changes_what_the_run_builds` is the contract "a key set by the user is honoured or
rejected": every leaf of `base_config()` is listed in KEYS with a non-default valid value and the
probes that must see it (each probe calls the function the run itself uses to build from the
config: the space, the pipelines, the strategy, the optimizers, the steps, the loop settings ...).
A new key without an entry fails `test_every_key_has_a_probe`.
"""
import os
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autox3d_jax import config as config_lib

import toys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def leaves(cfg, prefix=""):
  out = []
  for key, value in cfg.items():
    name = f"{prefix}{key}"
    if hasattr(value, "items"):
      out.extend(leaves(value, name + "."))
    else:
      out.append(name)
  return out


# ------------------------------------------------------------------------------------------ probes
def _space(cfg):
  from autox3d_jax.train import setup
  return setup.build_space(cfg).config


def _num_classes(cfg):
  from autox3d_jax.train import setup
  return setup.num_classes(cfg)


def _pipelines(cfg):
  from autox3d_jax.train import search_loop, setup
  weight, arch = search_loop.split_names(cfg)
  return (setup.train_pipeline_args(cfg, weight), setup.train_pipeline_args(cfg, arch, seed_offset=1),
          setup.eval_pipeline_args(cfg))


def _ensure_dataset(cfg):
  """Whether ensure_dataset builds a missing dataset (registry faked: always missing)."""
  from autox3d_jax.data import registry
  from autox3d_jax.train import setup
  built = []
  original = registry.get_source, registry.builder_for
  try:
    registry.get_source = lambda *a: (_ for _ in ()).throw(registry.DatasetNotFoundError("missing"))
    registry.builder_for = lambda name: (lambda data_dir: built.append(name))
    try:
      setup.ensure_dataset(cfg)
    except registry.DatasetError:
      pass
  finally:
    registry.get_source, registry.builder_for = original
  return built


def _toy_table(cfg):
  from autox3d_jax.search.cost_table import CostTable
  space = toys.tiny_space()
  return space, CostTable.build(space, "flops")


def _cost_target(cfg):
  """The resolved target in the default space at X3D-S's input (where X3D variants differ)."""
  from autox3d_jax.search.cost_table import CostTable
  from autox3d_jax.search.space import SearchSpace, x3d_space_config
  from autox3d_jax.train import setup
  space = SearchSpace(x3d_space_config("S"))
  return setup.resolve_cost_target(space, CostTable.build(space, "flops"), cfg)


def _cost_table(cfg):
  from autox3d_jax.train import setup
  space = toys.tiny_space()
  table = setup.build_cost_table(space, cfg)
  return table.metric, table.stem


def _strategy(cfg):
  """The strategy as the search builds it, run once: its weight-step samples and its objective."""
  from autox3d_jax.search.distribution import ArchDistribution
  from autox3d_jax.train import search_loop, setup
  space, table = _toy_table(cfg)
  dist = ArchDistribution(space)
  strategy = search_loop.make_strategy(cfg, dist, table, setup.resolve_cost_target(space, table, cfg))
  key = jax.random.PRNGKey(0)
  logits = {d.label: jnp.linspace(-2.0, 2.0, d.size) * (1 + k % 3) for k, d in enumerate(space.decisions)}
  state = strategy.init_state()
  archs, shifts = strategy.weight_archs(key, logits, state, 3)
  scale = table.of_point(space.largest_point())
  losses = lambda a: jax.vmap(table.expected)(a) / scale + 0.1 * jnp.arange(strategy.num_groups)
  loss, (new_state, metrics) = strategy.arch_objective(jax.random.PRNGKey(1), logits, state, 3, losses)
  return (jax.tree_util.tree_map(np.asarray, archs), None if shifts is None else jax.tree_util.tree_map(np.asarray, shifts),
          float(loss), jax.tree_util.tree_map(np.asarray, new_state), {k: float(v) for k, v in metrics.items()},
          strategy.val_examples_per_group)


def _updates(tx, steps=4):
  params = {"w": jnp.linspace(-1.0, 1.0, 6)}
  state = tx.init(params)
  out = []
  for k in range(steps):
    grads = {"w": jnp.full(6, 3.0) * (k + 1)}
    updates, state = tx.update(grads, state, params)
    params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
    out.append(np.asarray(params["w"]))
  return np.stack(out)


def _weight_optimizer(cfg):
  from autox3d_jax.train import optim
  return _updates(optim.make_optimizer(cfg.search.weight_opt, cfg.search.steps), steps=4)


def _arch_optimizer(cfg):
  from autox3d_jax.train import optim
  return _updates(optim.make_arch_optimizer(cfg.search.arch_opt))


def _train_optimizer(cfg):
  from autox3d_jax.train import optim
  return _updates(optim.make_optimizer(cfg.train.optimizer, cfg.train.steps), steps=4)


def _weight_schedule(cfg):
  from autox3d_jax.train import optim
  return np.asarray([optim.learning_rate_schedule(cfg.search.weight_opt, cfg.search.steps)(k)
                     for k in range(0, 2000, 37)])


def _train_schedule(cfg):
  from autox3d_jax.train import optim
  return np.asarray([optim.learning_rate_schedule(cfg.train.optimizer, cfg.train.steps)(k)
                     for k in range(0, 2000, 37)])


def _search_step(cfg):
  """The search step's program (traced, not compiled) as run_search builds it, on a tiny space."""
  from autox3d_jax.train import search_loop, setup
  space, table = _toy_table(cfg)
  program = search_loop.build_search_step(cfg, space, table, setup.resolve_cost_target(space, table, cfg))
  if "state" not in _SEARCH_STATE:     # the state's shapes do not depend on the keys probed here
    _SEARCH_STATE["state"] = program.init_state()
  state = _SEARCH_STATE["state"]
  batch = next(toys.batches(1, batch=cfg.data.batch_size, classes=5, shape=(4, 16, 16, 3)))
  return str(jax.make_jaxpr(program.step)(state, batch, batch))


_SEARCH_STATE = {}


def _search_step_of_strategy(cfg):
  """`_search_step` with the state of cfg's own strategy (not the shared one)."""
  from autox3d_jax.train import search_loop, setup
  space, table = _toy_table(cfg)
  program = search_loop.build_search_step(cfg, space, table, setup.resolve_cost_target(space, table, cfg))
  batch = next(toys.batches(1, batch=cfg.data.batch_size, classes=5, shape=(4, 16, 16, 3)))
  return str(jax.make_jaxpr(program.step)(program.init_state(), batch, batch))

PROBE_TEACHER = os.path.join(tempfile.mkdtemp(prefix="autox3d_probe_"), "feature_teacher")


def _feature_distilled_step(cfg):
  """The search step's program (traced) with config.search.feature_distill's teacher, read and
  checked as run_search does, on the tiny space (a teacher of its largest point, written on first use)."""
  from autox3d_jax.models import builder
  from autox3d_jax.train import search_loop, setup, teacher, weights
  space, table = _toy_table(cfg)
  if cfg.search.feature_distill.teacher == PROBE_TEACHER and not os.path.exists(PROBE_TEACHER):
    spec = space.to_arch(space.largest_point(), name="probe-teacher")
    weights.save(PROBE_TEACHER, spec, builder.init_variables(spec, jax.random.PRNGKey(0)))
  loaded = teacher.load_teacher(cfg, space)
  program = search_loop.build_search_step(cfg, space, table, setup.resolve_cost_target(space, table, cfg), loaded)
  batch = next(toys.batches(1, batch=cfg.data.batch_size, classes=5, shape=(4, 16, 16, 3)))
  return str(jax.make_jaxpr(program.step)(program.init_state(), batch, batch))


def _train_step(cfg):
  """The standalone training step's program (traced) as run_train builds it."""
  from autox3d_jax.models import zoo
  from autox3d_jax.train import train_loop
  spec = zoo.x3d("XS", num_classes=5, num_frames=4, crop_size=32, depths=(1, 1), widths=(8, 16))
  model, tx, step = train_loop.build_train_step(cfg, spec)
  state = train_loop.init_state(cfg, spec, tx)
  batch = {"video": jnp.zeros((2, 4, 32, 32, 3)), "label": jnp.zeros((2,), jnp.int32)}
  return str(jax.make_jaxpr(step)(state, batch))


def _compute_dtype(cfg):
  from autox3d_jax.train import train_loop
  return train_loop.compute_dtype(cfg)


def _derive(cfg):
  """search_loop.derive_point on logits whose mode costs more than the target."""
  from autox3d_jax.search.distribution import ArchDistribution
  from autox3d_jax.train import search_loop
  space, table = _toy_table(cfg)
  dist = ArchDistribution(space)
  largest = space.largest_point()
  logits = {d.label: 3.0 * jax.nn.one_hot(largest[d.label], d.size) for d in space.decisions}
  target = 0.7 * table.of_point(largest)
  evolves = cfg.search.derive == "evolution"
  return search_loop.derive_point(cfg, dist, table, logits, target, evolve=lambda: {"evolved": 1}, evolves=evolves)


def _evolution(cfg):
  """evolution.evolve as the search calls it, on a fake scorer and a cheap cost (decision indices)."""
  from autox3d_jax.search import evolution
  space = toys.tiny_space()
  calls = []

  def score(points):
    calls.append(len(points))
    return [float(sum(v * (1 + k % 3) for k, v in enumerate(p.values()))) for p in points]

  cost = lambda p: float(sum(p.values()))
  result = evolution.evolve(space, score, cost, 0.6 * cost(space.largest_point()), cfg.search.evolution,
                            seed=cfg.seed)
  return result.best, calls


def _evolution_batches(cfg):
  from autox3d_jax.train import search_loop, setup
  original = setup.train_pipeline
  try:
    setup.train_pipeline = lambda *a, **k: iter(lambda: {"video": 0, "label": 0}, None)
    calib, held_out = search_loop.evolution_batches(cfg)
  finally:
    setup.train_pipeline = original
  return len(calib), len(held_out)


def _loop(cfg):
  from autox3d_jax.train import loop
  spec = loop.LoopSpec.from_config(cfg, name="x", total_steps=1, loss_key="loss", optimizer_key="k",
                                   describe=str)
  return spec.log_every, spec.checkpoint_every, spec.max_skipped_fraction


def _compilation_cache(cfg):
  from autox3d_jax.train import setup
  return setup.compilation_cache_dir(cfg)


def _resume_allowed(cfg):
  from autox3d_jax.train import identity
  return sorted(identity.allowed_changes(cfg))


def _checkpoints_kept(cfg):
  import tempfile
  from autox3d_jax.train import loop
  with tempfile.TemporaryDirectory() as d:
    ckpt = loop.checkpointer(cfg, d)
    for step in range(1, 6):
      ckpt.save(step, {"x": np.zeros(2)}, {})
    kept = list(ckpt.manager.all_steps())
    ckpt.close()
  return kept


def _mesh(cfg):
  from autox3d_jax.train import setup
  return dict(setup.make_mesh(cfg).shape)


def _param_shardings(cfg):
  """The search state's parameter specs on config.mesh's mesh (8 simulated devices), as run_search
  shards them, for two toy arrays: 64 x 64 and 8 x 8 elements."""
  from autox3d_jax.train import partitioning, setup
  params = {"big": jax.ShapeDtypeStruct((64, 64), jnp.float32), "small": jax.ShapeDtypeStruct((8, 8), jnp.float32)}
  mesh = setup.make_mesh(cfg)
  rule = partitioning.ShardingRule.from_config(cfg)
  return {k: tuple(s.spec) for k, s in partitioning.param_shardings(params, mesh, rule).items()}


def _run_mode(cfg):
  from autox3d_jax import run
  return run.MODES[cfg.mode].__name__


def _retraining_seeds(cfg):
  from autox3d_jax import run
  return run.retraining_seeds(cfg)


def _standalone_arch(cfg):
  from autox3d_jax.train import setup
  return setup.network_spec(cfg, classes=setup.num_classes(cfg))


def _init_from_supernet(cfg):
  """What run.train hands run_train as initial weights (the loop, the checkpoint and the dataset build
  faked: the classes come from config.space.num_classes)."""
  from autox3d_jax import run
  seen = []
  saved = (run.run_train, run.restore_supernet_variables, run.derive_lib.inherit_variables, run._write_report,
           run.setup.ensure_dataset)
  try:
    run.setup.ensure_dataset = lambda cfg: None
    run.run_train = lambda cfg, workdir, spec, name, init=None: seen.append(init) or _FakeResult(spec)
    run.restore_supernet_variables = lambda workdir: {"params": {}, "batch_stats": {}}
    run.derive_lib.inherit_variables = lambda space, point, variables, spec: {"inherited": True}
    run._write_report = lambda *a, **k: {}
    cfg = cfg.copy_and_resolve_references()
    cfg.train.arch = "x3d_s"
    cfg.data.num_frames, cfg.data.crop_size = 13, 160
    cfg.space.num_classes = 400
    run.train(cfg, "/nonexistent")
  finally:
    (run.run_train, run.restore_supernet_variables, run.derive_lib.inherit_variables, run._write_report,
     run.setup.ensure_dataset) = saved
  return seen


class _FakeResult:
  def __init__(self, spec):
    self.name, self.spec, self.top1, self.top5, self.gflops, self.params, self.eval_examples = \
        spec.name, spec, 0.5, 0.9, 1.0, 1, 1
    self.input = {}


def _latency(cfg):
  """What a latency table is measured with (timer faked), and how mode=latency validates it."""
  from autox3d_jax.cost import latency
  from autox3d_jax.cost.latency import measure
  calls = []

  def fake(items, warmup, repeats, min_time_s=0.0, progress=False, desc="", memory=False, seed=0, backend="jax"):
    out = {}
    for name, (module, shape, dtype) in items.items():
      calls.append((tuple(shape), dtype, warmup, repeats, min_time_s, backend))
      ms = 0.001 * float(np.prod(shape)) + 0.01 * len(name)
      out[name] = {"median_ms": ms, "mean_ms": 2 * ms, "min_ms": ms, "n": 1}
      if memory:
        out[name]["memory"] = measure._memory_stats(None)
    return out

  original = measure.measure_modules, measure.measure_overhead_ms
  try:
    measure.measure_modules, measure.measure_overhead_ms = fake, (lambda repeats=200, backend="jax": 0.0)
    space = toys.tiny_space()
    table = latency.load_or_build(space, cfg.latency, None, progress=False)
    measured = list(calls)
    calls.clear()
    out = latency.validate_table(space, table, cfg.latency, None, progress=False)
  finally:
    measure.measure_modules, measure.measure_overhead_ms = original
  return (measured, sorted(table.entries.items())[:3], table.meta["statistic"], table.meta["dtype"],
          table.meta["latency_backend"], [a["point"] for a in out["archs"]], calls[:3])


def _latency_path(cfg):
  from autox3d_jax.train import setup
  return setup.latency_table_path(cfg, "/work")


def _export_plan(cfg):
  """What mode=export plans for a small network in /work (formats, signature, where, weights, int8)."""
  import dataclasses
  from autox3d_jax.export import mode as export_mode
  from autox3d_jax.models import zoo
  spec = zoo.x3d("S", num_classes=5, num_frames=4, crop_size=64, depths=(1, 1, 1, 1), widths=(8, 16, 24, 32))
  todo = export_mode.plan(cfg, "/work", spec)
  return repr({**dataclasses.asdict(todo), "signature": todo.signature.to_json()})


def _import_plan(cfg):
  """What mode=import plans (source, variant, layout, unpickler, output dir) in /work."""
  import dataclasses
  from autox3d_jax import pretrained
  return repr(dataclasses.asdict(pretrained.plan(cfg, "/work")))


def _expansion_plan(cfg):
  """X3D expansion's plan (target fixed) and its first candidate's training config."""
  from autox3d_jax.train import expansion_loop
  from autox3d_jax.search.expansion import Candidate
  plan = expansion_loop.expansion_plan(cfg, 5, 1e12)
  c = expansion_loop.candidate_config(cfg, plan.base)
  child = Candidate(1, "width", "expand", plan.base, plan.base)
  inherited = expansion_loop.inherits(cfg, child)
  return (repr(plan), c.train.steps, c.train.optimizer.warmup_steps, inherited,
          expansion_loop.candidate_config(cfg, plan.base, inherited).train.steps)


def _initial_weights(cfg):
  from autox3d_jax import run
  return run.initial_weights(cfg)


def _evaluated_weights(cfg):
  from autox3d_jax import run
  from autox3d_jax.models import zoo
  return run.evaluated_weights(cfg, "/work", zoo.get("x3d_s"))


def _tasks_of_search(cfg):
  """Which tasks the search serves and each one's share of the step ('single' for a single-task
  search), as run_multitask_search builds them (on toy spaces)."""
  from autox3d_jax import tasks as tasks_lib
  from autox3d_jax.train import multitask_search
  if not config_lib.task_names(cfg):
    return "single"
  found = tasks_lib.tasks_of(cfg)
  space, table = _toy_table(cfg)
  programs = [multitask_search.task_program(cfg, t, len(found), space, table) for t in found]
  return [(p.task.name, p.step_cfg.search.num_groups, p.step_cfg.data.batch_size) for p in programs]


PROBE_INIT_FROM = os.path.join(tempfile.mkdtemp(prefix="autox3d_probe_"), "search_init_from")


def _search_init(cfg):
  """What run_search starts from: config.search.init_from's network, read and checked against the
  space (a weights checkpoint of the space's X3D-like point, written here on first use)."""
  from autox3d_jax.models import builder
  from autox3d_jax.train import search_loop, setup, weights
  if cfg.search.init_from == PROBE_INIT_FROM and not os.path.exists(PROBE_INIT_FROM):
    space = setup.build_space(cfg)
    spec = space.to_arch(setup.x3d_like_point(space), name="probe")
    weights.save(PROBE_INIT_FROM, spec, builder.init_variables(spec, jax.random.PRNGKey(0)))
  found = search_loop.pretrained_network(cfg)
  return None if found is None else (found[0].to_json(), jax.tree_util.tree_leaves(found[1])[:3])


def _adapted_supernet(cfg):
  """The supernet state run_search starts from with a network (a tiny space's smallest point) in it."""
  import flax
  from autox3d_jax.search import derive as derive_lib
  from autox3d_jax.search import supernet as sn
  from autox3d_jax.search.space import Op
  from autox3d_jax.train import search_loop
  from test_supernet import toy_space

  @flax.struct.dataclass
  class State:
    params: dict
    batch_stats: dict

  space = toy_space(ops=(Op("x3d", (3, 3, 3)),))
  initial = sn.init_supernet(space, jax.random.PRNGKey(0))
  point = {d.label: 0 for d in space.decisions}
  spec = space.to_arch(point)
  network = derive_lib.inherit_variables(space, point, initial, spec)
  state = search_loop._adapted(cfg, space, State(initial["params"], initial["batch_stats"]), (spec, network))
  return state.params["s2_b3"]


EXPANSION_BASE = {"mode": "search", "search.strategy": "x3d_expansion", "search.num_groups": 4}

# key -> (non-default valid value, probes, base overrides the probe needs)
KEYS = {
    "mode": ("search", [_run_mode], {}),
    "seed": (3, [_pipelines, _retraining_seeds, _evolution], {}),
    "log_every_steps": (7, [_loop], {}),
    "resume": ("search.steps,seed", [_resume_allowed], {}),
    "compilation_cache": ("off", [_compilation_cache], {}),
    "data.name": ("moving_digits/speed_small", [_pipelines], {}),
    "data.data_dir": ("/data", [_pipelines], {}),
    "data.train_split": ("trainval", [_pipelines], {}),
    "data.eval_split": ("test", [_pipelines], {}),
    "data.arch_val_fraction": (0.3, [_pipelines], {}),
    "data.num_frames": (8, [_pipelines, _space], {}),
    "data.sampling_stride": (2, [_pipelines], {}),
    "data.crop_size": (48, [_pipelines, _space], {}),
    "data.scale_jitter": ((60, 80), [_pipelines], {}),
    "data.batch_size": (32, [_pipelines, _search_step], {}),
    "data.eval_batch_size": (8, [_pipelines], {}),
    "data.num_temporal_views": (2, [_pipelines], {}),
    "data.num_spatial_crops": (3, [_pipelines], {}),
    "data.shuffle_buffer": (64, [_pipelines], {}),
    "data.build_if_missing": (False, [_ensure_dataset], {}),
    "data.max_skipped_fraction": (0.2, [_loop], {}),
    "space.num_frames": (4, [_space], {}),
    "space.crop_size": (32, [_space], {}),
    "space.stem_width": (16, [_space], {}),
    "space.stage_widths": (((8, 16), (16, 32), (32, 64), (64, 128)), [_space], {}),
    "space.min_depths": ((1, 1, 1, 1), [_space], {}),
    "space.max_depths": ((2, 2, 3, 2), [_space], {"space.min_depths": (1, 1, 1, 1)}),
    "space.expansions": ((2.0, 4.0), [_space], {}),
    "space.se_ratios": ((0.0, 0.25), [_space], {}),
    "space.ops": (("x3d:3x3x3", "csn:3x3x3"), [_space], {}),
    "space.conv5_width": (64, [_space], {}),
    "space.head_width": (256, [_space], {}),
    "space.dropout": (0.1, [_space], {}),
    "space.num_classes": (7, [_num_classes, _space], {}),
    "space.input_frames": ((8, 16), [_space], {}),
    "space.input_strides": ((1, 2), [_space], {}),
    "space.input_crops": ((48, 56), [_space], {}),
    "space.downsample": ((("local",),) * 4, [_space], {}),
    "space.downsample_heads": (12, [_space], {"space.downsample": (("local",),) * 2 + (("local", "local_global"),) * 2,
                                             "space.downsample_heads": 6}),
    "search.strategy": ("dnas", [_strategy], {}),
    "search.steps": (1000, [_weight_schedule], {}),
    "search.num_groups": (4, [_strategy], {}),
    "search.arch_warmup_steps": (3, [_search_step], {}),
    "search.cost_metric": ("params", [_cost_table], {}),
    "search.cost_target": (3e9, [_cost_target], {"search.target_arch": "", "search.penalty": "none"}),
    "search.target_arch": ("X3D-L", [_cost_target], {}),
    "search.penalty": ("none", [_strategy], {}),
    "search.penalty_weight": (2.0, [_strategy], {}),
    "search.fbnet.alpha": (0.5, [_strategy], {"search.strategy": "dnas", "search.penalty": "fbnet"}),
    "search.fbnet.beta": (0.9, [_strategy], {"search.strategy": "dnas", "search.penalty": "fbnet"}),
    "search.fbnet.cost_unit": (1e3, [_strategy], {"search.strategy": "dnas", "search.penalty": "fbnet"}),
    "search.sandwich": (True, [_strategy], {}),
    "search.distill": ("inplace", [_strategy, _search_step], {"search.sandwich": True}),
    "search.ssr_weight": (0.5, [_strategy], {"search.strategy": "dnas"}),
    "search.msg.supernet_distill": (0.5, [_search_step_of_strategy], {"search.strategy": "msg"}),
    "search.largest_warmup_steps": (10, [_strategy], {}),
    "search.sandwich_ops": (("x2d:1x3x3",), [_strategy], {"search.sandwich": True}),
    "search.fair_channels": (False, [_strategy], {}),
    "search.derive": ("evolution", [_derive], {}),
    "search.derive_within_target": (False, [_derive], {}),
    "search.probabilistic.estimator": ("parsec", [_strategy], {}),
    "search.probabilistic.baseline_decay": (0.5, [_strategy], {}),
    "search.probabilistic.entropy_weight": (0.1, [_strategy], {}),
    "search.probabilistic.shared_val_batch": (False, [_strategy], {}),
    "search.probabilistic.adaptive_samples": (False, [_strategy], {}),
    "search.probabilistic.min_samples": (2, [_strategy], {}),
    "search.spos.cost_bins": (4, [_strategy], {"search.strategy": "spos"}),
    "search.spos.bin_candidates": (2, [_strategy], {"search.strategy": "spos", "search.spos.cost_bins": 4}),
    "search.spos.hierarchical": (True, [_strategy], {"search.strategy": "spos"}),
    **{f"search.{s}.{k}": (v, [_strategy], {"search.strategy": s})
       for s in ("dnas", "gdas", "msg")
       for k, v in (("tau_schedule", "linear"), ("tau_max", 2.0), ("tau_decay", 0.01))},
    # The floor shows once the temperature has decayed to it (a fast decay in the probe's base).
    **{f"search.{s}.tau_min": (0.5, [_strategy], {"search.strategy": s, f"search.{s}.tau_decay": 10.0})
       for s in ("dnas", "gdas", "msg")},
    "search.evolution.population": (12, [_evolution], {}),
    "search.evolution.iterations": (3, [_evolution], {}),
    "search.evolution.top_k": (4, [_evolution], {}),
    "search.evolution.mutants": (8, [_evolution], {}),
    "search.evolution.crossovers": (6, [_evolution], {}),
    "search.evolution.mutation_prob": (0.5, [_evolution], {}),
    "search.evolution.bn_batches": (3, [_evolution_batches], {}),
    "search.evolution.eval_batches": (2, [_evolution_batches], {}),
    **{f"search.weight_opt.{k}": (v, [_weight_optimizer], {}) for k, v in
       (("lr", 0.3), ("momentum", 0.5), ("weight_decay", 1e-2), ("warmup_steps", 3), ("grad_clip", 1.0))},
    **{f"search.arch_opt.{k}": (v, [_arch_optimizer], {}) for k, v in (("lr", 0.1), ("beta1", 0.0), ("beta2", 0.9))},
    "train.arch": ("x3d_m", [_standalone_arch], {}),
    "train.steps": (300, [_train_schedule], {}),
    "train.label_smoothing": (0.1, [_train_step, _search_step], {}),
    "train.dtype": ("bfloat16", [_compute_dtype, _train_step, _search_step], {}),
    "train.init_from_supernet": (True, [_init_from_supernet], {}),
    "train.seeds": (3, [_retraining_seeds], {}),
    **{f"train.optimizer.{k}": (v, [_train_optimizer], {}) for k, v in
       (("lr", 0.3), ("momentum", 0.5), ("weight_decay", 1e-2), ("warmup_steps", 3), ("grad_clip", 1.0))},
    "checkpoint.every_steps": (5, [_loop], {}),
    "checkpoint.keep": (2, [_checkpoints_kept], {}),
    "latency.backend": ("tflite", [_latency], {}),
    "latency.batch_size": (2, [_latency], {}),
    "latency.repeats": (3, [_latency], {}),
    "latency.warmup": (1, [_latency], {}),
    "latency.min_time_s": (0.05, [_latency], {}),
    "latency.statistic": ("mean", [_latency], {}),
    "latency.dtype": ("bfloat16", [_latency], {}),
    "latency.num_archs": (4, [_latency], {}),
    "latency.seed": (5, [_latency], {}),
    "latency.path": ("/tables/t.json", [_latency_path], {}),
    "mesh.model": (2, [_mesh], {}),
    "mesh.fsdp": (False, [_param_shardings], {"mesh.shard_min_size": 16}),
    "mesh.shard_min_size": (16, [_param_shardings], {}),
    "export.formats": ("stablehlo", [_export_plan], {}),
    "export.weights": ("random", [_export_plan], {}),
    "export.checkpoint": ("/runs/train_X/ckpt", [_export_plan], {}),
    "export.input": ("float32", [_export_plan], {}),
    "export.batch_size": (4, [_export_plan], {}),
    "export.int8": (True, [_export_plan], {}),
    "export.calibration_batches": (2, [_export_plan], {"export.int8": True}),
    "export.eval_clips": (32, [_export_plan], {"export.int8": True}),
    "export.dir": ("/deploy/net", [_export_plan], {}),
    "train.init_from": ("/imported/X3D-S", [_initial_weights], {"mode": "train"}),
    "search.init_from": (PROBE_INIT_FROM, [_search_init], {"mode": "search"}),
    "search.init_new_blocks": ("copy_last", [_adapted_supernet], {"search.init_from": "/w"}),
    "search.feature_distill.teacher": (PROBE_TEACHER, [_feature_distilled_step], {"mode": "search"}),
    "search.feature_distill.weight": (0.25, [_feature_distilled_step],
                                      {"mode": "search", "search.feature_distill.teacher": PROBE_TEACHER}),
    "search.feature_distill.stages": ((0, 1), [_feature_distilled_step],
                                      {"mode": "search", "search.feature_distill.teacher": PROBE_TEACHER}),
    "search.tasks": ("a", [_tasks_of_search], {"mode": "search", "tasks": ("a",)}),
    "eval.checkpoint": ("/imported/X3D-S", [_evaluated_weights], {"mode": "eval"}),
    "pretrained.source": ("/ckpt/x3d_s.pyth", [_import_plan], {"mode": "import"}),
    "pretrained.variant": ("x3d_m", [_import_plan], {"mode": "import"}),
    "pretrained.layout": ("slowfast", [_import_plan], {"mode": "import"}),
    "pretrained.trust_pickle": (True, [_import_plan], {"mode": "import"}),
    "pretrained.dir": ("/weights/x3d", [_import_plan], {"mode": "import"}),
    **{f"search.x3d_expansion.{k}": (v, [_expansion_plan], EXPANSION_BASE) for k, v in (
        ("base.frames", 2), ("base.sampling_stride", 4), ("base.crop", 96), ("base.width", 1.5),
        ("base.bottleneck", 2.0), ("base.depth", 2.0), ("skeleton.stem_base", 8),
        ("skeleton.stage_bases", (8, 16, 32, 64)), ("skeleton.stage_repeats", (1, 1, 2, 1)),
        ("skeleton.kernel", (3, 5, 5)), ("skeleton.se_ratio", 0.25), ("skeleton.head_width", 1024),
        ("skeleton.dropout", 0.2), ("skeleton.width_divisor", 4), ("axes", ("temporal", "width")),
        ("factors.temporal", 3.0), ("factors.fast", 3.0), ("factors.spatial", 1.2), ("factors.width", 2.0),
        ("factors.bottleneck", 2.0), ("factors.depth", 2.0), ("max_span", 100), ("max_crop", 200),
        ("max_width", 4.0), ("max_bottleneck", 4.0), ("max_depth", 6.0), ("crop_divisor", 4),
        ("train_steps", 50), ("selection", "accuracy"), ("scorer", "inherited"))},
    "search.x3d_expansion.inherited_steps": (
        20, [_expansion_plan], {**EXPANSION_BASE, "search.x3d_expansion.scorer": "inherited"}),
}


def probe_config(base_overrides):
  """base_config() with the settings probes need (a 5-class dataset, a FLOPs target) and overrides."""
  cfg = config_lib.base_config()
  cfg.space.num_classes = 5
  cfg.search.target_arch = "X3D"
  cfg.search.num_groups = 2          # K=2: the strategy probes run eagerly, K times per decision
  overrides = dict(base_overrides)
  for name in overrides.pop("tasks", ()):   # config.tasks sections (the multi-task search's)
    cfg.tasks[name] = config_lib.task_section("moving_digits/motion_tiny")
  return toys.set_keys(cfg, overrides)


def test_every_key_has_a_probe():
  assert sorted(leaves(config_lib.base_config())) == sorted(KEYS)


def _same(a, b) -> bool:
  try:
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
    return True
  except (AssertionError, ValueError, TypeError):
    return False


_DEFAULTS = {}


def _default(probe, base):
  """probe(probe_config(base)), computed once per (probe, base) for the whole module."""
  key = (probe.__name__, repr(sorted(base.items())))
  if key not in _DEFAULTS:
    _DEFAULTS[key] = probe(probe_config(base))
  return _DEFAULTS[key]


@pytest.mark.parametrize("key", sorted(KEYS))
def test_every_key_changes_what_the_run_builds(key):
  value, probes, base = KEYS[key]
  changed_cfg = toys.set_keys(probe_config(base), {key: value})
  config_lib.validate(changed_cfg)         # a valid setting (mode=demo: searches and retrains)
  for probe in probes:
    before, after = _default(probe, base), probe(changed_cfg)
    assert not _same(before, after), f"config.{key} = {value!r} changed nothing {probe.__name__} builds"


# ---------------------------------------------------------------------------------------- schema
def test_config_module_imports_only_ml_collections():
  code = ("import sys, autox3d_jax.config as c; cfg = c.base_config(); cfg.search.target_arch = 'X3D'; c.validate(cfg); "
          "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'flax', 'optax', 'tensorflow', 'numpy'}))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "[]", out.stdout


def test_names_match_their_registries():
  from autox3d_jax import run
  from autox3d_jax.search import strategies
  from autox3d_jax.search.strategies.base import GradientStrategy
  assert tuple(run.MODES) == config_lib.MODES
  from autox3d_jax.models.spec import DOWNSAMPLE_KINDS
  assert config_lib.DOWNSAMPLE_KINDS == DOWNSAMPLE_KINDS
  assert sorted(strategies.STRATEGIES) == sorted(config_lib.STRATEGIES)
  assert sorted(config_lib.GRADIENT_STRATEGIES) == sorted(
      n for n, cls in strategies.STRATEGIES.items() if issubclass(cls, GradientStrategy))
  assert set(config_lib.SINGLE_PATH_WEIGHT_STEP) == {
      n for n, cls in strategies.STRATEGIES.items() if not issubclass(cls, GradientStrategy)}


def test_space_defaults_live_in_base_config_only():
  """SpaceConfig has no defaults of its own: `space_config()` is base_config().space."""
  import dataclasses
  from autox3d_jax.search.space import SpaceConfig, space_config
  required = [f.name for f in dataclasses.fields(SpaceConfig) if f.default is dataclasses.MISSING]
  assert set(required) == {f.name for f in dataclasses.fields(SpaceConfig)} - {"in_channels"}
  c = space_config()
  s = config_lib.base_config().space
  assert c.stage_widths == tuple(tuple(w) for w in s.stage_widths)
  assert c.expansions == tuple(s.expansions) and c.head.head_width == s.head_width


@pytest.mark.parametrize("key, value, message", [
    ("search.probabilistic.estimator", "parsec", "only applies to strategy='probabilistic'"),
    ("search.gdas.tau_max", 2.0, "only applies to strategy='gdas'"),
    ("search.spos.cost_bins", 4, "only applies to strategy='spos'"),
    ("search.sandwich", True, "applies to strategies"),
    ("search.fbnet.alpha", 0.5, "only applies to penalty='fbnet'"),
])
def test_a_setting_another_strategy_would_read_is_rejected(key, value, message):
  cfg = toys.set_keys(config_lib.base_config(), {"search.strategy": "dnas", "search.target_arch": "X3D", key: value})
  if key == "search.gdas.tau_max":
    cfg.search.strategy = "msg"
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(cfg)


def test_fbnet_penalty_needs_a_gradient_strategy():
  cfg = toys.set_keys(config_lib.base_config(), {"search.penalty": "fbnet"})
  with pytest.raises(config_lib.ConfigError, match="applies to strategies"):
    config_lib.validate(cfg)
  cfg.search.strategy = "gdas"
  config_lib.validate(cfg)


def test_bf16_search_is_honoured_not_ignored():
  """mode=search once computed in float32 whatever train.dtype said; the search step now computes
  in bfloat16 (its program has bf16 matmuls) and keeps its parameters in float32."""
  cfg = toys.set_keys(probe_config({}), {"mode": "search", "train.dtype": "bfloat16"})
  config_lib.validate(cfg)
  program = _search_step(cfg)
  assert "bf16" in program and "f32" in program


@pytest.mark.parametrize("key, value, message", [
    ("search.weight_opt.lr", float("nan"), "must be finite"),
    ("train.optimizer.momentum", 1.5, "must be <= 1"),
    ("search.probabilistic.min_samples", 0, "must be >= 1"),
    ("checkpoint.every_steps", 0, "must be >= 1"),
    ("log_every_steps", 0, "must be >= 1"),
    ("data.eval_batch_size", 0, "must be >= 1"),
    ("data.sampling_stride", 0, "must be >= 1"),
    ("mesh.model", 0, "must be >= 1"),
    ("data.scale_jitter", (56,), r"must be \(min, max\)"),
    ("data.max_skipped_fraction", 1.5, "must be <= 1"),
    ("resume", "search.stepz", "config.resume names 'search.stepz', which is not a config key"),
    ("latency.statistic", "max", "config.latency.statistic"),
    ("latency.backend", "onnx", "config.latency.backend"),
])
def test_bad_values_are_rejected_naming_the_key(key, value, message):
  cfg = toys.set_keys(config_lib.base_config(), {"search.target_arch": "X3D", key: value})
  with pytest.raises(config_lib.ConfigError, match=message) as err:
    config_lib.validate(cfg)
  assert f"config.{key}" in str(err.value)


def test_the_tflite_latency_backend_refuses_bfloat16():
  cfg = toys.set_keys(config_lib.base_config(), {"search.target_arch": "X3D", "latency.backend": "tflite",
                                                 "latency.dtype": "bfloat16"})
  with pytest.raises(config_lib.ConfigError, match="config.latency.backend = 'tflite' times float32 TFLite models, "
                                                   "but config.latency.dtype is 'bfloat16'"):
    config_lib.validate(cfg)


@pytest.mark.parametrize("arg, message", [
    ("target=Q", "target='Q' is not allowed"),
    ("runlocal=1", "cannot parse 'runlocal=1'"),
    ("strategy=darts", "strategy='darts' is not allowed"),
    ("turbo", "cannot parse 'turbo'"),
])
def test_config_arguments_are_parsed_one_way(arg, message):
  with pytest.raises(ValueError, match=message):
    config_lib.parse_config_arg(arg, "configs/search_autox3d.py",
                                options={"target": ("XS", "S", "M", "L"), "strategy": config_lib.STRATEGIES},
                                flags=("runlocal",))
  assert config_lib.parse_config_arg("target=M,runlocal", "x", options={"target": ("M",)}, flags=("runlocal",)) == {
      "target": "M", "runlocal": True}
  assert config_lib.parse_config_arg("", "x", variants=("speed", "tiny")) == {"variant": "speed"}
  with pytest.raises(ValueError, match="cannot parse 'tiny'"):
    config_lib.parse_config_arg("speed,tiny", "x", variants=("speed", "tiny"))
