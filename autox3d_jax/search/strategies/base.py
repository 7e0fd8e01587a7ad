"""What every search strategy shares: the interface, cost penalties, temperature, fair channels.

A strategy differs from another only in (a) how it draws the K architectures the weights train on
and (b) how it forms the architecture gradient. Both run inside the one jitted search step:
  weight_archs(key, logits, state, step)          -> K architectures (one per batch group)
  arch_objective(key, logits, state, step, losses) -> (loss to minimise w.r.t. logits, (state, metrics))
where `losses(archs)` runs the supernet on the validation batch, K groups at once, and returns the
per-group mean loss (differentiable w.r.t. soft arch weights).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.distribution import ArchDistribution

PENALTIES = ("none", "hinge", "absolute", "fbnet")


def stack(trees):
  return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def cost_penalty(cost, cfg: ml_collections.ConfigDict):
  """Additive penalty of a cost (FLOPs / params / latency, in the table's units).

  hinge    FP-NAS: weight * max(0, cost / target - 1)
  absolute TuNAS:  weight * |cost / target - 1|   (the reward is Q + beta |T/T0 - 1| with beta = -weight)
  fbnet    multiplicative, handled by `fbnet_factor`; none: 0.
  """
  kind = cfg.penalty
  if kind == "hinge":
    return cfg.penalty_weight * jnp.maximum(0.0, cost / cfg.cost_target - 1.0)
  if kind == "absolute":
    return cfg.penalty_weight * jnp.abs(cost / cfg.cost_target - 1.0)
  return jnp.zeros_like(cost)


COST_UNITS = {"flops": 1e6, "params": 1e6, "latency": 1.0}   # MFLOPs, M params, ms


def fbnet_factor(cost, cfg, metric: str = "flops"):
  """FBNet's loss CE * alpha * log(cost)^beta, cost in cfg.cost_unit (0: the metric's own unit)."""
  if cfg.penalty != "fbnet":
    return 1.0
  unit = cfg.cost_unit if cfg.get("cost_unit", 0) > 0 else COST_UNITS[metric]
  scaled = jnp.maximum(cost / unit, 1.0 + 1e-3)
  return cfg.fbnet_alpha * jnp.log(scaled) ** cfg.fbnet_beta


def temperature(step, cfg):
  """Gumbel temperature: FBNet's exponential decay or GDAS's linear tau_max -> tau_min."""
  step = jnp.asarray(step, jnp.float32)
  if cfg.tau_schedule == "linear":
    frac = jnp.clip(step / jnp.maximum(cfg.total_steps, 1), 0.0, 1.0)
    return cfg.tau_max + (cfg.tau_min - cfg.tau_max) * frac
  return jnp.maximum(cfg.tau_max * jnp.exp(-cfg.tau_decay * step), cfg.tau_min)


def gumbel_soft(key, logits, tau):
  g = jax.random.gumbel(key, logits.shape)
  return jax.nn.softmax((logits + g) / tau), logits + g


def straight_through(index, soft):
  hard = jax.nn.one_hot(index, soft.shape[-1], dtype=soft.dtype)
  return hard - jax.lax.stop_gradient(soft) + soft


class Strategy:
  """Base: K architectures per step, shared helpers. Subclasses set `name`."""
  name = "base"
  updates_arch = True
  hard_samples = True             # the weight step's archs are exactly one-hot (exclusive routing ok)
  loss_grad_wrt_archs = False     # the arch objective differentiates the val losses w.r.t. arch weights
  compares_samples = False        # the arch objective ranks the K samples' losses against each other

  def __init__(self, dist: ArchDistribution, table: CostTable, cfg: ml_collections.ConfigDict):
    self.dist, self.table, self.cfg = dist, table, cfg
    self.num_groups = int(cfg.num_groups)

  def init_state(self) -> dict:
    return {"baseline": jnp.zeros((), jnp.float32), "num_samples": jnp.asarray(self.num_groups, jnp.int32)}

  def point_cost(self, point) -> jax.Array:
    return self.table.expected(self.dist.one_hot(point))

  def fair_shifts(self, key, points):
    """AutoX3D's fair channel selection: roll each sampled width / inner mask by a random offset so
    every filter is trained with the same probability (M/N), not just the first ones."""
    if not self.cfg.fair_channels:
      return None
    space = self.dist.space
    labels = [d.label for d in space.decisions if d.kind in ("width", "expansion")]
    from autox3d_jax.search.supernet import stage_tables
    sizes = {}
    for d in space.decisions:
      if d.kind in ("width", "expansion"):
        t = stage_tables(space, d.stage)
        sizes[d.label] = t.max_width if d.kind == "width" else t.max_inner
    keys = jax.random.split(key, len(labels))
    k = jax.tree_util.tree_leaves(points)[0].shape[0]
    return {l: jax.random.randint(kk, (k,), 0, sizes[l], jnp.int32) for l, kk in zip(labels, keys)}

  @property
  def shares_val_batch(self) -> bool:
    """All K samples are scored on the same validation clips (search.shared_val_batch), for
    strategies that compare their samples' losses."""
    return self.compares_samples and bool(self.cfg.get("shared_val_batch", False))

  def weight_points(self, points, step):
    """Which architectures the weight step trains, on top of the sampled `points`.

    * Largest-child warm-up (search.largest_warmup_steps, progressive shrinking as in OFA): while
      step < that many, every group trains the largest architecture. A random child per step
      learns slowly (the demo supernet's loss was still 2.1 of chance 2.48 after 300 steps), a
      fixed one fast (0.56), so the children start from weights that already solve the task.
    * The sandwich rule's upper slice (search.sandwich, BigNAS/OFA): group 0 trains the largest
      architecture, so the shared weights learn the task about as fast as one big network does.
    Only the weight step: the architecture step samples its own points.
    """
    largest = self.dist.space.largest_point()
    warmup = int(self.cfg.get("largest_warmup_steps", 0))
    if warmup > 0:
      warming = jnp.asarray(step) < warmup
      points = {l: jnp.where(warming, jnp.full_like(v, largest[l]), v) for l, v in points.items()}
    if not self.cfg.get("sandwich", False):
      return points
    return {l: v.at[0].set(largest[l]) for l, v in points.items()}

  def weight_archs(self, key, logits, state, step):
    raise NotImplementedError

  def arch_objective(self, key, logits, state, step, group_losses):
    raise NotImplementedError


class GradientStrategy(Strategy):
  """Strategies whose architecture gradient flows through relaxed / straight-through weights
  (dnas, gdas, msg): they differ only in `_archs(key, logits, step) -> (K-batched archs, tau)`."""
  loss_grad_wrt_archs = True

  def _archs(self, key, logits, step):
    raise NotImplementedError

  def weight_archs(self, key, logits, state, step):
    archs, _ = self._archs(key, jax.lax.stop_gradient(logits), step)
    archs = jax.lax.stop_gradient(archs)
    return archs, (self.fair_shifts(key, archs) if self.hard_samples else None)

  def arch_objective(self, key, logits, state, step, group_losses):
    archs, tau = self._archs(key, logits, step)
    ce = jnp.mean(group_losses(archs))
    cost = jnp.mean(jax.vmap(self.table.expected)(archs))
    loss = ce * fbnet_factor(cost, self.cfg, self.table.metric) + cost_penalty(cost, self.cfg)
    return loss, (state, {"arch_val_loss": ce, "sampled_cost": cost, "temperature": tau})
