"""Derive: a point of the space -> its ArchSpec and the standalone network's variables, cut out of
the supernet (weight inheritance).

Active channels are always a prefix of the supernet's (masks are prefix masks when no fair-channel
shift is applied), so every standalone array is the leading sub-block of its supernet array.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from autox3d_jax.models import builder
from autox3d_jax.models.spec import ArchSpec
from autox3d_jax.search.space import SearchSpace
from autox3d_jax.search.supernet import families

SKELETON = ("conv_a", "bn_a", "conv_c", "bn_c", "shortcut", "shortcut_bn")


def _prefix_slice(array, target):
  shape = tuple(target.shape)
  if array.ndim != len(shape) or any(a < s for a, s in zip(array.shape, shape)):
    raise ValueError(f"cannot cut {shape} out of supernet array {array.shape}")
  return array[tuple(slice(0, s) for s in shape)]


def family_of(space: SearchSpace, op_index: int) -> str:
  for name, members in families(space.config.ops).items():
    if op_index in members:
      return name
  raise KeyError(op_index)


def _cut(source, target):
  """`target`'s structure cut out of `source`: the keys target has (a token mixer's other candidates'
  tables are dropped), each array its leading sub-block."""
  if isinstance(target, Mapping):
    return {k: _cut(source[k], v) for k, v in target.items()}
  return _prefix_slice(source, target)


def _inherit_block(super_block: Mapping, target: Mapping, family: str, op_label: str) -> dict:
  out = {}
  for key, sub in target.items():
    if key in SKELETON:
      source = super_block[key]
    else:
      source = super_block[family][key]
      if "kernel" in sub and op_label in source:   # a mixed depthwise conv: pick the op's kernel
        source = {"kernel": source[op_label]}
    out[key] = _cut(source, sub)
  return out


def inherit_variables(space: SearchSpace, point: Mapping[str, int], supernet_variables: Mapping,
                      spec: ArchSpec) -> dict:
  """Standalone {'params', 'batch_stats'} for `spec` (= space.to_arch(point)) from the supernet's."""
  model = builder.build(spec)
  x = jnp.zeros((1,) + spec.input_shape, jnp.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
  out = {}
  for collection, target_tree in shapes.items():
    source_tree = supernet_variables[collection]
    tree = {}
    for name, target in target_tree.items():
      if name in ("stem", "head"):
        tree[name] = jax.tree_util.tree_map(_prefix_slice, source_tree[name], target)
      elif name.endswith("_dsm"):   # a downsampling module: its kind's parameters (the others' dropped)
        tree[name] = _cut(source_tree[name], target)
      else:
        op_index = int(point[f"{name}_op"])
        family = family_of(space, op_index)
        tree[name] = _inherit_block(source_tree[name], target, family, space.config.ops[op_index].label)
    out[collection] = tree
  return out


def derive(space: SearchSpace, point: Mapping[str, int], supernet_variables: Mapping,
           name: str = "searched") -> tuple[ArchSpec, dict]:
  spec = space.to_arch(point, name)
  return spec, inherit_variables(space, point, supernet_variables, spec)
