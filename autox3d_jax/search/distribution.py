"""ArchDistribution: independent categorical logits per decision, as a plain pytree {label: (n,)}.

Hierarchical: a block's decisions count only when the block is kept (j < stage depth), in
log_prob and entropy alike -- REINFORCE must not credit a skipped block's op for the reward.
All functions are pure and jit-friendly; a sampled point is a {label: int32 scalar} pytree.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from autox3d_jax import labels
from autox3d_jax.search.space import SearchSpace

Logits = dict[str, jax.Array]
Point = dict[str, jax.Array]


def op_type_probs(ops) -> np.ndarray:
  """P(op) when a block's op type is drawn uniformly and then one op of that type: 1 / (types x
  ops of its type)."""
  types = [op.type for op in ops]
  return np.array([1.0 / (len(set(types)) * types.count(t)) for t in types])


class ArchDistribution:

  def __init__(self, space: SearchSpace):
    self.space = space

  # ------------------------------------------------------------------------------------- create
  def init_logits(self, point: Mapping[str, int] | None = None, bias: float = 0.0) -> Logits:
    """Zeros (uniform, as TuNAS), optionally tilted by `bias` towards `point` (e.g. X3D-S)."""
    logits = {d.label: jnp.zeros((d.size,), jnp.float32) for d in self.space.decisions}
    if point is not None:
      logits = {k: v.at[int(point[k])].add(bias) for k, v in logits.items()}
    return logits

  @staticmethod
  def probs(logits: Logits) -> dict[str, jax.Array]:
    return {k: jax.nn.softmax(v) for k, v in logits.items()}

  # ----------------------------------------------------------------------------------- sampling
  def sample(self, key: jax.Array, logits: Logits) -> Point:
    keys = jax.random.split(key, len(self.space.decisions))
    return {d.label: jax.random.categorical(k, logits[d.label]).astype(jnp.int32)
            for d, k in zip(self.space.decisions, keys)}

  def sample_uniform(self, key: jax.Array, hierarchical: bool = False) -> Point:
    """Every decision uniformly; hierarchical: each op decision's type uniformly, then one of that
    type's ops uniformly (TrioNet's hierarchical sampling; `op_type_probs`)."""
    keys = jax.random.split(key, len(self.space.decisions))
    out = {}
    for d, k in zip(self.space.decisions, keys):
      if hierarchical and d.kind == "op":
        out[d.label] = jax.random.categorical(k, jnp.log(jnp.asarray(op_type_probs(d.choices)))).astype(jnp.int32)
      else:
        out[d.label] = jax.random.randint(k, (), 0, d.size, jnp.int32)
    return out

  def mode(self, logits: Logits) -> dict[str, int]:
    """The most likely architecture (host-side ints)."""
    return {k: int(jnp.argmax(v)) for k, v in logits.items()}

  def mode_within(self, logits: Logits, cost_fn, limit: float) -> dict[str, int]:
    """The most likely architecture costing at most `limit`, found greedily: from the mode, take the
    one-decision change that gives up the least log-probability per unit of cost saved, until the
    cost fits. Why: the mode of independent per-decision distributions can sit above the budget
    (a penalty only pulls the *expected* cost to the target), and users ship under the budget.
    `cost_fn(point) -> scalar` must be jax-traceable (e.g. `lambda p: table.expected(one_hot(p))`);
    each round scores every one-change neighbour in one jitted, vmapped call."""
    names = [d.label for d in self.space.decisions]
    score = jax.jit(jax.vmap(lambda p: (cost_fn(p), self.log_prob(logits, p))))

    def evaluate(points):
      batch = {l: np.asarray([p[l] for p in points], np.int32) for l in names}
      costs, logps = score(batch)
      return np.asarray(costs, np.float64), np.asarray(logps, np.float64)

    point = self.mode(logits)
    (cost,), (logp,) = evaluate([point])
    while cost > limit:
      neighbours = [{**point, d.label: c} for d in self.space.decisions for c in range(d.size)
                    if c != point[d.label]]
      costs, logps = evaluate(neighbours)
      saved = cost - costs
      cheaper = saved > 0
      if not cheaper.any():      # nothing cheaper is one change away: the space cannot fit the budget
        raise ValueError(f"no architecture in the space costs <= {limit:.6g}; the cheapest reachable "
                         f"costs {cost:.6g}. Raise the cost target or shrink the space's minimum.")
      ratio = np.where(cheaper, (logp - logps) / np.where(cheaper, saved, 1.0), np.inf)
      k = int(np.argmin(ratio))
      point, cost, logp = neighbours[k], costs[k], logps[k]
    return point

  def one_hot(self, point: Point) -> dict[str, jax.Array]:
    return {d.label: jax.nn.one_hot(point[d.label], d.size, dtype=jnp.float32) for d in self.space.decisions}

  # ---------------------------------------------------------------------------------- densities
  def _active_weights(self, point_or_probs, soft: bool) -> dict[str, jax.Array]:
    """Weight of each decision: 1 for stage-level ones; for block decisions, 1[j < depth] for a
    point, or P(j < depth) for the distribution (soft=True)."""
    c = self.space.config
    weights = {}
    for d in self.space.decisions:
      if d.block is None or d.block < c.min_depths[d.stage]:
        weights[d.label] = jnp.float32(1.0)
        continue
      depth_label = labels.depth(d.stage)
      depths = jnp.asarray(np.array(self.space.by_label[depth_label].choices))
      if soft:
        weights[d.label] = jnp.sum(point_or_probs[depth_label] * (depths > d.block))
      else:
        weights[d.label] = (depths[point_or_probs[depth_label]] > d.block).astype(jnp.float32)
    return weights

  def log_prob(self, logits: Logits, point: Point) -> jax.Array:
    active = self._active_weights(point, soft=False)
    total = 0.0
    for d in self.space.decisions:
      logp = jax.nn.log_softmax(logits[d.label])[point[d.label]]
      total = total + active[d.label] * logp
    return total

  def entropy(self, logits: Logits) -> jax.Array:
    """Entropy of the hierarchical distribution (nats)."""
    probs = self.probs(logits)
    active = self._active_weights(probs, soft=True)
    total = 0.0
    for d in self.space.decisions:
      logp = jax.nn.log_softmax(logits[d.label])
      total = total + active[d.label] * -jnp.sum(probs[d.label] * logp)
    return total

  def max_entropy(self) -> float:
    """Entropy of the uniform distribution (host-side constant, safe to call while tracing)."""
    with jax.ensure_compile_time_eval():
      return float(self.entropy(self.init_logits()))

  def decision_entropies(self, logits: Logits) -> dict[str, jax.Array]:
    """Per-decision entropy, for logs and the 'how each decision evolved' plot."""
    return {k: -jnp.sum(jax.nn.softmax(v) * jax.nn.log_softmax(v)) for k, v in logits.items()}


class FixedInputs(ArchDistribution):
  """The distribution with the input decisions pinned: every sample (from the logits or uniform)
  takes `fixed` {input label: index}, the clip a search step runs at (`train.search_step`);
  densities are the parent's."""

  def __init__(self, space: SearchSpace, fixed: Mapping[str, int]):
    super().__init__(space)
    self.fixed = {label: int(index) for label, index in fixed.items()}

  def _pin(self, point: Point) -> Point:
    return {**point, **{label: jnp.asarray(index, jnp.int32) for label, index in self.fixed.items()}}

  def sample(self, key: jax.Array, logits: Logits) -> Point:
    return self._pin(super().sample(key, logits))

  def sample_uniform(self, key: jax.Array, hierarchical: bool = False) -> Point:
    return self._pin(super().sample_uniform(key, hierarchical))
