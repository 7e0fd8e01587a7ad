"""Batch-norm recalibration and scoring of single paths through a trained supernet (SPOS).

Shared supernet statistics mix every sampled path; before a candidate is scored SPOS resets them and
re-estimates them for that path on training batches. Every BN layer's running statistics start from
(mean 0, var 1); one train-mode forward then gives m * 0 + (1 - m) * batch_mean, so each batch's own
statistics are recovered exactly and averaged over the calibration batches. One compiled program
serves every candidate (the path is an input), so evolution compiles once.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from autox3d_jax.models.layers import BN_MOMENTUM
from autox3d_jax.search import supernet as sn
from autox3d_jax.search.space import SearchSpace


def _reset_stats(batch_stats):
  return {k: _reset_tree(v) for k, v in batch_stats.items()}


def _reset_tree(tree):
  if isinstance(tree, dict):
    if set(tree) == {"mean", "var"}:
      return {"mean": jnp.zeros_like(tree["mean"]), "var": jnp.ones_like(tree["var"])}
    return {k: _reset_tree(v) for k, v in tree.items()}
  return tree


def _batch_stats_from_update(updated):
  """Invert one momentum update from (0, 1): batch = (updated - m * reset) / (1 - m)."""
  def invert(tree):
    if isinstance(tree, dict) and set(tree) == {"mean", "var"}:
      return {"mean": tree["mean"] / (1 - BN_MOMENTUM), "var": (tree["var"] - BN_MOMENTUM) / (1 - BN_MOMENTUM)}
    return {k: invert(v) for k, v in tree.items()}
  return invert(updated)


def make_arch_scorer(model: sn.Supernet, variables, calib_batches, eval_batches):
  """score(arch, clip=None) -> held-out accuracy of the supernet at `arch` (its weights per decision:
  one-hot for a point, soft for a relaxed architecture), its BN statistics re-estimated for that
  arch on `calib_batches` first. clip(video) -> video cuts the arch's clip (None = as given).
  Batches as in `make_point_scorer`. One compiled program per model serves every arch."""
  params = variables["params"]
  reset = _reset_stats(variables["batch_stats"])

  @jax.jit
  def batch_stats_of(arch, video):
    _, upd = model.apply({"params": params, "batch_stats": reset}, video, arch, True,
                         mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(0)})
    return _batch_stats_from_update(upd["batch_stats"])

  @jax.jit
  def correct(arch, stats, video, label, mask):
    logits = model.apply({"params": params, "batch_stats": stats}, video, arch, False)
    return jnp.sum((jnp.argmax(logits, -1) == label) & mask)

  masks = [jnp.asarray(b["mask"]) if "mask" in b else jnp.ones(len(b["label"]), bool) for b in eval_batches]
  total = sum(int(jnp.sum(m)) for m in masks)

  def score(arch, clip=None):
    clip = clip or jnp.asarray
    per_batch = [batch_stats_of(arch, clip(b["video"])) for b in calib_batches]
    stats = jax.tree_util.tree_map(lambda *s: jnp.mean(jnp.stack(s), 0), *per_batch)
    hits = sum(int(correct(arch, stats, clip(b["video"]), jnp.asarray(b["label"]), m))
               for b, m in zip(eval_batches, masks))
    return hits / max(total, 1)

  return score


def make_point_scorer(model: sn.Supernet, space: SearchSpace, variables, calib_batches, eval_batches,
                      clip_of=None):
  """score(points) -> list of held-out accuracies (higher is better), BN recalibrated per point.

  calib_batches / eval_batches: lists of {'video': (B, T, H, W, C), 'label': (B,)}; an eval batch
  may carry 'mask' (B,) bool, as the evaluation pipeline pads its last batch, and then only the
  masked-in clips count. clip_of(video, point) -> video: each point's own clip cut from the
  batches' (`search.inputs.select_clip`, when the space searches input axes); None = as given."""
  # Points are one-hot: run only each block's chosen family.
  score_arch = make_arch_scorer(model.clone(exclusive=True), variables, calib_batches, eval_batches)

  def score(points):
    return [score_arch(sn.one_hot_arch(space, point),
                       None if clip_of is None else (lambda v, point=point: clip_of(jnp.asarray(v), point)))
            for point in points]

  return score
