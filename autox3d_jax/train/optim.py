"""The optimizers of both loops, built from config sections of one schema.

`make_optimizer(section, total_steps)` serves the search's weight step (`config.search.weight_opt`)
and standalone training (`config.train.optimizer`); both sections come from
`config.optimizer_section`, so the two loops cannot drift apart. `make_arch_optimizer` is Adam on
the architecture logits (`config.search.arch_opt`).
"""
from __future__ import annotations

import ml_collections
import optax


def warmup_steps(section: ml_collections.ConfigDict, total_steps: int) -> int:
  """The warm-up length actually used: at least 1 and shorter than the run."""
  return max(min(int(section.warmup_steps), total_steps - 1), 1)


def learning_rate_schedule(section: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to section.lr, then cosine decay to 0 at total_steps (X3D's recipe)."""
  warmup = warmup_steps(section, total_steps)
  return optax.warmup_cosine_decay_schedule(0.0, section.lr, warmup, max(total_steps, warmup + 1))


def make_optimizer(section: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """SGD with Nesterov momentum (section.momentum) on the schedule above, decoupled weight decay
  (section.weight_decay) and, when section.grad_clip > 0, clipping by global norm first."""
  clip = optax.clip_by_global_norm(section.grad_clip) if section.grad_clip > 0 else optax.identity()
  return optax.chain(clip, optax.add_decayed_weights(section.weight_decay),
                     optax.sgd(learning_rate_schedule(section, total_steps), momentum=section.momentum,
                               nesterov=True))


def make_arch_optimizer(section: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam on the architecture logits (AutoX3D: lr 0.025; TuNAS uses beta1 = 0)."""
  return optax.adam(section.lr, b1=section.beta1, b2=section.beta2)
