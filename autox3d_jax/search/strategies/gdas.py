"""GDAS: hard Gumbel-max sampling with straight-through gradients (one_hot - sg(p) + p), temperature
annealed linearly tau_max -> tau_min. Each group runs one single path (the forward values are exactly
one-hot); the cost penalty acts on the expected cost under the same straight-through weights."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from autox3d_jax.search.strategies.base import (Strategy, cost_penalty, fbnet_factor, gumbel_soft, stack,
                                                straight_through, temperature)


class GDAS(Strategy):
  name = "gdas"

  def _hard_archs(self, key, logits, step):
    tau = temperature(step, self.cfg)
    archs = []
    for k in jax.random.split(key, self.num_groups):
      keys = jax.random.split(k, len(self.dist.space.decisions))
      arch = {}
      for d, kk in zip(self.dist.space.decisions, keys):
        soft, perturbed = gumbel_soft(kk, logits[d.label], tau)
        arch[d.label] = straight_through(jnp.argmax(perturbed), soft)
      archs.append(arch)
    return stack(archs), tau

  def weight_archs(self, key, logits, state, step):
    archs, _ = self._hard_archs(key, jax.lax.stop_gradient(logits), step)
    return jax.lax.stop_gradient(archs), self.fair_shifts(key, archs)

  def arch_objective(self, key, logits, state, step, group_losses):
    archs, tau = self._hard_archs(key, logits, step)
    ce = jnp.mean(group_losses(archs))
    cost = jnp.mean(jax.vmap(self.table.expected)(archs))
    loss = ce * fbnet_factor(cost, self.cfg) + cost_penalty(cost, self.cfg)
    return loss, (state, {"arch_val_loss": ce, "sampled_cost": cost, "temperature": tau})
