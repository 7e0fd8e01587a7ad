"""The supernet: the core invariant (one-hot supernet == derived standalone network)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autox3d_jax.models import builder, zoo
from autox3d_jax.models.spec import HeadSpec, StemSpec
from autox3d_jax.search import derive as derive_lib
from autox3d_jax.search import supernet as sn
from autox3d_jax.search.space import Op, SearchSpace, space_config, x3d_space_config

ALL_OPS = (Op("x3d", (3, 3, 3)), Op("x3d", (5, 3, 3)), Op("x3d", (3, 5, 5)), Op("x2d", (1, 3, 3)),
           Op("r2plus1d", (3, 3, 3)), Op("csn", (3, 3, 3)), Op("stm", (3, 3, 3)), Op("tea", (3, 3, 3)))


def toy_space(ops=ALL_OPS):
  return SearchSpace(space_config(
      num_frames=4, crop_size=32, stem=StemSpec(width=8), stage_widths=((8, 12, 16), (16, 24, 32)),
      min_depths=(1, 1), max_depths=(2, 3), expansions=(1.5, 2.25, 3.0), se_ratios=(0.0, 1 / 16, 1 / 4),
      ops=ops, head=HeadSpec(conv5_width=24, head_width=32, dropout=0.5, num_classes=5)))


def random_point(space, rng):
  return {d.label: int(rng.integers(d.size)) for d in space.decisions}


def randomize(variables, seed):
  """Random params and BN statistics, so equal outputs cannot come from trivial values. numpy's
  generator, not jax.random: one jax.random call per leaf shape would be one compile each."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
  rng = np.random.default_rng(seed)
  out = []
  for path, leaf in leaves:
    name = str(path[-1])
    if "var" in name:
      out.append(rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32))
    elif "scale" in name:
      out.append((1.0 + 0.3 * rng.standard_normal(leaf.shape)).astype(np.float32))
    else:
      out.append((0.3 * rng.standard_normal(leaf.shape)).astype(np.float32))
  return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in out])


# ---------------------------------------------------------------------------------------- supernet
@pytest.fixture(scope="module")
def toy_supernet():
  space = toy_space()
  model = sn.Supernet(space)
  variables = randomize(sn.init_supernet(space, jax.random.PRNGKey(0)), seed=1)
  return space, model, variables


def _points(space, n, seed):
  rng = np.random.default_rng(seed)
  points = [random_point(space, rng) for _ in range(n)]
  # Make sure every op is exercised in some kept block, and the largest / smallest points too.
  for k in range(len(space.config.ops)):
    p = random_point(space, rng)
    p["s1_b1_op"] = k
    points.append(p)
  points.append(space.largest_point())
  points.append({d.label: 0 for d in space.decisions})
  return points


@pytest.mark.slow   # in CI's slow selection; eval-mode one-hot equality stays in the default suite through
# test_multitask's and test_input_axes' one-hot tests, train mode through the test below
def test_one_hot_supernet_equals_derived_network_eval(toy_supernet):
  space, model, variables = toy_supernet
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 32, 32, 3))
  run_super = jax.jit(lambda v, x, a: model.apply(v, x, a, False))
  for point in _points(space, 6, seed=0):
    spec, child_vars = derive_lib.derive(space, point, variables)
    expected = builder.build(spec).apply(child_vars, x, train=False)
    got = run_super(variables, x, sn.one_hot_arch(space, point))
    err = float(jnp.max(jnp.abs(got - expected)) / jnp.max(jnp.abs(expected)))
    assert err < 1e-4, (err, point)


def test_one_hot_supernet_equals_derived_network_train(toy_supernet):
  space, model, variables = toy_supernet
  x = jax.random.normal(jax.random.PRNGKey(4), (2, 4, 32, 32, 3))
  rng = {"dropout": jax.random.PRNGKey(5)}
  # The supernet compiled once (the arch is an argument); each derived network runs op by op.
  run_super = jax.jit(lambda v, x, a: model.apply(v, x, a, True, rngs=rng, mutable=["batch_stats"]))
  for point in _points(space, 3, seed=1)[-5:]:
    spec, child_vars = derive_lib.derive(space, point, variables)
    expected, child_updates = builder.build(spec).apply(child_vars, x, train=True, rngs=rng,
                                                        mutable=["batch_stats"])
    got, super_updates = run_super(variables, x, sn.one_hot_arch(space, point))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(expected))))
    updated = {**variables, "batch_stats": super_updates["batch_stats"]}
    _, inherited = derive_lib.derive(space, point, updated)
    for a, b in zip(jax.tree_util.tree_leaves(inherited["batch_stats"]),
                    jax.tree_util.tree_leaves(child_updates["batch_stats"])):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow   # in CI's slow selection (.ci/run), out of the default suite for its time (RESULTS.md)
def test_x3d_s_is_reproduced_by_a_supernet_over_its_space():
  """X3D-S itself through a (narrow) supernet: same logits as the zoo network with inherited weights."""
  config = x3d_space_config("S", num_frames=4, crop_size=32, min_depths=(1, 1, 1, 1),
                            max_depths=(3, 5, 11, 7), ops=(Op("x3d", (3, 3, 3)), Op("x2d", (1, 3, 3))),
                            stage_widths=((16, 24), (48,), (96,), (192, 128)), expansions=(2.25, 3.0),
                            head=HeadSpec(num_classes=10))
  space = SearchSpace(config)
  target = zoo.x3d("S", num_classes=10, num_frames=4, crop_size=32)
  point = space.point_of(target)
  variables = randomize(sn.init_supernet(space, jax.random.PRNGKey(0)), seed=2)
  spec, child = derive_lib.derive(space, point, variables, name=target.name)
  assert spec == target
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 4, 32, 32, 3))
  expected = builder.build(spec).apply(child, x)
  got = sn.Supernet(space).apply(variables, x, sn.one_hot_arch(space, point), False)
  assert float(jnp.max(jnp.abs(got - expected)) / jnp.max(jnp.abs(expected))) < 1e-4


@pytest.mark.slow   # in CI's slow selection (.ci/run), out of the default suite for its time (RESULTS.md)
def test_groups_run_different_architectures_in_one_forward(toy_supernet):
  space, model, variables = toy_supernet
  rng = np.random.default_rng(7)
  points = [random_point(space, rng) for _ in range(2)]
  archs = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[sn.one_hot_arch(space, p) for p in points])
  x = jax.random.normal(jax.random.PRNGKey(6), (4, 4, 32, 32, 3))
  logits, _ = sn.apply_groups(model, variables, x, archs, train=False)
  for g, p in enumerate(points):
    alone = model.apply(variables, x[2 * g:2 * g + 2], sn.one_hot_arch(space, p), False)
    np.testing.assert_allclose(logits[2 * g:2 * g + 2], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.slow   # ~50 s of compiles; in CI's slow selection (.ci/run)
def test_exclusive_routing_equals_the_gated_sum():
  """Running only the sampled family (lax.switch, groups via lax.map) gives the gated sum's logits,
  BN statistics updates and parameter gradients for one-hot archs, K groups at once."""
  space = SearchSpace(space_config(
      num_frames=4, crop_size=16, stem=StemSpec(width=8), stage_widths=((8, 12), (16, 24)),
      min_depths=(1, 1), max_depths=(1, 2), expansions=(1.5, 3.0), se_ratios=(0.0, 1 / 4),
      ops=(Op("x3d", (3, 3, 3)), Op("x2d", (1, 3, 3)), Op("r2plus1d", (3, 3, 3)), Op("stm", (3, 3, 3))),
      head=HeadSpec(conv5_width=16, head_width=16, dropout=0.5, num_classes=5)))
  model, exclusive = sn.Supernet(space), sn.Supernet(space, exclusive=True)
  variables = randomize(sn.init_supernet(space, jax.random.PRNGKey(0)), seed=1)
  rng = np.random.default_rng(11)
  points = [random_point(space, rng) for _ in range(2)]
  points[0]["s1_b1_op"], points[1]["s1_b1_op"] = 1, 2          # x3d family and r2plus1d
  archs = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[sn.one_hot_arch(space, p) for p in points])
  x = jax.random.normal(jax.random.PRNGKey(12), (4, 4, 16, 16, 3))
  labels = jnp.array([0, 1, 2, 3])

  def loss(m, params):
    logits, stats = sn.apply_groups(m, {**variables, "params": params}, x, archs, train=True,
                                    rngs={"dropout": jax.random.PRNGKey(13)})
    ce = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])
    return ce, (logits, stats)

  results = [jax.jit(jax.value_and_grad(lambda p, m=m: loss(m, p), has_aux=True))(variables["params"])
             for m in (model, exclusive)]
  (l_mix, (lg_mix, st_mix)), g_mix = results[0]
  (l_exc, (lg_exc, st_exc)), g_exc = results[1]
  np.testing.assert_allclose(lg_exc, lg_mix, rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(st_exc), jax.tree_util.tree_leaves(st_mix)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(g_mix))
  for a, b in zip(jax.tree_util.tree_leaves(g_exc), jax.tree_util.tree_leaves(g_mix)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * scale)
  # The unsampled families really were skipped: their parameters get exactly zero gradient.
  assert float(jnp.max(jnp.abs(g_exc["s1_b1"]["stm"]["conv_b"]["stm_333"]))) == 0.0


@pytest.mark.slow   # in CI's slow selection (.ci/run), out of the default suite for its time (RESULTS.md)
def test_soft_arch_weights_are_differentiable(toy_supernet):
  space, model, variables = toy_supernet
  x = jax.random.normal(jax.random.PRNGKey(8), (2, 4, 32, 32, 3))
  logits0 = {d.label: jnp.zeros(d.size) for d in space.decisions}

  def loss(logits):
    arch = {k: jax.nn.softmax(v) for k, v in logits.items()}
    return jnp.mean(model.apply(variables, x, arch, False) ** 2)

  grads = jax.grad(loss)(logits0)
  nonzero = [k for k, g in grads.items() if float(jnp.max(jnp.abs(g))) > 0]
  assert {"s1_width", "s2_b1_op", "s2_b1_expansion", "s2_b1_se", "s2_depth"} <= set(nonzero)


@pytest.mark.slow
def test_bn_recalibration_recovers_a_paths_own_statistics(toy_supernet):
  """SPOS recalibration: after reset-and-recalibrate on batches, a one-hot path's BN statistics are
  the mean of the per-batch statistics of that path, so the derived network evaluates as if its BN
  had been estimated on those batches directly."""
  from autox3d_jax.search.recalibrate import make_point_scorer
  space, model, variables = toy_supernet
  point = random_point(space, np.random.default_rng(11))
  batches = [{"video": np.asarray(jax.random.normal(jax.random.PRNGKey(20 + i), (4, 4, 32, 32, 3))),
              "label": np.array([0, 1, 2, 3])} for i in range(2)]
  score = make_point_scorer(model, space, variables, batches, batches)
  acc = score([point])[0]
  assert 0.0 <= acc <= 1.0
  # Reference: the derived standalone network's train-mode batch statistics, averaged.
  spec, child = derive_lib.derive(space, point, variables)
  net = builder.build(spec)
  per_batch = []
  for b in batches:
    reset = jax.tree_util.tree_map(lambda s: s, child["batch_stats"])
    reset = jax.tree_util.tree_map_with_path(
        lambda p, s: jnp.zeros_like(s) if "mean" in str(p[-1]) else jnp.ones_like(s), reset)
    _, upd = net.apply({"params": child["params"], "batch_stats": reset}, jnp.asarray(b["video"]), train=True,
                       mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(0)})
    per_batch.append(jax.tree_util.tree_map_with_path(
        lambda p, s: s / 0.1 if "mean" in str(p[-1]) else (s - 0.9) / 0.1, upd["batch_stats"]))
  expected = jax.tree_util.tree_map(lambda *s: jnp.mean(jnp.stack(s), 0), *per_batch)
  logits_ref = net.apply({"params": child["params"], "batch_stats": expected}, jnp.asarray(batches[0]["video"]))
  hits = int(jnp.sum(jnp.argmax(logits_ref, -1) == batches[0]["label"])) + int(
      jnp.sum(jnp.argmax(net.apply({"params": child["params"], "batch_stats": expected},
                                   jnp.asarray(batches[1]["video"])), -1) == batches[1]["label"]))
  assert acc == pytest.approx(hits / 8)
  # Clips masked out (the evaluation pipeline's padding) do not count.
  padded = {**batches[1], "mask": np.zeros(4, bool)}
  assert make_point_scorer(model, space, variables, batches, batches + [padded])([point])[0] == pytest.approx(acc)
  # The arch scorer (soft weights too) at the point's one-hot weights, through the gated sum: the same.
  from autox3d_jax.search.recalibrate import make_arch_scorer
  score_arch = make_arch_scorer(model.clone(exclusive=False), variables, batches, batches)
  assert score_arch(sn.one_hot_arch(space, point)) == pytest.approx(acc)
  assert 0.0 <= score_arch(sn.uniform_arch(space)) <= 1.0
