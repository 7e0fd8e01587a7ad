"""search/cost_table.py: the tabulated block costs, the exact expected cost under the distribution,
and the exact cheapest / costliest architecture."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toys

from autox3d_jax.cost.analytic import arch_cost
from autox3d_jax.search import strategies
from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.distribution import ArchDistribution


def lookup_cost(space, table, point):
  """A point's cost by indexing the tables by hand, in float64: stem + kept blocks + head."""
  total = table.stem
  for i in range(space.num_stages):
    a = point[f"s{i}_width"] if i > 0 else 0
    b = point[f"s{i + 1}_width"]
    depth = space.by_label[f"s{i + 1}_depth"].choices[point[f"s{i + 1}_depth"]]
    for j in range(depth):
      p = f"s{i + 1}_b{j + 1}"
      total += table.blocks[p][a if j == 0 else 0, b, point[f"{p}_expansion"], point[f"{p}_op"], point[f"{p}_se"]]
  return total + table.head[point[f"s{space.num_stages}_width"]]


@pytest.mark.parametrize("metric", ["flops", "params"])
def test_table_entries_are_the_analytic_costs_exactly(metric):
  """Every op type of the registry: the table's entries add up to arch_cost of the ArchSpec, to
  float64 round-off, for random points (inactive decisions random too)."""
  space = toys.all_ops_space()
  table = CostTable.build(space, metric)
  assert table.metric == metric
  rng = np.random.default_rng(0)
  points = [toys.random_point(space, rng) for _ in range(40)] + [space.largest_point()]
  for point in points:
    expected = getattr(arch_cost(space.to_arch(point)), metric)
    assert lookup_cost(space, table, point) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("metric", ["flops", "params"])
def test_expected_cost_under_one_hot_probs_is_the_architectures_cost(metric):
  """expected() (float32 einsums) at one-hot probabilities == arch_cost of the point's ArchSpec to
  float32 precision (rel 1e-6); of_point is the same number."""
  space = toys.all_ops_space()
  dist = ArchDistribution(space)
  table = CostTable.build(space, metric)
  rng = np.random.default_rng(1)
  points = [toys.random_point(space, rng) for _ in range(30)]
  batch = {l: np.array([p[l] for p in points], np.int32) for l in space.labels}
  got = np.asarray(jax.jit(jax.vmap(lambda p: table.expected(dist.one_hot(p))))(batch), np.float64)
  for n, point in enumerate(points):
    expected = getattr(arch_cost(space.to_arch(point)), metric)
    assert got[n] == pytest.approx(expected, rel=1e-6), point
  for point in points:
    assert table.of_point(point) == pytest.approx(getattr(arch_cost(space.to_arch(point)), metric), rel=1e-6)
  for point in points[:5]:     # by indexing, the same float32 number as the expectation at one-hot weights
    assert table.of_point(point) == float(table.expected(dist.one_hot(point)))


def test_expected_cost_matches_monte_carlo_and_analytic():
  space = toys.space()
  dist = ArchDistribution(space)
  table = CostTable.build(space)
  rng = np.random.default_rng(0)
  logits = {d.label: jnp.asarray(rng.normal(size=d.size), jnp.float32) for d in space.decisions}
  exact = float(table.expected(dist.probs(logits)))
  sample = jax.jit(jax.vmap(lambda k: dist.sample(k, logits)))
  points = jax.device_get(sample(jax.random.split(jax.random.PRNGKey(0), 4000)))   # host: fast indexing
  costs = np.array([arch_cost(space.to_arch({l: int(points[l][n]) for l in points})).flops
                    for n in range(4000)])
  stderr = costs.std() / np.sqrt(len(costs))
  assert abs(costs.mean() - exact) < 4 * stderr, (costs.mean(), exact, stderr)
  # Per point, the table equals the analytic cost of the derived ArchSpec exactly.
  for n in range(5):
    point = {l: int(points[l][n]) for l in points}
    assert table.of_point(point) == pytest.approx(arch_cost(space.to_arch(point)).flops, rel=1e-6)
  grads = jax.grad(lambda lg: table.expected(dist.probs(lg)))(logits)
  assert all(float(jnp.max(jnp.abs(g))) > 0 for k, g in grads.items() if not k.endswith("_depth"))


def test_expected_cost_is_exact_against_enumeration():
  """Not only unbiased (Monte-Carlo above): at random probabilities, expected() equals the
  probability-weighted sum over all 4,096 points of the tiny space, with minimum depths above 1
  too (where keep_prob is 1 without looking at the depth)."""
  for space in (toys.tiny_space(), toys.tiny_space(min_depths=(1, 2), max_depths=(1, 3), expansions=(1.5,))):
    dist = ArchDistribution(space)
    table = CostTable.build(space)
    rng = np.random.default_rng(2)
    logits = {d.label: jnp.asarray(1.5 * rng.normal(size=d.size), jnp.float32) for d in space.decisions}
    probs = {k: np.asarray(v, np.float64) for k, v in dist.probs(logits).items()}
    total = 0.0
    for combo in itertools.product(*[range(d.size) for d in space.decisions]):
      point = dict(zip(space.labels, combo))
      weight = np.prod([probs[l][point[l]] for l in space.labels])
      total += weight * lookup_cost(space, table, point)
    assert float(table.expected(dist.probs(logits))) == pytest.approx(total, rel=1e-5)


def test_keep_prob():
  space = toys.space(min_depths=(1, 2), max_depths=(2, 4))
  table = CostTable.build(space)
  probs = {"s1_depth": jnp.array([0.3, 0.7]), "s2_depth": jnp.array([0.1, 0.2, 0.7])}   # s2: 2, 3 or 4 blocks
  assert table.keep_prob(probs, 0, 0) == 1.0 and table.keep_prob(probs, 1, 1) == 1.0
  assert float(table.keep_prob(probs, 0, 1)) == pytest.approx(0.7)
  assert float(table.keep_prob(probs, 1, 2)) == pytest.approx(0.9)
  assert float(table.keep_prob(probs, 1, 3)) == pytest.approx(0.7)


def test_build_rejects_an_unknown_analytic_metric():
  with pytest.raises(ValueError, match="analytic cost metric must be 'flops' or 'params', got 'latency'"):
    CostTable.build(toys.tiny_space(), "latency")


@pytest.mark.parametrize("metric", ["flops", "random"])
def test_cost_extremes_are_exact_against_enumeration(metric):
  """The DP's cheapest / costliest architecture equals brute force over all 4,096 points, for
  analytic FLOPs (where the all-index-0 point is *not* the cheapest: x2d costs less than x3d) and
  for an arbitrary positive table (what a measured latency table can look like)."""
  space = toys.tiny_space()
  dist = ArchDistribution(space)
  table = CostTable.build(space)
  if metric == "random":
    rng = np.random.default_rng(0)
    table.blocks = {k: rng.uniform(0.1, 1.0, v.shape) for k, v in table.blocks.items()}
    table.head = rng.uniform(0.1, 1.0, table.head.shape)
  sizes = [d.size for d in space.decisions]
  grid = np.array(list(itertools.product(*[range(n) for n in sizes])), np.int32)
  assert len(grid) == 4096
  batch = {d.label: grid[:, k] for k, d in enumerate(space.decisions)}
  costs = np.asarray(jax.jit(jax.vmap(lambda p: table.expected(dist.one_hot(p))))(batch), np.float64)
  lo, lo_point = table.extreme(largest=False)
  hi, hi_point = table.extreme(largest=True)
  np.testing.assert_allclose([lo, hi], [costs.min(), costs.max()], rtol=1e-5)
  np.testing.assert_allclose([table.of_point(lo_point), table.of_point(hi_point)], [lo, hi], rtol=1e-5)
  if metric == "flops":
    assert table.of_point({d.label: 0 for d in space.decisions}) > lo * (1 + 1e-3)
    spos = strategies.make(dist, table, toys.search_config("spos", num_groups=2, **{"spos.cost_bins": 4}))
    np.testing.assert_allclose(spos.table_range, (lo, hi), rtol=1e-6)
