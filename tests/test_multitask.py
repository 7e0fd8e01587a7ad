"""Multi-task search (FBNetV5 / RSBNet): task plug-ins, the shared supernet's per-task heads, the
jitted step's task independence, the config's errors, and one search end to end."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autox3d_jax import config as config_lib
from autox3d_jax import tasks as tasks_lib
from autox3d_jax.config import ConfigError, task_section
from autox3d_jax.models import builder
from autox3d_jax.models.spec import HeadSpec
from autox3d_jax.search import derive
from autox3d_jax.search import multitask as mt
from autox3d_jax.search import supernet as sn
from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.train import multitask_search as mts
from autox3d_jax.train import partitioning, setup
from autox3d_jax.train import search_step as ss
from autox3d_jax.train.optim import make_arch_optimizer, make_optimizer

import toys
from test_run import tiny_config

CLASSES = {"a": 3, "b": 5}


def multitask_config(mode="search", **search):
  """base_config with tasks a and b (fake datasets: the unit tests bring their own spaces)."""
  cfg = config_lib.base_config()
  cfg.mode = mode
  cfg.tasks.a = task_section("toy_a")
  cfg.tasks.b = task_section("toy_b")
  toys.set_keys(cfg.search, {"tasks": "a,b", "num_groups": 4, "arch_warmup_steps": 1, "penalty": "none",
                             "weight_opt.lr": 0.05, "arch_opt.lr": 0.1, "steps": 10, **search})
  cfg.data.batch_size = 16   # 8 clips per task: one per device of the simulated slice
  return cfg


def programs_and_state(cfg=None):
  cfg = cfg or multitask_config()
  tasks = tasks_lib.tasks_of(cfg)
  programs = []
  for t in tasks:
    space = toys.tiny_space(head=HeadSpec(conv5_width=16, head_width=16, dropout=0.0, num_classes=CLASSES[t.name]))
    programs.append(mts.task_program(cfg, t, len(tasks), space, CostTable.build(space)))
  w_tx = make_optimizer(cfg.search.weight_opt, cfg.search.steps)
  a_tx = make_arch_optimizer(cfg.search.arch_opt)
  step = mts.make_multitask_step(programs, w_tx, a_tx, cfg)
  return programs, step, mts.init_state(programs, w_tx, a_tx, seed=0)


def task_batches(seed, b_shift=0.0):
  """{task: batch} of 8 clips each; task b's videos shifted by `b_shift`."""
  out = {}
  for i, (name, classes) in enumerate(CLASSES.items()):
    batch = next(toys.batches(1, batch=8, classes=classes, shape=(4, 16, 16, 3), seed=seed + 10 * i))
    if name == "b":
      batch["video"] = batch["video"] + b_shift
    out[name] = batch
  return out


# ------------------------------------------------------------------------------------ variables
def test_views_split_and_merge_back():
  tree = {"stem": {"k": np.ones(2)}, "block_0_0": {"k": np.zeros(3)}, "head_a": {"k": np.full(2, 1.0)},
          "head_b": {"k": np.full(2, 2.0)}}
  views = {t: mt.task_view(tree, t, ["a", "b"]) for t in ("a", "b")}
  assert set(views["a"]) == {"stem", "block_0_0", "head"}
  np.testing.assert_array_equal(views["b"]["head"]["k"], tree["head_b"]["k"])
  merged = mt.merge_views(views, ["a", "b"])
  assert jax.tree_util.tree_map(np.asarray, merged).keys() == tree.keys()
  for key in tree:
    np.testing.assert_array_equal(merged[key]["k"], tree[key]["k"])


def test_merged_backbone_statistics_are_the_views_mean():
  views = {"a": {"stem": {"m": jnp.array([1.0, 3.0])}, "head": {"m": jnp.array([5.0])}},
           "b": {"stem": {"m": jnp.array([3.0, 5.0])}, "head": {"m": jnp.array([7.0, 8.0])}}}
  merged = mt.merge_views(views, ["a", "b"])
  np.testing.assert_allclose(merged["stem"]["m"], [2.0, 4.0])
  np.testing.assert_allclose(merged["head_b"]["m"], [7.0, 8.0])


def test_each_task_at_a_one_hot_point_is_its_derived_network():
  """The multi-task supernet seen through task t's view, at a one-hot point, gives the logits of
  the standalone network derived for task t (its head, its class count)."""
  programs, _, state = programs_and_state()
  names = [p.task.name for p in programs]
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 16, 16, 3))
  rng = np.random.default_rng(0)
  for p in programs:
    point = p.space.canonical(toys.random_point(p.space, rng))
    view = mt.task_variables(variables, p.task.name, names)
    supernet_logits = p.model.apply(view, x, sn.one_hot_arch(p.space, point), False)
    spec, inherited = derive.derive(p.space, point, view)
    assert spec.head.num_classes == CLASSES[p.task.name]
    np.testing.assert_allclose(builder.build(spec).apply(inherited, x, train=False), supernet_logits, atol=1e-5)


# -------------------------------------------------------------------------------------------- step
@pytest.fixture(scope="module")
def compiled_step():
  programs, step, state = programs_and_state()
  mesh = partitioning.make_mesh()
  jitted, shardings = ss.jit_search_step(step, state, mesh)
  return programs, jitted, shardings, state, mesh


def _two_steps(compiled, b_shift=0.0):
  """Two steps (the first has learning rate 0 and a frozen architecture) on fixed task batches,
  task b's clips shifted by `b_shift`; returns the host state and the last step's metrics."""
  _, jitted, shardings, state, mesh = compiled
  state = jax.device_put(state, shardings)
  put = lambda b: {t: partitioning.global_batch(v, mesh) for t, v in b.items()}   # noqa: E731
  for k in range(2):
    state, metrics = jitted(state, put(task_batches(2 * k, b_shift)), put(task_batches(2 * k + 1, b_shift)))
  return jax.device_get(state), jax.device_get(metrics)


def _same(x, y) -> bool:
  return all(np.allclose(u, v) for u, v in zip(jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(y)))


def test_a_task_learns_from_its_own_data_only(compiled_step):
  """Changing task b's clips changes task b's head, the shared backbone and b's logits, but
  neither task a's head nor a's architecture logits; the weight loss is the tasks' mean."""
  state0 = jax.device_get(compiled_step[3])
  s1, m1 = _two_steps(compiled_step)
  s2, m2 = _two_steps(compiled_step, b_shift=2.0)
  assert _same(s1.params["head_a"], s2.params["head_a"])
  assert not _same(s1.params["head_b"], s2.params["head_b"])
  assert not _same(s1.params["stem"], s2.params["stem"])
  assert _same(s1.logits["a"], s2.logits["a"])
  assert not _same(s1.logits["b"], s2.logits["b"])
  assert not _same(s1.logits["a"], state0.logits["a"])   # the architecture step ran
  assert not _same(s1.params["head_a"], state0.params["head_a"])
  np.testing.assert_allclose(m1["train_loss"], (m1["a/train_loss"] + m1["b/train_loss"]) / 2, rtol=1e-6)
  assert {"a/train_top1", "b/arch_entropy", "b/expected_cost", "a/arch_loss"} <= set(m1)


def test_each_task_gets_its_share_of_the_groups_and_its_own_target():
  cfg = multitask_config()
  cfg.tasks.b.cost_target = 1e9
  programs, _, _ = programs_and_state(cfg)
  assert [p.strategy.num_groups for p in programs] == [2, 2]
  assert [p.step_cfg.data.batch_size for p in programs] == [8, 8]
  assert programs[0].cost_target == 0 and programs[1].cost_target == 1e9


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("change, match", [
    (lambda c: setattr(c.search, "tasks", "a,b,a"), "names the task 'a' twice"),
    (lambda c: setattr(c.search, "tasks", "a,c"), "config.tasks does not define"),
    (lambda c: setattr(c.search, "tasks", "a,,b"), "is not a task name"),
    (lambda c: setattr(c.search, "tasks", ""), "config.search.tasks names none"),
    (lambda c: (setattr(c.search, "num_groups", 3), setattr(c.data, "batch_size", 24)),
     "num_groups = 3 must be divisible by the 2 tasks"),
    (lambda c: setattr(c.data, "batch_size", 6), "must be divisible by config.search.num_groups"),
    (lambda c: setattr(c, "mode", "demo"), "mode 'search', not 'demo'"),
    (lambda c: setattr(c.search, "cost_metric", "latency"), "config.search.cost_metric is not supported"),
    (lambda c: setattr(c.space, "input_frames", (4, 16)), "config.space.input_frames is not supported"),
    (lambda c: setattr(c.search.feature_distill, "teacher", "/t"), "config.search.feature_distill.teacher is not "
                                                                   "supported"),
    (lambda c: (setattr(c.search, "strategy", "msg"), setattr(c.search.msg, "supernet_distill", 1.0)),
     "config.search.msg.supernet_distill is not supported"),
    (lambda c: setattr(c.tasks.a, "dataset", ""), "config.tasks.a.dataset is empty"),
    (lambda c: setattr(c.tasks.b, "weight", 0.0), "config.tasks.b.weight"),
    (lambda c: setattr(c.tasks.b, "scale_jitter", (8, 9)), "config.tasks.b.scale_jitter"),
    (lambda c: (setattr(c.search, "penalty", "hinge"), setattr(c.tasks.b, "cost_target", 5.0)),
     "needs a target for task 'a'"),
])
def test_bad_task_settings_are_rejected_naming_the_key(change, match):
  cfg = multitask_config()
  change(cfg)
  with pytest.raises(ConfigError, match=match):
    config_lib.validate(cfg)


def test_an_unregistered_loss_is_rejected_and_a_registered_one_is_used():
  cfg = multitask_config()
  cfg.tasks.b.loss = "hinge_loss"
  with pytest.raises(ConfigError, match="config.tasks.b.loss = 'hinge_loss' is not a registered loss"):
    tasks_lib.tasks_of(cfg)
  calls = []
  tasks_lib.register_loss("hinge_loss", lambda logits, labels, s: calls.append(1) or jnp.zeros(logits.shape[0]))
  try:
    assert tasks_lib.tasks_of(cfg)[1].loss == "hinge_loss"
    programs, step, state = programs_and_state(cfg)
    jax.eval_shape(step, state, task_batches(0), task_batches(1))
    assert calls   # the plug-in's loss ran in the step (traced), with no change to the search code
  finally:
    del tasks_lib.LOSSES["hinge_loss"]


def test_the_per_task_batch_must_split_over_the_devices():
  cfg = multitask_config()
  cfg.data.batch_size = 8   # 4 clips per task on 8 devices
  cfg.search.num_groups = 2
  with pytest.raises(ConfigError, match=r"batch_size / 2 tasks = 4 clips per task\) is not divisible"):
    setup.check_devices(cfg)


# ------------------------------------------------------------------------------------ end to end
def tiny_multitask_config(data_dir=None, **overrides):
  cfg = tiny_config(data_dir)
  with cfg.unlocked():
    cfg.mode = "search"
    cfg.tasks.motion = task_section("moving_digits/motion_tiny")
    cfg.tasks.appearance = task_section("moving_digits/appearance_tiny")
  cfg.search.tasks = "motion,appearance"
  cfg.search.num_groups = 4
  cfg.data.batch_size = 16   # 8 clips per task: one per device of the simulated slice
  toys.set_keys(cfg, overrides)
  return config_lib.validate(cfg)


@pytest.mark.slow   # in CI's slow selection: about 80 s (two datasets built, the step compiled)
def test_multitask_search_end_to_end(tmp_path):
  """One search over the two tiny tasks: a network per task, each with its task's classes,
  written with the report's side-by-side table; a run resumed from an earlier checkpoint ends
  where the uninterrupted one did."""
  from autox3d_jax import run
  from autox3d_jax.models.spec import ArchSpec
  cfg = tiny_multitask_config()
  result = run.search(cfg, str(tmp_path))
  assert set(result.tasks) == {"motion", "appearance"}
  for name, classes in (("motion", 12), ("appearance", 10)):
    spec = ArchSpec.load(os.path.join(tmp_path, "search", name, "arch.json"))
    assert spec.head.num_classes == classes and spec == result.tasks[name].spec
    written = json.load(open(os.path.join(tmp_path, "search", name, "result.json")))
    assert written["task"] == name and written["dataset"] == f"moving_digits/{name}_tiny"
  report = open(os.path.join(tmp_path, "report", "report.md")).read()
  assert "## Tasks" in report and "motion vs appearance:" in report
  # Exact resume: the run's copy with its last checkpoint removed resumes from the one before and
  # ends with the same architecture logits for every task.
  copy = tmp_path.parent / (tmp_path.name + "_resumed")
  shutil.copytree(tmp_path, copy)
  steps = sorted(int(d) for d in os.listdir(copy / "checkpoints" / "search") if d.isdigit())
  assert steps[-1] == cfg.search.steps and len(steps) > 1
  shutil.rmtree(copy / "checkpoints" / "search" / str(steps[-1]))
  shutil.rmtree(copy / "search")
  resumed = run.search(cfg, str(copy))
  for name in result.tasks:
    assert resumed.tasks[name].point == result.tasks[name].point
    assert (json.load(open(copy / "search" / name / "logits.json"))
            == json.load(open(tmp_path / "search" / name / "logits.json")))


# ------------------------------------------------------------------------------------------ report
def test_the_report_sets_the_tasks_networks_side_by_side_and_counts_their_differences():
  from autox3d_jax import run
  from autox3d_jax.report.tables import tasks_table
  space = toys.tiny_space()
  a = space.canonical(space.largest_point())
  b = dict(a)
  op = next(d for d in space.decisions if d.kind == "op" and space.active(a, d.label))
  b[op.label] = 1 - a[op.label]
  lines = run.point_differences([("motion", space, a), ("speed", space, b)])
  active = sum(space.active(a, d.label) for d in space.decisions)
  assert lines == [f"motion vs speed: 1 of the {active} decisions active in either network differ (op 1)."]
  table = tasks_table(["motion", "speed"], [space.to_arch(a), space.to_arch(b)])
  rows = [r for r in table.splitlines() if r.startswith("| s")]
  assert len(rows) == sum(len(s.blocks) for s in space.to_arch(a).stages)
  assert [r.endswith("| yes |") for r in rows].count(True) == 1
  assert any(r.startswith(f"| {op.label[:-3]} ") and r.endswith("| yes |") for r in rows)
