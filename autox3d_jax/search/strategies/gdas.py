"""GDAS: hard Gumbel-max sampling with straight-through gradients (one_hot - sg(p) + p), temperature
annealed linearly tau_max -> tau_min. Each group runs one single path (the forward values are exactly
one-hot); the cost penalty acts on the expected cost under the same straight-through weights."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from autox3d_jax.search.strategies.base import (GradientStrategy, gumbel_soft, stack, straight_through,
                                                temperature)


class GDAS(GradientStrategy):
  name = "gdas"
  hard_samples = True

  def _archs(self, key, logits, step):
    tau = temperature(step, self.settings, self.total_steps)
    archs = []
    for k in jax.random.split(key, self.num_groups):
      keys = jax.random.split(k, len(self.dist.space.decisions))
      arch = {}
      for d, kk in zip(self.dist.space.decisions, keys):
        soft, perturbed = gumbel_soft(kk, logits[d.label], tau)
        arch[d.label] = straight_through(jnp.argmax(perturbed), soft)
      archs.append(arch)
    return stack(archs), tau
