"""Losses shared by the search step and standalone training."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy of integer `labels`, computed in float32, with optional
  label smoothing (the target puts `smoothing` uniformly over the classes)."""
  onehot = jax.nn.one_hot(labels, logits.shape[-1])
  if smoothing:
    onehot = onehot * (1 - smoothing) + smoothing / logits.shape[-1]
  return -jnp.sum(onehot * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1)


def top1(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of examples whose argmax is the label."""
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def soft_cross_entropy(logits: jax.Array, target_probs: jax.Array) -> jax.Array:
  """Per-example cross-entropy of `logits` against a soft target distribution, in float32; the KL
  divergence to the target up to the target's entropy (a constant for the student)."""
  return -jnp.sum(target_probs * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1)


def inplace_distillation(logits: jax.Array, labels: jax.Array, smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """BigNAS's in-place distillation over K groups that saw the same clips.

  logits: (K, n, classes), group 0 the teacher (the largest child); labels: (n,). The teacher
  learns from the labels (`cross_entropy`), every other group from the teacher's softmax, held
  constant (`soft_cross_entropy` of the stop-gradient target). Returns (the mean of the K group
  losses, the (K,) group losses)."""
  teacher = jax.nn.softmax(jax.lax.stop_gradient(logits[0]).astype(jnp.float32), axis=-1)
  first = jnp.mean(cross_entropy(logits[0], labels, smoothing))[None]
  students = jnp.mean(soft_cross_entropy(logits[1:], teacher[None]), axis=-1)
  per_group = jnp.concatenate([first, students])
  return jnp.mean(per_group), per_group


def distillation_kl(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Per-example KL(softmax(teacher) || softmax(student)) over the last axis, in float32, the
  teacher's logits held constant (stop-gradient): the student's gradient is that of
  `soft_cross_entropy` to the teacher's softmax, and the teacher receives none."""
  t = jax.lax.stop_gradient(teacher).astype(jnp.float32)
  log_t = jax.nn.log_softmax(t, axis=-1)
  return jnp.sum(jnp.exp(log_t) * (log_t - jax.nn.log_softmax(student.astype(jnp.float32), axis=-1)), axis=-1)


def channel_max_map(features: jax.Array) -> jax.Array:
  """(..., C) -> (...): the maximum over channels, in float32. FlowNAS's `dist()` reduces student
  and teacher features this way (einops 'b c h w -> b 1 h w', max), so networks of any widths
  compare; for ReLU outputs, channels masked to zero beyond a sampled width do not change it."""
  return jnp.max(features.astype(jnp.float32), axis=-1)


def feature_alignment(student: jax.Array, teacher: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Feature-alignment distance of K student groups to one teacher (FlowNAS's FAD, our reading).

  student: (K, n, *spatial, C_s) features of K architectures on the same n clips; teacher:
  (n, *spatial, C_t) on those clips, held constant (stop-gradient). Both are reduced to channel-max
  maps (`channel_max_map`); the distance of group k is the mean squared difference of its map and
  the teacher's, divided by the mean square of the teacher's map, so the loss weight does not
  depend on the features' scale (FlowNAS's search-time `dist()` takes the root of the summed
  squares; its training loss is unpublished). Returns (K,) distances, 0 where a group's map equals
  the teacher's."""
  t = jax.lax.stop_gradient(channel_max_map(teacher))
  s = channel_max_map(student)
  scale = jnp.mean(jnp.square(t)) + eps
  axes = tuple(range(1, s.ndim))
  return jnp.mean(jnp.square(s - t[None]), axis=axes) / scale
