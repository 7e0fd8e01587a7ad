"""train/checkpoint.py: save / restore of a run state with JSON metadata, retention, restoring
without a target, and restoring into other shardings (8 simulated devices)."""
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from autox3d_jax.train import partitioning
from autox3d_jax.train.checkpoint import Checkpointer, abstract_like


@flax.struct.dataclass
class State:
  step: jax.Array
  params: dict
  rng: jax.Array


def make_state(step=0, seed=0):
  rng = np.random.default_rng(seed)
  return State(step=jnp.int32(step),
               params={"conv": {"kernel": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)},
                       "counts": jnp.arange(6, dtype=jnp.int32), "scale": jnp.float32(rng.normal())},
               rng=jax.random.PRNGKey(seed))


def assert_same(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture
def ckpt(tmp_path):
  c = Checkpointer(str(tmp_path / "ckpt"), keep=3)
  yield c
  c.close()


def test_empty_directory_has_no_step_and_restores_none(ckpt):
  assert ckpt.latest_step() is None
  assert ckpt.restore() is None
  assert ckpt.restore(abstract_like(make_state())) is None


def test_save_restore_round_trip_with_metadata(ckpt):
  state = make_state(step=7, seed=1)
  meta = {"data_position": 7, "history": [{"step": 5, "loss": 1.25}], "name": "X3D-S", "done": False}
  ckpt.save(7, state, meta)
  assert ckpt.latest_step() == 7
  restored, restored_meta = ckpt.restore(abstract_like(state))
  assert isinstance(restored, State)
  assert_same(restored, state)
  assert restored_meta == meta


def test_restore_picks_the_latest_or_the_given_step(ckpt, tmp_path):
  states = {s: make_state(step=s, seed=s) for s in (2, 4, 6)}
  for s, st in states.items():
    ckpt.save(s, st, {"step": s})
  like = abstract_like(states[2])
  latest, meta = ckpt.restore(like)
  assert int(latest.step) == 6 and meta == {"step": 6}
  assert_same(latest, states[6])
  older, meta = ckpt.restore(like, step=4)
  assert meta == {"step": 4}
  assert_same(older, states[4])
  # A new Checkpointer on the same directory (a restarted process) sees the same checkpoints.
  again = Checkpointer(ckpt.directory)
  try:
    assert again.latest_step() == 6
    assert_same(again.restore(like)[0], states[6])
  finally:
    again.close()


@pytest.mark.parametrize("keep", [1, 2])
def test_keep_bounds_the_number_of_checkpoints(tmp_path, keep):
  directory = str(tmp_path / "ckpt")
  c = Checkpointer(directory, keep=keep)
  try:
    for s in range(1, 6):
      c.save(s, make_state(step=s), {"step": s})
    expected = list(range(6 - keep, 6))
    assert list(c.manager.all_steps()) == expected
    assert sorted(int(n) for n in os.listdir(directory) if n.isdigit()) == expected
    assert c.latest_step() == 5
    assert c.restore(step=6 - keep)[1] == {"step": 6 - keep}
  finally:
    c.close()


def test_restore_without_a_target_returns_nested_dicts_of_the_saved_values(ckpt):
  state = make_state(step=3, seed=2)
  ckpt.save(3, state, {"k": 1})
  restored, meta = ckpt.restore()
  assert meta == {"k": 1}
  assert isinstance(restored, dict) and set(restored) == {"step", "params", "rng"}
  assert isinstance(restored["params"], dict) and set(restored["params"]) == {"conv", "counts", "scale"}
  assert_same(restored, flax.serialization.to_state_dict(state))


def test_restore_into_other_shardings(ckpt):
  """Saved sharded on a data=8 mesh, restored into a 4 x 2 mesh with the kernel split on 'model'
  (and the other way round): values equal, each array in its target sharding."""
  assert jax.device_count() == 8
  state = make_state(step=1, seed=3)
  mesh8 = partitioning.make_mesh()
  mesh42 = partitioning.make_mesh(4, 2)
  assert dict(mesh42.shape) == {"data": 4, "model": 2}

  def shardings(mesh, kernel_spec):
    rep = partitioning.replicated(mesh)
    return State(step=rep, params={"conv": {"kernel": NamedSharding(mesh, kernel_spec)}, "counts": rep, "scale": rep},
                 rng=rep)

  saved_sh = shardings(mesh8, P("data"))
  ckpt.save(1, jax.device_put(state, saved_sh), {})
  for target in (shardings(mesh42, P(None, "model")), shardings(mesh42, P("data", "model")), shardings(mesh8, P())):
    restored, _ = ckpt.restore(abstract_like(state, target))
    assert_same(restored, state)
    for leaf, sh in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(target)):
      assert leaf.sharding == sh
    kernel = restored.params["conv"]["kernel"]
    expected_shard = target.params["conv"]["kernel"].shard_shape(kernel.shape)
    assert {s.data.shape for s in kernel.addressable_shards} == {expected_shard}


def test_abstract_like_describes_the_state():
  state = make_state()
  plain = abstract_like(state)
  assert isinstance(plain, State)
  for s, x in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(state)):
    assert isinstance(s, jax.ShapeDtypeStruct) and (s.shape, s.dtype) == (x.shape, x.dtype)
  mesh = partitioning.make_mesh(4, 2)
  rep = partitioning.replicated(mesh)
  sharded = abstract_like(state, jax.tree_util.tree_map(lambda _: rep, state))
  assert all(s.sharding == rep for s in jax.tree_util.tree_leaves(sharded))
