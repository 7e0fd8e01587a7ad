"""MSG-DAS: Gumbel-top-k sampling of K mutually exclusive single paths per step. For every decision
the perturbed logits' top-K choices are distinct, and group g runs the g-th of them, with
straight-through gradients. (When a decision has fewer than K choices, groups wrap around.)

MSG-DAS's super-net guidance distillation is config.search.msg.supernet_distill, in our reading
(`train.search_step`): only the paper's abstract is reachable (arXiv 2107.04324), which says the
super-net guides the sub-graphs and that the guidance is memory-efficient; so the soft supernet
teaches each sampled sub-graph through a KL term, forward only. Not reproduced: DropBlock-Identity.
It drops the skip-connect op that competes with the others in a DARTS cell; this space has no such
op (a shallower stage's identity is the residual stream itself, which dropping would cut), and its
drop rate and schedule are not in the abstract."""
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
