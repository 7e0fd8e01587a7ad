"""Input axes (frames, sampling stride, crop) as decisions of the fine-grained space: the superclip
and the cut, the space's decisions and points, costs that follow the input, the one-hot supernet
at a searched input equal to the derived network, the step over input settings, the config's
checks, and a search end to end."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autox3d_jax import config as config_lib
from autox3d_jax.config import ConfigError
from autox3d_jax.cost.analytic import arch_cost
from autox3d_jax.models import builder
from autox3d_jax.models.spec import HeadSpec, SpecError
from autox3d_jax.search import derive as derive_lib
from autox3d_jax.search import supernet as sn
from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.distribution import ArchDistribution
from autox3d_jax.search.inputs import ClipInput, frame_indices, select_clip, superclip
from autox3d_jax.search.strategies.probabilistic import Probabilistic
from autox3d_jax.train import partitioning, search_loop
from autox3d_jax.train import search_step as ss
from autox3d_jax.train.optim import make_arch_optimizer, make_optimizer

import toys

AXES = dict(sampling_stride=2, input_frames=(2, 4), input_strides=(2, 4), input_crops=(24, 32))


def test_superclip_holds_every_setting_and_the_cut_takes_the_centred_frames():
  source = superclip((4, 8), (2, 4), (32, 40))
  assert source == ClipInput(16, 2, 40)
  assert frame_indices(source, ClipInput(4, 4, 32)) == [4, 6, 8, 10]        # span 8 of 16, every 2nd
  assert frame_indices(source, ClipInput(8, 4, 40)) == list(range(0, 16, 2))
  assert frame_indices(source, ClipInput(8, 2, 40)) == list(range(4, 12))
  with pytest.raises(ValueError, match="multiple of 2"):
    frame_indices(source, ClipInput(4, 3, 40))
  with pytest.raises(ValueError, match="span at most 32"):
    frame_indices(source, ClipInput(16, 4, 40))
  video = jnp.broadcast_to(jnp.arange(16, dtype=jnp.float32)[None, :, None, None, None], (2, 16, 40, 40, 3))
  cut = select_clip(video, source, ClipInput(4, 4, 32))
  assert cut.shape == (2, 4, 32, 32, 3)
  np.testing.assert_allclose(cut[0, :, 5, 7, 0], [4, 6, 8, 10], rtol=1e-6)   # constant frames stay constant
  assert select_clip(video, source, source) is video


def test_space_adds_input_decisions_and_maps_points_both_ways():
  space = toys.space(**AXES)
  assert space.input_labels == ["input_frames", "input_stride", "input_crop"]
  assert space.size() == toys.space(sampling_stride=2).size() * 8
  assert space.superclip() == ClipInput(8, 2, 32)
  assert len(space.input_settings()) == 8
  rng = np.random.default_rng(0)
  for _ in range(10):
    point = space.canonical(toys.random_point(space, rng))
    clip = space.input_of(point)
    spec = space.to_arch(point)
    assert (spec.num_frames, spec.crop_size) == (clip.frames, clip.crop)
    assert space.point_of(spec, clip.stride) == point
  with pytest.raises(SpecError, match="input crop 40 is not among"):
    space.point_of(space.to_arch(point).replace(crop_size=40), 2)
  assert toys.space().input_labels == [] and toys.space().superclip() == ClipInput(4, 1, 32)


@pytest.mark.parametrize("bad, match", [
    (dict(input_crops=(24, 28)), "must include the reference clip's crop"),
    (dict(input_frames=(4, 2)), "ascending distinct"),
    (dict(input_strides=(2, 3), sampling_stride=2), "multiple of the smallest"),
])
def test_space_rejects_bad_input_axes(bad, match):
  with pytest.raises(SpecError, match=match):
    toys.space(**bad)


def test_costs_follow_the_input_exactly():
  space = toys.space(**AXES)
  dist = ArchDistribution(space)
  table = CostTable.build(space, "flops")
  assert set(table.variants) == {(2, 24), (2, 32), (4, 24), (4, 32)}
  rng = np.random.default_rng(1)
  points = [toys.random_point(space, rng) for _ in range(20)]
  for point in points:
    exact = arch_cost(space.to_arch(point)).flops
    assert table.of_point(point) == pytest.approx(exact, rel=1e-6)
    assert float(table.expected(dist.one_hot(point))) == pytest.approx(exact, rel=1e-6)
  # The mixture over the input decisions, against sampling.
  logits = {d.label: jnp.asarray(rng.normal(size=d.size), jnp.float32) for d in space.decisions}
  exact = float(table.expected(dist.probs(logits)))
  sample = jax.jit(jax.vmap(lambda k: dist.sample(k, logits)))
  drawn = jax.device_get(sample(jax.random.split(jax.random.PRNGKey(0), 3000)))
  costs = np.array([table.of_point({l: int(drawn[l][n]) for l in drawn}) for n in range(3000)])
  assert abs(costs.mean() - exact) < 4 * costs.std() / np.sqrt(len(costs))
  cheapest, at = table.extreme()
  assert cheapest == pytest.approx(table.of_point(at)) and cheapest <= costs.min()
  assert space.input_of(at) == ClipInput(2, 2, 24)
  with pytest.raises(ValueError, match="cannot search input axes"):
    CostTable.build(space, "latency", fns=(lambda: 0.0, lambda *a: 0.0, lambda *a: 0.0))


def test_one_hot_supernet_at_a_searched_input_equals_the_derived_network():
  """The supernet is size-agnostic: on the clip cut for a point's input, its one-hot logits equal
  the derived network's, built at that input, with the inherited weights."""
  space = toys.space(head=HeadSpec(conv5_width=24, head_width=32, dropout=0.0, num_classes=5), **AXES)
  model = sn.Supernet(space)
  variables = sn.init_supernet(space, jax.random.PRNGKey(0))
  source = space.superclip()
  video = jax.random.normal(jax.random.PRNGKey(1), (2, source.frames, source.crop, source.crop, 3))
  rng = np.random.default_rng(3)
  for _ in range(2):
    point = space.canonical(toys.random_point(space, rng))
    point.update({"input_frames": 0, "input_crop": 0})      # a clip other than the reference
    clip = select_clip(video, source, space.input_of(point))
    spec, child = derive_lib.derive(space, point, variables)
    assert spec.input_shape == clip.shape[1:]
    got = model.apply(variables, clip, sn.one_hot_arch(space, point), False)
    want = builder.build(spec).apply(child, clip, train=False)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_input_term_raises_a_rewarded_setting_and_lowers_a_punished_one():
  space = toys.tiny_space(input_crops=(12, 16))
  cfg = config_lib.base_config().search
  cfg.penalty = "none"
  strategy = Probabilistic(ArchDistribution(space), CostTable.build(space), cfg)
  logits = ArchDistribution(space).init_logits()
  points = {"input_crop": jnp.asarray([1, 1])}
  for reward, sign in ((-1.0, -1), (-3.0, 1)):
    grad = jax.grad(lambda lg: strategy.input_term(lg, points, jnp.float32(reward), jnp.float32(-2.0))[0])(logits)
    assert np.sign(float(grad["input_crop"][1])) == sign      # descent raises the rewarded choice's logit
  _, baseline = strategy.input_term(logits, points, jnp.float32(-1.0), jnp.float32(jnp.nan))
  assert float(baseline) == pytest.approx(-1.0)                 # the first reward starts the baseline


# Each compiles one step per input setting (about a minute): with -m slow, as in CI.
@pytest.mark.parametrize("strategy", [pytest.param("probabilistic", marks=pytest.mark.slow),
                                      pytest.param("spos", marks=pytest.mark.slow)])
def test_step_over_input_settings_cuts_the_clip_and_draws_the_next_setting(strategy):
  cfg = config_lib.base_config()
  toys.set_keys(cfg.search, {"strategy": strategy, "num_groups": 2, "arch_warmup_steps": 0, "penalty": "none",
                             "arch_opt.lr": 0.5, "steps": 10})
  space = toys.tiny_space(head=HeadSpec(conv5_width=16, head_width=16, dropout=0.0, num_classes=3),
                          input_crops=(12, 16))
  dist = ArchDistribution(space)
  table = CostTable.build(space)
  model = sn.Supernet(space)
  strat = search_loop.make_strategy(cfg, dist, table, cost_target=0.0)
  w_tx, a_tx = make_optimizer(cfg.search.weight_opt, 10), make_arch_optimizer(cfg.search.arch_opt)
  step = ss.make_search_step(model, dist, strat, w_tx, a_tx, cfg, table)
  state = ss.init_search_state(model, dist, strat, w_tx, a_tx, seed=0)
  assert ss.input_setting(state) == (1,)                       # the reference crop (16) first
  mesh = partitioning.make_mesh()
  jitted, shardings = ss.jit_search_step(step, state, mesh)
  state = jax.device_put(state, shardings)
  data = list(zip(toys.batches(6, batch=8, classes=3, shape=(4, 16, 16, 3), seed=0),
                  toys.batches(6, batch=8, classes=3, shape=(4, 16, 16, 3), seed=1)))
  seen, saved = [], None
  for k, (train, val) in enumerate(data):
    if k == 3:
      saved = jax.device_get(state)                              # what a checkpoint holds
    seen.append(ss.input_setting(state))
    state, metrics = jitted(state, partitioning.global_batch(train, mesh), partitioning.global_batch(val, mesh))
    assert np.isfinite(float(metrics["train_loss"]))
  assert {s[0] for s in seen} == {0, 1}                        # both crops ran (draws from 2 choices)
  crop_logits = np.asarray(jax.device_get(state.logits["input_crop"]))
  assert (not np.allclose(crop_logits, 0)) == (strategy == "probabilistic")   # spos learns no distribution
  resumed = jax.device_put(saved, shardings)                   # a resumed run: the same settings, the same result
  for train, val in data[3:]:
    resumed, _ = jitted(resumed, partitioning.global_batch(train, mesh), partitioning.global_batch(val, mesh))
  for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(state)), jax.tree_util.tree_leaves(jax.device_get(resumed))):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("overrides, match", [
    ({"space.input_crops": (32, 48)}, r"must include config.data.crop_size \(40\)"),
    ({"space.input_strides": (2, 3), "data.sampling_stride": 2}, "multiple of the smallest"),
    ({"space.input_frames": (16, 8)}, "ascending distinct"),
    ({"space.input_crops": (32, 40), "search.strategy": "dnas"}, "strategies"),
    ({"space.input_crops": (32, 40), "search.cost_metric": "latency"}, "latency"),
    ({"space.input_crops": (32, 40), "mode": "latency"}, "mode 'latency'"),
])
def test_config_rejects_bad_input_axes(overrides, match):
  cfg = config_lib.base_config()
  cfg.data.crop_size = 40
  cfg.data.scale_jitter = (48, 56)
  cfg.search.target_arch = "X3D"
  toys.set_keys(cfg, overrides)
  with pytest.raises(ConfigError, match=match):
    config_lib.validate(cfg)


@pytest.mark.slow   # in CI's slow selection: four compiled steps, over a minute
def test_search_over_inputs_end_to_end(tmp_path, monkeypatch):
  """configs/demo.py:tiny with a searched crop: the search runs, derives a network at one of the
  crops, records its clip, and the report says so."""
  from autox3d_jax import configs
  from autox3d_jax.run import search
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "data"))
  cfg = configs.get("demo", "tiny")
  cfg.mode = "search"
  cfg.data.data_dir = str(tmp_path / "data")
  cfg.space.input_crops = (24, 32)
  cfg.search.steps = 4
  config_lib.validate(cfg)
  result = search(cfg, str(tmp_path / "work"))
  assert result.clip.crop in (24, 32) and result.spec.crop_size == result.clip.crop
  written = json.loads((tmp_path / "work" / "search" / "result.json").read_text())
  assert written["clip"] == {"frames": 4, "stride": 1, "crop": result.clip.crop}
  report = (tmp_path / "work" / "report" / "report.md").read_text()
  assert f"Input axes searched (crop (24, 32)" in report
