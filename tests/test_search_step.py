"""The jitted, sharded search step: runs, searches, and gives the same result on 1 and 8 devices."""
import jax
import numpy as np
import pytest

from autox3d_jax import config as config_lib
from autox3d_jax.models.spec import HeadSpec
from autox3d_jax.search import supernet as sn
from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.distribution import ArchDistribution
from autox3d_jax.train import partitioning, search_loop
from autox3d_jax.train import search_step as ss
from autox3d_jax.train.optim import make_arch_optimizer, make_optimizer

import toys


def tiny_setup(strategy="probabilistic", num_groups=2, dtype=None, space_overrides=None, **search):
  cfg = config_lib.base_config()
  overrides = {"strategy": strategy, "num_groups": num_groups, "arch_warmup_steps": 1, "penalty": "none",
               "weight_opt.lr": 0.05, "arch_opt.lr": 0.1, "steps": 10, **search}
  if strategy in ("dnas", "gdas", "msg"):
    overrides.setdefault(f"{strategy}.tau_decay", 0.0)
  toys.set_keys(cfg.search, overrides)
  space = toys.tiny_space(head=HeadSpec(conv5_width=16, head_width=16, dropout=0.0, num_classes=3),
                          **(space_overrides or {}))
  dist = ArchDistribution(space)
  table = CostTable.build(space)
  strategy = search_loop.make_strategy(cfg, dist, table, cost_target=0.0)
  model = sn.Supernet(space, dtype=dtype)
  w_tx = make_optimizer(cfg.search.weight_opt, cfg.search.steps)
  a_tx = make_arch_optimizer(cfg.search.arch_opt)
  step = ss.make_search_step(model, dist, strategy, w_tx, a_tx, cfg, table)
  state = ss.init_search_state(model, dist, strategy, w_tx, a_tx, seed=0)
  return cfg, step, state


def batches(n, batch=8, seed=0):
  return toys.batches(n, batch=batch, classes=3, shape=(4, 16, 16, 3), seed=seed)


def run(step, state, mesh, n=3, rule=None, history=None):
  """`n` jitted steps on `mesh` (parameters placed by `rule`); returns the final state and metrics
  on the host. `history`, a list, receives each step's metrics."""
  jitted, shardings = ss.jit_search_step(step, state, mesh, rule)
  state = jax.device_put(state, shardings)
  metrics = None
  for train, val in zip(batches(n, seed=0), batches(n, seed=1)):
    state, metrics = jitted(state, partitioning.global_batch(train, mesh), partitioning.global_batch(val, mesh))
    if history is not None:
      history.append(jax.device_get(metrics))
  return jax.device_get(state), jax.device_get(metrics)


@pytest.mark.parametrize("strategy", [
    # Each strategy compiles its own full supernet step (~1 min on 2 cores): they run with -m slow;
    # the probabilistic step runs and updates in test_one_device_and_eight_devices_agree, and every
    # strategy's search behaviour is covered quickly in test_strategies.py.
    pytest.param("probabilistic", marks=pytest.mark.slow),
    pytest.param("dnas", marks=pytest.mark.slow), pytest.param("gdas", marks=pytest.mark.slow),
    pytest.param("spos", marks=pytest.mark.slow), pytest.param("msg", marks=pytest.mark.slow)])
def test_search_step_runs_and_updates(strategy):
  cfg, step, state = tiny_setup(strategy)
  mesh = partitioning.make_mesh()
  initial_logits = jax.device_get(state.logits)
  new, metrics = run(step, state, mesh)
  assert int(new.step) == 3
  assert np.isfinite(metrics["train_loss"])
  changed = any(not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(initial_logits),
                                                     jax.tree_util.tree_leaves(new.logits)))
  assert changed == (strategy != "spos")


# A rule that splits the toy supernet's arrays (its largest has a few thousand elements).
TOY_RULE = partitioning.ShardingRule(fsdp=True, min_size=64)


@pytest.mark.slow   # in CI's slow selection (.ci/run): four compiled search steps (RESULTS.md)
def test_sharded_meshes_agree_with_one_device():
  """The probabilistic search step over 4 steps on one device, and with parameters and optimizer
  state split by the FSDP + tensor-parallel rule on meshes 8x1, 4x2 and 2x4: the same losses
  (rtol 1e-4), logits (rtol 1e-4, atol 1e-5), parameters (rtol 1e-3, atol 1e-5; float32 sums in
  another order) and derived architecture; and each device holds only its share of the split
  arrays' parameters and momenta."""
  assert jax.device_count() == 8
  _, step, state = tiny_setup("probabilistic")
  initial = jax.device_get(state)
  ref_history = []
  one, metrics = run(step, state, partitioning.make_mesh(1, devices=jax.devices()), n=4, history=ref_history)
  assert int(one.step) == 4 and np.isfinite(metrics["train_loss"])
  for before, after in ((initial.logits, one.logits), (initial.params, one.params)):
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(before),
                                                     jax.tree_util.tree_leaves(after)))
  dist = ArchDistribution(toys.tiny_space(head=HeadSpec(conv5_width=16, head_width=16, dropout=0.0, num_classes=3)))
  for data, model in ((8, 1), (4, 2), (2, 4)):
    mesh = partitioning.make_mesh(data, model)
    _, step, state = tiny_setup("probabilistic")
    shardings = ss.state_shardings(state, mesh, TOY_RULE)
    split = [s.spec for s in jax.tree_util.tree_leaves(shardings.params) if any(s.spec)]
    assert any("data" in tuple(p) for p in split), (data, model)
    if model > 1:
      assert any("model" in tuple(p) for p in split), (data, model)
    placed = jax.device_put(state, shardings)
    for tree, sh in ((placed.params, shardings.params), (placed.weight_opt, shardings.weight_opt)):
      held = sum(next(s.data.nbytes for s in x.addressable_shards if s.device == jax.devices()[0])
                 for x in jax.tree_util.tree_leaves(tree))
      full = sum(x.nbytes for x in jax.tree_util.tree_leaves(tree))
      assert held == partitioning.bytes_per_device(tree, sh) < full
    history = []
    got, _ = run(step, state, mesh, n=4, rule=TOY_RULE, history=history)
    for ref, new in zip(ref_history, history):
      np.testing.assert_allclose(new["train_loss"], ref["train_loss"], rtol=1e-4, err_msg=f"{data}x{model}")
    for a, b in zip(jax.tree_util.tree_leaves(one.logits), jax.tree_util.tree_leaves(got.logits)):
      np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=f"{data}x{model}")
    for a, b in zip(jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(got.params)):
      np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5, err_msg=f"{data}x{model}")
    assert dist.mode(got.logits) == dist.mode(one.logits)


@pytest.mark.slow   # in CI's slow selection (.ci/run): two compiled search steps
def test_bf16_search_step_stays_close_to_float32():
  """train.dtype=bfloat16: the same 3 search steps as in float32 from the same state give losses
  within 5% (bf16 keeps 8 mantissa bits), while parameters, BN statistics, logits and both
  optimizer states stay float32; the step's matmuls run in bf16."""
  mesh = partitioning.make_mesh(1, devices=jax.devices())
  _, step32, state = tiny_setup("probabilistic")
  losses32, losses16 = [], []
  run(step32, state, mesh, n=3, history=losses32)
  _, step16, state = tiny_setup("probabilistic", dtype=jax.numpy.bfloat16)
  batch = next(batches(1))
  program = str(jax.make_jaxpr(step16)(state, batch, batch))
  assert "bf16[" in program and "dot_general" in program
  final, metrics = run(step16, state, mesh, n=3, history=losses16)
  for a, b in zip(losses32, losses16):
    assert b["train_loss"].dtype == np.float32
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=0.05)
  for tree in (final.params, final.batch_stats, final.logits, final.weight_opt, final.arch_opt):
    assert {x.dtype for x in jax.tree_util.tree_leaves(tree) if np.issubdtype(x.dtype, np.floating)} == {np.dtype(np.float32)}
