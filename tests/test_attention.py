"""The attention and MLP block types: their math against direct loops, the space's checks on them,
and the supernet invariant (one-hot supernet == derived network) with multi-head sharing, next to
the conv types they are searched with (ip-CSN, STM and TEA among them)."""
import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autox3d_jax import labels
from autox3d_jax.cost.analytic import arch_cost, count_params
from autox3d_jax.models import attention, builder, registry
from autox3d_jax.models.spec import BlockSpec, HeadSpec, SpecError, StemSpec
from autox3d_jax.search import derive as derive_lib
from autox3d_jax.search import supernet as sn
from autox3d_jax.search.space import Op, SearchSpace, ops_from_strings, space_config

from test_supernet import randomize


def _heads_of(c, heads):
  """Channel indices of each head (interleaved: channel c is in head c mod heads)."""
  return [np.arange(h, c, heads) for h in range(heads)]


def _softmax(s):
  e = np.exp(s - s.max())
  return e / e.sum()


def naive_window_attention(q, k, v, heads, window, table):
  """Direct loops: every query attends to the real positions of its window (windows tile the map from
  the origin, clipped to the map), score scaled by 1/sqrt(d) plus the table's bias at offset q - k."""
  n, t, h, w, c = q.shape
  e = [min(a, b) for a, b in zip(window, (t, h, w))]
  sizes = [2 * a - 1 for a in window]
  out = np.zeros_like(q)
  positions = list(itertools.product(range(t), range(h), range(w)))
  for b in range(n):
    for p in positions:
      keys = [r for r in positions if all(r[a] // e[a] == p[a] // e[a] for a in range(3))]
      for head, ch in enumerate(_heads_of(c, heads)):
        scores = []
        for r in keys:
          off = [p[a] % e[a] - r[a] % e[a] + window[a] - 1 for a in range(3)]
          index = (off[0] * sizes[1] + off[1]) * sizes[2] + off[2]
          scores.append(q[(b,) + p][ch] @ k[(b,) + r][ch] / math.sqrt(len(ch)) + table[index, head])
        probs = _softmax(np.array(scores))
        out[(b,) + p + (ch,)] = sum(pr * v[(b,) + r][ch] for pr, r in zip(probs, keys))
  return out


def _qkv(shape, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=shape).astype(np.float32) for _ in range(3)]


@pytest.mark.parametrize("window", [(2, 2, 2), (1, 3, 2), (4, 5, 5)])   # divides; pads; clipped to the map
def test_window_attention_equals_direct_loops(window):
  q, k, v = _qkv((1, 3, 4, 5, 6))
  heads = 2
  table = np.random.default_rng(1).normal(size=(attention.bias_table_size(window), heads)).astype(np.float32)
  got = attention.window_attention(q, k, v, heads, window, jnp.asarray(table), 1 / math.sqrt(3))
  np.testing.assert_allclose(got, naive_window_attention(q, k, v, heads, window, table), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("budget_windows", [1, 3])   # one window per step; 3 per step, the last chunk padded
def test_windows_beyond_the_score_budget_run_in_chunks_with_the_same_values_and_gradients(budget_windows, monkeypatch):
  """With the budget at one (or three) windows' scores, window attention maps over chunks of
  windows (rematerialised): outputs and the gradients w.r.t. q, k, v and the bias table equal the
  all-at-once computation, padded windows included."""
  q, k, v = (jnp.asarray(a) for a in _qkv((2, 3, 4, 5, 6)))
  window, heads = (1, 3, 2), 2
  table = jnp.asarray(np.random.default_rng(1).normal(size=(attention.bias_table_size(window), heads)), jnp.float32)

  def loss(q, k, v, table):
    return jnp.sum(jnp.sin(attention.window_attention(q, k, v, heads, window, table, 0.5)))
  run = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))
  whole = run(q, k, v, table)
  size = 3 * 2
  windows = 2 * 3 * 2 * 3                                          # clips x t x h-windows x w-windows
  assert attention.window_chunk(windows, size, heads, 4) == windows
  monkeypatch.setattr(attention, "SCORE_BUDGET_BYTES", budget_windows * size * size * heads * 4)
  assert attention.window_chunk(windows, size, heads, 4) == budget_windows
  chunked = jax.jit(run)(q, k, v, table)
  for a, b in zip(jax.tree_util.tree_leaves(chunked), jax.tree_util.tree_leaves(whole)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  lowered = jax.jit(run).lower(q, k, v, table).as_text()
  assert "while" in lowered                                        # the chunks run in a loop


def test_axis_attention_equals_direct_loops():
  q, k, v = _qkv((1, 3, 4, 5, 4), seed=2)
  heads, span = 2, 3
  table = np.random.default_rng(3).normal(size=(2 * (span // 2) + 1, heads)).astype(np.float32)
  for axis in (1, 2, 3):
    got = np.asarray(attention.axis_attention(q, k, v, heads, axis, span, jnp.asarray(table), 1 / math.sqrt(2)))
    length = q.shape[axis]
    for p in itertools.product(*[range(s) for s in q.shape[:4]]):
      for head, ch in enumerate(_heads_of(4, heads)):
        keys = [p[:axis] + (j,) + p[axis + 1:] for j in range(length)]
        scores = [q[p][ch] @ k[r][ch] / math.sqrt(2) + table[np.clip(r[axis] - p[axis], -1, 1) + 1, head]
                  for r in keys]
        expected = sum(pr * v[r][ch] for pr, r in zip(_softmax(np.array(scores)), keys))
        np.testing.assert_allclose(got[p][ch], expected, rtol=1e-4, atol=1e-5)


def test_window_mlp_equals_direct_loops_and_a_clipped_window_uses_its_sub_matrix():
  x = _qkv((1, 2, 3, 5, 4), seed=4)[0]
  heads, window = 2, (2, 4, 4)     # h clipped to 3; w padded (5 = 4 + 1)
  weights = np.random.default_rng(5).normal(size=(heads, 32, 32)).astype(np.float32)
  got = np.asarray(attention.window_mlp(jnp.asarray(x), heads, window, jnp.asarray(weights)))
  e = (2, 3, 4)
  full_index = lambda r: (r[0] * 4 + r[1]) * 4 + r[2]   # position within the unclipped 2x4x4 window
  for p in itertools.product(range(2), range(3), range(5)):
    keys = [r for r in itertools.product(range(2), range(3), range(5)) if all(r[a] // e[a] == p[a] // e[a] for a in range(3))]
    for head, ch in enumerate(_heads_of(4, heads)):
      local = lambda r: tuple(r[a] % e[a] for a in range(3))
      expected = sum(weights[head, full_index(local(p)), full_index(local(r))] * x[(0,) + r][ch] for r in keys)
      np.testing.assert_allclose(got[(0,) + p][ch], expected, rtol=1e-4, atol=1e-5)


def test_a_window_covering_the_map_is_global_attention():
  q, k, v = _qkv((2, 2, 3, 3, 4), seed=6)
  table = jnp.zeros((attention.bias_table_size((8, 8, 8)), 1))
  got = attention.window_attention(q, k, v, 1, (8, 8, 8), table, 0.5)
  qf, kf, vf = (a.reshape(2, -1, 4) for a in (q, k, v))
  expected = jax.nn.softmax(jnp.einsum("nqc,nkc->nqk", qf, kf) * 0.5, -1) @ vf
  np.testing.assert_allclose(got.reshape(2, -1, 4), expected, rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------------------------------- bad input
HYBRID_OPS = (Op("x3d", (3, 3, 3)), Op("lsa", (2, 4, 4), 3), Op("lsa", (4, 3, 3), 1), Op("axial", (3, 5, 5), 3),
              Op("mlp", (2, 3, 3), 3), Op("ip_csn", (3, 3, 3)), Op("stm", (3, 3, 3)), Op("tea", (3, 3, 3)))


def hybrid_space(ops=HYBRID_OPS, **overrides):
  """Inner widths 12 ... 96, all multiples of 3; maps 4 x 8 x 8 (stage 0) and 4 x 4 x 4 (stage 1)."""
  kwargs = dict(num_frames=4, crop_size=32, stem=StemSpec(width=8), stage_widths=((8, 12, 16), (16, 24, 32)),
                min_depths=(1, 1), max_depths=(2, 2), expansions=(1.5, 2.25, 3.0), se_ratios=(0.0, 1 / 4),
                ops=ops, head=HeadSpec(conv5_width=24, head_width=32, dropout=0.5, num_classes=5))
  kwargs.update(overrides)
  return SearchSpace(space_config(**kwargs))


@pytest.mark.parametrize("ops, message", [
    ((Op("lsa", (2, 4, 4), 2),), r"ops\[lsa_244_h2\]: 2 heads do not divide the inner widths \[27"),
    ((Op("lsa", (2, 16, 16), 3),), r"ops\[lsa_21616_h3\]: window 2x16x16 is larger than the largest feature map "
                                   r"of the space \(4x8x8"),
    ((Op("mlp", (2, 4, 4), 0),), r"ops\[mlp_244\]: block type 'mlp' needs heads >= 1"),
    ((Op("x3d", (3, 3, 3), 2),), r"ops\[x3d_333_h2\]\.heads = 2: block type 'x3d' is a convolution"),
    ((Op("x3d", (2, 3, 3)),), r"ops\[x3d_233\]\.kernel\[t\] must be odd"),
])
def test_bad_attention_ops_are_rejected_when_the_space_is_built(ops, message):
  with pytest.raises(SpecError, match=message):
    hybrid_space(ops)


@pytest.mark.parametrize("text, message", [
    ("lsa:2x4x4:x2", "must look like 'x3d:3x3x3', or 'lsa:2x4x4:h2'"),
    ("lsa:2x4x4:h2:h3", "must look like"),
    ("conv9:3x3x3", "unknown block type 'conv9'"),
])
def test_bad_op_strings_are_rejected_naming_the_op(text, message):
  with pytest.raises(SpecError, match=message):
    ops_from_strings([text])


def test_op_strings_round_trip_with_heads():
  ops = ops_from_strings(["lsa:2x4x4:h2", "axial:3x5x5:h4", "mlp:1x4x4:h1", "x3d:3x3x3"])
  assert ops == (Op("lsa", (2, 4, 4), 2), Op("axial", (3, 5, 5), 4), Op("mlp", (1, 4, 4), 1), Op("x3d", (3, 3, 3)))
  assert ops_from_strings([o.string for o in ops]) == ops
  assert [o.label for o in ops] == ["lsa_244_h2", "axial_355_h4", "mlp_144_h1", "x3d_333"]


def test_a_standalone_block_whose_heads_do_not_divide_its_inner_width_is_rejected():
  from test_models import tiny_spec
  spec = tiny_spec("lsa", (2, 4, 4), heads=4)        # inner 18 and 36
  with pytest.raises(SpecError, match=r"stages\[0\]\.blocks\[0\]: 4 heads do not divide the inner width 18"):
    builder.build(spec)


# ----------------------------------------------------------------------------------------- supernet
def _initial_scale_projections(variables):
  """The q/k/v projections back at their initialiser's scale (std 1/sqrt(C)): `randomize`'s 0.3 makes
  every softmax nearly one-hot, and three axial attentions in a row then turn the supernet's and the
  child's different float32 summation orders (a 48- vs a 36-channel matmul) into 1e-4 differences."""
  def rescale(path, leaf):
    name = str(path[-1])
    return leaf / (0.3 * np.sqrt(leaf.shape[0])) if "qkv" in name else leaf
  return {**variables, "params": jax.tree_util.tree_map_with_path(rescale, variables["params"])}


@pytest.fixture(scope="module")
def hybrid_supernet():
  space = hybrid_space()
  variables = _initial_scale_projections(randomize(sn.init_supernet(space, jax.random.PRNGKey(0)), seed=3))
  return space, variables


def _all_blocks(space, op_index, rng):
  """A point with every block kept and running op `op_index`, other decisions random."""
  point = {d.label: int(rng.integers(d.size)) for d in space.decisions}
  for d in space.decisions:
    if d.kind == "depth":
      point[d.label] = d.size - 1
    if d.kind == "op":
      point[d.label] = op_index
  return point


def test_heads_share_one_projection_in_the_supernet(hybrid_supernet):
  """Multi-head sharing: the 3-head and 1-head windows of a block read the same 'qkv' projection, sized
  for the stage's largest inner width; each candidate has only its own bias table."""
  space, variables = hybrid_supernet
  mixer = variables["params"][labels.block(1, 1)]["lsa"]["mixer"]
  assert sorted(mixer) == ["lsa_244_h3", "lsa_433_h1", "qkv"]
  assert mixer["qkv"].shape == (96, 3, 96)
  assert mixer["lsa_244_h3"].shape == (3 * 7 * 7, 3) and mixer["lsa_433_h1"].shape == (7 * 5 * 5, 1)


@pytest.mark.parametrize("train", [pytest.param(False, marks=pytest.mark.slow), True], ids=["eval", "train"])
def test_one_hot_supernet_equals_the_derived_attention_network(hybrid_supernet, train):
  """Every op of the hybrid space in every block. Train mode (default suite): logits and the BN
  statistics' updates; eval mode (CI's slow selection, for its time): logits with running statistics."""
  space, variables = hybrid_supernet
  drop = {"dropout": jax.random.PRNGKey(5)}
  # One compile each for every point (the arch is an argument).
  run_eval = jax.jit(lambda v, x, a: sn.Supernet(space).apply(v, x, a, False))
  run_train = jax.jit(lambda v, x, a: sn.Supernet(space).apply(v, x, a, True, rngs=drop, mutable=["batch_stats"]))
  rng = np.random.default_rng(8 + train)
  x = jax.random.normal(jax.random.PRNGKey(9), (2, 4, 32, 32, 3))
  for op_index in range(1, len(space.config.ops)):
    point = _all_blocks(space, op_index, rng)
    spec, child = derive_lib.derive(space, point, variables)
    assert count_params(child["params"]) == arch_cost(spec).params
    net = builder.build(spec)
    if train:
      # Jitted: one compile of the child, not one per eager op shape.
      expected, child_updates = jax.jit(lambda v, x: net.apply(v, x, train=True, rngs=drop,
                                                              mutable=["batch_stats"]))(child, x)
      got, updates = run_train(variables, x, sn.one_hot_arch(space, point))
      _, inherited = derive_lib.derive(space, point, {**variables, "batch_stats": updates["batch_stats"]})
      for a, b in zip(jax.tree_util.tree_leaves(inherited["batch_stats"]),
                      jax.tree_util.tree_leaves(child_updates["batch_stats"])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    else:
      expected = jax.jit(lambda v, x: net.apply(v, x, train=False))(child, x)
      got = run_eval(variables, x, sn.one_hot_arch(space, point))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(expected))))


@pytest.mark.slow   # two ~15 s compiles; in CI's slow selection (.ci/run)
def test_exclusive_routing_runs_only_the_sampled_window_and_equals_the_gated_sum(hybrid_supernet):
  """Within an attention family the exclusive supernet switches to the sampled candidate: same logits
  and gradients as the gated sum for a one-hot arch, and the other candidate's table gets no gradient."""
  space, variables = hybrid_supernet
  point = _all_blocks(space, 1, np.random.default_rng(10))            # lsa 2x4x4, 3 heads everywhere
  arch = sn.one_hot_arch(space, point)
  x = jax.random.normal(jax.random.PRNGKey(11), (2, 4, 32, 32, 3))

  def loss(model, params):
    return jnp.sum(model.apply({**variables, "params": params}, x, arch, False) ** 2)

  grads = [jax.jit(jax.value_and_grad(lambda p, m=m: loss(m, p)))(variables["params"])
           for m in (sn.Supernet(space), sn.Supernet(space, exclusive=True))]
  (v_sum, g_sum), (v_exc, g_exc) = grads
  np.testing.assert_allclose(v_exc, v_sum, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(g_exc), jax.tree_util.tree_leaves(g_sum)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6 * max(1.0, float(jnp.max(jnp.abs(b)))))
  assert float(jnp.max(jnp.abs(g_exc["s1_b1"]["lsa"]["mixer"]["lsa_433_h1"]))) == 0.0
  assert float(jnp.max(jnp.abs(g_exc["s1_b1"]["lsa"]["mixer"]["lsa_244_h3"]))) > 0.0


def test_the_largest_point_picks_the_costliest_middle_per_stage(hybrid_supernet):
  space, _ = hybrid_supernet
  from autox3d_jax.cost.analytic import MIDDLE_COSTS
  largest, smallest = space.largest_point(), space.smallest_point()
  for i, thw in enumerate(space.stage_maps()):
    inner = int(3.0 * max(space.config.stage_widths[i]))
    costs = [MIDDLE_COSTS[o.type](o.block(max(space.config.stage_widths[i]), inner), thw).flops
             for o in space.config.ops]
    label = labels.block_decision(i, 0, "op")
    assert largest[label] == int(np.argmax(costs)) and smallest[label] == int(np.argmin(costs))


@pytest.mark.parametrize("op, message", [
    ("lsa:2x5x5:h2", r"config\.space: ops\[lsa_255_h2\]: 2 heads do not divide the inner widths \[27"),
    ("lsa:2x11x11:h3", r"config\.space: ops\[lsa_21111_h3\]: window 2x11x11 is larger than the largest feature map "
                       r"of the space \(8x10x10"),
    ("lsa:2x5x5:q3", r"config\.space: op 'lsa:2x5x5:q3' must look like"),
])
def test_a_bad_attention_op_in_a_config_fails_before_any_dataset_build(op, message):
  """main's early check (`setup.check_space`) names config.space and the op, before data or compiles."""
  from autox3d_jax import configs
  from autox3d_jax.config import ConfigError
  from autox3d_jax.train import setup
  cfg = configs.get("demo", "hybrid")
  cfg.space.ops = ("x3d:3x3x3", op)
  with pytest.raises(ConfigError, match=message):
    setup.check_space(cfg)


def test_hierarchical_sampling_draws_the_op_type_uniformly_then_one_of_its_ops():
  """TrioNet's hierarchical sampling (search.spos.hierarchical): with 1 x3d, 2 lsa, 1 axial and 1 mlp op
  each type is drawn a quarter of the time and each lsa op an eighth; plain uniform gives each op a fifth."""
  from autox3d_jax.search.distribution import ArchDistribution, op_type_probs
  space = hybrid_space(ops=HYBRID_OPS[:5])
  np.testing.assert_allclose(op_type_probs(space.config.ops), [1 / 4, 1 / 8, 1 / 8, 1 / 4, 1 / 4])
  dist = ArchDistribution(space)
  label = labels.block_decision(0, 0, "op")
  for hierarchical, expected in ((True, [1 / 4, 1 / 8, 1 / 8, 1 / 4, 1 / 4]), (False, [1 / 5] * 5)):
    draws = jax.vmap(lambda k: dist.sample_uniform(k, hierarchical)[label])(
        jax.random.split(jax.random.PRNGKey(0), 8000))
    frequencies = np.bincount(np.asarray(draws), minlength=5) / 8000
    np.testing.assert_allclose(frequencies, expected, atol=0.015)
