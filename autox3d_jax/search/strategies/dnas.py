"""FBNet's differentiable search: Gumbel-softmax relaxed architecture weights with an annealed
temperature; loss CE * alpha * log(cost)^beta (cost = expected FLOPs / params / measured latency under
the soft weights), or CE + an additive target penalty. Weights train on the soft (mixed) supernet."""
from __future__ import annotations

import jax

from autox3d_jax.search.strategies.base import GradientStrategy, gumbel_soft, stack, temperature


class DNAS(GradientStrategy):
  name = "dnas"
  hard_samples = False   # soft mixtures: no single width to shift

  def _archs(self, key, logits, step):
    tau = temperature(step, self.settings, self.total_steps)
    archs = []
    for k in jax.random.split(key, self.num_groups):
      keys = jax.random.split(k, len(self.dist.space.decisions))
      archs.append({d.label: gumbel_soft(kk, logits[d.label], tau)[0]
                    for d, kk in zip(self.dist.space.decisions, keys)})
    return stack(archs), tau
