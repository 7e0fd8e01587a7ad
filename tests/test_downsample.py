"""UniNet's downsampling modules (models/downsample.py): the module against a direct numpy
computation, its costs (params exact, FLOPs against XLA's count), the space's decision (points,
cost table, extreme points), one-hot supernet == derived network, export folding, and the bad
inputs, rejected before anything is built."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toys
from test_supernet import randomize
from autox3d_jax import config as config_lib
from autox3d_jax import labels
from autox3d_jax.cost.analytic import arch_cost, count_params, downsample_cost
from autox3d_jax.export.fold import fold_batch_norm
from autox3d_jax.models import builder, convert_torch, morph
from autox3d_jax.models.downsample import Downsample
from autox3d_jax.models.layers import BN_EPSILON
from autox3d_jax.models.spec import ArchSpec, SpecError, StageSpec
from autox3d_jax.search import derive as derive_lib
from autox3d_jax.search import supernet as sn
from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.space import space_config_from_dict

BOTH = ("local", "local_global")


def dsm_space(**overrides):
  kw = dict(downsample=(BOTH, BOTH), downsample_heads=4)
  kw.update(overrides)
  return toys.space(**kw)


# ------------------------------------------------------------------------------------ the module
def _bn(x, p, s):
  return (x - s["mean"]) / np.sqrt(s["var"] + BN_EPSILON) * p["scale"] + p["bias"]


def _reference(kind, heads, params, stats, x):
  """The module by direct loops over positions, frames and heads (numpy, float64)."""
  x = np.asarray(x, np.float64)
  p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} if isinstance(d, dict) else np.asarray(d, np.float64)
       for k, d in params.items()}
  st = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in stats.items()}
  n, t, h, w, c = x.shape
  ho, wo = -(-h // 2), -(-w // 2)
  padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
  neg = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  kernel = p["down_dw"]["kernel"][0]                                   # (3, 3, C)
  dw = np.zeros((n, t, ho, wo, c))
  pool = np.zeros((n, t, ho, wo, c))
  for a in range(ho):
    for b in range(wo):
      patch = padded[:, :, 2 * a:2 * a + 3, 2 * b:2 * b + 3]
      dw[:, :, a, b] = np.einsum("ntijc,ijc->ntc", patch, kernel)
      pool[:, :, a, b] = neg[:, :, 2 * a:2 * a + 3, 2 * b:2 * b + 3].max(axis=(2, 3))
  local = _bn(dw, p["down_bn"], st["down_bn"]) @ p["down_proj"]["kernel"]
  residual = pool @ p["res_proj"]["kernel"]
  if kind == "local":
    return _bn(local + residual, p["bn_local"], st["bn_local"])
  q = _bn(local, p["q_bn"], st["q_bn"])
  kv = np.einsum("nthwc,ckd->nthwkd", _bn(x, p["kv_bn"], st["kv_bn"]), p["kv"])
  k, v = kv[..., 0, :], kv[..., 1, :]
  width = q.shape[-1]
  out = np.zeros_like(q)
  for head in range(heads):
    ch = np.arange(head, width, heads)                                 # interleaved heads
    for i in range(n):
      for f in range(t):
        qf = q[i, f][..., ch].reshape(-1, len(ch))
        kf, vf = k[i, f][..., ch].reshape(-1, len(ch)), v[i, f][..., ch].reshape(-1, len(ch))
        s = qf @ kf.T / np.sqrt(width / heads)
        s = np.exp(s - s.max(axis=1, keepdims=True))
        out[i, f][..., ch] = ((s / s.sum(axis=1, keepdims=True)) @ vf).reshape(ho, wo, len(ch))
  return _bn(out @ p["proj"]["kernel"] + residual, p["bn_global"], st["bn_global"])


@pytest.mark.parametrize("kind", BOTH)
def test_the_module_equals_direct_loops_at_an_odd_map(kind):
  """A 9 x 7 map: the strided conv and the pool pad as PyTorch's do; each frame's queries attend to
  that frame's keys only, the heads interleaved."""
  heads = 4 if kind == "local_global" else 0
  module = Downsample((kind,), 12, heads)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 9, 7, 8))
  variables = randomize(module.init(jax.random.PRNGKey(1), x), seed=4)
  got = module.apply(variables, x)
  assert got.shape == (2, 3, 5, 4, 12)
  want = _reference(kind, heads, variables["params"], variables["batch_stats"], x)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_local_global_attention_does_not_cross_frames():
  """Changing frame 2 of the input changes frame 2 of the output only."""
  module = Downsample(("local_global",), 8, 2)
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 8, 8, 8))
  variables = module.init(jax.random.PRNGKey(1), x)
  a = module.apply(variables, x)
  b = module.apply(variables, x.at[:, 2].add(1.0))
  changed = np.abs(np.asarray(a - b)).max(axis=(0, 2, 3, 4)) > 1e-6
  assert changed.tolist() == [False, False, True, False]


# ----------------------------------------------------------------------------------------- costs
@pytest.mark.parametrize("kind", BOTH)
def test_costs_match_the_module_and_xlas_count(kind):
  """Params exactly; multiply-adds against XLA's count of the compiled module (2 flops per
  multiply-add, plus the BNs, softmax and pool it counts and we do not) within 1.0-1.25x, at an
  X3D-S-like stage-2 input."""
  heads = 3 if kind == "local_global" else 0
  module = Downsample((kind,), 48, heads)
  x = jnp.zeros((1, 8, 28, 28, 24))
  variables = module.init(jax.random.PRNGKey(0), x)
  ours, out = downsample_cost(kind, 24, 48, x.shape[1:4])
  assert out == (8, 14, 14)
  assert count_params(variables["params"]) == ours.params
  analysis = jax.jit(lambda v, x: module.apply(v, x)).lower(variables, x).compile().cost_analysis()
  xla_flops = (analysis[0] if isinstance(analysis, list) else analysis)["flops"]
  assert 1.0 <= xla_flops / 2 / ours.flops <= 1.25, (xla_flops / 2, ours.flops)


def test_a_network_with_modules_counts_them_and_its_blocks_stop_striding():
  space = dsm_space()
  point = toys.random_point(space, np.random.default_rng(0))
  point[labels.downsample(0)], point[labels.downsample(1)] = 0, 1
  spec = space.to_arch(point)
  assert [s.downsample for s in spec.stages] == ["local", "local_global"]
  assert [s.downsample_heads for s in spec.stages] == [0, 4]
  assert all(b.stride == 1 for b in spec.blocks)
  variables = builder.init_variables(spec, jax.random.PRNGKey(0))
  report = arch_cost(spec)
  assert count_params(variables["params"]) == report.params
  assert labels.downsample_module(1) in report.layers
  assert ArchSpec.from_json(spec.to_json()) == spec
  logits = jax.jit(builder.build(spec).apply)(variables, jnp.zeros((1,) + spec.input_shape))
  assert logits.shape == (1, 5)


def test_the_report_lists_each_module_with_its_cost():
  from autox3d_jax import report
  space = dsm_space()
  point = toys.random_point(space, np.random.default_rng(6)) | {labels.downsample(0): 0, labels.downsample(1): 1}
  spec = space.to_arch(point)
  table = report.arch_table(spec)
  rows = {name: [line for line in table.splitlines() if f"| {name} |" in line] for name in ("s1_dsm", "s2_dsm")}
  assert "| downsample local |" in rows["s1_dsm"][0]
  assert "| downsample local_global (4 heads) |" in rows["s2_dsm"][0]
  mflops = f"{arch_cost(spec).layers['s2_dsm'].flops / 1e6:,.2f}"
  assert rows["s2_dsm"][0].rstrip(" |").endswith(mflops)


# ----------------------------------------------------------------------------------------- space
def test_the_space_has_one_decision_per_stage_and_points_round_trip():
  space = dsm_space(downsample=(("local",), BOTH))
  d = space.by_label[labels.downsample(1)]
  assert (d.kind, d.choices, d.stage) == ("downsample", BOTH, 1)
  assert space.size() == toys.space().size() * 2
  rng = np.random.default_rng(1)
  for _ in range(10):
    point = space.canonical(toys.random_point(space, rng))
    assert space.canonical(space.point_of(space.to_arch(point))) == point
  largest, smallest = space.largest_point(), space.smallest_point()
  assert (largest[labels.downsample(1)], smallest[labels.downsample(1)]) == (1, 0)
  saved = json.loads(json.dumps(dataclasses.asdict(space.config)))      # the JSON a search writes
  assert space_config_from_dict(saved) == space.config
  del saved["downsample"], saved["downsample_heads"]                     # written before the modules
  assert space_config_from_dict(saved).downsample == ()


def test_the_cost_table_holds_the_modules_exactly():
  space = dsm_space()
  table = CostTable.build(space)
  rng = np.random.default_rng(2)
  for _ in range(8):
    point = toys.random_point(space, rng)
    cost = arch_cost(space.to_arch(point)).flops
    assert table.of_point(point) == cost
    np.testing.assert_allclose(float(table.expected(sn.one_hot_arch(space, point))), cost, rtol=1e-6)
  costs = [table.of_point(toys.random_point(space, rng)) for _ in range(200)]
  low, low_point = table.extreme()
  high, high_point = table.extreme(largest=True)
  assert low <= min(costs) and high >= max(costs)
  assert arch_cost(space.to_arch(low_point)).flops == low and arch_cost(space.to_arch(high_point)).flops == high
  assert high_point[labels.downsample(0)] == 1 and low_point[labels.downsample(0)] == 0


# -------------------------------------------------------------------------------------- supernet
@pytest.mark.parametrize("train", [pytest.param(False, marks=pytest.mark.slow), True], ids=["eval", "train"])
def test_one_hot_supernet_equals_the_derived_network(train):
  """Each kind in each stage (eval, CI's slow selection: every combination), with random other
  decisions: logits (and in train mode the BN statistics' updates) of the supernet at the one-hot
  point and of the derived network with inherited weights."""
  space = dsm_space()
  variables = randomize(sn.init_supernet(space, jax.random.PRNGKey(0)), seed=3)
  drop = {"dropout": jax.random.PRNGKey(5)}
  run = jax.jit(lambda v, x, a: sn.Supernet(space).apply(v, x, a, train, rngs=drop, mutable=["batch_stats"]))
  x = jax.random.normal(jax.random.PRNGKey(9), (2, 4, 32, 32, 3))
  rng = np.random.default_rng(7 + train)
  for k in ((0, 1), (1, 0)) if train else ((0, 0), (0, 1), (1, 0), (1, 1)):   # each kind in each stage
    point = toys.random_point(space, rng)
    point[labels.downsample(0)], point[labels.downsample(1)] = k
    spec, child = derive_lib.derive(space, point, variables)
    assert count_params(child["params"]) == arch_cost(spec).params
    expected, child_updates = builder.build(spec).apply(child, x, train=train, rngs=drop, mutable=["batch_stats"])
    got, updates = run(variables, x, sn.one_hot_arch(space, point))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(expected))))
    if train:
      _, inherited = derive_lib.derive(space, point, {**variables, "batch_stats": updates["batch_stats"]})
      for a, b in zip(jax.tree_util.tree_leaves(inherited["batch_stats"]),
                      jax.tree_util.tree_leaves(child_updates["batch_stats"])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_the_module_kinds_share_the_local_path_and_the_residual():
  variables = sn.init_supernet(dsm_space(), jax.random.PRNGKey(0))
  module = variables["params"][labels.downsample_module(1)]
  assert sorted(module) == ["bn_global", "bn_local", "down_bn", "down_dw", "down_proj", "kv", "kv_bn", "proj",
                            "q_bn", "res_proj"]
  assert module["down_proj"]["kernel"].shape == (16, 32) and module["kv"].shape == (16, 2, 32)


@pytest.mark.slow   # one compiled search step (about a minute); in CI's slow selection (.ci/run)
def test_the_search_step_learns_the_module_decisions_and_weights():
  """The jitted probabilistic search step over a space with modules: both kinds' logits and the
  modules' shared weights move."""
  from test_search_step import run, tiny_setup
  from autox3d_jax.train import partitioning
  _, step, state = tiny_setup("probabilistic", space_overrides=dict(downsample=(BOTH, BOTH), downsample_heads=4))
  before = jax.device_get(state)
  new, metrics = run(step, state, partitioning.make_mesh(), n=3)
  assert np.isfinite(metrics["train_loss"])
  for i in range(2):
    assert not np.allclose(new.logits[labels.downsample(i)], before.logits[labels.downsample(i)])
    module = labels.downsample_module(i)
    assert not np.allclose(new.params[module]["down_proj"]["kernel"], before.params[module]["down_proj"]["kernel"])


# ---------------------------------------------------------------------------- export and refusals
def test_batch_norm_folding_keeps_the_function():
  space = dsm_space()
  point = toys.random_point(space, np.random.default_rng(3))
  point[labels.downsample(0)] = 1
  spec = space.to_arch(point)
  variables = randomize(builder.init_variables(spec, jax.random.PRNGKey(0)), seed=2)
  x = jax.random.normal(jax.random.PRNGKey(1), (2,) + spec.input_shape)
  model = builder.build(spec)
  folded = fold_batch_norm(spec, variables)
  assert np.all(folded["params"][labels.downsample_module(0)]["down_bn"]["scale"] == 1.0)
  want = model.apply(variables, x)
  np.testing.assert_allclose(model.apply(folded, x), want, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(want))))


def test_x3d_only_paths_refuse_a_network_with_modules_naming_the_stage():
  spec = dsm_space(downsample=(("local",), ("local",)), downsample_heads=0).to_arch(
      toys.random_point(dsm_space(), np.random.default_rng(4)) | {labels.downsample(0): 0, labels.downsample(1): 0})
  with pytest.raises(SpecError, match="stage s1 has a downsampling module"):
    morph.grow(spec, {}, spec, jax.random.PRNGKey(0))
  with pytest.raises(Exception, match=r"stages \['s1', 's2'\] start with a downsampling module"):
    convert_torch.create_x3d_kwargs(spec.replace(stages=tuple(
        StageSpec(tuple(dataclasses.replace(b, type="x3d", kernel=(3, 3, 3)) for b in s.blocks), s.downsample)
        for s in spec.stages)))


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("stage, message", [
    (StageSpec((), "pool"), r"stages\[0\].downsample must be '' or one of"),
    ("strided", r"the downsampling module strides, so blocks\[0\].stride must be 1"),
    ("heads", r"downsample_heads \(3\) must be positive and divide the stage's width 16"),
    ("local_heads", r"downsample_heads must be 0 unless downsample is 'local_global'"),
])
def test_a_bad_stage_is_rejected_naming_the_field(stage, message):
  spec = dsm_space().to_arch(toys.random_point(dsm_space(), np.random.default_rng(5)) |
                             {"s1_width": 2, "s1_downsample": 1})
  first = spec.stages[0]
  bad = {"strided": StageSpec((dataclasses.replace(first.blocks[0], stride=2),) + first.blocks[1:], "local"),
         "heads": StageSpec(first.blocks, "local_global", 3),
         "local_heads": StageSpec(first.blocks, "local", 4)}.get(stage, None)
  if bad is None:
    bad = StageSpec(first.blocks, stage.downsample)
  with pytest.raises(SpecError, match=message):
    spec.replace(stages=(bad,) + spec.stages[1:]).validate()


@pytest.mark.parametrize("keys, message", [
    ({"space.downsample": (("local",),) * 3}, r"config.space.downsample must be \(\) or one tuple of distinct kinds"),
    ({"space.downsample": (("local", "global"),) * 4}, r"config.space.downsample must be"),
    ({"space.downsample": (("local",),) * 4, "space.downsample_heads": 4},
     r"config.space.downsample_heads \(4\) must be > 0 exactly when"),
    ({"space.downsample": (("local", "local_global"),) * 4}, r"config.space.downsample_heads \(0\) must be > 0"),
    ({"space.downsample": (("local", "local_global"),) * 4, "space.downsample_heads": 5},
     r"config.space: downsample\[0\] can choose 'local_global', whose downsample_heads \(5\) must be positive and "
     r"divide the stage's widths; it does not divide \[12, 18, 24, 36\]"),
    ({"space.downsample": (("local",),) * 4, "search.cost_metric": "latency"},
     r"config.space.downsample with a latency table"),
])
def test_bad_downsample_settings_fail_before_any_dataset_build(keys, message):
  from autox3d_jax.train import setup
  cfg = toys.set_keys(config_lib.base_config(), {"mode": "search", "search.target_arch": "X3D", **keys})
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(cfg)
    setup.check_space(cfg)
