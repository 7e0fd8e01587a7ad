"""A trained network's weights carried into another network of the same skeleton: a wider, deeper
or longer-bottlenecked one (or a narrower one), for training that starts where the first left off.

    child_variables = grow(parent_spec, parent_variables, child_spec, rng)

The networks must have the same stages and block types; widths, inner widths, SE widths, the stem's
and conv5's widths and the number of blocks per stage may differ (the clip does not enter the
weights). What the child gets:
- every tensor the parent has at the same place: the parent's values in the leading corner
  (channels are prefix-aligned: a wider network's first channels are the narrower one's);
- the child's own random initialisation everywhere else, so new channels are trainable (zero in- and
  out-weights would give them no gradient), except the weights from a new input channel to an old
  output channel, which are zero: every old channel computes exactly what it did in the parent;
- a block the parent does not have (a deeper stage): its own initialisation with its residual
  branch's last BN scale and bias zero, so the block passes its input through.
So a grown child computes the parent's logits exactly at the start (`test_morph`), and training
moves on from there: Net2Net's function-preserving growth (Chen et al., ICLR 2016), with zero
cross-weights instead of Net2Net's unit replication, and FNA's identity rule for new blocks
(shared/REFERENCES-round2.md section 12). A narrower child keeps the leading corner and loses the
rest: it starts near the parent, not at it.
"""
from __future__ import annotations

from typing import Mapping

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from autox3d_jax import labels
from autox3d_jax.models import builder
from autox3d_jax.models.spec import ArchSpec, SpecError

# The last BN of a residual branch (models.blocks.ResidualBlock): zero scale and bias silence it.
BRANCH_LAST_BN = "bn_c"


def _check_same_skeleton(parent: ArchSpec, child: ArchSpec) -> None:
  if len(parent.stages) != len(child.stages):
    raise SpecError(f"{child.name}: {len(child.stages)} stages, {parent.name} has {len(parent.stages)}: weights "
                    "carry over between networks of the same skeleton only")
  for i, (p, c) in enumerate(zip(parent.stages, child.stages)):
    if p.downsample or c.downsample:
      raise SpecError(f"{child.name}: stage {labels.stage(i)} has a downsampling module: weights carry over "
                      "between networks of X3D's skeleton only")
    for j, (bp, bc) in enumerate(zip(p.blocks, c.blocks)):
      if (bp.type, bp.kernel, bp.stride, bp.se_ratio > 0) != (bc.type, bc.kernel, bc.stride, bc.se_ratio > 0):
        raise SpecError(f"{child.name}: block {labels.block(i, j)} is {bc.type} {bc.kernel} (stride {bc.stride}, "
                        f"SE {bc.se_ratio}), {parent.name}'s is {bp.type} {bp.kernel} (stride {bp.stride}, SE "
                        f"{bp.se_ratio}): only widths and depths may differ")


def _corner(child: np.ndarray, parent: np.ndarray, is_kernel: bool) -> np.ndarray:
  """`child` with `parent` in its leading corner (both cut to the smaller size per axis); for a
  kernel (..., in, out), the weights from new inputs to old outputs zeroed."""
  if child.ndim != parent.ndim:
    raise SpecError(f"cannot carry a {parent.shape} tensor into {child.shape}")
  out = np.array(child, copy=True)
  common = tuple(slice(0, min(a, b)) for a, b in zip(child.shape, parent.shape))
  out[common] = parent[common]
  if is_kernel and child.ndim >= 2 and child.shape[-2] > parent.shape[-2]:
    out[..., parent.shape[-2]:, :parent.shape[-1]] = 0
  return out


def grow(parent_spec: ArchSpec, parent_variables: Mapping, child_spec: ArchSpec, rng: jax.Array) -> dict:
  """{'params', 'batch_stats'} (numpy) of `child_spec` started from the parent's trained variables,
  as the module doc says; `rng` initialises what the parent does not have. SpecError when the two
  networks differ in more than widths and depths."""
  _check_same_skeleton(parent_spec, child_spec)
  fresh = flatten_dict(jax.tree_util.tree_map(np.asarray, builder.init_variables(child_spec, rng)))
  have = flatten_dict(parent_variables)
  out = {}
  for path, value in fresh.items():
    source = have.get(path)
    out[path] = value if source is None else _corner(value, np.asarray(source), path[-1] == "kernel")
  for i, (p, c) in enumerate(zip(parent_spec.stages, child_spec.stages)):
    for j in range(len(p.blocks), len(c.blocks)):
      for name in ("scale", "bias"):
        path = ("params", labels.block(i, j), BRANCH_LAST_BN, name)
        out[path] = np.zeros_like(out[path])
  return unflatten_dict(out)
