"""What every search strategy shares: the interface, cost penalties, temperature, fair channels.

A strategy differs from another only in (a) how it draws the K architectures the weights train on
and (b) how it forms the architecture gradient. Both run inside the one jitted search step:
  weight_archs(key, logits, state, step)          -> K architectures (one per batch group)
  arch_objective(key, logits, state, step, losses) -> (loss to minimise w.r.t. logits, (state, metrics))
where `losses(archs)` runs the supernet on the validation batch, K groups at once, and returns the
per-group mean loss (differentiable w.r.t. soft arch weights).
"""
from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import ml_collections

from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.distribution import ArchDistribution
from autox3d_jax.search.space import ops_from_strings
from autox3d_jax.search.supernet import stage_tables

def stack(trees):
  return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def cost_penalty(cost, kind: str, weight: float, target: float):
  """Additive penalty of a cost (FLOPs / params / latency, in the table's units).

  hinge    FP-NAS: weight * max(0, cost / target - 1)
  absolute TuNAS:  weight * |cost / target - 1|   (the reward is Q + beta |T/T0 - 1| with beta = -weight)
  fbnet    multiplicative, handled by `fbnet_factor`; none: 0.
  """
  if kind == "hinge":
    return weight * jnp.maximum(0.0, cost / target - 1.0)
  if kind == "absolute":
    return weight * jnp.abs(cost / target - 1.0)
  return jnp.zeros_like(cost)


COST_UNITS = {"flops": 1e6, "params": 1e6, "latency": 1.0}   # MFLOPs, M params, ms


def fbnet_factor(cost, fbnet: ml_collections.ConfigDict, metric: str = "flops"):
  """FBNet's loss factor alpha * log(cost)^beta (config.search.fbnet), cost in fbnet.cost_unit
  (0: the metric's own unit). Multiply the cross-entropy by it."""
  unit = fbnet.cost_unit if fbnet.cost_unit > 0 else COST_UNITS[metric]
  scaled = jnp.maximum(cost / unit, 1.0 + 1e-3)
  return fbnet.alpha * jnp.log(scaled) ** fbnet.beta


def ssr_loss(probs: dict) -> jax.Array:
  """Solution-space regularisation, our reading of SSR (Ye et al., arXiv 2208.05271; its formula is
  not public, shared/REFERENCES-round2.md section 10): the mean over decisions of the Gini impurity
  1 - sum_i p_i^2 of the architecture weights. It is zero exactly at one-hot weights, positive
  elsewhere, and its minima are the vertices, so it pulls the soft architecture towards a discrete
  one (the support shrinks, as under an L0 penalty) and narrows the discretisation gap."""
  return jnp.mean(jnp.stack([1.0 - jnp.sum(jnp.square(p)) for p in probs.values()]))


def temperature(step, schedule: ml_collections.ConfigDict, total_steps: int):
  """Gumbel temperature (a strategy's section of config.search): FBNet's exponential decay
  tau_max * exp(-tau_decay * step) floored at tau_min, or GDAS's linear tau_max -> tau_min over
  `total_steps`."""
  step = jnp.asarray(step, jnp.float32)
  if schedule.tau_schedule == "linear":
    frac = jnp.clip(step / max(total_steps, 1), 0.0, 1.0)
    return schedule.tau_max + (schedule.tau_min - schedule.tau_max) * frac
  return jnp.maximum(schedule.tau_max * jnp.exp(-schedule.tau_decay * step), schedule.tau_min)


def gumbel_soft(key, logits, tau):
  g = jax.random.gumbel(key, logits.shape)
  return jax.nn.softmax((logits + g) / tau), logits + g


def straight_through(index, soft):
  hard = jax.nn.one_hot(index, soft.shape[-1], dtype=soft.dtype)
  return hard - jax.lax.stop_gradient(soft) + soft


class Strategy:
  """A search strategy: how the K architectures of a step are drawn, and how the logits learn.

  Built by `strategies.make(dist, table, cfg.search, cost_target=..., val_examples_per_group=...)`.
  Inside the jitted step:
    weight_archs(key, logits, state, step) -> (K-batched arch weights {label: (K, choices)},
        channel shifts or None): what the weight step trains, one architecture per batch group;
    arch_objective(key, logits, state, step, group_losses) -> (loss to minimise w.r.t. logits,
        (new strategy state, metrics)); `group_losses(archs)` runs the supernet on the validation
        batch and returns the (K,) per-group losses.
  init_state() is the strategy's part of the search state (REINFORCE baseline, sample count).
  Subclasses set `name` (the config.search.strategy value and its settings' sub-section).
  """
  name = "base"
  updates_arch = True
  hard_samples = True             # the weight step's archs are exactly one-hot (exclusive routing ok)
  loss_grad_wrt_archs = False     # the arch objective differentiates the val losses w.r.t. arch weights
  compares_samples = False        # the arch objective ranks the K samples' losses against each other

  def __init__(self, dist: ArchDistribution, table: CostTable, cfg: ml_collections.ConfigDict, *,
               cost_target: float = 0.0, val_examples_per_group: int = 1):
    """dist, table: the space's distribution and cost table. cfg: `config.search` as the user set it
    (this strategy's own settings are `cfg[name]`). cost_target: the resolved absolute target in
    table units (`train.setup.resolve_cost_target`), 0 = none. val_examples_per_group: validation
    clips each sample is scored on (PARSEC's likelihood temperature)."""
    self.dist, self.table, self.cfg = dist, table, cfg
    self.num_groups = int(cfg.num_groups)
    self.total_steps = int(cfg.steps)
    self.cost_target = float(cost_target)
    self.val_examples_per_group = int(val_examples_per_group)
    if cfg.penalty in ("hinge", "absolute") and self.cost_target <= 0:
      raise ValueError(f"search.penalty={cfg.penalty!r} needs a positive cost target, got {cost_target}")

  def with_distribution(self, dist: ArchDistribution) -> "Strategy":
    """This strategy drawing its architectures from `dist` (e.g. `FixedInputs`: the clip of one
    search step pinned), every setting shared."""
    out = copy.copy(self)
    out.dist = dist
    return out

  @property
  def settings(self) -> ml_collections.ConfigDict | None:
    """This strategy's own section of config.search (None when it has none)."""
    return self.cfg[self.name] if self.name in self.cfg else None

  def penalty(self, cost):
    """config.search.penalty of `cost` at the resolved target."""
    return cost_penalty(cost, self.cfg.penalty, self.cfg.penalty_weight, self.cost_target)

  def loss_factor(self, cost):
    """FBNet's multiplicative factor when config.search.penalty is 'fbnet', else 1."""
    return fbnet_factor(cost, self.cfg.fbnet, self.table.metric) if self.cfg.penalty == "fbnet" else 1.0

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
    return self.compares_samples and bool(self.settings.shared_val_batch)

  @property
  def sandwich_ops(self):
    """The ops the sandwich's largest and smallest children and the warm-up child may use
    (config.search.sandwich_ops), None = every op of the space."""
    names = tuple(self.cfg.get("sandwich_ops", ()))
    return ops_from_strings(names) if names else None

  def weight_points(self, points, step):
    """Which architectures the weight step trains, on top of the sampled `points`.

    * Largest-child warm-up (search.largest_warmup_steps, progressive shrinking as in OFA): while
      step < that many, every group trains the largest architecture. A random child per step
      learns slowly, a fixed one fast (benchmarks/RESULTS.md, 'why the supernet learns slowly'),
      so the children start from weights that already solve the task.
    * The sandwich rule's upper slice (search.sandwich, BigNAS/OFA): group 0 trains the largest
      architecture, so the shared weights learn the task about as fast as one big network does.
      With search.distill='inplace' the full rule: the last group trains the smallest.
    The largest and smallest children take their ops from search.sandwich_ops when it is set: in a
    space whose costliest op is attention, the all-attention child learns slowly and its weights
    start no one well (benchmarks/RESULTS.md, the hybrid demo).
    Only the weight step: the architecture step samples its own points.
    """
    largest = self.dist.space.largest_point(self.sandwich_ops)
    warmup = int(self.cfg.largest_warmup_steps)
    if warmup > 0:
      warming = jnp.asarray(step) < warmup
      points = {l: jnp.where(warming, jnp.full_like(v, largest[l]), v) for l, v in points.items()}
    if not self.cfg.sandwich:
      return points
    points = {l: v.at[0].set(largest[l]) for l, v in points.items()}
    if self.cfg.distill == "inplace":   # the full sandwich: the smallest child in the last group
      smallest = self.dist.space.smallest_point(self.sandwich_ops)
      points = {l: v.at[-1].set(smallest[l]) for l, v in points.items()}
    return points

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
    ssr = ssr_loss(self.dist.probs(logits))
    loss = ce * self.loss_factor(cost) + self.penalty(cost) + self.cfg.ssr_weight * ssr
    return loss, (state, {"arch_val_loss": ce, "sampled_cost": cost, "temperature": tau, "ssr": ssr})
