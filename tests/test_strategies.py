"""Every strategy searches: on a toy space with a planted optimum it concentrates on the known best
point, and with a cost target the derived architecture lands within 10% of it."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import zlib

import toys

from autox3d_jax import config as config_lib
from autox3d_jax.search import strategies
from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.distribution import ArchDistribution


def toy_space():
  return toys.space()


def planted_best(space):
  """One best choice per decision (never index 0, so uniform init is not already there). crc32, not
  hash(): str hashes change with every process (PYTHONHASHSEED), which made this test flaky."""
  return {d.label: (zlib.crc32(d.label.encode()) % (d.size - 1)) + 1 for d in space.decisions}


def search_cfg(strategy, **overrides):
  return toys.search_config(strategy, **overrides)


def mismatch_losses(space, best):
  """Per-group synthetic validation loss: share of (active) decisions not at the planted best."""
  depth_choices = {i: np.array(space.by_label[f"s{i + 1}_depth"].choices) for i in range(space.num_stages)}

  def losses(archs):
    total = 0.0
    for d in space.decisions:
      hit = archs[d.label][:, best[d.label]]
      if d.block is not None and d.block >= space.config.min_depths[d.stage]:
        keep = archs[f"s{d.stage + 1}_depth"] @ (depth_choices[d.stage] > d.block)
        hit = keep * hit   # a skipped block cannot be right
      total = total + (1.0 - hit)
    return total / len(space.decisions)

  return losses


def run_arch_search(strategy, losses, steps, lr=0.1):
  logits = strategy.dist.init_logits()
  state = strategy.init_state()
  tx = optax.adam(lr)
  opt = tx.init(logits)

  @jax.jit
  def step(logits, opt, state, key, i):
    (loss, (state, metrics)), grads = jax.value_and_grad(
        lambda lg: strategy.arch_objective(key, lg, state, i, losses), has_aux=True)(logits)
    updates, opt = tx.update(grads, opt, logits)
    return optax.apply_updates(logits, updates), opt, state, metrics

  for i in range(steps):
    logits, opt, state, metrics = step(logits, opt, state, jax.random.PRNGKey(i), i)
  return logits, metrics


@pytest.mark.parametrize("name, overrides", [
    ("probabilistic", {}),
    ("probabilistic", {"probabilistic.estimator": "parsec"}),
    ("dnas", {}),
    ("gdas", {"gdas.tau_schedule": "linear"}),
    ("msg", {}),
])
def test_strategy_concentrates_on_planted_optimum(name, overrides):
  space = toy_space()
  dist = ArchDistribution(space)
  best = planted_best(space)
  best["s1_depth"] = best["s2_depth"] = 1    # max depth, so every decision matters
  strategy = strategies.make(dist, CostTable.build(space), search_cfg(name, **overrides), val_examples_per_group=50)
  logits, _ = run_arch_search(strategy, mismatch_losses(space, best), steps=150)
  mode = dist.mode(logits)
  wrong = [l for l in best if mode[l] != best[l]]
  assert not wrong, f"{name}: {len(wrong)} decisions off the planted optimum: {wrong}"
  # The distribution concentrated, not just its argmax.
  assert float(dist.entropy(logits)) < 0.5 * dist.max_entropy()


@pytest.mark.parametrize("name", ["probabilistic", "dnas", "gdas"])
def test_cost_target_is_met_within_ten_percent(name):
  space = toy_space()
  dist = ArchDistribution(space)
  table = CostTable.build(space, "flops")
  smallest = table.of_point({d.label: 0 for d in space.decisions})
  largest = table.of_point(space.largest_point())
  target = smallest + 0.4 * (largest - smallest)
  cfg = search_cfg(name, penalty="absolute", penalty_weight=2.0)
  strategy = strategies.make(dist, table, cfg, cost_target=target)

  def capacity_losses(archs):   # bigger is better: the objective alone would pick the largest net
    return 1.0 - jax.vmap(table.expected)(archs) / largest

  logits, _ = run_arch_search(strategy, capacity_losses, steps=300, lr=0.05)
  got = table.of_point(dist.mode(logits))
  assert abs(got / target - 1) <= 0.10, (got, target)


def test_spos_samples_uniformly_and_cost_bins_spread_cost():
  space = toy_space()
  dist = ArchDistribution(space)
  table = CostTable.build(space)
  strategy = strategies.make(dist, table, search_cfg("spos", num_groups=4))
  keys = jax.random.split(jax.random.PRNGKey(0), 200)
  widths = jax.jit(jax.vmap(
      lambda k: strategy.weight_archs(k, dist.init_logits(), strategy.init_state(), 0)[0]["s1_width"]))(keys)
  counts = np.asarray(widths).sum((0, 1))
  assert counts.min() > 0.25 * counts.sum() / 3   # roughly uniform over the 3 widths
  binned = strategies.make(dist, table, search_cfg("spos", num_groups=4, **{"spos.cost_bins": 4}))
  keys = jax.random.split(jax.random.PRNGKey(1), 100)
  costs_u = np.asarray(jax.jit(jax.vmap(lambda k: strategy.point_cost(dist.sample_uniform(k))))(keys))
  costs_b = np.array([float(binned.point_cost(binned._one_path(k))) for k in keys])
  # Bin-uniform sampling reaches the extremes of the cost range more often than plain uniform.
  assert np.std(costs_b) > np.std(costs_u)


@pytest.mark.slow
def test_spos_cost_bins_sample_inside_jit():
  """The search step draws SPOS's bin-uniform paths inside jit: the cost range must be host floats
  then too (it once called float() on a tracer). ~30 s to compile 16 candidate draws."""
  space = toy_space()
  dist = ArchDistribution(space)
  binned = strategies.make(dist, CostTable.build(space), search_cfg("spos", num_groups=4, **{"spos.cost_bins": 4}))
  keys = jax.random.split(jax.random.PRNGKey(1), 100)
  costs = np.asarray(jax.jit(jax.vmap(lambda k: binned.point_cost(binned._one_path(k))))(keys))
  eager = np.array([float(binned.point_cost(binned._one_path(k))) for k in keys[:5]])
  np.testing.assert_allclose(costs[:5], eager, rtol=1e-6)
  assert costs.min() > 0 and costs.max() <= binned.table_range[1]


def test_shared_val_batch_baseline_cancels_the_clips_common_difficulty():
  """With all K samples scored on the same clips, a loss offset shared by the K samples (how hard
  this step's clips are) must not move the REINFORCE gradient; with the EMA baseline it does."""
  space = toy_space()
  dist = ArchDistribution(space)
  best = planted_best(space)
  signal = mismatch_losses(space, best)
  logits = dist.init_logits()

  def gradients(shared):
    strategy = strategies.make(dist, CostTable.build(space),
                               search_cfg("probabilistic", **{"probabilistic.shared_val_batch": shared, "probabilistic.adaptive_samples": False}))
    state = {"baseline": jnp.float32(-0.5), "num_samples": jnp.int32(8)}
    key = jax.random.PRNGKey(0)                      # same 8 samples every time: only the offset varies

    @jax.jit
    def grad(offset):
      losses = lambda archs: signal(archs) + offset
      g = jax.grad(lambda lg: strategy.arch_objective(key, lg, state, 5, losses)[0])(logits)
      return jnp.concatenate([v.ravel() for v in jax.tree_util.tree_leaves(g)])

    return np.stack([np.asarray(grad(jnp.float32(o))) for o in np.linspace(-2.0, 2.0, 9)])

  shared, ema = gradients(True), gradients(False)
  assert np.abs(shared - shared[0]).max() < 1e-5          # the offset cancels exactly
  assert np.abs(ema - ema[0]).max() > 0.1                 # the EMA baseline lets it through
  assert np.abs(shared[0]).max() > 1e-3                   # and the architecture signal remains


@pytest.mark.parametrize("name", ["probabilistic", "spos"])
def test_sandwich_trains_the_largest_architecture_in_group_zero(name):
  space = toy_space()
  dist = ArchDistribution(space)
  strategy = strategies.make(dist, CostTable.build(space), search_cfg(name, num_groups=4, sandwich=True))
  largest = space.largest_point()
  for i in range(3):
    archs, _ = strategy.weight_archs(jax.random.PRNGKey(i), dist.init_logits(), strategy.init_state(), 0)
    assert {l: int(jnp.argmax(a[0])) for l, a in archs.items()} == largest
    others = [{l: int(jnp.argmax(a[g])) for l, a in archs.items()} for g in range(1, 4)]
    assert any(p != largest for p in others)   # the other groups are still samples


@pytest.mark.parametrize("name", ["probabilistic", "spos"])
def test_largest_warmup_trains_only_the_largest_then_samples(name):
  """search.largest_warmup_steps: every group is the largest point while step < N (also inside
  jit, with a traced step), sampled points from step N on."""
  space = toy_space()
  dist = ArchDistribution(space)
  strategy = strategies.make(dist, CostTable.build(space),
                             search_cfg(name, num_groups=4, largest_warmup_steps=5))
  largest = space.largest_point()
  draw = jax.jit(lambda key, step: strategy.weight_archs(key, dist.init_logits(), strategy.init_state(), step)[0])

  def points(archs):
    return [{l: int(jnp.argmax(a[g])) for l, a in archs.items()} for g in range(4)]
  for step in (0, 4):
    assert points(draw(jax.random.PRNGKey(step), step)) == [largest] * 4
  after = [p for i in range(3) for p in points(draw(jax.random.PRNGKey(i), 5))]
  assert any(p != largest for p in after)


def _tiny_space():
  return toys.tiny_space()


def test_cost_target_below_the_cheapest_architecture_is_rejected_early():
  from autox3d_jax.train import setup
  space = _tiny_space()
  table = CostTable.build(space)
  cheapest, _ = table.extreme()
  cfg = config_lib.base_config()
  cfg.search.cost_target = 0.9 * cheapest
  with pytest.raises(config_lib.ConfigError, match="below the cheapest architecture"):
    setup.resolve_cost_target(space, table, cfg)
  cfg.search.cost_target = 1.01 * cheapest
  assert setup.resolve_cost_target(space, table, cfg) == pytest.approx(1.01 * cheapest)


def test_decisions_all_samples_agree_on_get_exactly_zero_gradient():
  """With the mean baseline, a decision on which all K samples agree has a REINFORCE gradient of
  exactly zero in theory; it must be exactly zero in float32 too (Adam would turn round-off into a
  real step), while decisions the samples disagree on keep their gradient."""
  space = toy_space()
  dist = ArchDistribution(space)
  rng = np.random.default_rng(5)
  # Peaked logits: most decisions agree across 4 samples, a few do not.
  logits = {d.label: jnp.asarray(rng.normal(size=d.size) * (8.0 if k % 3 else 0.0), jnp.float32)
            for k, d in enumerate(space.decisions)}
  strategy = strategies.make(dist, CostTable.build(space),
                             search_cfg("probabilistic", num_groups=4, **{"probabilistic.adaptive_samples": False}))
  state = {"baseline": jnp.float32(-0.5), "num_samples": jnp.int32(4)}
  key = jax.random.PRNGKey(3)
  losses = lambda archs: mismatch_losses(space, planted_best(space))(archs) * 1.37 + 0.123
  grads = jax.jit(jax.grad(lambda lg: strategy.arch_objective(key, lg, state, 5, losses)[0]))(logits)
  keys = jax.random.split(key, 4)
  points = [dist.sample(k, logits) for k in keys]     # what _sample_points draws with this key
  agreed = [d.label for d in space.decisions
            if len({int(p[d.label]) for p in points}) == 1
            and (d.block is None or d.block < space.config.min_depths[d.stage]
                 or len({int(p[f"s{d.stage + 1}_depth"]) for p in points}) == 1)]
  differing = [d.label for d in space.decisions if d.label not in agreed]
  assert agreed and differing
  assert all(float(jnp.max(jnp.abs(grads[l]))) == 0.0 for l in agreed)
  assert max(float(jnp.max(jnp.abs(grads[l]))) for l in differing) > 0


@pytest.mark.parametrize("fair", [True, False])
def test_fair_channel_selection_trains_every_filter_equally_often(fair):
  """AutoX3D's fair channel selection (search.fair_channels): the sampled width's mask is rolled by a
  random offset, so every filter of a stage is active with the same probability, E[width] / max
  width. Without it the masks are prefixes: the first filters are always trained, the last rarely."""
  from autox3d_jax.search.supernet import roll_mask, stage_tables
  space = toy_space()
  dist = ArchDistribution(space)
  strategy = strategies.make(dist, CostTable.build(space),
                             search_cfg("probabilistic", fair_channels=fair, **{"probabilistic.adaptive_samples": False}))
  tables = stage_tables(space, 0)
  label = "s1_width"
  draw = jax.jit(jax.vmap(lambda key: strategy.weight_archs(key, dist.init_logits(), strategy.init_state(), 0)))
  archs, shifts = draw(jax.random.split(jax.random.PRNGKey(0), 500))
  masks = archs[label] @ tables.width_masks                      # (draws, K, max_width) prefix masks
  if fair:
    masks = jax.vmap(jax.vmap(roll_mask))(masks, shifts[label])
  else:
    assert shifts is None
  freq = np.asarray(masks).reshape(-1, tables.max_width).mean(0)   # 4,000 samples per filter
  widths = np.array(space.by_label[label].choices)
  expected_share = widths.mean() / tables.max_width                 # uniform logits at init
  if fair:
    np.testing.assert_allclose(freq, expected_share, atol=0.04)     # ~6 standard errors
  else:
    np.testing.assert_allclose(freq[:widths.min()], 1.0)
    np.testing.assert_allclose(freq[widths[-2]:], 1 / len(widths), atol=0.04)
