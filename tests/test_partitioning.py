"""train/partitioning.py on the 8 simulated devices: the mesh, the parameter rule, optimizer-state
shardings (moments follow their parameters), the global batch, and both loops' state shardings."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from autox3d_jax import config as config_lib
from autox3d_jax.train import partitioning
from autox3d_jax.train import search_step, train_loop
from autox3d_jax.train.optim import make_arch_optimizer, make_optimizer

SPLIT = P(None, None, "model")


def params_tree():
  """One kernel the rule splits (2^18 elements, last axis 64) and three it must not: too small, an
  odd last axis, 1-D."""
  return {"big": {"kernel": jnp.ones((64, 64, 64), jnp.float32)},
          "odd": {"kernel": jnp.ones((512, 513), jnp.float32)},
          "small": {"kernel": jnp.ones((4, 8), jnp.float32), "bias": jnp.ones((8,), jnp.float32)},
          "long_bias": jnp.ones((2 ** 18,), jnp.float32)}


@pytest.fixture(scope="module")
def mesh42():
  return partitioning.make_mesh(4, 2)


def specs(shardings):
  return jax.tree_util.tree_map(lambda s: s.spec, shardings)


# -------------------------------------------------------------------------------------------- mesh
def test_make_mesh_shapes():
  assert jax.device_count() == 8
  assert dict(partitioning.make_mesh().shape) == {"data": 8, "model": 1}
  assert dict(partitioning.make_mesh(model=2).shape) == {"data": 4, "model": 2}
  assert dict(partitioning.make_mesh(2, 4).shape) == {"data": 2, "model": 4}
  assert partitioning.make_mesh().axis_names == ("data", "model")
  one = partitioning.make_mesh(1, devices=jax.devices())
  assert dict(one.shape) == {"data": 1, "model": 1} and list(one.devices.flat) == jax.devices()[:1]
  four = partitioning.make_mesh(2, 2, devices=jax.devices())
  assert dict(four.shape) == {"data": 2, "model": 2} and list(four.devices.flat) == jax.devices()[:4]
  half = partitioning.make_mesh(model=2, devices=jax.devices()[:4])
  assert dict(half.shape) == {"data": 2, "model": 2}


@pytest.mark.parametrize("data, model", [(2, 1), (3, 2), (None, 3), (16, 1)])
def test_make_mesh_rejects_a_shape_that_does_not_cover_the_devices(data, model):
  with pytest.raises(ValueError, match=rf"mesh data={data or 8 // model} x model={model} does not cover the 8 devices"):
    partitioning.make_mesh(data, model)


@pytest.mark.parametrize("data, model", [(4, 2), (3, 3)])
def test_make_mesh_with_too_few_given_devices_is_an_error(data, model):
  """Asking for data x model out of fewer devices must fail, not return a smaller mesh (4 x 2 of 4
  devices gave a 2 x 2 mesh) or a numpy reshape error."""
  with pytest.raises(ValueError, match=f"data={data} x model={model}"):
    partitioning.make_mesh(data, model, devices=jax.devices()[:4])


# ------------------------------------------------------------------------------------------ params
TP_ONLY = partitioning.ShardingRule(fsdp=False, min_size=2 ** 18)


def test_tensor_parallel_splits_exactly_the_large_kernels_divisible_by_model(mesh42):
  shardings = partitioning.param_shardings(params_tree(), mesh42, TP_ONLY)
  assert specs(shardings) == {"big": {"kernel": SPLIT}, "odd": {"kernel": P()},
                              "small": {"kernel": P(), "bias": P()}, "long_bias": P()}
  assert all(s.mesh == mesh42 for s in jax.tree_util.tree_leaves(shardings))
  placed = jax.device_put(params_tree(), shardings)
  assert {s.data.shape for s in placed["big"]["kernel"].addressable_shards} == {(64, 64, 32)}
  # min_size is the threshold: lowered, the small kernel (last axis 8) is split too.
  assert specs(partitioning.param_shardings(params_tree(), mesh42, TP_ONLY, min_size=32))["small"]["kernel"] == \
      P(None, "model")


def test_tensor_parallel_only_replicates_everything_when_model_is_one():
  mesh = partitioning.make_mesh()
  shardings = partitioning.param_shardings(params_tree(), mesh, TP_ONLY)
  assert all(s.spec == P() for s in jax.tree_util.tree_leaves(shardings))


def test_fsdp_splits_the_largest_free_axis_over_data(mesh42):
  """The default rule: the output axis on 'model' where it divides, then the largest remaining axis
  that divides the data axis (4) on 'data'; arrays below min_size replicated."""
  rule = partitioning.ShardingRule(fsdp=True, min_size=2 ** 14)
  assert specs(partitioning.param_shardings(params_tree(), mesh42, rule)) == {
      "big": {"kernel": P("data", None, "model")}, "odd": {"kernel": P("data", None)},
      "small": {"kernel": P(), "bias": P()}, "long_bias": P("data")}
  eight = partitioning.make_mesh()     # 8 x 1: FSDP over all eight devices
  assert specs(partitioning.param_shardings(params_tree(), eight, rule)) == {
      "big": {"kernel": P("data", None, None)}, "odd": {"kernel": P("data", None)},
      "small": {"kernel": P(), "bias": P()}, "long_bias": P("data")}
  # The output axis taken by 'model', no other axis divides by 4: tensor-parallel only.
  assert rule.spec((3, 5, 4 * 4096), mesh42) == P(None, None, "model")
  # An axis that divides neither stays whole: (7, 9, 4099) splits nothing.
  assert rule.spec((7, 9, 4099), mesh42) == P()


def test_bytes_per_device_shrink_by_the_split_axes(mesh42):
  """Per-device bytes of the placed arrays equal `bytes_per_device`, and a split array costs
  1 / (product of its split axes' sizes) of its full size."""
  rule = partitioning.ShardingRule(fsdp=True, min_size=2 ** 14)
  params = params_tree()
  shardings = partitioning.param_shardings(params, mesh42, rule)
  placed = jax.device_put(params, shardings)
  on_device0 = sum(next(s.data.nbytes for s in x.addressable_shards if s.device == jax.devices()[0])
                   for x in jax.tree_util.tree_leaves(placed))
  assert on_device0 == partitioning.bytes_per_device(params, shardings)
  full = {k: x.nbytes for k, x in jax.tree_util.tree_leaves_with_path(params)}
  for (path, x), s in zip(jax.tree_util.tree_leaves_with_path(placed), jax.tree_util.tree_leaves(shardings)):
    factor = int(np.prod([mesh42.shape[a] for a in s.spec if a is not None]))
    assert x.addressable_shards[0].data.nbytes * factor == full[path], jax.tree_util.keystr(path)
  report = partitioning.describe(params, shardings)
  assert "3 of 5 arrays split" in report and "['big']['kernel'] (64, 64, 64)" in report


def test_a_model_axis_that_divides_no_parameter_is_an_error(mesh42):
  rule = partitioning.ShardingRule(fsdp=True, min_size=16)
  partitioning.check_model_axis(params_tree(), mesh42, rule)       # 'big' splits on model: fine
  odd = {"a": jnp.ones((9, 7)), "b": jnp.ones((5, 13))}
  with pytest.raises(partitioning.MeshRuleError, match=r"config.mesh.model = 2 divides no parameter.*\[7, 13\]"):
    partitioning.check_model_axis(odd, mesh42, rule)
  partitioning.check_model_axis(odd, partitioning.make_mesh(), rule)   # model = 1: nothing to check


# ------------------------------------------------------------------------------------ optimizer
def moment_paths(opt_state):
  """Leaves of opt_state whose path goes through a params-shaped moment field, as
  (path to the moment, path inside it)."""
  out = []
  for path, _ in jax.tree_util.tree_leaves_with_path(opt_state):
    names = [getattr(k, "name", None) for k in path]
    for i, name in enumerate(names):
      if name in ("trace", "mu", "nu"):
        out.append((path[:i + 1], path[i + 1:]))
  return out


@pytest.mark.parametrize("make_tx, moments", [
    (lambda: optax.chain(optax.identity(), optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9)), {"trace"}),
    (lambda: optax.adam(1e-3), {"mu", "nu"}),
    (lambda: make_optimizer(config_lib.base_config().search.weight_opt, 100), {"trace"}),
], ids=["sgd_momentum_chain", "adam", "make_optimizer"])
def test_optimizer_moments_get_exactly_the_params_shardings(mesh42, make_tx, moments):
  params = params_tree()
  params_sh = partitioning.param_shardings(params, mesh42, TP_ONLY)
  tx = make_tx()
  opt_state = tx.init(params)
  shardings = partitioning.optimizer_shardings(opt_state, params, params_sh, mesh42)
  assert jax.tree_util.tree_structure(shardings) == jax.tree_util.tree_structure(
      jax.tree_util.tree_map(lambda _: 0, opt_state))
  found = set()
  by_path = dict(jax.tree_util.tree_leaves_with_path(shardings))
  moment_leaves = set()
  for moment, inner in moment_paths(opt_state):
    found.add(moment[-1].name)
    moment_leaves.add(moment + inner)
    expected = params_sh
    for k in inner:
      expected = expected[k.key]
    assert by_path[moment + inner] == expected, jax.tree_util.keystr(moment + inner)
  assert found == moments
  # Everything else (counts) is replicated.
  others = [s for path, s in by_path.items() if path not in moment_leaves]
  assert all(s == partitioning.replicated(mesh42) for s in others)
  if "mu" in moments:
    assert others, "adam's count"
  # The split kernel's moment really is split: a replicate-everything rule fails here.
  placed = jax.device_put(opt_state, shardings)
  moment_state = [s for s in jax.tree_util.tree_leaves(placed, is_leaf=lambda n: hasattr(n, "_fields"))
                  if hasattr(s, "_fields") and set(s._fields) & moments][0]
  big = getattr(moment_state, sorted(moments)[0])["big"]["kernel"]
  assert big.sharding.spec == SPLIT and {s.data.shape for s in big.addressable_shards} == {(64, 64, 32)}
  # And a jitted update keeps them there.
  step = jax.jit(lambda g, s, p: tx.update(g, s, p), out_shardings=(params_sh, shardings))
  _, new_state = step(jax.device_put(params, params_sh), placed, jax.device_put(params, params_sh))
  assert jax.tree_util.tree_map(lambda a: a.sharding, new_state) == shardings


def test_optimizer_shardings_of_a_single_array_params_replicate_the_count(mesh42):
  """A bare array as params: every leaf has params' (leaf) tree structure, but only the moments
  are params-shaped; Adam's scalar count must stay replicated."""
  params = jnp.ones((64, 64, 64), jnp.float32)
  params_sh = partitioning.param_shardings(params, mesh42, TP_ONLY)
  opt_state = optax.adam(1e-3).init(params)
  shardings = partitioning.optimizer_shardings(opt_state, params, params_sh, mesh42)
  assert shardings[0].count == partitioning.replicated(mesh42)
  assert shardings[0].mu == params_sh == shardings[0].nu
  jax.device_put(opt_state, shardings)


# ---------------------------------------------------------------------------------------- batch
@pytest.mark.parametrize("data, model", [(8, 1), (4, 2)])
def test_global_batch_shards_rows_on_data(data, model):
  mesh = partitioning.make_mesh(data, model)
  local = {"video": np.arange(16 * 2 * 3, dtype=np.float32).reshape(16, 2, 3), "label": np.arange(16, dtype=np.int32)}
  batch = partitioning.global_batch(local, mesh)
  assert set(batch) == {"video", "label"}
  for key, value in batch.items():
    assert value.sharding == partitioning.batch_sharding(mesh) and value.sharding.spec == P("data")
    np.testing.assert_array_equal(np.asarray(value), local[key])
    assert len(value.addressable_shards) == 8
    rows = 16 // data
    for shard in value.addressable_shards:
      start = shard.index[0].start or 0
      assert shard.data.shape[0] == rows and start % rows == 0
      np.testing.assert_array_equal(np.asarray(shard.data), local[key][start:start + rows])


# ------------------------------------------------------------------------------- loops' states
def test_search_state_shardings_follow_the_params_for_the_weight_optimizer(mesh42):
  cfg = config_lib.base_config()
  params = {"big": {"kernel": jnp.ones((64, 64, 64), jnp.float32)}, "small": {"kernel": jnp.ones((4, 8))}}
  logits = {"s1_width": jnp.zeros(3), "s1_depth": jnp.zeros(2)}
  w_tx = make_optimizer(cfg.search.weight_opt, 100)
  a_tx = make_arch_optimizer(cfg.search.arch_opt)
  state = search_step.SearchState(step=jnp.int32(0), params=params, batch_stats={"bn": {"mean": jnp.zeros(64)}},
                                  weight_opt=w_tx.init(params), logits=logits, arch_opt=a_tx.init(logits),
                                  strategy={"baseline": jnp.float32(0.0)}, rng=jax.random.PRNGKey(0))
  sh = search_step.state_shardings(state, mesh42, TP_ONLY)
  params_sh = partitioning.param_shardings(params, mesh42, TP_ONLY)
  assert sh.params == params_sh and sh.params["big"]["kernel"].spec == SPLIT
  trace = [s for s in jax.tree_util.tree_leaves(sh.weight_opt, is_leaf=lambda n: isinstance(n, optax.TraceState))
           if isinstance(s, optax.TraceState)]
  assert len(trace) == 1 and trace[0].trace == params_sh
  rep = partitioning.replicated(mesh42)
  for field in ("step", "batch_stats", "logits", "arch_opt", "strategy", "rng"):
    assert all(s == rep for s in jax.tree_util.tree_leaves(getattr(sh, field))), field
  placed = jax.device_put(state, sh)
  assert placed.weight_opt[2][0].trace["big"]["kernel"].sharding.spec == SPLIT


def test_train_state_shardings_follow_the_params_for_the_optimizer(mesh42):
  cfg = config_lib.base_config()
  params = {"big": {"kernel": jnp.ones((64, 64, 64), jnp.float32)}, "small": {"kernel": jnp.ones((4, 8))}}
  tx = make_optimizer(cfg.train.optimizer, 100)
  state = train_loop.TrainState(jnp.int32(0), params, {"bn": {"var": jnp.ones(64)}}, tx.init(params),
                                jax.random.PRNGKey(0))
  sh = train_loop.state_shardings(state, mesh42, TP_ONLY)
  params_sh = partitioning.param_shardings(params, mesh42, TP_ONLY)
  assert sh.params == params_sh
  trace = [s for s in jax.tree_util.tree_leaves(sh.opt_state, is_leaf=lambda n: isinstance(n, optax.TraceState))
           if isinstance(s, optax.TraceState)]
  assert len(trace) == 1 and trace[0].trace == params_sh and trace[0].trace["big"]["kernel"].spec == SPLIT
  rep = partitioning.replicated(mesh42)
  assert sh.step == rep and sh.rng == rep and all(s == rep for s in jax.tree_util.tree_leaves(sh.batch_stats))
  jax.device_put(state, sh)
