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


def tiny_setup(strategy="probabilistic", num_groups=2, **search):
  cfg = config_lib.base_config()
  overrides = {"strategy": strategy, "num_groups": num_groups, "arch_warmup_steps": 1, "penalty": "none",
               "weight_opt.lr": 0.05, "arch_opt.lr": 0.1, "steps": 10, **search}
  if strategy in ("dnas", "gdas", "msg"):
    overrides.setdefault(f"{strategy}.tau_decay", 0.0)
  toys.set_keys(cfg.search, overrides)
  space = toys.tiny_space(head=HeadSpec(conv5_width=16, head_width=16, dropout=0.0, num_classes=3))
  dist = ArchDistribution(space)
  table = CostTable.build(space)
  strategy = search_loop.make_strategy(cfg, dist, table, cost_target=0.0)
  model = sn.Supernet(space)
  w_tx = make_optimizer(cfg.search.weight_opt, cfg.search.steps)
  a_tx = make_arch_optimizer(cfg.search.arch_opt)
  step = ss.make_search_step(model, dist, strategy, w_tx, a_tx, cfg, table)
  state = ss.init_search_state(model, dist, strategy, w_tx, a_tx, seed=0)
  return cfg, step, state


def batches(n, batch=8, seed=0):
  return toys.batches(n, batch=batch, classes=3, shape=(4, 16, 16, 3), seed=seed)


def run(step, state, mesh, n=3):
  jitted, _ = ss.jit_search_step(step, state, mesh)
  state = jax.device_put(state, ss.state_shardings(state, mesh))
  metrics = None
  for train, val in zip(batches(n, seed=0), batches(n, seed=1)):
    state, metrics = jitted(state, partitioning.global_batch(train, mesh), partitioning.global_batch(val, mesh))
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


@pytest.mark.slow   # in CI's slow selection (.ci/run), out of the default suite for its time (RESULTS.md)
def test_one_device_and_eight_devices_agree():
  """The probabilistic search step runs, updates weights and logits, and gives the same result on
  one device as on eight."""
  assert jax.device_count() == 8
  _, step, state = tiny_setup("probabilistic")
  initial = jax.device_get(state)
  one, metrics = run(step, state, partitioning.make_mesh(1, devices=jax.devices()))
  assert int(one.step) == 3 and np.isfinite(metrics["train_loss"])
  for before, after in ((initial.logits, one.logits), (initial.params, one.params)):
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(before),
                                                     jax.tree_util.tree_leaves(after)))
  _, step, state = tiny_setup("probabilistic")
  eight, _ = run(step, state, partitioning.make_mesh())
  for a, b in zip(jax.tree_util.tree_leaves(one.logits), jax.tree_util.tree_leaves(eight.logits)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(eight.params)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
