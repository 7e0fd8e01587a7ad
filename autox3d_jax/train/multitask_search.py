"""Multi-task search (FBNetV5 / RSBNet): one supernet trained on several tasks at once, one
architecture distribution and one derived network per task, from one run.

FBNetV5 (arXiv 2111.10007, abstract [V]; shared/REFERENCES-round2.md section 11) searches every
task in one run at a cost independent of the number of tasks, each task with its own architecture
distribution over the shared supernet. Our step follows that shape, on the single-task step's
K groups: with T tasks (`autox3d_jax.tasks`) each task owns K / T of the groups and reads
batch_size / T clips of its own dataset, so a step costs what a single-task step of K groups
costs, whatever T is.
  * weight step: task t's strategy draws its K / T architectures from task t's distribution; each
    runs on task t's clips through the shared backbone and task t's head (`search.multitask`
    views), scored by task t's loss; the supernet's loss is the tasks' weighted mean;
  * architecture step: each task's strategy updates its own logits from its own validation clips
    and its own cost target, exactly as a single-task search would.
Then each task's architecture is derived from its own logits (or by evolution on its own data and
head, for spos), within its own cost target.

The tasks share config.data's clip and batch and config.search's recipe. The state is the
single-task `SearchState` with {task: ...} for the logits and the strategy states, so it is
sharded, checkpointed and resumed exactly as a single-task search is.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import jax
import jax.numpy as jnp
import ml_collections
import optax

from autox3d_jax import paths
from autox3d_jax.data import pipeline as data_pipeline
from autox3d_jax.search import multitask as mt
from autox3d_jax.search import strategies
from autox3d_jax.search import supernet as sn
from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.distribution import ArchDistribution
from autox3d_jax.search.space import SearchSpace
from autox3d_jax.tasks import Task, task_config, tasks_of
from autox3d_jax.train import identity, loop, partitioning, setup
from autox3d_jax.train import search_loop as sl
from autox3d_jax.train import search_step as ss
from autox3d_jax.train.checkpoint import abstract_like
from autox3d_jax.train.optim import make_arch_optimizer, make_optimizer

log = logging.getLogger(__name__)


def share_config(task_cfg: ml_collections.ConfigDict, num_tasks: int) -> ml_collections.ConfigDict:
  """A task's config with its share of the step: batch_size / T clips and num_groups / T groups."""
  c = task_cfg.copy_and_resolve_references()
  c.data.batch_size = task_cfg.data.batch_size // num_tasks
  c.search.num_groups = task_cfg.search.num_groups // num_tasks
  return c


@dataclasses.dataclass
class TaskProgram:
  """One task's part of the multi-task step."""
  task: Task
  cfg: ml_collections.ConfigDict      # `task_config`: what the task's own single-task search would read
  step_cfg: ml_collections.ConfigDict  # `share_config` of it: the task's share of the step
  space: SearchSpace                  # the shared space with the task's class count
  table: CostTable
  cost_target: float
  dist: ArchDistribution
  strategy: strategies.Strategy
  model: sn.Supernet                  # the single-task supernet of `space`: it runs the task's view


def task_program(cfg: ml_collections.ConfigDict, task: Task, num_tasks: int, space: SearchSpace,
                 table: CostTable) -> TaskProgram:
  """Task `task`'s part of a search over `num_tasks` tasks, on `space` (the shared space at the
  task's class count) and its cost `table`."""
  tcfg = task_config(cfg, task)
  target = setup.resolve_cost_target(space, table, tcfg)
  step_cfg = share_config(tcfg, num_tasks)
  dist = ArchDistribution(space)
  return TaskProgram(task, tcfg, step_cfg, space, table, target, dist, sl.make_strategy(step_cfg, dist, table, target),
                     sn.Supernet(space, dtype=setup.compute_dtype(cfg)))


def build_task_programs(cfg: ml_collections.ConfigDict, workdir: str | None, tasks: list[Task]) -> list[TaskProgram]:
  """Each task's `task_program`, its dataset built first when missing (the head's class count
  comes from it)."""
  programs = []
  for task in tasks:
    tcfg = task_config(cfg, task)
    setup.ensure_dataset(tcfg)
    space = setup.build_space(tcfg)
    programs.append(task_program(cfg, task, len(tasks), space, setup.build_cost_table(space, tcfg, workdir)))
  return programs


def init_state(programs: list[TaskProgram], w_tx, a_tx, seed: int) -> ss.SearchState:
  """The multi-task search state: the shared supernet with a head per task, {task: logits},
  {task: strategy state}, both optimizers."""
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(seed))
  variables = mt.init_variables({p.task.name: p.space for p in programs}, init_rng)
  logits = {p.task.name: p.dist.init_logits() for p in programs}
  return ss.SearchState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                        batch_stats=variables["batch_stats"], weight_opt=w_tx.init(variables["params"]),
                        logits=logits, arch_opt=a_tx.init(logits),
                        strategy={p.task.name: p.strategy.init_state() for p in programs}, rng=step_rng)


def make_multitask_step(programs: list[TaskProgram], w_tx, a_tx, cfg: ml_collections.ConfigDict):
  """step(state, train_batches, val_batches) -> (state, metrics), pure, to be jitted with
  `search_step.jit_search_step`. Batches are {task: {'video', 'label'}}, each task's holding
  batch_size / T clips. Metrics: the weighted 'train_loss', and per task '<task>/train_loss',
  '<task>/train_<metric>', '<task>/arch_entropy', '<task>/expected_cost' and its strategy's."""
  names = [p.task.name for p in programs]
  total_weight = sum(p.task.weight for p in programs)
  warmup = int(cfg.search.arch_warmup_steps)
  smoothing = float(cfg.train.label_smoothing)
  first = programs[0].strategy
  k_task = first.num_groups
  exclusive_weight = first.hard_samples
  exclusive_arch = first.hard_samples and not first.loss_grad_wrt_archs

  def task_losses(p: TaskProgram, params, batch_stats, video, labels, archs, rng, shifts, exclusive):
    """(K / T,) group losses, logits and the updated batch statistics of task p's view."""
    view = mt.task_variables({"params": params, "batch_stats": batch_stats}, p.task.name, names)
    logits, stats = sn.apply_groups(p.model.clone(exclusive=exclusive), view, video, archs, train=True,
                                    rngs={"dropout": rng}, shifts=shifts)
    per_group = p.task.loss_fn(logits, labels, smoothing).reshape(k_task, -1).mean(axis=1)
    return per_group, logits, stats

  def step(state: ss.SearchState, train_batches, val_batches):
    key = jax.random.fold_in(state.rng, state.step)
    keys = {name: jax.random.split(k, 4) for name, k in zip(names, jax.random.split(key, len(names)))}
    drawn = {p.task.name: p.strategy.weight_archs(keys[p.task.name][0], jax.lax.stop_gradient(state.logits[p.task.name]),
                                                  state.strategy[p.task.name], state.step) for p in programs}

    def weight_loss(params):
      total, outputs, stats = 0.0, {}, {}
      for p in programs:
        name, batch = p.task.name, train_batches[p.task.name]
        archs, shifts = drawn[name]
        per_group, logits, stats[name] = task_losses(p, params, state.batch_stats, batch["video"], batch["label"],
                                                     archs, keys[name][2], shifts, exclusive_weight)
        outputs[name] = (jnp.mean(per_group), logits)
        total = total + p.task.weight * outputs[name][0]
      return total / total_weight, (outputs, mt.merge_views(stats, names))

    (loss, (outputs, stats)), grads = jax.value_and_grad(weight_loss, has_aux=True)(state.params)
    updates, weight_opt = w_tx.update(grads, state.weight_opt, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"train_loss": loss, "grad_norm": optax.global_norm(grads)}
    for p in programs:
      task_loss, logits = outputs[p.task.name]
      metrics[f"{p.task.name}/train_loss"] = task_loss
      metrics[f"{p.task.name}/train_{p.task.metric}"] = p.task.metric_fn(logits, train_batches[p.task.name]["label"])

    logits_arch, arch_opt, strategy_state = state.logits, state.arch_opt, state.strategy
    if first.updates_arch:
      def arch_loss(all_logits):
        total, new_states, arch_metrics = 0.0, {}, {}
        for p in programs:
          name, batch = p.task.name, val_batches[p.task.name]

          def group_losses(candidate_archs, p=p, batch=batch):
            video, labels = batch["video"], batch["label"]
            if p.strategy.shares_val_batch:   # group g = copy g of the task's whole val batch
              video, labels = ss.tile_for_groups(video, labels, k_task)
            return task_losses(p, params, stats, video, labels, candidate_archs, keys[p.task.name][3], None,
                               exclusive_arch)[0]

          loss_t, (new_states[name], m) = p.strategy.arch_objective(keys[name][1], all_logits[name],
                                                                    state.strategy[name], state.step, group_losses)
          total = total + loss_t
          arch_metrics.update({f"{name}/{k}": v for k, v in m.items()})
          arch_metrics[f"{name}/arch_loss"] = loss_t
        return total, (new_states, arch_metrics)

      (_, (new_states, arch_metrics)), a_grads = jax.value_and_grad(arch_loss, has_aux=True)(state.logits)
      a_updates, new_arch_opt = a_tx.update(a_grads, state.arch_opt, state.logits)
      new_logits = optax.apply_updates(state.logits, a_updates)
      frozen = state.step < warmup   # AutoX3D: the architecture is frozen while the weights warm up
      pick = lambda old, new: jax.tree_util.tree_map(lambda o, n: jnp.where(frozen, o, n), old, new)  # noqa: E731
      logits_arch, arch_opt = pick(state.logits, new_logits), pick(state.arch_opt, new_arch_opt)
      strategy_state = pick(state.strategy, {n: {**state.strategy[n], **new_states[n]} for n in names})
      metrics.update(arch_metrics)
    for p in programs:
      metrics[f"{p.task.name}/arch_entropy"] = p.dist.entropy(logits_arch[p.task.name])
      metrics[f"{p.task.name}/expected_cost"] = p.table.expected(p.dist.probs(logits_arch[p.task.name]))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=stats, weight_opt=weight_opt,
                              logits=logits_arch, arch_opt=arch_opt, strategy=strategy_state)
    return new_state, metrics

  return step


@dataclasses.dataclass
class MultiTaskResult:
  """What a multi-task search returns: each task's `search_loop.SearchResult` (its point, network,
  cost and target, the run's history), wall seconds and the input records skipped."""
  tasks: dict          # {task name: SearchResult}
  programs: list       # [TaskProgram]
  seconds: float
  steps: int
  input: dict = dataclasses.field(default_factory=dict)


def run_multitask_search(cfg: ml_collections.ConfigDict, workdir: str) -> MultiTaskResult:
  """Search config.search.tasks in one run and derive each task's architecture; writes
  workdir/search/<task>/{arch,point,logits,history,result}.json per task.
  Resumes from workdir's search checkpoint as `search_loop.run_search` does."""
  start_time = time.time()
  tasks = tasks_of(cfg)
  setup.check_devices(cfg)
  dirs = loop.run_dirs(workdir, "search")
  run_identity = identity.of_search(cfg)
  ckpt = loop.checkpointer(cfg, dirs.checkpoints, run_identity, what="search")   # checked before any build
  programs = build_task_programs(cfg, workdir, tasks)
  names = [t.name for t in tasks]
  w_tx = make_optimizer(cfg.search.weight_opt, cfg.search.steps)
  a_tx = make_arch_optimizer(cfg.search.arch_opt)
  mesh = setup.make_mesh(cfg)
  state = init_state(programs, w_tx, a_tx, cfg.seed)
  rule = setup.sharding_rule(cfg, mesh, state.params)
  jitted, shardings = ss.jit_search_step(make_multitask_step(programs, w_tx, a_tx, cfg), state, mesh, rule)

  history = {"steps": [], "probs": {n: {} for n in names}, "metrics": []}
  input_before = None
  restored = ckpt.restore(abstract_like(state, shardings))
  if restored is not None:
    state, meta = restored
    history, input_before = meta["history"], meta.get("input")
    log.info("resumed multi-task search from step %d", int(state.step))
  else:
    state = jax.device_put(state, shardings)
  start = int(state.step)
  pipelines = {}
  for i, p in enumerate(programs):
    weight_split, arch_split = sl.split_names(p.step_cfg)
    pipelines[p.task.name] = {
        weight_split: setup.train_pipeline(p.step_cfg, weight_split, seed_offset=2 * i, start_step=start),
        arch_split: setup.train_pipeline(p.step_cfg, arch_split, seed_offset=2 * i + 1, start_step=start)}
  iterators = {n: [iter(pl) for pl in pipelines[n].values()] for n in names}
  input_report = lambda: data_pipeline.merge_skip_reports(input_before, data_pipeline.skip_report(  # noqa: E731
      {f"{n} {split}": pl.stats for n in names for split, pl in pipelines[n].items()}))

  def batches():
    while True:
      yield tuple({n: partitioning.global_batch(sl.video_label(next(iterators[n][part])), mesh) for n in names}
                  for part in (0, 1))

  writer = loop.metrics_writer(dirs.tensorboard)
  if start == 0:
    writer.write_hparams({"strategy": cfg.search.strategy, "steps": cfg.search.steps, "tasks": ",".join(names)})
    for p in programs:
      log.info("task %s: %s, %d classes, %d of %d groups and %d clips per step, cost target %.4g (%s)", p.task.name,
               p.task.dataset, p.space.config.head.num_classes, p.step_cfg.search.num_groups, cfg.search.num_groups,
               p.step_cfg.data.batch_size, p.cost_target, p.table.metric)

  def describe(v):
    parts = [f"{n} loss {v[f'{n}/train_loss']:.3f} {t.metric} {v[f'{n}/train_{t.metric}']:.2f} "
             f"cost {v[f'{n}/expected_cost']:.4g}" for n, t in zip(names, tasks)]
    return f"loss {v['train_loss']:.3f}; " + "; ".join(parts)

  def on_log(step, values, st):
    history["steps"].append(step)
    history["metrics"].append(values)
    logits = jax.device_get(st.logits)
    for n in names:
      sl.record_probs(history["probs"][n], logits[n])

  spec = loop.LoopSpec.from_config(
      cfg, name="multi-task search", total_steps=cfg.search.steps, loss_key="train_loss",
      optimizer_key="search.weight_opt", describe=describe, on_log=on_log,
      meta=lambda: {"history": history, "input": input_report(), "identity": run_identity},
      input_report=input_report)
  state = loop.run_steps(spec, state, jitted, batches(), ckpt, writer)
  skipped = input_report()

  logits = jax.device_get(state.logits)
  derived = {}
  for p in programs:
    n = p.task.name
    view = state.replace(**mt.task_variables(sl.supernet_variables(state), n, names))
    point = sl.derive_point(p.cfg, p.dist, p.table, logits[n], p.cost_target,
                            evolve=lambda p=p, view=view: sl.evolve_point(p.cfg, p.space, p.table, p.model, view, p.cost_target),
                            evolves=cfg.search.derive == "evolution" or not p.strategy.updates_arch)
    point = p.space.canonical(point)
    arch = p.space.to_arch(point, name=f"AutoX3D-{cfg.search.strategy} ({n})")
    cost = p.table.of_point(point)
    task_history = {"steps": history["steps"], "probs": history["probs"][n], "metrics": history["metrics"]}
    derived[n] = dict(point=point, spec=arch, cost=cost, cost_target=p.cost_target, history=task_history,
                      clip=p.space.input_of(point))
    if jax.process_index() == 0:
      sl.write_search_outputs(paths.join(workdir, "search", n), arch, point, logits[n], task_history,
                               {"arch": arch.name, "task": n, "dataset": p.task.dataset, "cost_metric": p.table.metric,
                                "cost": float(cost), "cost_target": float(p.cost_target), "steps": cfg.search.steps,
                                "input": skipped})
  ckpt.close()
  seconds = time.time() - start_time
  results = {n: sl.SearchResult(**d, seconds=seconds, steps=cfg.search.steps, input=skipped)
             for n, d in derived.items()}
  return MultiTaskResult(results, programs, seconds, cfg.search.steps, skipped)
