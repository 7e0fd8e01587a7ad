"""Train and evaluate one standalone network (an ArchSpec), from scratch or from inherited weights.

Same machinery as the search: jit with shardings over the mesh, orbax checkpoints with exact resume,
SIGTERM save-and-exit, NaN stop, clu metrics. Evaluation follows X3D's multi-view protocol: logits
(softmax) averaged over the views of each video.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from autox3d_jax import hostmem
from autox3d_jax.cost.analytic import arch_cost
from autox3d_jax.models import builder
from autox3d_jax.models.spec import ArchSpec
from autox3d_jax.train import partitioning, setup
from autox3d_jax.train.checkpoint import Checkpointer, abstract_like
from autox3d_jax.train.search_loop import NonFiniteLossError, Preempted, _SigtermFlag, _writer
from autox3d_jax.train.search_step import cross_entropy

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
  name: str
  spec: ArchSpec
  top1: float
  top5: float
  gflops: float
  params: int
  seconds: float
  eval_examples: int


def _optimizer(cfg, steps):
  warmup = max(min(cfg.train.warmup_steps, steps - 1), 1)
  schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.train.lr, warmup, max(steps, warmup + 1))
  return optax.chain(optax.add_decayed_weights(cfg.train.weight_decay),
                     optax.sgd(schedule, momentum=0.9, nesterov=True))


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
    metrics = {"loss": loss, "top1": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}
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
  mesh = mesh or partitioning.make_mesh(model=cfg.mesh.model)
  model = builder.build(spec, _dtype(cfg))
  step = jax.jit(make_eval_step(model))
  hit1 = hit5 = count = 0
  for batch in setup.eval_pipeline(cfg):
    g = partitioning.global_batch({k: batch[k] for k in ("video", "label", "mask")}, mesh)
    a, b, c = step(variables, g["video"], g["label"], g["mask"])
    hit1, hit5, count = hit1 + int(a), hit5 + int(b), count + int(c)
  return hit1 / max(count, 1), hit5 / max(count, 1), count


def _dtype(cfg):
  return jnp.bfloat16 if cfg.train.dtype == "bfloat16" else None


def run_train(cfg: ml_collections.ConfigDict, workdir: str, spec: ArchSpec, name: str,
              init_variables: dict | None = None) -> TrainResult:
  """Train `spec` for config.train.steps on the full train split, then evaluate on eval_split."""
  start_time = time.time()
  hostmem.keep_freed_memory_on_cpu()   # XLA's CPU step re-faulted its buffers every step
  setup.ensure_dataset(cfg)
  spec = spec.validate()
  model = builder.build(spec, _dtype(cfg))
  steps = cfg.train.steps
  tx = _optimizer(cfg, steps)
  mesh = partitioning.make_mesh(model=cfg.mesh.model)
  rng = jax.random.PRNGKey(cfg.seed)
  variables = init_variables or builder.init_variables(spec, jax.random.fold_in(rng, 1))
  state = TrainState(jnp.zeros((), jnp.int32), variables["params"], variables["batch_stats"],
                     tx.init(variables["params"]), rng)
  rep = partitioning.replicated(mesh)
  shardings = TrainState(rep, partitioning.param_shardings(state.params, mesh),
                         jax.tree_util.tree_map(lambda _: rep, state.batch_stats),
                         jax.tree_util.tree_map(lambda _: rep, state.opt_state), rep)
  jitted = jax.jit(make_train_step(model, tx, cfg.train.label_smoothing),
                   in_shardings=(shardings, partitioning.batch_sharding(mesh)), out_shardings=(shardings, rep),
                   donate_argnums=(0,))
  safe_name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints", f"train_{safe_name}"), keep=cfg.checkpoint.keep)
  restored = ckpt.restore(abstract_like(state, shardings))
  if restored is not None:
    state = restored[0]
  else:
    state = jax.device_put(state, shardings)
  start = int(state.step)
  data = iter(setup.train_pipeline(cfg, cfg.data.train_split, seed_offset=10, start_step=start))
  writer = _writer(os.path.join(workdir, f"train_{safe_name}"))
  last_saved = start
  with _SigtermFlag() as sigterm:
    for step in range(start, steps):
      batch = partitioning.global_batch({"video": (b := next(data))["video"], "label": b["label"]}, mesh)
      state, metrics = jitted(state, batch)
      done = step + 1
      is_last = done == steps
      if done % cfg.log_every_steps == 0 or is_last or sigterm.raised:
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not np.isfinite(values["loss"]):
          raise NonFiniteLossError(f"training loss of {name} became {values['loss']} at step {done}; the "
                                   f"last good checkpoint (step {last_saved}) in {ckpt.directory} is intact")
        writer.write_scalars(done, {f"train_{k}": v for k, v in values.items()})
        log.info("%s step %d/%d: loss %.4f top1 %.3f", name, done, steps, values["loss"], values["top1"])
      if done % cfg.checkpoint.every_steps == 0 or is_last or sigterm.raised:
        ckpt.save(done, state, {"name": name})
        last_saved = done
      if sigterm.raised and not is_last:
        ckpt.close()
        raise Preempted(f"SIGTERM: saved step {done} to {ckpt.directory}; restart to resume")
  ckpt.close()
  final = {"params": state.params, "batch_stats": state.batch_stats}
  top1, top5, count = evaluate(cfg, spec, final, mesh)
  writer.write_scalars(steps, {"eval_top1": top1, "eval_top5": top5})
  writer.flush()
  cost = arch_cost(spec)
  return TrainResult(name, spec, top1, top5, cost.gflops, cost.params, time.time() - start_time, count)
