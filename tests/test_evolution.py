"""search/evolution.py: SPOS's evolutionary search -- it finds a planted optimum, never scores a
candidate outside the cost constraint or twice, and is reproducible from its seed."""
import jax
import ml_collections
import numpy as np
import pytest

import toys

from autox3d_jax.search import evolution
from autox3d_jax.search.cost_table import CostTable


def evolution_cfg(**overrides):
  cfg = dict(population=30, iterations=60, top_k=8, mutants=15, crossovers=15, mutation_prob=0.15)
  return ml_collections.ConfigDict({**cfg, **overrides})


def test_evolution_finds_planted_optimum_under_constraint():
  space = toys.space()
  table = CostTable.build(space)
  best = toys.planted_best(space)
  best["s1_depth"] = best["s2_depth"] = 1
  expected = jax.jit(table.expected)            # table.of_point, compiled once (it is called ~10^4 times)
  eye = {d.label: np.eye(d.size, dtype=np.float32) for d in space.decisions}

  def cost(p):
    return float(expected({l: eye[l][p[l]] for l in eye}))

  assert cost(best) == pytest.approx(table.of_point(best), rel=1e-6)
  limit = cost(best) * 1.05

  def score(points):
    return [-np.mean([p[l] != best[l] for l in best if space.active(p, l)]) for p in points]

  result = evolution.evolve(space, score, cost, limit, evolution_cfg(), seed=0)
  assert result.best_score > -0.05, result.best_score
  assert cost(result.best) <= limit
  assert result.history[-1][0] >= result.history[0][0]


class Recorder:
  """A cheap score and cost (host arithmetic) that record every call."""

  def __init__(self, space):
    self.space = space
    self.target = toys.planted_best(space)
    self.scored, self.batches = [], 0

  def cost(self, point):
    return float(sum(self.space.canonical(point).values()))

  def score(self, points):
    self.batches += 1
    self.scored.extend(points)
    return [-sum(abs(p[l] - self.target[l]) for l in p if self.space.active(p, l)) for p in points]


@pytest.mark.parametrize("min_cost, max_cost", [(None, 12.0), (8.0, 12.0), (20.0, None)])
def test_every_scored_candidate_satisfies_the_cost_constraint_once(min_cost, max_cost):
  space = toys.space()
  rec = Recorder(space)
  assert rec.cost(rec.target) > 12.0     # the unconstrained optimum is outside [.., 12]
  messages = []
  cfg = evolution_cfg(population=20, iterations=8, top_k=5, mutants=10, crossovers=10)
  result = evolution.evolve(space, rec.score, rec.cost, max_cost, cfg, seed=3, min_cost=min_cost,
                            log=messages.append)
  assert rec.scored and result.evaluated == len(rec.scored)
  keys = [tuple(sorted(p.items())) for p in rec.scored]
  assert len(set(keys)) == len(keys), "a candidate was scored twice"
  for p in rec.scored:
    assert p == space.canonical(p)
    c = rec.cost(p)
    assert (min_cost is None or c >= min_cost) and (max_cost is None or c <= max_cost), c
  # The best is the best of everything scored, and the running best never decreases.
  scores = rec.score(rec.scored)
  assert result.best_score == max(scores) and result.best in rec.scored
  assert rec.cost(result.best) <= (max_cost or np.inf)
  bests = [h[0] for h in result.history]
  assert bests == sorted(bests) and len(result.history) == cfg.iterations
  assert all(top_mean <= b for b, top_mean in result.history)
  assert len(messages) == cfg.iterations and messages[-1].startswith(f"evolution iteration {cfg.iterations}/")


def test_the_same_seed_gives_the_same_search():
  space = toys.space()
  cfg = evolution_cfg(population=10, iterations=4, top_k=3, mutants=5, crossovers=5)
  runs = []
  for seed in (7, 7, 8):
    rec = Recorder(space)
    result = evolution.evolve(space, rec.score, rec.cost, 30.0, cfg, seed=seed)
    runs.append((rec.scored, result.best, result.history))
  assert runs[0] == runs[1]
  assert runs[0][0] != runs[2][0]


def test_an_unsatisfiable_constraint_is_rejected():
  space = toys.space()
  rec = Recorder(space)
  with pytest.raises(ValueError, match=r"no architecture satisfies the cost constraint \[None, -1.0\]"):
    evolution.evolve(space, rec.score, rec.cost, -1.0, evolution_cfg(), seed=0)
  assert rec.scored == []
