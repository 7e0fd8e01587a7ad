"""Orbax checkpoints of a whole run state (any pytree) plus JSON metadata (data position, history).

Saves are atomic (orbax writes to a temporary directory and renames), so a run killed mid-save keeps
its previous checkpoint; `keep` bounds disk use. Restoring takes an abstract target, so a state saved
on one mesh restores into the shardings of another.
"""
from __future__ import annotations

from typing import Any

import jax
import orbax.checkpoint as ocp

from autox3d_jax import paths


class Checkpointer:

  def __init__(self, directory: str, keep: int = 3):
    self.directory = paths.absolute(directory)   # gs://... stays as it is
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    self.manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                          meta=ocp.args.JsonSave(meta)), force=True)
    self.manager.wait_until_finished()

  def restore(self, abstract_state: Any = None, step: int | None = None) -> tuple[Any, dict] | None:
    """(state, meta) of `step` (default: the latest), or None when there is no checkpoint.

    With `abstract_state` (e.g. `abstract_like(state, shardings)`) the state comes back as that
    pytree type, in those shardings; without, as saved: nested dicts of arrays (enough to
    read weights out of a checkpoint whose exact state type the caller does not build)."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    state_args = ocp.args.StandardRestore(abstract_state) if abstract_state is not None else ocp.args.StandardRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(state=state_args, meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta)

  def read_meta(self, step: int | None = None) -> dict | None:
    """The JSON metadata of `step` (default: the latest) without restoring the state, or None when
    there is no checkpoint."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored.meta)

  def close(self) -> None:
    self.manager.close()


def abstract_like(state: Any, shardings: Any | None = None) -> Any:
  """ShapeDtypeStructs (with target shardings) describing `state`, for restoring into it."""
  if shardings is None:
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
  return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
