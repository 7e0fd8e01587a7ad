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
