"""The search: build (space, cost table, strategy, supernet, jitted step) -> loop -> derive.

`run_search(cfg, workdir, space)` trains the supernet and the architecture distribution on the
loop kit (`train.loop`: progress, NaN stop, checkpoints, preemption), then derives the
architecture (the distribution's mode, within the cost target, or evolution for SPOS) and writes
it to workdir/search/.

Exact resume: the state pytree holds everything (params, stats, logits, optimizer and strategy
states, RNG, step); the input pipelines are deterministic and re-created at the restored step. A
run killed at any point and restarted derives the same architecture as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from autox3d_jax import paths
from autox3d_jax.data import pipeline as data_pipeline
from autox3d_jax.models.spec import ArchSpec
from autox3d_jax.search import evolution, strategies
from autox3d_jax.search import supernet as sn
from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.distribution import ArchDistribution
from autox3d_jax.search.inputs import ClipInput, select_clip
from autox3d_jax.search.recalibrate import make_point_scorer
from autox3d_jax.search.space import SearchSpace
from autox3d_jax.train import identity, loop, partitioning, setup
from autox3d_jax.train import search_step as ss
from autox3d_jax.train.checkpoint import Checkpointer, abstract_like
from autox3d_jax.train.optim import make_arch_optimizer, make_optimizer
from autox3d_jax.train.teacher import FeatureTeacher, load_teacher

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SearchResult:
  """What a search returns: the derived point and ArchSpec, its cost and the target (table units),
  the logged history (steps, metrics, decision probabilities), wall seconds and steps run, the
  input records skipped (`data.pipeline.skip_report`; a resumed run adds those of its checkpoint)
  and the derived network's clip."""
  point: dict
  spec: ArchSpec
  cost: float
  cost_target: float
  history: dict
  seconds: float
  steps: int
  input: dict = dataclasses.field(default_factory=dict)
  clip: ClipInput | None = None     # the derived network's input setting (searched, or the reference clip)


def split_names(cfg) -> tuple[str, str]:
  """Weights train on the first (1 - f) of the train split, the architecture on the held-out rest."""
  pct = int(round(100 * (1 - cfg.data.arch_val_fraction)))
  base = cfg.data.train_split
  return f"{base}[:{pct}%]", f"{base}[{pct}%:]"


def val_examples_per_group(cfg) -> int:
  """Validation clips each sampled architecture is scored on: the whole val batch when the K
  samples share it (search.probabilistic.shared_val_batch), else its K-th part."""
  shared = cfg.search.strategy == "probabilistic" and cfg.search.probabilistic.shared_val_batch
  return cfg.data.batch_size // (1 if shared else cfg.search.num_groups)


def make_strategy(cfg, dist: ArchDistribution, table: CostTable, cost_target: float):
  return strategies.make(dist, table, cfg.search, cost_target=cost_target,
                         val_examples_per_group=val_examples_per_group(cfg))


@dataclasses.dataclass
class SearchProgram:
  """What one search step is made of (`build_search_step`)."""
  dist: ArchDistribution
  strategy: strategies.Strategy
  model: sn.Supernet
  weight_tx: Any
  arch_tx: Any
  step: Callable            # step(state, train_batch, val_batch) -> (state, metrics), pure
  seed: int
  teacher: FeatureTeacher | None = None

  def init_state(self) -> ss.SearchState:
    return ss.init_search_state(self.model, self.dist, self.strategy, self.weight_tx, self.arch_tx, seed=self.seed,
                                teacher=self.teacher)


def build_search_step(cfg, space: SearchSpace, table: CostTable, cost_target: float,
                      teacher: FeatureTeacher | None = None) -> SearchProgram:
  """The search step config.search describes over `space`: strategy, supernet (computing in
  config.train.dtype), both optimizers, and config.search.feature_distill's `teacher`
  (`train.teacher.load_teacher`) when given."""
  dist = ArchDistribution(space)
  strategy = make_strategy(cfg, dist, table, cost_target)
  model = sn.Supernet(space, dtype=setup.compute_dtype(cfg))
  w_tx = make_optimizer(cfg.search.weight_opt, cfg.search.steps)
  a_tx = make_arch_optimizer(cfg.search.arch_opt)
  step = ss.make_search_step(model, dist, strategy, w_tx, a_tx, cfg, table, teacher)
  return SearchProgram(dist, strategy, model, w_tx, a_tx, step, cfg.seed, teacher)


def supernet_variables(state) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


def video_label(batch):
  return {"video": batch["video"], "label": batch["label"]}


def pretrained_network(cfg: ml_collections.ConfigDict) -> tuple[ArchSpec, dict] | None:
  """config.search.init_from's network and weights (None when unset), checked against config.space
  before any dataset build: the checkpoint exists, records its architecture, holds that
  architecture's tensors, and the architecture is a point of the space (its class count aside).
  Raises CheckpointError / ConfigError naming config.search.init_from."""
  if not cfg.search.init_from:
    return None
  from autox3d_jax.config import ConfigError
  from autox3d_jax.models.spec import SpecError
  from autox3d_jax.search import adapt
  from autox3d_jax.train import weights
  key = "search.init_from"
  spec, variables = weights.load_recorded(cfg.search.init_from, key)
  try:
    adapt.point_of_network(setup.build_space(cfg, classes=spec.head.num_classes), spec)
  except SpecError as e:
    raise ConfigError(f"config.{key}: the network is not a point of config.space: {e}") from None
  return spec, variables


def _adapted(cfg, space: SearchSpace, state, pretrained: tuple[ArchSpec, dict]):
  """`state` with the pretrained network's weights in the supernet's slots (`search.adapt`)."""
  from autox3d_jax.search import adapt
  spec, variables = pretrained
  placed = adapt.supernet_from_network(space, spec, variables, supernet_variables(state), cfg.search.init_new_blocks)
  log.info("supernet initialised from %s (%s) at its point; new blocks: %s", cfg.search.init_from, spec.name,
           cfg.search.init_new_blocks)
  return state.replace(params=jax.tree_util.tree_map(jnp.asarray, placed["params"]),
                       batch_stats=jax.tree_util.tree_map(jnp.asarray, placed["batch_stats"]))


def feature_teacher(cfg: ml_collections.ConfigDict) -> FeatureTeacher | None:
  """config.search.feature_distill's teacher, checked against config.space before any dataset build
  (the stage shapes do not depend on the class count); None when unset."""
  if not cfg.search.feature_distill.teacher:
    return None
  return load_teacher(cfg, setup.build_space(cfg, classes=1))


def run_search(cfg: ml_collections.ConfigDict, workdir: str, space: SearchSpace,
               pretrained: tuple[ArchSpec, dict] | None = None,
               teacher: FeatureTeacher | None = None) -> SearchResult:
  """Search `space` as config.search says and derive the architecture; returns a SearchResult and
  writes workdir/search/{arch,point,logits,history,result}.json. Builds the missing embedded
  dataset first (config.data.build_if_missing), resumes from workdir's search checkpoint if there
  is one, raises loop.Preempted after a SIGTERM save and loop.NonFiniteLossError on a NaN loss.
  A fresh search starts from config.search.init_from's network when set (`pretrained`: what
  `pretrained_network(cfg)` returned, read here when not given). config.search.feature_distill's
  teacher (`teacher`: what `feature_teacher(cfg)` returned, read here when not given) guides the
  weight steps."""
  start_time = time.time()
  setup.check_devices(cfg)
  if pretrained is None:
    pretrained = pretrained_network(cfg)
  if teacher is None:
    teacher = feature_teacher(cfg)   # checked before any build
  dirs = loop.run_dirs(workdir, "search")
  run_identity = identity.of_search(cfg)
  ckpt = loop.checkpointer(cfg, dirs.checkpoints, run_identity, what="search")   # checked before any build
  setup.ensure_dataset(cfg)
  table = setup.build_cost_table(space, cfg, workdir)
  cost_target = setup.resolve_cost_target(space, table, cfg)
  program = build_search_step(cfg, space, table, cost_target, teacher)
  dist, strategy, model = program.dist, program.strategy, program.model
  mesh = setup.make_mesh(cfg)
  state = program.init_state()
  rule = setup.sharding_rule(cfg, mesh, state.params)   # main checked it before any build (check_sharding)
  jitted, shardings = ss.jit_search_step(program.step, state, mesh, rule)

  history = {"steps": [], "probs": {}, "metrics": []}
  input_before = None   # skip counts up to the checkpoint resumed from
  restored = ckpt.restore(abstract_like(state, shardings))
  if restored is not None:
    state, meta = restored
    history = meta["history"]
    input_before = meta.get("input")
    log.info("resumed search from step %d", int(state.step))
  else:
    if pretrained is not None:
      state = _adapted(cfg, space, state, pretrained)
    state = jax.device_put(state, shardings)
  start = int(state.step)
  weight_split, arch_split = split_names(cfg)
  data_cfg = setup.search_data_config(cfg, space)   # the superclip when input axes are searched
  weight_pipeline = setup.train_pipeline(data_cfg, weight_split, start_step=start)
  arch_pipeline = setup.train_pipeline(data_cfg, arch_split, seed_offset=1, start_step=start)
  weight_data, arch_data = iter(weight_pipeline), iter(arch_pipeline)
  input_report = lambda: data_pipeline.merge_skip_reports(input_before, data_pipeline.skip_report(  # noqa: E731
      {weight_split: weight_pipeline.stats, arch_split: arch_pipeline.stats}))

  def batches():
    while True:
      yield (partitioning.global_batch(video_label(next(weight_data)), mesh),
             partitioning.global_batch(video_label(next(arch_data)), mesh))

  writer = loop.metrics_writer(dirs.tensorboard)
  if start == 0:
    writer.write_hparams({"strategy": cfg.search.strategy, "steps": cfg.search.steps,
                          "space_log10_size": space.log10_size(), "cost_target": cost_target})
    log.info("search space: %d decisions, 10^%.1f architectures; cost target %.4g (%s)",
             len(space.decisions), space.log10_size(), cost_target, table.metric)
    if space.input_labels:
      log.info("input axes %s searched, one setting per step, each cut from the decoded clip %s (%d settings, "
               "one compiled step each)", space.config.input_axes, space.superclip(), len(space.input_settings()))
    from clu import parameter_overview
    log.info("supernet parameters:\n%s", parameter_overview.get_parameter_overview(state.params))
  log.info("sharding over mesh %s (%s):\n%s", dict(mesh.shape), rule,
           partitioning.describe(state.params, shardings.params, state.weight_opt, shardings.weight_opt))

  spec = loop.LoopSpec.from_config(
      cfg, name="search", total_steps=cfg.search.steps, loss_key="train_loss",
      optimizer_key="search.weight_opt",
      describe=lambda v: (f"loss {v['train_loss']:.3f}, top1 {v['train_top1']:.2f}, arch entropy "
                          f"{v['arch_entropy']:.2f}, expected cost {v.get('expected_cost', float('nan')):.4g}"),
      on_log=lambda step, values, st: _record(history, step, values, jax.device_get(st.logits)),
      meta=lambda: {"history": history, "input": input_report(), "identity": run_identity},
      input_report=input_report)
  state = loop.run_steps(spec, state, jitted, batches(), ckpt, writer)
  skipped = input_report()

  logits = jax.device_get(state.logits)
  point = derive_point(cfg, dist, table, logits, cost_target,
                       evolve=lambda: evolve_point(cfg, space, table, model, state, cost_target),
                       evolves=cfg.search.derive == "evolution" or not strategy.updates_arch)
  point = space.canonical(point)
  arch = space.to_arch(point, name=f"AutoX3D-{cfg.search.strategy}")
  cost = table.of_point(point)
  searched_clip = space.input_of(point)
  clip = dataclasses.asdict(searched_clip)
  if space.input_labels:
    log.info("searched input: %s; train the network with --config.data.num_frames=%d --config.data.sampling_stride=%d "
             "--config.data.crop_size=%d", clip, clip["frames"], clip["stride"], clip["crop"])
  if jax.process_index() == 0:
    write_search_outputs(paths.join(workdir, "search"), arch, point, logits, history,
                          {"arch": arch.name, "cost_metric": table.metric, "cost": float(cost),
                           "cost_target": float(cost_target), "steps": cfg.search.steps, "input": skipped,
                           "clip": clip})
  ckpt.close()
  return SearchResult(point, arch, cost, cost_target, history, time.time() - start_time, cfg.search.steps,
                      skipped, searched_clip)


def derive_point(cfg, dist: ArchDistribution, table: CostTable, logits, cost_target: float, *,
                 evolve, evolves: bool) -> dict:
  """The searched point: `evolve()` when `evolves` (search.derive = 'evolution', or a strategy that
  learns no distribution), else the distribution's mode -- or, with search.derive_within_target
  and a mode above the target, the most likely point within it."""
  if evolves:
    return evolve()
  point = dist.mode(logits)
  mode_cost = table.of_point(point)
  if cfg.search.derive_within_target and 0 < cost_target < mode_cost:
    log.info("the most likely architecture costs %.4g > target %.4g; deriving the most likely one "
             "within the target", mode_cost, cost_target)
    point = dist.mode_within(logits, lambda p: table.expected(dist.one_hot(p)), cost_target)
  return point


def write_search_outputs(out_dir, arch, point, logits, history, result):
  """arch.json, point.json, logits.json, history.json and result.json into `out_dir` (local or
  gs://), each written whole through `paths`; result.json last, so its presence means the rest
  are there."""
  arch.save(paths.join(out_dir, "arch.json"))
  for name, data, indent in (("point", point, 1), ("logits", {k: np.asarray(v).tolist() for k, v in logits.items()},
                                                   None), ("history", history, None), ("result", result, 1)):
    paths.write_json(paths.join(out_dir, f"{name}.json"), data, indent=indent)


def _record(history, step, values, logits):
  history["steps"].append(step)
  history["metrics"].append(values)
  record_probs(history["probs"], logits)


def record_probs(probs: dict, logits) -> None:
  """Append each decision's probabilities (softmax of its logits, 4 decimals) to probs[label]."""
  for label, v in logits.items():
    probs.setdefault(label, []).append(np.asarray(jax.nn.softmax(jnp.asarray(v))).round(4).tolist())


def restore_supernet_variables(workdir: str) -> dict:
  """{'params', 'batch_stats'} of workdir's latest search checkpoint as saved (host arrays in
  nested dicts); raises FileNotFoundError when there is none."""
  ckpt = Checkpointer(loop.run_dirs(workdir, "search").checkpoints)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"no search checkpoint in {ckpt.directory}; run mode=search first")
    state, _ = ckpt.restore()
    return {"params": state["params"], "batch_stats": state["batch_stats"]}
  finally:
    ckpt.close()


def evolution_batches(cfg) -> tuple[list, list]:
  """SPOS's data: search.evolution.bn_batches batches of the weight split to recalibrate each
  candidate's BN statistics, and eval_batches batches of the held-out split to score it (at the
  superclip when the space searches input axes: pass `search_data_config`'s config)."""
  ecfg = cfg.search.evolution
  weight_split, arch_split = split_names(cfg)
  calib = setup.train_pipeline(cfg, weight_split, seed_offset=2)
  held_out = setup.train_pipeline(cfg, arch_split, seed_offset=3)
  return ([video_label(b) for b, _ in zip(calib, range(ecfg.bn_batches))],
          [video_label(b) for b, _ in zip(held_out, range(ecfg.eval_batches))])


def evolve_point(cfg, space, table, model, state, cost_target):
  """SPOS: evolutionary search on the trained supernet, each candidate's BN recalibrated."""
  calib_batches, eval_batches = evolution_batches(setup.search_data_config(cfg, space))
  source = space.superclip()
  clip_of = (lambda video, point: select_clip(video, source, space.input_of(point))) if space.input_labels else None
  score = make_point_scorer(model, space, partitioning.to_host(supernet_variables(state)), calib_batches,
                            eval_batches, clip_of=clip_of)
  target = cost_target if cost_target > 0 else None
  result = evolution.evolve(space, score, table.of_point, target, cfg.search.evolution, seed=cfg.seed, log=log.info)
  return result.best
