"""A pretrained network's weights in the supernet's slots (config.search.init_from): architecture
adaptation, where the search starts from a trained network instead of random weights.

The network must be a point of the space (same clip, stem and head widths; its class count may
differ, the classifier is then left as initialised). Its point gets its weights exactly, so the
one-hot supernet at that point computes the network (the inverse of `derive.inherit_variables`).
Every other choice gets a remapping, FNA's parameter remapping (JaminFong/FNA
fna_det/tools/apis/param_remap.py, shared/REFERENCES-round2.md section 12, [V]) except where noted:
- wider choices (width, expansion, SE units): the network's channels are the leading ones; the
  extra channels' weights are zero (and their BN statistics the initial 0 / 1), so at first they
  add nothing;
- other kernels of the network's block family: the kernel centre-aligned, zero-padded where the
  choice is larger and centre-cropped where it is smaller (an x3d 3x3x3 gives x2d 1x3x3 its middle
  frame);
- blocks deeper than the network's stage (`new_blocks`): 'identity' (what the issue asks: the block's
  last BN scale is zero, so the residual block passes its input through) or 'copy_last' (FNA: a new
  block copies the stage's last block);
- other block families (r2plus1d where the network is x3d, ...) keep their random initialisation.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Mapping

import jax
import numpy as np

from autox3d_jax import labels
from autox3d_jax.models.spec import ArchSpec, SpecError
from autox3d_jax.search.derive import SKELETON, family_of
from autox3d_jax.search.space import SearchSpace

log = logging.getLogger(__name__)

NEW_BLOCK_RULES = ("identity", "copy_last")


def point_of_network(space: SearchSpace, spec: ArchSpec) -> dict[str, int]:
  """The network's point in `space` at the space's clip (the weights do not depend on it), with
  its class count ignored; SpecError naming what does not fit otherwise."""
  c = space.config
  head = dataclasses.replace(spec.head, num_classes=c.head.num_classes, dropout=c.head.dropout)
  return space.point_of(spec.replace(num_frames=c.num_frames, crop_size=c.crop_size, head=head))


def _centred(kernel: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """`kernel` (kt, kh, kw, C) centre-aligned into `shape` (kt', kh', kw', C): cropped or zero-padded
  per axis (odd sizes)."""
  out = np.zeros(shape[:3] + kernel.shape[3:], kernel.dtype)
  src, dst = [], []
  for k, b in zip(kernel.shape[:3], shape[:3]):
    n = min(k, b)
    src.append(slice((k - n) // 2, (k - n) // 2 + n))
    dst.append(slice((b - n) // 2, (b - n) // 2 + n))
  out[tuple(dst)] = kernel[tuple(src)]
  return out


def _prefix_into(target: np.ndarray, source: np.ndarray, fill: float | None) -> np.ndarray:
  """`source` written into the leading corner of `target`; the rest is `fill` (None: left as is)."""
  if source.ndim != target.ndim or any(s > t for s, t in zip(source.shape, target.shape)):
    raise SpecError(f"cannot place {source.shape} into supernet array {target.shape}")
  out = np.array(target, copy=True) if fill is None else np.full(target.shape, fill, target.dtype)
  out[tuple(slice(0, s) for s in source.shape)] = source
  return out


def _write(target, source, collection: str):
  """Recursively write `source` (a standalone subtree) into `target` (the supernet's): params get
  zero outside the copied prefix, batch statistics keep their initial values there."""
  if isinstance(source, Mapping):
    return {k: (_write(target[k], source[k], collection) if k in source else target[k]) for k in target}
  return _prefix_into(np.asarray(target), np.asarray(source), 0.0 if collection == "params" else None)


def _write_kernels(target: Mapping, kernel: np.ndarray, own_label: str, collection: str) -> dict:
  """A mixed depthwise conv's per-op kernels: the network's op gets its kernel, the family's other
  ops the kernel centre-aligned to their shape; channels beyond the network's are zero."""
  out = {}
  for label, slot in target.items():
    slot = np.asarray(slot)
    source = kernel if label == own_label else _centred(kernel, slot.shape[:3] + kernel.shape[3:])
    out[label] = _prefix_into(slot, source, 0.0 if collection == "params" else None)
  return out


def _block_into(super_block: Mapping, block: Mapping, family: str, op_label: str, collection: str) -> dict:
  """One standalone block's variables into one supernet block position (the inverse of
  `derive._inherit_block`)."""
  out = dict(super_block)
  fam = dict(super_block.get(family, {}))
  for key, sub in block.items():
    if key in SKELETON:
      if key in super_block:
        out[key] = _write(super_block[key], sub, collection)
      continue
    slot = fam[key]
    if isinstance(sub, Mapping) and "kernel" in sub and op_label in slot:   # a mixed depthwise conv
      fam[key] = _write_kernels(slot, np.asarray(sub["kernel"]), op_label, collection)
    else:
      fam[key] = _write(slot, sub, collection)
  if family in super_block:
    out[family] = fam
  return out


def _as_identity(super_block: Mapping) -> dict:
  """The block's residual branch silenced: its last BN's scale (and bias) zero."""
  out = dict(super_block)
  bn_c = dict(out["bn_c"])
  bn_c["scale"] = np.zeros_like(np.asarray(bn_c["scale"]))
  bn_c["bias"] = np.zeros_like(np.asarray(bn_c["bias"]))
  out["bn_c"] = bn_c
  return out


def supernet_from_network(space: SearchSpace, spec: ArchSpec, variables: Mapping, supernet_variables: Mapping,
                          new_blocks: str = "identity") -> dict:
  """`supernet_variables` (an initialised supernet of `space`) with the network `spec`'s
  `variables` placed as the module doc says. Returns new {'params', 'batch_stats'} (numpy)."""
  if new_blocks not in NEW_BLOCK_RULES:
    raise ValueError(f"new_blocks must be one of {NEW_BLOCK_RULES}, got {new_blocks!r}")
  point = point_of_network(space, spec)
  out = {}
  for collection in ("params", "batch_stats"):
    source, target = variables[collection], supernet_variables[collection]
    tree = {}
    for name, super_sub in target.items():
      if name in ("stem", "head"):
        tree[name] = _head_or_stem(name, super_sub, source[name], collection, spec, space)
        continue
      i, j = labels.parse_block(name)
      depth = len(spec.stages[i].blocks)
      if j < depth:
        src_j = j
      elif new_blocks == "copy_last":
        src_j = depth - 1
      else:
        tree[name] = _as_identity(super_sub) if collection == "params" else dict(super_sub)
        continue
      src_name = labels.block(i, src_j)
      op_index = int(point[labels.block_decision(i, src_j, "op")])
      family = family_of(space, op_index)
      block = source[src_name]
      if src_j != j:   # a copied block: a non-first block has no projection shortcut
        block = {k: v for k, v in block.items() if k not in ("shortcut", "shortcut_bn") or k in super_sub}
      tree[name] = _block_into(super_sub, block, family, space.config.ops[op_index].label, collection)
    out[collection] = tree
  return jax.tree_util.tree_map(np.asarray, out)


def _head_or_stem(name, super_sub, source, collection, spec, space):
  """The stem and head copied (same widths, `point_of_network` checked); a classifier of another
  class count is left as initialised."""
  if name == "head" and spec.head.num_classes != space.config.head.num_classes:
    log.info("search.init_from: the network has %d classes, the space %d: the supernet's classifier keeps its "
             "initialisation", spec.head.num_classes, space.config.head.num_classes)
    source = {k: v for k, v in source.items() if k != "classifier"}
  return _write(super_sub, source, collection)
