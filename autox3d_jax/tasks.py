"""Tasks of a multi-task search (FBNetV5 / RSBNet): each a small plug-in of dataset, head, loss and
metric, so adding one needs no change to the search code.

A task is a section of `config.tasks` (made with `config.task_section`):
  dataset       its TFDS dataset (any name `data.registry` resolves; the head gets its class count)
  loss          a registered loss (`register_loss`; 'cross_entropy' ships)
  metric        a registered metric (`register_metric`; 'top1' ships)
  scale_jitter  its training scale range; () = config.data's
  cost_target / target_arch   its own cost target; both unset = config.search's
  weight        its share of the supernet's weight loss
`config.search.tasks` names the tasks one search serves ('motion,appearance'). Every task gets its
own head on the shared supernet, its own architecture distribution and its own derived network
(`train.multitask_search`). A new loss or metric is one `register_*` call before the run starts;
a new dataset is a `data.registry` plug-in; neither touches the search.

The clip (frames, sampling stride, crop), the batch and the search recipe are config.data's and
config.search's, shared by every task; config.data.name is not read (each task names its dataset).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import ml_collections

from autox3d_jax.config import ConfigError, check_tasks, task_names
from autox3d_jax.train import losses

LossFn = Callable[[jax.Array, jax.Array, float], jax.Array]   # (logits, labels, smoothing) -> (N,) losses
MetricFn = Callable[[jax.Array, jax.Array], jax.Array]        # (logits, labels) -> scalar

LOSSES: dict[str, LossFn] = {"cross_entropy": losses.cross_entropy}
METRICS: dict[str, MetricFn] = {"top1": losses.top1}


def register_loss(name: str, fn: LossFn) -> None:
  """Make `fn(logits, labels, smoothing) -> per-example losses` available as a task's `loss`."""
  LOSSES[name] = fn


def register_metric(name: str, fn: MetricFn) -> None:
  """Make `fn(logits, labels) -> scalar` available as a task's `metric` (higher is better)."""
  METRICS[name] = fn


@dataclasses.dataclass(frozen=True)
class Task:
  """One task of a multi-task search, as `config.tasks.<name>` describes it (see the module)."""
  name: str
  dataset: str
  loss: str = "cross_entropy"
  metric: str = "top1"
  scale_jitter: tuple = ()
  cost_target: float = 0.0
  target_arch: str = ""
  weight: float = 1.0

  @property
  def loss_fn(self) -> LossFn:
    return LOSSES[self.loss]

  @property
  def metric_fn(self) -> MetricFn:
    return METRICS[self.metric]


def tasks_of(cfg: ml_collections.ConfigDict) -> list[Task]:
  """The tasks config.search.tasks names, in order, read from config.tasks ([] = a single-task
  search). Raises ConfigError naming the key for what `config.check_tasks` rejects and for a loss
  or metric no plug-in registered. Reads no dataset."""
  check_tasks(cfg)
  out = []
  for name in task_names(cfg):
    s = cfg.tasks[name]
    task = Task(name=name, dataset=s.dataset, loss=s.loss, metric=s.metric, scale_jitter=tuple(s.scale_jitter),
                cost_target=float(s.cost_target), target_arch=s.target_arch, weight=float(s.weight))
    for kind, registry, register in (("loss", LOSSES, "register_loss"), ("metric", METRICS, "register_metric")):
      if getattr(task, kind) not in registry:
        raise ConfigError(f"config.tasks.{name}.{kind} = {getattr(task, kind)!r} is not a registered {kind} "
                          f"{sorted(registry)}; register it with autox3d_jax.tasks.{register} before the run")
    out.append(task)
  return out


def task_config(cfg: ml_collections.ConfigDict, task: Task) -> ml_collections.ConfigDict:
  """A copy of config as one task's single-task search would read it: config.data.name = the
  task's dataset, its scale jitter, its cost target (or the search's), and no tasks. The data
  pipelines, cost targets and class counts of a multi-task search come from these copies; it is
  also the config of that task's single-task search."""
  c = cfg.copy_and_resolve_references()
  c.data.name = task.dataset
  if task.scale_jitter:
    c.data.scale_jitter = tuple(task.scale_jitter)
  if task.cost_target > 0 or task.target_arch:
    c.search.cost_target = task.cost_target
    c.search.target_arch = task.target_arch
  c.search.tasks = ""
  with c.unlocked():
    c.tasks = ml_collections.ConfigDict()
  return c
