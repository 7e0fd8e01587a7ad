"""AutoX3D's probabilistic search (FP-NAS / PARSEC lineage): sample K architectures from the learned
distribution, train the weights on them, and update the logits by REINFORCE from their validation
losses.

  reward_k   = -val_loss_k - penalty(cost_k)              (cost from the table, hinge or TuNAS abs.)
  estimator  'reinforce': loss = -mean_k sg(reward_k - baseline) log p(a_k)
             baseline = the step's mean reward when the K samples are scored on the same clips
             (search.shared_val_batch: common random numbers, so the advantage is the architecture's
             and not its clips' difficulty), else (or with one distinct sample) an EMA of mean rewards
             'parsec':    loss = -sum_k sg(w_k) log p(a_k), w = self-normalised likelihoods softmax(-N * L_k)
  K adapts to the entropy (FP-NAS): k_eff = clip(ceil(K * H / H_max), K_min, K) distinct samples;
  the K batch groups reuse them round-robin, so shapes stay static under jit.
  input axes (`search.inputs`): the K samples share the step's input setting, so comparing them
  says nothing about it; its decisions learn across steps instead, by REINFORCE with their own
  EMA baseline: loss_in = -sg(mean_k reward_k - b_in) log p(input), b_in <- decay b_in + (1 - decay) mean_k reward_k.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from autox3d_jax import labels
from autox3d_jax.search.strategies.base import Strategy, stack


class Probabilistic(Strategy):
  name = "probabilistic"
  compares_samples = True

  def num_samples(self, logits):
    if not self.settings.adaptive_samples:
      return jnp.asarray(self.num_groups, jnp.int32)
    ratio = self.dist.entropy(logits) / max(self.dist.max_entropy(), 1e-6)
    k = jnp.ceil(self.num_groups * ratio).astype(jnp.int32)
    return jnp.clip(k, self.settings.min_samples, self.num_groups)

  def _sample_points(self, key, logits):
    keys = jax.random.split(key, self.num_groups)
    points = stack([self.dist.sample(k, logits) for k in keys])
    k_eff = self.num_samples(logits)
    index = jnp.arange(self.num_groups) % k_eff          # group g uses sample g mod k_eff
    return jax.tree_util.tree_map(lambda p: p[index], points), k_eff

  def weight_archs(self, key, logits, state, step):
    k1, k2 = jax.random.split(key)
    points, _ = self._sample_points(k1, logits)
    points = self.weight_points(points, step)
    archs = jax.vmap(self.dist.one_hot)(points)
    return archs, self.fair_shifts(k2, points)

  def _freeze_agreed(self, logits, points, k_eff):
    """Stop the gradient of decisions on which all K samples agree (value and activity).

    With the step's mean reward as baseline, their REINFORCE gradient is exactly zero:
    (onehot - p) * sum_k advantage_k, and the advantages sum to zero. In float32 it comes out as
    round-off, which Adam normalises into a step of up to ~0.1 x lr in a random direction (seen as
    one process vs two disagreeing on such a logit). With a single distinct sample (the EMA
    fallback) nothing is frozen."""
    space = self.dist.space
    out = {}
    for d in space.decisions:
      tied = [d.label]
      if d.block is not None and d.block >= space.config.min_depths[d.stage]:
        tied.append(labels.depth(d.stage))
      agree = jnp.all(jnp.stack([jnp.all(points[l] == points[l][0]) for l in tied]))
      agree = agree & (k_eff > 1)
      out[d.label] = jnp.where(agree, jax.lax.stop_gradient(logits[d.label]), logits[d.label])
    return out

  def arch_objective(self, key, logits, state, step, group_losses):
    points, k_eff = self._sample_points(key, logits)
    archs = jax.vmap(self.dist.one_hot)(points)
    losses = jax.lax.stop_gradient(group_losses(archs))                       # (K,)
    costs = jax.vmap(self.point_cost)(points)
    rewards = -losses - self.penalty(costs)
    mean_baseline = self.shares_val_batch and self.settings.estimator != "parsec"
    lg = self._freeze_agreed(logits, points, k_eff) if mean_baseline else logits
    inputs = self.dist.space.input_labels
    lg = {k: (jax.lax.stop_gradient(v) if k in inputs else v) for k, v in lg.items()}   # learnt by input_term
    log_probs = jax.vmap(lambda p: self.dist.log_prob(lg, p))(points)
    if self.settings.estimator == "parsec":
      weights = jax.nn.softmax(-losses * self.val_examples_per_group)
      surrogate = -jnp.sum(weights * log_probs)
      baseline = state["baseline"]
    else:
      baseline = jnp.where(step > 0, state["baseline"], jnp.mean(rewards))
      if self.shares_val_batch:
        advantage = rewards - jnp.where(k_eff > 1, jnp.mean(rewards), baseline)
      else:
        advantage = rewards - baseline
      surrogate = -jnp.mean(advantage * log_probs)
      baseline = self.settings.baseline_decay * baseline + (1 - self.settings.baseline_decay) * jnp.mean(rewards)
    entropy = self.dist.entropy(logits)
    loss = surrogate - self.settings.entropy_weight * entropy
    metrics = {"arch_val_loss": jnp.mean(losses), "reward": jnp.mean(rewards), "baseline": baseline,
               "sampled_cost": jnp.mean(costs), "num_samples": k_eff.astype(jnp.float32)}
    new_state = {"baseline": baseline, "num_samples": k_eff}
    if inputs:
      term, new_state["input_baseline"] = self.input_term(logits, points, jnp.mean(rewards), state["input_baseline"])
      loss = loss + term
    return loss, (new_state, metrics)

  def input_term(self, logits, points, mean_reward, input_baseline):
    """(REINFORCE loss of the step's input setting against its EMA baseline, the updated baseline);
    the baseline starts (NaN) at the first reward seen."""
    inputs = self.dist.space.input_labels
    b = jnp.where(jnp.isnan(input_baseline), mean_reward, input_baseline)
    log_p = sum(jax.nn.log_softmax(logits[l])[points[l][0]] for l in inputs)
    term = -jax.lax.stop_gradient(mean_reward - b) * log_p
    decay = self.settings.baseline_decay
    return term, decay * b + (1 - decay) * mean_reward
