"""Single-path one-shot (SPOS): the supernet trains on uniformly sampled single paths; optionally
uniform over cost bins (SPOS's FLOPs-bin sampling: draw `bin_candidates` uniform paths, pick a bin
uniformly, take a path in it), and optionally with each op drawn hierarchically (its type uniformly,
then one op of the type: TrioNet). The architecture is chosen afterwards by `search.evolution`."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from autox3d_jax.search.strategies.base import Strategy, stack


class SPOS(Strategy):
  name = "spos"
  updates_arch = False

  def _one_path(self, key):
    hierarchical = self.settings.hierarchical
    if not self.settings.cost_bins:
      return self.dist.sample_uniform(key, hierarchical)
    k1, k2 = jax.random.split(key)
    candidates = stack([self.dist.sample_uniform(k, hierarchical)
                        for k in jax.random.split(k1, self.settings.bin_candidates)])
    costs = jax.vmap(self.point_cost)(candidates)
    lo, hi = self.table_range
    bins = jnp.clip(((costs - lo) / (hi - lo) * self.settings.cost_bins).astype(jnp.int32), 0, self.settings.cost_bins - 1)
    target = jax.random.randint(k2, (), 0, self.settings.cost_bins)
    # Nearest populated bin to the drawn one; first candidate there.
    distance = jnp.abs(bins - target) * self.settings.bin_candidates + jnp.arange(self.settings.bin_candidates)
    pick = jnp.argmin(distance)
    return jax.tree_util.tree_map(lambda a: a[pick], candidates)

  @functools.cached_property
  def table_range(self):
    """(cheapest, costliest) architecture's cost, exact (not the all-index-0 / largest points,
    which are not the extremes when ops differ in cost); host floats, also when first asked
    inside jit."""
    return (self.table.extreme(largest=False)[0], self.table.extreme(largest=True)[0])

  def weight_archs(self, key, logits, state, step):
    k1, k2 = jax.random.split(key)
    points = self.weight_points(stack([self._one_path(k) for k in jax.random.split(k1, self.num_groups)]), step)
    return jax.vmap(self.dist.one_hot)(points), self.fair_shifts(k2, points)

  def arch_objective(self, key, logits, state, step, group_losses):
    return jnp.zeros(()), (state, {})
