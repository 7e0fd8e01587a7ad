"""The multi-task supernet's variables: one shared backbone (stem and blocks), one head per task.

RSBNet's "switchable recognition modules" and FBNetV5's per-task heads on a shared supernet: a
variables collection ({'params'} or {'batch_stats'}) holds the backbone's entries as the single-task
supernet does, and each task's head under `head_key(task)` instead of 'head'. A task's *view* is
that collection with its own head put back under 'head', so the single-task `Supernet` of the
task's space (its class count) runs it unchanged: same forward, same derivation, same evolution.
Gradients through a view reach the backbone and that task's head only.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

from autox3d_jax.search import supernet as sn
from autox3d_jax.search.space import SearchSpace

HEAD = "head"


def head_key(task: str) -> str:
  """Where a task's head lives in the multi-task variables."""
  return f"{HEAD}_{task}"


def _is_head(key: str, tasks: Sequence[str]) -> bool:
  return key in {head_key(t) for t in tasks}


def task_view(collection: Mapping, task: str, tasks: Sequence[str]) -> dict:
  """`collection` (one variables collection of the multi-task supernet) as task `task`'s
  single-task supernet sees it: the backbone's entries, and the task's head as 'head'."""
  view = {k: v for k, v in collection.items() if not _is_head(k, tasks)}
  view[HEAD] = collection[head_key(task)]
  return view


def task_variables(variables: Mapping, task: str, tasks: Sequence[str]) -> dict:
  """{'params', 'batch_stats'} of task `task`'s view (`task_view` of every collection)."""
  return {name: task_view(tree, task, tasks) for name, tree in variables.items()}


def merge_views(views: Mapping[str, Mapping], tasks: Sequence[str]) -> dict:
  """One multi-task collection from the tasks' views of it (e.g. each task's updated batch
  statistics): each head from its own task's view, every backbone leaf the mean over the views.
  With equal groups per task the mean equals the single-task rule, the mean over all K groups."""
  first = views[tasks[0]]
  backbone = {k: jax.tree_util.tree_map(lambda *leaves: jnp.mean(jnp.stack(leaves), 0), *(views[t][k] for t in tasks))
              for k in first if k != HEAD}
  return {**backbone, **{head_key(t): views[t][HEAD] for t in tasks}}


def init_variables(spaces: Mapping[str, SearchSpace], rng: jax.Array) -> dict:
  """{'params', 'batch_stats'} of the multi-task supernet over `spaces` ({task: its space}, the
  spaces equal but for their heads' class counts; the first task's backbone, each task's head
  initialised with its own key)."""
  tasks = list(spaces)
  out: dict = {}
  for i, task in enumerate(tasks):
    variables = sn.init_supernet(spaces[task], jax.random.fold_in(rng, i) if i else rng)
    for name, tree in variables.items():
      if i == 0:
        out[name] = {k: v for k, v in tree.items() if k != HEAD}
      out[name][head_key(task)] = tree[HEAD]
  return out

