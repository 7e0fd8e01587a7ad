"""SPOS's evolutionary search over a trained supernet (Guo et al.): population, top-k selection,
mutation and crossover, candidates outside the cost constraint rejected and redrawn.

Scoring is a callback so that the supernet, batch-norm recalibration (SPOS resets BN statistics and
re-estimates them on training batches for each candidate before scoring it, see `recalibrate.py`)
and the metric stay outside this file; here only the search itself lives.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from autox3d_jax.search.space import SearchSpace

Point = dict[str, int]


@dataclasses.dataclass
class EvolutionResult:
  best: Point
  best_score: float
  history: list           # per iteration: (best score, mean top-k score)
  evaluated: int


def _key(space, point):
  return tuple(sorted(space.canonical(point).items()))


def evolve(space: SearchSpace, score: Callable[[list[Point]], list[float]], cost: Callable[[Point], float],
           max_cost: float | None, cfg, seed: int = 0, min_cost: float | None = None,
           log: Callable[[str], None] | None = None) -> EvolutionResult:
  """Maximise `score` (a batch of points -> higher is better) under min_cost <= cost <= max_cost."""
  rng = np.random.default_rng(seed)
  labels = [d.label for d in space.decisions]
  sizes = {d.label: d.size for d in space.decisions}

  def feasible(p):
    c = cost(p)
    return (max_cost is None or c <= max_cost) and (min_cost is None or c >= min_cost)

  def random_point():
    return {l: int(rng.integers(sizes[l])) for l in labels}

  def mutate(p):
    return {l: (int(rng.integers(sizes[l])) if rng.random() < cfg.mutation_prob else v) for l, v in p.items()}

  def crossover(a, b):
    return {l: (a[l] if rng.random() < 0.5 else b[l]) for l in labels}

  def draw(make, n, seen, tries=50):
    out = []
    for _ in range(n * tries):
      if len(out) == n:
        break
      p = make()
      k = _key(space, p)
      if k not in seen and feasible(p):
        seen.add(k)
        out.append(space.canonical(p))
    return out

  scores: dict = {}
  seen: set = set()
  population = draw(random_point, cfg.population, seen, tries=200)
  if not population:
    raise ValueError(f"no architecture satisfies the cost constraint [{min_cost}, {max_cost}]")
  history, top = [], []
  for it in range(cfg.iterations):
    new = [p for p in population if _key(space, p) not in scores]
    if new:
      for p, s in zip(new, score(new)):
        scores[_key(space, p)] = (float(s), p)
    ranked = sorted((scores[_key(space, p)] for p in population + top), key=lambda t: -t[0])
    unique, keys = [], set()
    for s, p in ranked:
      if _key(space, p) not in keys:
        keys.add(_key(space, p))
        unique.append((s, p))
    top = [p for _, p in unique[:cfg.top_k]]
    history.append((unique[0][0], float(np.mean([s for s, _ in unique[:cfg.top_k]]))))
    if log:
      log(f"evolution iteration {it + 1}/{cfg.iterations}: best {history[-1][0]:.4f}, "
          f"top-{cfg.top_k} mean {history[-1][1]:.4f}")
    mutants = draw(lambda: mutate(top[rng.integers(len(top))]), cfg.mutants, seen)
    children = draw(lambda: crossover(top[rng.integers(len(top))], top[rng.integers(len(top))]),
                    cfg.crossovers, seen)
    population = mutants + children
    population += draw(random_point, cfg.population - len(population), seen)
  best_score, best = max(scores.values(), key=lambda t: t[0])
  return EvolutionResult(best, best_score, history, len(scores))
