"""The search loop: sample -> build -> step -> feedback, with metrics, checkpoints, exact resume,
preemption and NaN handling; ends by deriving the architecture (distribution mode or evolution).

Exact resume: the state pytree holds everything (params, stats, logits, optimizer and strategy
states, RNG, step); the input pipelines are deterministic and re-created at the restored step. A
run killed at any point and restarted derives the same architecture as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from autox3d_jax import hostmem
from autox3d_jax.search import derive as derive_lib
from autox3d_jax.search import evolution, strategies
from autox3d_jax.search import supernet as sn
from autox3d_jax.search.distribution import ArchDistribution
from autox3d_jax.search.recalibrate import make_point_scorer
from autox3d_jax.train import partitioning, setup
from autox3d_jax.train import search_step as ss
from autox3d_jax.train.checkpoint import Checkpointer, abstract_like

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
  pass


class Preempted(RuntimeError):
  """Raised after a SIGTERM-triggered save: the process should exit and be restarted."""


class _SigtermFlag:
  """SIGTERM (a preempted TPU VM) -> finish the current step, save, exit cleanly."""

  def __init__(self):
    self.raised = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:   # not the main thread (e.g. inside a notebook worker): no handler
      self._previous = None
    return self

  def _handle(self, signum, frame):
    self.raised = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


@dataclasses.dataclass
class SearchResult:
  point: dict
  spec: object
  cost: float
  cost_target: float
  history: dict
  seconds: float
  steps: int


def split_names(cfg) -> tuple[str, str]:
  """Weights train on the first (1 - f) of the train split, the architecture on the held-out rest."""
  pct = int(round(100 * (1 - cfg.data.arch_val_fraction)))
  base = cfg.data.train_split
  return f"{base}[:{pct}%]", f"{base}[{pct}%:]"


def _writer(workdir):
  from clu import metric_writers
  return metric_writers.create_default_writer(os.path.join(workdir, "tensorboard"),
                                              just_logging=jax.process_index() > 0)


def run_search(cfg: ml_collections.ConfigDict, workdir: str) -> SearchResult:
  start_time = time.time()
  hostmem.keep_freed_memory_on_cpu()   # XLA's CPU step re-faulted its buffers every step
  setup.ensure_dataset(cfg)
  space = setup.build_space(cfg)
  dist = ArchDistribution(space)
  table = setup.build_cost_table(space, cfg, workdir)
  search_cfg = ml_collections.ConfigDict(cfg.search.to_dict())
  search_cfg.cost_target = setup.resolve_cost_target(space, table, cfg)
  search_cfg.total_steps = cfg.search.steps
  search_cfg.val_examples_per_group = cfg.data.batch_size // (1 if cfg.search.shared_val_batch
                                                               else cfg.search.num_groups)
  strategy = strategies.make(cfg.search.strategy, dist, table, search_cfg)
  model = sn.Supernet(space)
  w_tx = ss.weight_optimizer(cfg.weight_opt, cfg.search.steps)
  a_tx = ss.arch_optimizer(cfg.arch_opt)
  mesh = partitioning.make_mesh(model=cfg.mesh.model)
  step_fn = ss.make_search_step(model, dist, strategy, w_tx, a_tx, cfg, table)
  state = ss.init_search_state(model, dist, strategy, w_tx, a_tx, seed=cfg.seed)
  jitted, shardings = ss.jit_search_step(step_fn, state, mesh)

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints", "search"), keep=cfg.checkpoint.keep)
  history = {"steps": [], "probs": {}, "metrics": []}
  restored = ckpt.restore(abstract_like(state, shardings))
  if restored is not None:
    state, meta = restored
    history = meta["history"]
    log.info("resumed search from step %d", int(state.step))
  else:
    state = jax.device_put(state, shardings)
  start = int(state.step)
  weight_split, arch_split = split_names(cfg)
  weight_data = iter(setup.train_pipeline(cfg, weight_split, start_step=start))
  arch_data = iter(setup.train_pipeline(cfg, arch_split, seed_offset=1, start_step=start))

  writer = _writer(workdir)
  if start == 0:
    writer.write_hparams({"strategy": cfg.search.strategy, "steps": cfg.search.steps,
                          "space_log10_size": space.log10_size(), "cost_target": search_cfg.cost_target})
    log.info("search space: %d decisions, 10^%.1f architectures; cost target %.4g (%s)",
             len(space.decisions), space.log10_size(), search_cfg.cost_target, table.metric)
    from clu import parameter_overview
    log.info("supernet parameters:\n%s", parameter_overview.get_parameter_overview(state.params))
  from clu import periodic_actions
  progress = periodic_actions.ReportProgress(num_train_steps=cfg.search.steps, writer=writer,
                                             every_secs=None, every_steps=cfg.log_every_steps)
  last_saved = start
  with _SigtermFlag() as sigterm:
    for step in range(start, cfg.search.steps):
      train_batch = partitioning.global_batch(_video_label(next(weight_data)), mesh)
      val_batch = partitioning.global_batch(_video_label(next(arch_data)), mesh)
      state, metrics = jitted(state, train_batch, val_batch)
      done = step + 1
      progress(done)
      is_last = done == cfg.search.steps
      if done % cfg.log_every_steps == 0 or is_last or done % cfg.checkpoint.every_steps == 0 or sigterm.raised:
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not np.isfinite(values["train_loss"]):
          kept = (f"the last good checkpoint (step {last_saved}) in {ckpt.directory} is intact"
                  if ckpt.latest_step() is not None else "no checkpoint had been written yet")
          raise NonFiniteLossError(
              f"search loss became {values['train_loss']} at step {done}; {kept}. Lower "
              f"config.weight_opt.lr or set config.weight_opt.grad_clip.")
        writer.write_scalars(done, values)
        _record(history, done, values, jax.device_get(state.logits))
        elapsed = time.time() - start_time
        log.info("search step %d/%d: loss %.3f, top1 %.2f, arch entropy %.2f, expected cost %.4g "
                 "(%.0f s elapsed)", done, cfg.search.steps, values["train_loss"], values["train_top1"],
                 values["arch_entropy"], values.get("expected_cost", float("nan")), elapsed)
      if done % cfg.checkpoint.every_steps == 0 or is_last or sigterm.raised:
        ckpt.save(done, state, {"history": history})
        last_saved = done
        _fault_injection(done)
      if sigterm.raised and not is_last:
        writer.flush()
        ckpt.close()
        raise Preempted(f"SIGTERM: saved step {done} to {ckpt.directory}; restart to resume")
  writer.flush()

  logits = jax.device_get(state.logits)
  if cfg.search.derive == "evolution" or not strategy.updates_arch:
    point = _evolve(cfg, space, table, model, state, search_cfg, mesh)
  else:
    point = dist.mode(logits)
    target, mode_cost = search_cfg.cost_target, table.of_point(point)
    if cfg.search.derive_within_target and 0 < target < mode_cost:
      log.info("the most likely architecture costs %.4g > target %.4g; deriving the most likely one "
               "within the target", mode_cost, target)
      point = dist.mode_within(logits, lambda p: table.expected(dist.one_hot(p)), target)
  point = space.canonical(point)
  spec = space.to_arch(point, name=f"AutoX3D-{cfg.search.strategy}")
  cost = table.of_point(point)
  out_dir = os.path.join(workdir, "search")
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
    spec.save(os.path.join(out_dir, "arch.json"))
    with open(os.path.join(out_dir, "point.json"), "w") as f:
      json.dump(point, f, indent=1)
    with open(os.path.join(out_dir, "logits.json"), "w") as f:
      json.dump({k: np.asarray(v).tolist() for k, v in logits.items()}, f)
    with open(os.path.join(out_dir, "history.json"), "w") as f:
      json.dump(history, f)
    with open(os.path.join(out_dir, "result.json"), "w") as f:
      json.dump({"arch": spec.name, "cost_metric": table.metric, "cost": float(cost),
                 "cost_target": float(search_cfg.cost_target), "steps": cfg.search.steps}, f, indent=1)
  ckpt.close()
  return SearchResult(point, spec, cost, search_cfg.cost_target, history, time.time() - start_time,
                      cfg.search.steps)


def _fault_injection(saved_step: int) -> None:
  """Test hook: AUTOX3D_FAULT_KILL_AFTER_SAVE=N kills the process (SIGKILL, no cleanup) right after
  the checkpoint of step N is written -- how the resume test simulates a lost machine."""
  if os.environ.get("AUTOX3D_FAULT_KILL_AFTER_SAVE") == str(saved_step):
    os.kill(os.getpid(), signal.SIGKILL)


def supernet_variables(state) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


def _video_label(batch):
  return {"video": batch["video"], "label": batch["label"]}


def _record(history, step, values, logits):
  history["steps"].append(step)
  history["metrics"].append(values)
  for label, v in logits.items():
    history["probs"].setdefault(label, []).append(np.asarray(jax.nn.softmax(jnp.asarray(v))).round(4).tolist())


def _evolve(cfg, space, table, model, state, search_cfg, mesh):
  """SPOS: evolutionary search on the trained supernet, each candidate's BN recalibrated."""
  ecfg = cfg.search.evolution
  weight_split, arch_split = split_names(cfg)
  calib = setup.train_pipeline(cfg, weight_split, seed_offset=2)
  held_out = setup.train_pipeline(cfg, arch_split, seed_offset=3)
  calib_batches = [_video_label(b) for b, _ in zip(calib, range(ecfg.bn_batches))]
  eval_batches = [_video_label(b) for b, _ in zip(held_out, range(ecfg.eval_batches))]
  score = make_point_scorer(model, space, supernet_variables(jax.device_get(state)), calib_batches, eval_batches)
  target = search_cfg.cost_target if search_cfg.cost_target > 0 else None
  result = evolution.evolve(space, score, table.of_point, target, ecfg, seed=cfg.seed, log=log.info)
  return result.best
