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
