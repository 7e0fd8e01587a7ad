"""FBNet's differentiable search: Gumbel-softmax relaxed architecture weights with an annealed
temperature; loss CE * alpha * log(cost)^beta (cost = expected FLOPs / params / measured latency under
the soft weights), or CE + an additive target penalty. Weights train on the soft (mixed) supernet."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from autox3d_jax.search.strategies.base import (Strategy, cost_penalty, fbnet_factor, gumbel_soft, stack,
                                                temperature)


class DNAS(Strategy):
  name = "dnas"

  def _soft_archs(self, key, logits, step):
    tau = temperature(step, self.cfg)
    archs = []
    for k in jax.random.split(key, self.num_groups):
      keys = jax.random.split(k, len(self.dist.space.decisions))
      archs.append({d.label: gumbel_soft(kk, logits[d.label], tau)[0]
                    for d, kk in zip(self.dist.space.decisions, keys)})
    return stack(archs), tau

  def weight_archs(self, key, logits, state, step):
    archs, _ = self._soft_archs(key, jax.lax.stop_gradient(logits), step)
    return archs, None

  def arch_objective(self, key, logits, state, step, group_losses):
    archs, tau = self._soft_archs(key, logits, step)
    ce = jnp.mean(group_losses(archs))
    cost = jnp.mean(jax.vmap(self.table.expected)(archs))
    loss = ce * fbnet_factor(cost, self.cfg) + cost_penalty(cost, self.cfg)
    return loss, (state, {"arch_val_loss": ce, "sampled_cost": cost, "temperature": tau})
