"""Batch norm folded into the convolution before it, for inference exports that quantise.

    folded = fold_batch_norm(spec, variables)

In eval mode BN is y = (x - mean) * s + bias with s = scale / sqrt(var + eps), per channel. When x
is a linear op's output (no bias of its own), multiplying that op's kernel by s along its output
channels and setting BN's bias to bias - mean * s, scale to 1, mean to 0 and var to 1 - eps gives
the same function (up to float rounding). The folded network
has normalised pre-BN activations: int8 post-training quantisation gives each tensor one range, and
unfolded conv outputs have per-channel ranges that BN only equalises afterwards, so one range for
all channels loses the small ones (the measured effect on int8 top-1: benchmarks/RESULTS.md).

Which BN follows which op (models/builder.py, models/blocks.py): the stem's `bn` after its
depthwise `conv_t`, the head's `conv5_bn` after `conv5`, and in every block `bn_a` / `bn_c` /
`shortcut_bn` after the pointwise `conv_a` / `conv_c` / `shortcut`, `bn_b_spatial` after
`conv_b_spatial`, `bn_ip` after ip-CSN's `conv_ip`, TEA's fragment BNs `mta_bn<f>` after `mta_s<f>` and
its motion excitation's `me_bn1` / `me_bn2` after `me_reduce` / `me_expand`, `bn_pos` after the attention types' positional
`pos`, and `bn_b` after `conv_b` in the middles where it directly follows it (all but STM, whose
`bn_b` normalises a sum of two branches, and the attention and MLP types, whose `bn_b` follows the
token mixer: these stay as they are). In a downsampling module (`models.downsample`) `down_bn`
follows `down_dw`; its other BNs normalise sums or a projection's input and stay. Every kernel has its output
channels on the last axis.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from autox3d_jax import labels
from autox3d_jax.models.layers import BN_EPSILON
from autox3d_jax.models.spec import ArchSpec

# BN module name -> the path, within the same parent module, of the op whose kernel it follows.
STEM = {"bn": ("conv_t",)}
HEAD = {"conv5_bn": ("conv5",)}
BLOCK = {"bn_a": ("conv_a", "conv"), "bn_c": ("conv_c", "conv"), "shortcut_bn": ("shortcut", "conv"),
         "bn_b_spatial": ("conv_b_spatial",), "bn_b": ("conv_b",), "bn_ip": ("conv_ip",), "bn_pos": ("pos",),
         "me_bn1": ("me_reduce",), "me_bn2": ("me_expand",), **{f"mta_bn{f}": (f"mta_s{f}",) for f in range(3)}}
# Block types whose bn_b does not directly follow conv_b: STM's sums two branches, the attention and
# MLP types' follows their token mixer.
BN_B_NOT_FOLDED = frozenset({"stm", "lsa", "axial", "mlp"})
DOWNSAMPLE = {"down_bn": ("down_dw",)}


def _pairs(spec: ArchSpec) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
  """(BN module path, kernel path) of every foldable BN of `spec`, paths under 'params'."""
  modules = [("stem", STEM), ("head", HEAD)]
  for i, stage in enumerate(spec.stages):
    if stage.downsample:
      modules.append((labels.downsample_module(i), DOWNSAMPLE))
    for j, block in enumerate(stage.blocks):
      rules = {bn: op for bn, op in BLOCK.items() if not (bn == "bn_b" and block.type in BN_B_NOT_FOLDED)}
      modules.append((labels.block(i, j), rules))
  return [((name, bn), (name,) + op + ("kernel",)) for name, rules in modules for bn, op in rules.items()]


def fold_batch_norm(spec: ArchSpec, variables: Mapping) -> dict:
  """{'params', 'batch_stats'} (numpy float32) of `spec` with every foldable BN folded into its
  kernel (the module doc); the same eval-mode function. BNs a network does not have (a block
  without a projection shortcut) are skipped."""
  params = {k: np.array(v, np.float32) for k, v in flatten_dict(variables["params"]).items()}
  stats = {k: np.array(v, np.float32) for k, v in flatten_dict(variables["batch_stats"]).items()}
  for bn, kernel in _pairs(spec):
    if bn + ("mean",) not in stats:
      continue
    if kernel not in params:
      raise KeyError(f"{'/'.join(bn)} has no {'/'.join(kernel)} to fold into")
    mean, var = stats[bn + ("mean",)], stats[bn + ("var",)]
    s = params[bn + ("scale",)] / np.sqrt(var + BN_EPSILON)
    params[kernel] = params[kernel] * s
    params[bn + ("bias",)] = params[bn + ("bias",)] - mean * s
    params[bn + ("scale",)] = np.ones_like(s)
    stats[bn + ("mean",)] = np.zeros_like(mean)
    stats[bn + ("var",)] = np.full_like(var, 1.0 - BN_EPSILON)
  return {"params": unflatten_dict(params), "batch_stats": unflatten_dict(stats)}
