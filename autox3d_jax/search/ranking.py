"""How well a supernet ranks its children: the architectures a ranking study samples, the rank
correlations between stand-alone and inherited accuracy with bootstrap intervals, and the ranking
record (`ranking.json`) that `benchmarks/bench_ranking.py` writes and the report draws.

Kendall's tau-b and Spearman's rho come from scipy.stats. Intervals are percentile bootstraps over
the architectures (resampled with replacement); every setting is scored on the same resamples, so
the difference of two settings' tau gets a paired interval. A resample whose statistic is undefined
(all its accuracies tied) is dropped and the number kept is reported.

    points = spread_points(space, table.of_point, 12, seed=0)
    stats = correlations(standalone, inherited)                # {'kendall_tau': .., 'spearman_rho': ..}
    boot = bootstrap(standalone, {"today": inh_a, "inplace": inh_b}, reference="today")
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from autox3d_jax.search.space import SearchSpace

RANKING_VERSION = 1
STATISTICS = ("kendall_tau", "spearman_rho")


def random_point(space: SearchSpace, rng: np.random.Generator) -> dict[str, int]:
  """A uniformly drawn choice for every decision, canonicalised (inactive blocks' choices reset)."""
  return space.canonical({d.label: int(rng.integers(d.size)) for d in space.decisions})


def spread_points(space: SearchSpace, cost: Callable[[Mapping[str, int]], float], n: int, *, seed: int = 0,
                  draws: int = 4000) -> list[dict[str, int]]:
  """`n` distinct points spread evenly over the space's cost range: `draws` uniform random points,
  sorted by `cost`, the ones at the quantiles (i + 0.5) / n. Uniform draws alone would crowd the
  middle of the range; a ranking that only separates a few near-equal networks says little about
  the search, which moves across the whole range. Raises ValueError when the space has fewer than
  `n` distinct points among the draws."""
  if n < 2:
    raise ValueError(f"a ranking needs at least 2 architectures, got n={n}")
  rng = np.random.default_rng(seed)
  unique: dict[tuple, dict[str, int]] = {}
  for _ in range(draws):
    p = random_point(space, rng)
    unique.setdefault(tuple(sorted(p.items())), p)
  pool = sorted(unique.values(), key=lambda p: (cost(p), tuple(sorted(p.items()))))
  if len(pool) < n:
    raise ValueError(f"the space gave {len(pool)} distinct architectures in {draws} draws, fewer than the {n} asked")
  picks = sorted({min(len(pool) - 1, int((i + 0.5) / n * len(pool))) for i in range(n)})
  return [pool[i] for i in picks]


def correlations(standalone: Sequence[float], inherited: Sequence[float]) -> dict[str, float]:
  """{'kendall_tau': tau-b, 'spearman_rho': rho} of two equally long accuracy lists (NaN when one
  list is constant)."""
  from scipy import stats
  x, y = np.asarray(standalone, float), np.asarray(inherited, float)
  if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
    raise ValueError(f"need two equally long lists of >= 2 accuracies, got shapes {x.shape} and {y.shape}")
  if np.all(x == x[0]) or np.all(y == y[0]):
    return {s: float("nan") for s in STATISTICS}
  return {"kendall_tau": float(stats.kendalltau(x, y).statistic),
          "spearman_rho": float(stats.spearmanr(x, y).statistic)}


def seed_agreement(per_seed: Sequence[Sequence[float]]) -> dict[str, float]:
  """How reproducible the stand-alone ranking itself is: the mean over pairs of seeds of the
  correlations between their accuracies. `per_seed[a][s]`: architecture a's top-1 with seed s.
  This is about the best any proxy can reach against one seed's ranking; a low value means the
  ground truth needs more seeds (the mean of n seeds is steadier) before a proxy can be judged.
  NaN with fewer than 2 seeds."""
  table = np.asarray(per_seed, float)
  if table.ndim != 2 or table.shape[1] < 2:
    return {s: float("nan") for s in STATISTICS}
  pairs = [correlations(table[:, i], table[:, j]) for i in range(table.shape[1]) for j in range(i + 1, table.shape[1])]
  return {s: float(np.mean([p[s] for p in pairs])) for s in STATISTICS}


def bootstrap(standalone: Sequence[float], inherited: Mapping[str, Sequence[float]], *, reference: str | None = None,
              resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
  """Percentile-bootstrap intervals of each setting's correlations, on shared resamples.

  Returns {'settings': {name: {stat: [value, low, high]}}, 'differences': {name: {stat: [value,
  low, high]}} (name - reference, for every other setting; empty without a reference),
  'resamples': kept, 'level': level}. `value` is the statistic on all architectures."""
  x = np.asarray(standalone, float)
  names = list(inherited)
  if reference is not None and reference not in inherited:
    raise ValueError(f"reference {reference!r} is not one of the settings {names}")
  ys = {k: np.asarray(v, float) for k, v in inherited.items()}
  rng = np.random.default_rng(seed)
  samples: dict[str, dict[str, list]] = {k: {s: [] for s in STATISTICS} for k in names}
  kept = 0
  for _ in range(resamples):
    idx = rng.integers(len(x), size=len(x))
    per = {k: correlations(x[idx], ys[k][idx]) for k in names}
    if any(np.isnan(v) for c in per.values() for v in c.values()):
      continue
    kept += 1
    for k in names:
      for s in STATISTICS:
        samples[k][s].append(per[k][s])
  lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2

  def interval(value, draws):
    if not draws:
      return [value, float("nan"), float("nan")]
    return [value, float(np.percentile(draws, lo_q)), float(np.percentile(draws, hi_q))]

  full = {k: correlations(x, ys[k]) for k in names}
  out = {"settings": {k: {s: interval(full[k][s], samples[k][s]) for s in STATISTICS} for k in names},
         "differences": {}, "resamples": kept, "level": level}
  if reference is not None:
    for k in names:
      if k != reference:
        out["differences"][k] = {
            s: interval(full[k][s] - full[reference][s],
                        [a - b for a, b in zip(samples[k][s], samples[reference][s])]) for s in STATISTICS}
  return out


def check_record(record: Mapping, where: str = "ranking.json") -> None:
  """Raises ValueError naming `where` and the key when `record` is not a ranking record: version,
  archs (each with name, gflops, standalone_mean) and settings (each with one inherited accuracy per
  arch and its statistics)."""
  if record.get("version") != RANKING_VERSION:
    raise ValueError(f"{where}: version {record.get('version')!r}, expected {RANKING_VERSION}")
  archs = record.get("archs")
  if not isinstance(archs, list) or len(archs) < 2:
    raise ValueError(f"{where}: 'archs' must list at least 2 architectures")
  for i, a in enumerate(archs):
    for key in ("name", "gflops", "standalone_mean"):
      if key not in a:
        raise ValueError(f"{where}: archs[{i}] has no {key!r}")
  settings = record.get("settings")
  if not isinstance(settings, dict) or not settings:
    raise ValueError(f"{where}: 'settings' must map each supernet setting to its inherited accuracies")
  for name, s in settings.items():
    if len(s.get("inherited", ())) != len(archs):
      raise ValueError(f"{where}: settings[{name!r}].inherited has {len(s.get('inherited', ()))} accuracies for "
                       f"{len(archs)} archs")
    for stat in STATISTICS:
      if stat not in s:
        raise ValueError(f"{where}: settings[{name!r}] has no {stat!r}")
