"""MSG-DAS: Gumbel-top-k sampling of K mutually exclusive single paths per step. For every decision
the perturbed logits' top-K choices are distinct, and group g runs the g-th of them, with
straight-through gradients. (When a decision has fewer than K choices, groups wrap around.)
Not reproduced: MSG-DAS's DropBlock-Identity and supernet-guided distillation."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from autox3d_jax.search.strategies.base import GradientStrategy, gumbel_soft, straight_through, temperature


class MSG(GradientStrategy):
  name = "msg"
  hard_samples = True

  def _archs(self, key, logits, step):
    tau = temperature(step, self.settings, self.total_steps)
    keys = jax.random.split(key, len(self.dist.space.decisions))
    archs = {}
    for d, kk in zip(self.dist.space.decisions, keys):
      soft, perturbed = gumbel_soft(kk, logits[d.label], tau)
      order = jnp.argsort(-perturbed)                                    # distinct choices, best first
      picks = order[jnp.arange(self.num_groups) % d.size]
      archs[d.label] = jax.vmap(lambda i: straight_through(i, soft))(picks)  # (K, n)
    return archs, tau
