"""Train and evaluate one standalone network (an ArchSpec), from scratch or from inherited weights.

`run_train(cfg, workdir, spec, name)` builds (network, optimizer, jitted sharded step) -> runs the
loop kit (`train.loop`: progress, NaN stop, checkpoints with exact resume, preemption) -> evaluates.
Evaluation follows X3D's multi-view protocol: softmax averaged over the views of each video.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from autox3d_jax.cost.analytic import arch_cost
from autox3d_jax.data import pipeline as data_pipeline
from autox3d_jax.models import builder
from autox3d_jax.models.spec import ArchSpec
from autox3d_jax.train import identity, loop, partitioning, setup
from autox3d_jax.train.checkpoint import Checkpointer, abstract_like
from autox3d_jax.train.losses import cross_entropy, top1
from autox3d_jax.train.optim import make_optimizer

log = logging.getLogger(__name__)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


@dataclasses.dataclass
class TrainResult:
  """A trained network's evaluation: top-1 / top-5 (fractions) over eval_examples videos, its
  analytic GFLOPs and parameter count, the wall seconds of training plus evaluation, and the
  training input records skipped (`data.pipeline.skip_report`)."""
  name: str
  spec: ArchSpec
  top1: float
  top5: float
  gflops: float
  params: int
  seconds: float
  eval_examples: int
  input: dict = dataclasses.field(default_factory=dict)


compute_dtype = setup.compute_dtype   # train_loop.compute_dtype: its public name before setup had it


def init_state(cfg: ml_collections.ConfigDict, spec: ArchSpec, tx: optax.GradientTransformation,
               variables: dict | None = None) -> TrainState:
  """Step 0 of training `spec`: a copy of `variables` (e.g. inherited from a supernet) or a fresh
  init from config.seed, the optimizer state, and the dropout RNG."""
  rng = jax.random.PRNGKey(cfg.seed)
  if variables is not None:   # copies: the jitted step donates the state, the caller keeps its arrays
    variables = jax.tree_util.tree_map(jnp.array, variables)
  variables = variables or builder.init_variables(spec, jax.random.fold_in(rng, 1))
  return TrainState(jnp.zeros((), jnp.int32), variables["params"], variables["batch_stats"],
                    tx.init(variables["params"]), rng)


def state_shardings(state: TrainState, mesh, rule: partitioning.ShardingRule | None = None) -> TrainState:
  """Params by the parameter rule (`partitioning.ShardingRule`) and their optimizer moments the
  same way; the rest replicated."""
  rep = partitioning.replicated(mesh)
  params_sh = partitioning.param_shardings(state.params, mesh, rule)
  return TrainState(rep, params_sh, jax.tree_util.tree_map(lambda _: rep, state.batch_stats),
                    partitioning.optimizer_shardings(state.opt_state, state.params, params_sh, mesh), rep)


def make_train_step(model, tx, smoothing):
  def step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      logits, upd = model.apply({"params": params, "batch_stats": state.batch_stats}, batch["video"],
                                train=True, mutable=["batch_stats"], rngs={"dropout": rng})
      return jnp.mean(cross_entropy(logits, batch["label"], smoothing)), (logits, upd["batch_stats"])

    (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "top1": top1(logits, batch["label"])}
    return state.replace(step=state.step + 1, params=params, batch_stats=stats, opt_state=opt_state), metrics
  return step


def make_eval_step(model):
  def step(variables, video, label, mask):
    b, v = video.shape[:2]
    logits = model.apply(variables, video.reshape((b * v,) + video.shape[2:]), train=False)
    probs = jnp.mean(jax.nn.softmax(logits.reshape(b, v, -1)), axis=1)   # average over views
    top5 = jnp.argsort(-probs, axis=-1)[:, :5]
    hit1 = (top5[:, 0] == label) & mask
    hit5 = jnp.any(top5 == label[:, None], axis=-1) & mask
    return jnp.sum(hit1), jnp.sum(hit5), jnp.sum(mask)
  return step


def evaluate(cfg, spec: ArchSpec, variables, mesh=None) -> tuple[float, float, int]:
  """(top-1, top-5, number of videos) of `variables` on config.data.eval_split, multi-view."""
  mesh = mesh or setup.make_mesh(cfg)
  model = builder.build(spec, compute_dtype(cfg))
  step = jax.jit(make_eval_step(model))
  hit1 = hit5 = count = 0
  for batch in setup.eval_pipeline(cfg):
    g = partitioning.global_batch({k: batch[k] for k in ("video", "label", "mask")}, mesh)
    a, b, c = step(variables, g["video"], g["label"], g["mask"])
    hit1, hit5, count = hit1 + int(a), hit5 + int(b), count + int(c)
  return hit1 / max(count, 1), hit5 / max(count, 1), count


def restore_trained(cfg: ml_collections.ConfigDict, workdir: str, spec: ArchSpec, name: str) -> dict:
  """{'params', 'batch_stats'} of the latest training checkpoint of network `name` in workdir."""
  return restore_trained_from(cfg, loop.run_dirs(workdir, "train", name).checkpoints, spec)


def restore_trained_from(cfg: ml_collections.ConfigDict, directory: str, spec: ArchSpec) -> dict:
  """{'params', 'batch_stats'} of the latest training checkpoint of `spec` in `directory` (a
  training run's checkpoint directory); FileNotFoundError when it holds none."""
  ckpt = Checkpointer(directory)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"no training checkpoint for {spec.name} in {ckpt.directory}; run mode=train first")
    like = init_state(cfg, spec, make_optimizer(cfg.train.optimizer, cfg.train.steps))
    state, _ = ckpt.restore(abstract_like(like))
    return {"params": state.params, "batch_stats": state.batch_stats}
  finally:
    ckpt.close()


def build_train_step(cfg: ml_collections.ConfigDict, spec: ArchSpec):
  """(module, optimizer, step) of training `spec` as config.train says: compute dtype, optimizer
  over train.steps, label smoothing. `step(state, batch) -> (state, metrics)` is pure (to be jitted)."""
  model = builder.build(spec, compute_dtype(cfg))
  tx = make_optimizer(cfg.train.optimizer, cfg.train.steps)
  return model, tx, make_train_step(model, tx, cfg.train.label_smoothing)


def run_train(cfg: ml_collections.ConfigDict, workdir: str, spec: ArchSpec, name: str,
              init_variables: dict | None = None) -> TrainResult:
  """Train `spec` for config.train.steps on the full train split, then evaluate on eval_split.
  Resumes from the network's checkpoint in workdir if there is one."""
  start_time = time.time()
  setup.check_devices(cfg)
  dirs = loop.run_dirs(workdir, "train", name)
  run_identity = identity.of_train(cfg, spec.to_json())
  ckpt = loop.checkpointer(cfg, dirs.checkpoints, run_identity, what=f"training of {name}")
  setup.ensure_dataset(cfg)
  model, tx, step_fn = build_train_step(cfg, spec)
  steps = cfg.train.steps
  mesh = setup.make_mesh(cfg)
  state = init_state(cfg, spec, tx, init_variables)
  rule = setup.sharding_rule(cfg, mesh, state.params)
  shardings = state_shardings(state, mesh, rule)
  log.info("%s: sharding over mesh %s (%s):\n%s", name, dict(mesh.shape), rule,
           partitioning.describe(state.params, shardings.params, state.opt_state, shardings.opt_state))
  jitted = jax.jit(step_fn, in_shardings=(shardings, partitioning.batch_sharding(mesh)),
                   out_shardings=(shardings, partitioning.replicated(mesh)), donate_argnums=(0,))
  restored = ckpt.restore(abstract_like(state, shardings))
  state = restored[0] if restored is not None else jax.device_put(state, shardings)
  input_before = restored[1].get("input") if restored is not None else None
  pipeline = setup.train_pipeline(cfg, cfg.data.train_split, seed_offset=10, start_step=int(state.step))
  input_report = lambda: data_pipeline.merge_skip_reports(  # noqa: E731
      input_before, data_pipeline.skip_report({cfg.data.train_split: pipeline.stats}))
  data = iter(pipeline)
  batches = ((partitioning.global_batch({"video": b["video"], "label": b["label"]}, mesh),) for b in data)
  writer = loop.metrics_writer(dirs.tensorboard)
  spec_loop = loop.LoopSpec.from_config(
      cfg, name=name, total_steps=steps, loss_key="loss", optimizer_key="train.optimizer",
      describe=lambda v: f"loss {v['loss']:.4f} top1 {v['top1']:.3f}",
      meta=lambda: {"name": name, "arch": spec.to_json(indent=None), "input": input_report(), "identity": run_identity},
      input_report=input_report)
  state = loop.run_steps(spec_loop, state, jitted, batches, ckpt, _Prefixed(writer, "train_"))
  skipped = input_report()
  ckpt.close()
  final = {"params": state.params, "batch_stats": state.batch_stats}
  top1_acc, top5_acc, count = evaluate(cfg, spec, final, mesh)
  writer.write_scalars(steps, {"eval_top1": top1_acc, "eval_top5": top5_acc})
  writer.flush()
  cost = arch_cost(spec)
  return TrainResult(name, spec, top1_acc, top5_acc, cost.gflops, cost.params, time.time() - start_time, count,
                     skipped)


class _Prefixed:
  """A metric writer whose scalars get a name prefix ('train_loss'); everything else passes through."""

  def __init__(self, writer, prefix: str):
    self._writer, self._prefix = writer, prefix

  def write_scalars(self, step, scalars):
    self._writer.write_scalars(step, {f"{self._prefix}{k}": v for k, v in scalars.items()})

  def __getattr__(self, name):
    return getattr(self._writer, name)
