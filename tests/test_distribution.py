"""search/distribution.py: the hierarchical categorical distribution over architectures -- sampling,
densities (against hand computations and against enumeration), mode, one-hot, mode_within."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import toys

from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.distribution import ArchDistribution


def random_logits(space, seed, scale=1.0):
  rng = np.random.default_rng(seed)
  return {d.label: jnp.asarray(scale * rng.normal(size=d.size), jnp.float32) for d in space.decisions}


def np_log_softmax(v):
  v = np.asarray(v, np.float64)
  v = v - v.max()
  return v - np.log(np.exp(v).sum())


def keep_probability(space, probs, d):
  """P(block decision d matters) = P(stage depth > d.block); 1 for stage decisions."""
  if d.block is None:
    return 1.0
  depth = space.by_label[f"s{d.stage + 1}_depth"]
  return float(sum(p for p, n in zip(probs[depth.label], depth.choices) if n > d.block))


def sample_points(dist, logits, n, seed=0, uniform=False):
  keys = jax.random.split(jax.random.PRNGKey(seed), n)
  draw = (lambda k: dist.sample_uniform(k)) if uniform else (lambda k: dist.sample(k, logits))
  return {k: np.asarray(v) for k, v in jax.jit(jax.vmap(draw))(keys).items()}


# --------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("uniform", [False, True])
def test_sample_frequencies_match_the_probabilities(uniform):
  """Per decision, a chi-square goodness-of-fit test of 4,000 draws: p-value > 1e-4 for every
  decision (about 30 of them; a sampler that ignored the logits fails at p ~ 0)."""
  space = toys.space()
  dist = ArchDistribution(space)
  logits = random_logits(space, seed=0, scale=1.5)
  n = 4000
  points = sample_points(dist, logits, n, uniform=uniform)
  probs = {d.label: np.full(d.size, 1 / d.size) for d in space.decisions} if uniform else \
      {k: np.asarray(v, np.float64) for k, v in dist.probs(logits).items()}
  for d in space.decisions:
    drawn = points[d.label]
    assert drawn.dtype == np.int32 and drawn.shape == (n,)
    assert drawn.min() >= 0 and drawn.max() < d.size
    counts = np.bincount(drawn, minlength=d.size)
    expected = n * probs[d.label]
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert stats.chi2.sf(chi2, d.size - 1) > 1e-4, (d.label, counts, expected)


def test_samples_of_different_keys_differ_and_one_key_repeats():
  space = toys.space()
  dist = ArchDistribution(space)
  logits = dist.init_logits()
  a = dist.sample(jax.random.PRNGKey(0), logits)
  assert {k: int(v) for k, v in a.items()} == {k: int(v) for k, v in dist.sample(jax.random.PRNGKey(0), logits).items()}
  b = dist.sample(jax.random.PRNGKey(1), logits)
  assert any(int(a[k]) != int(b[k]) for k in a)


# -------------------------------------------------------------------------------------- densities
@pytest.mark.parametrize("make", [toys.space, lambda: toys.space(min_depths=(1, 2), max_depths=(2, 3))])
def test_log_prob_is_the_sum_of_the_active_decisions_log_probs(make):
  space = make()
  dist = ArchDistribution(space)
  logits = random_logits(space, seed=1)
  rng = np.random.default_rng(2)
  log_prob = jax.jit(dist.log_prob)
  for _ in range(30):
    point = toys.random_point(space, rng)
    by_hand = sum(np_log_softmax(logits[d.label])[point[d.label]] for d in space.decisions
                  if space.active(point, d.label))
    got = float(log_prob(logits, {k: jnp.int32(v) for k, v in point.items()}))
    assert got == pytest.approx(by_hand, rel=1e-5, abs=1e-5)


def test_log_prob_and_entropy_are_hierarchical():
  space = toys.space()
  dist = ArchDistribution(space)
  logits = {d.label: jnp.asarray(np.random.default_rng(1).normal(size=d.size), jnp.float32)
            for d in space.decisions}
  point = {d.label: jnp.int32(0) for d in space.decisions}   # depth index 0 = 1 block: b2 skipped
  changed = {**point, "s1_b2_op": jnp.int32(2)}
  assert float(dist.log_prob(logits, point)) == pytest.approx(float(dist.log_prob(logits, changed)))
  changed["s1_b1_op"] = jnp.int32(2)
  assert float(dist.log_prob(logits, point)) != pytest.approx(float(dist.log_prob(logits, changed)))
  assert float(dist.entropy(logits)) > 0
  # A distribution certain that stage 1 has one block ignores block 2's logits in its entropy.
  sure = {**logits, "s1_depth": jnp.array([50.0, -50.0])}
  noisier = {**sure, "s1_b2_op": jnp.zeros(3)}
  assert float(dist.entropy(sure)) == pytest.approx(float(dist.entropy(noisier)), abs=1e-4)


def test_entropy_is_the_keep_weighted_sum_of_decision_entropies():
  space = toys.space(min_depths=(1, 2), max_depths=(2, 3))
  dist = ArchDistribution(space)
  logits = random_logits(space, seed=3, scale=2.0)
  probs = {k: np.exp(np_log_softmax(v)) for k, v in logits.items()}
  per_decision = {k: float(-np.sum(p * np_log_softmax(logits[k]))) for k, p in probs.items()}
  by_hand = sum(keep_probability(space, probs, d) * per_decision[d.label] for d in space.decisions)
  assert float(dist.entropy(logits)) == pytest.approx(by_hand, rel=1e-5)
  got = dist.decision_entropies(logits)
  assert set(got) == set(per_decision)
  for k, h in per_decision.items():
    assert float(got[k]) == pytest.approx(h, rel=1e-5, abs=1e-6)


def test_entropy_at_uniform_is_max_entropy_by_hand():
  space = toys.space(min_depths=(1, 2), max_depths=(2, 3))
  dist = ArchDistribution(space)
  uniform = {d.label: np.full(d.size, 1 / d.size) for d in space.decisions}
  by_hand = sum(keep_probability(space, uniform, d) * np.log(d.size) for d in space.decisions)
  assert dist.max_entropy() == pytest.approx(by_hand, rel=1e-6)
  assert float(dist.entropy(dist.init_logits())) == pytest.approx(dist.max_entropy(), rel=1e-6)
  for d in space.decisions:
    assert float(dist.decision_entropies(dist.init_logits())[d.label]) == pytest.approx(np.log(d.size), rel=1e-6)
  # A constant: usable while tracing (e.g. to normalise the entropy inside the jitted step).
  assert jax.jit(lambda lg: dist.entropy(lg) / dist.max_entropy())(dist.init_logits()) == pytest.approx(1.0)


def test_densities_are_those_of_the_distribution_over_architectures():
  """On the tiny space (4,096 points, 2,304 architectures): exp(log_prob) of the canonical points
  sums to 1 and the entropy is -sum p log p over architectures, i.e. decisions that do not matter
  neither split an architecture's probability nor add entropy."""
  import itertools
  space = toys.tiny_space()
  dist = ArchDistribution(space)
  logits = random_logits(space, seed=4, scale=1.5)
  canonical = {tuple(sorted(space.canonical(dict(zip(space.labels, c))).items()))
               for c in itertools.product(*[range(d.size) for d in space.decisions])}
  assert len(canonical) == space.size()
  batch = {l: np.array([dict(p)[l] for p in canonical], np.int32) for l in space.labels}
  log_p = np.asarray(jax.jit(jax.vmap(lambda p: dist.log_prob(logits, p)))(batch), np.float64)
  assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-5)
  assert float(dist.entropy(logits)) == pytest.approx(-np.sum(np.exp(log_p) * log_p), rel=1e-5)


# -------------------------------------------------------------------------- mode, one-hot, init
def test_mode_is_the_argmax_of_each_decision():
  space = toys.space()
  dist = ArchDistribution(space)
  logits = random_logits(space, seed=5)
  mode = dist.mode(logits)
  assert mode == {k: int(np.argmax(np.asarray(v))) for k, v in logits.items()}
  assert all(type(v) is int for v in mode.values())


def test_init_logits_are_uniform_or_tilted_towards_a_point():
  space = toys.space()
  dist = ArchDistribution(space)
  zeros = dist.init_logits()
  assert {k: v.shape for k, v in zeros.items()} == {d.label: (d.size,) for d in space.decisions}
  assert all(float(jnp.max(jnp.abs(v))) == 0.0 for v in zeros.values())
  point = toys.planted_best(space)
  tilted = dist.init_logits(point, bias=2.0)
  assert dist.mode(tilted) == point
  for d in space.decisions:
    expected = np.zeros(d.size)
    expected[point[d.label]] = 2.0
    np.testing.assert_array_equal(tilted[d.label], expected)
  probs = dist.probs(tilted)
  for k, p in probs.items():
    assert float(jnp.sum(p)) == pytest.approx(1.0)
    assert float(p[point[k]]) == pytest.approx(np.exp(2.0) / (np.exp(2.0) + len(p) - 1))


def test_one_hot_round_trip():
  space = toys.space()
  dist = ArchDistribution(space)
  rng = np.random.default_rng(6)
  for _ in range(10):
    point = toys.random_point(space, rng)
    hot = dist.one_hot({k: jnp.int32(v) for k, v in point.items()})
    assert {k: int(jnp.argmax(v)) for k, v in hot.items()} == point
    for d in space.decisions:
      assert hot[d.label].shape == (d.size,) and hot[d.label].dtype == jnp.float32
      assert float(jnp.sum(hot[d.label])) == 1.0 and float(jnp.max(hot[d.label])) == 1.0
    assert dist.mode({k: jnp.log(v + 1e-9) for k, v in hot.items()}) == point
  # Batched (what the search vmaps): points (N,) per label -> one-hots (N, size).
  points = sample_points(dist, dist.init_logits(), 16)
  hot = jax.vmap(dist.one_hot)({k: jnp.asarray(v) for k, v in points.items()})
  for d in space.decisions:
    np.testing.assert_array_equal(np.argmax(np.asarray(hot[d.label]), -1), points[d.label])


# ------------------------------------------------------------------------------------ mode_within
def test_mode_within_budget_fits_and_stays_likely():
  space = toys.space()
  dist = ArchDistribution(space)
  table = CostTable.build(space)
  rng = np.random.default_rng(3)
  logits = {d.label: jnp.asarray(3.0 * rng.normal(size=d.size), jnp.float32) for d in space.decisions}
  mode = dist.mode(logits)
  cost_fn = lambda p: table.expected(dist.one_hot(p))
  assert dist.mode_within(logits, cost_fn, table.of_point(mode) * (1 + 1e-6)) == mode   # fits: unchanged
  limit = 0.7 * table.of_point(mode)
  point = dist.mode_within(logits, cost_fn, limit)
  assert table.of_point(point) <= limit
  # No feasible point among many likely samples is more probable than the greedy answer.
  samples = jax.jit(jax.vmap(lambda k: dist.sample(k, logits)))(jax.random.split(jax.random.PRNGKey(0), 3000))
  costs = np.asarray(jax.jit(jax.vmap(lambda p: table.expected(dist.one_hot(p))))(samples))
  log_probs = np.asarray(jax.jit(jax.vmap(lambda p: dist.log_prob(logits, p)))(samples))
  feasible = costs <= limit * (1 - 1e-6)
  assert feasible.sum() > 10
  assert float(dist.log_prob(logits, point)) >= log_probs[feasible].max() - 1e-4
  with pytest.raises(ValueError, match="no architecture in the space"):
    dist.mode_within(logits, cost_fn, 0.5 * table.of_point({d.label: 0 for d in space.decisions}))
