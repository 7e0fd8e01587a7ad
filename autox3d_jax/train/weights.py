"""A network's weights on disk apart from any run: what mode=import writes, and what
config.train.init_from, config.eval.checkpoint and config.export.checkpoint read.

A weights checkpoint is an orbax checkpoint (step 0, through `train.checkpoint.Checkpointer`) of
{'params', 'batch_stats'} with JSON meta {'kind': 'weights', 'arch': <ArchSpec JSON>, ...} (the
importer adds where the weights came from). `read` also takes a training run's checkpoint directory
(the params and batch_stats of its latest TrainState), so each consumer accepts either; both record
their architecture's JSON in the meta (`arch_of`; training checkpoints written before that do not).

`fit` checks weights against the network that will use them, every tensor's path and shape, and
names the first that does not fit with both shapes. Fine-tuning on a dataset with other classes
(`new_classes=True`) keeps everything but the classifier, which is freshly initialised.
"""
from __future__ import annotations

import logging
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from autox3d_jax import labels, paths
from autox3d_jax.models import builder
from autox3d_jax.models.convert_torch import CheckpointError
from autox3d_jax.models.spec import ArchSpec
from autox3d_jax.train.checkpoint import Checkpointer

log = logging.getLogger(__name__)

WEIGHTS_KIND = "weights"
CLASSIFIER = ("params", "head", "classifier")


def save(directory: str, spec: ArchSpec, variables: Mapping, meta: dict | None = None) -> str:
  """Write {'params', 'batch_stats'} of `spec` as a weights checkpoint in `directory` (replacing one
  there); returns the directory."""
  ckpt = Checkpointer(directory, keep=1)
  try:
    state = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    ckpt.save(0, jax.tree_util.tree_map(np.asarray, state),
              {"kind": WEIGHTS_KIND, "arch": spec.to_json(indent=None), **(meta or {})})
  finally:
    ckpt.close()
  return ckpt.directory


def _open(directory: str, key: str) -> Checkpointer:
  """The Checkpointer of `directory`; CheckpointError naming `key` when it holds no checkpoint."""
  ckpt = Checkpointer(directory) if paths.exists(directory) else None
  if ckpt is None or ckpt.latest_step() is None:
    if ckpt is not None:
      ckpt.close()
    raise CheckpointError(f"config.{key} = {directory!r} holds no checkpoint: point it at a directory that "
                          f"mode=import wrote, or at a training run's checkpoints "
                          f"(<workdir>/checkpoints/train_<network>)")
  return ckpt


def meta_of(directory: str, key: str) -> dict:
  """The JSON meta of the latest checkpoint in `directory` (CheckpointError naming `key` if none)."""
  ckpt = _open(directory, key)
  try:
    return ckpt.read_meta() or {}
  finally:
    ckpt.close()


def arch_of(directory: str, key: str) -> ArchSpec | None:
  """The architecture a checkpoint records (weights checkpoints, and training runs since the meta
  has an 'arch'); None for an older training checkpoint."""
  meta = meta_of(directory, key)
  return ArchSpec.from_json(meta["arch"]) if "arch" in meta else None


def read(directory: str, key: str) -> dict:
  """{'params', 'batch_stats'} (numpy) of the latest checkpoint in `directory`: a weights
  checkpoint or a training run's."""
  ckpt = _open(directory, key)
  try:
    state, _ = ckpt.restore()
  finally:
    ckpt.close()
  if not isinstance(state, Mapping) or "params" not in state or "batch_stats" not in state:
    raise CheckpointError(f"config.{key} = {directory!r} holds a checkpoint without network weights "
                          f"(top-level entries: {sorted(state)[:6] if isinstance(state, Mapping) else type(state)})")
  return jax.tree_util.tree_map(np.asarray, {"params": state["params"], "batch_stats": state["batch_stats"]})


def _model_order(path: tuple[str, ...]):
  """params before batch_stats; within each, stem, then s<i>_b<j> by stage and block, then head."""
  collection = 0 if path[0] == "params" else 1
  top = path[1] if len(path) > 1 else ""
  if top == "stem":
    return (collection, 0, 0, 0, path)
  try:
    i, j = labels.parse_block(top)
  except ValueError:
    return (collection, 2, 0, 0, path)
  return (collection, 1, i, j, path)


def classes_in(variables: Mapping) -> int | None:
  """The class count of a network's variables (its classifier bias's length), None without one."""
  bias = flatten_dict(variables).get(CLASSIFIER + ("bias",))
  return None if bias is None else int(np.shape(bias)[0])


def fit(variables: Mapping, spec: ArchSpec, key: str, *, new_classes: bool = False, seed: int = 0) -> dict:
  """`variables` checked against `builder.build(spec)`: the same tensors with the same shapes, else
  CheckpointError naming `key`, the first tensor that differs and both shapes. With `new_classes`,
  a classifier of another class count is replaced by a fresh one (seeded by `seed`) and logged."""
  want = dict(sorted(flatten_dict(builder.variable_shapes(spec)).items(), key=lambda kv: _model_order(kv[0])))
  got = flatten_dict(variables)
  fresh = None
  for path in want:
    if path not in got:
      raise CheckpointError(f"config.{key}: the checkpoint has no tensor {'/'.join(path)}, which {spec.name} needs "
                            f"(is it another architecture?)")
    have, need = tuple(np.shape(got[path])), tuple(want[path].shape)
    if have == need:
      continue
    if new_classes and path[:3] == CLASSIFIER:
      if fresh is None:
        fresh = flatten_dict(builder.init_variables(spec, jax.random.PRNGKey(seed)))
        log.info("config.%s: the checkpoint's classifier has %d classes, %s has %d: the classifier is "
                 "freshly initialised, every other weight comes from the checkpoint", key,
                 classes_in(variables), spec.name, spec.head.num_classes)
      got[path] = fresh[path]
      continue
    hint = (f" (the checkpoint has {have[-1]} classes: fine-tune it with mode=train and config.train.init_from, "
            f"which replaces the classifier)" if path[:3] == CLASSIFIER and not new_classes else "")
    raise CheckpointError(f"config.{key}: tensor {'/'.join(path)} is {have} in the checkpoint but {spec.name} "
                          f"needs {need}{hint}")
  extra = [p for p in got if p not in want]
  if extra:
    raise CheckpointError(f"config.{key}: the checkpoint has tensor {'/'.join(extra[0])}, which {spec.name} does "
                          f"not have ({len(extra)} such; is it another architecture?)")
  return unflatten_dict({path: jnp.asarray(got[path], want[path].dtype) for path in want})


def load_recorded(directory: str, key: str) -> tuple[ArchSpec, dict]:
  """(the architecture `directory`'s checkpoint records, its weights checked against it): what a
  search reads to start from or learn from a trained network. CheckpointError naming `key` when
  the checkpoint records no architecture (a training run from before they were recorded)."""
  spec = arch_of(directory, key)
  if spec is None:
    raise CheckpointError(f"config.{key} = {directory!r} does not record its architecture (a training "
                          "checkpoint written before architectures were recorded): retrain it, or import it with "
                          "mode=import")
  return spec, fit(read(directory, key), spec, key)


def load(directory: str, spec: ArchSpec, key: str, *, new_classes: bool = False, seed: int = 0) -> dict:
  """`read` then `fit`: the weights in `directory` for `spec`."""
  return fit(read(directory, key), spec, key, new_classes=new_classes, seed=seed)
