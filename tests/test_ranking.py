"""search.ranking: the architectures a ranking study draws, rank correlations against hand
computations, bootstrap intervals, the ranking record and the report's ranking section."""
import json
import math

import numpy as np
import pytest

from autox3d_jax import report
from autox3d_jax.search import ranking
from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.space import SearchSpace, space_config


@pytest.fixture(scope="module")
def space_and_table():
  space = SearchSpace(space_config(num_frames=4, crop_size=32, stage_widths=((8, 12), (16, 24)), min_depths=(1, 1),
                                   max_depths=(1, 2), expansions=(1.5, 3.0), se_ratios=(0.0, 0.25)))
  return space, CostTable.build(space, "flops")


def test_spread_points_are_distinct_sorted_by_cost_and_span_the_range(space_and_table):
  space, table = space_and_table
  points = ranking.spread_points(space, table.of_point, 12, seed=0)
  assert len(points) == 12
  keys = {tuple(sorted(p.items())) for p in points}
  assert len(keys) == 12
  assert all(space.canonical(p) == p for p in points)
  costs = [table.of_point(p) for p in points]
  assert costs == sorted(costs)
  rng = np.random.default_rng(1)
  pool = [table.of_point(ranking.random_point(space, rng)) for _ in range(2000)]
  lo, hi = np.percentile(pool, [10, 90])
  assert costs[0] < lo and costs[-1] > hi          # the extremes of the range are covered, not only its middle
  assert ranking.spread_points(space, table.of_point, 12, seed=0) == points      # deterministic


def test_spread_points_refuses_impossible_requests(space_and_table):
  space, table = space_and_table
  with pytest.raises(ValueError, match="at least 2"):
    ranking.spread_points(space, table.of_point, 1)
  with pytest.raises(ValueError, match="fewer than the 100000 asked"):
    ranking.spread_points(space, table.of_point, 100000, draws=50)


def test_correlations_match_hand_computation():
  # One discordant pair of 6: tau = (5 - 1) / 6; rank differences (0, 1, 1, 0): rho = 1 - 6 * 2 / (4 * 15).
  c = ranking.correlations([0.1, 0.2, 0.3, 0.4], [0.5, 0.7, 0.6, 0.8])
  assert c["kendall_tau"] == pytest.approx(4 / 6)
  assert c["spearman_rho"] == pytest.approx(0.8)
  assert ranking.correlations([1, 2, 3], [3, 2, 1]) == {"kendall_tau": pytest.approx(-1), "spearman_rho": pytest.approx(-1)}
  assert all(math.isnan(v) for v in ranking.correlations([1, 2, 3], [0.5, 0.5, 0.5]).values())
  with pytest.raises(ValueError, match="equally long"):
    ranking.correlations([1, 2, 3], [1, 2])


def test_seed_agreement_is_the_mean_correlation_between_seeds():
  per_seed = [[0.1, 0.2, 0.1], [0.2, 0.1, 0.2], [0.3, 0.4, 0.3], [0.4, 0.3, 0.4]]    # seeds 0 and 2 agree
  got = ranking.seed_agreement(per_seed)
  pairs = [ranking.correlations([r[i] for r in per_seed], [r[j] for r in per_seed])["kendall_tau"]
           for i, j in ((0, 1), (0, 2), (1, 2))]
  assert got["kendall_tau"] == pytest.approx(np.mean(pairs)) and pairs[1] == pytest.approx(1.0)
  assert all(math.isnan(v) for v in ranking.seed_agreement([[0.1], [0.2]]).values())


def test_bootstrap_intervals_and_paired_differences():
  x = np.linspace(0.3, 0.8, 12)
  rng = np.random.default_rng(0)
  noisy = x + rng.normal(0, 0.1, 12)
  out = ranking.bootstrap(x, {"today": noisy, "same": noisy, "perfect": 2 * x}, reference="today", resamples=500)
  assert 0 < out["resamples"] <= 500 and out["level"] == 0.95
  value, low, high = out["settings"]["today"]["kendall_tau"]
  assert value == pytest.approx(ranking.correlations(x, noisy)["kendall_tau"])
  assert low <= value <= high and low < high
  assert out["settings"]["perfect"]["kendall_tau"] == pytest.approx([1, 1, 1])
  assert out["differences"]["same"]["kendall_tau"] == pytest.approx([0, 0, 0])   # shared resamples: exactly paired
  d_value, d_low, _ = out["differences"]["perfect"]["kendall_tau"]
  assert d_value == pytest.approx(1 - value) and d_low > 0
  assert "today" not in out["differences"]
  with pytest.raises(ValueError, match="reference 'none'"):
    ranking.bootstrap(x, {"today": noisy}, reference="none")


def _record():
  archs = [{"name": f"a{i}", "point": {}, "gflops": 0.001 * (i + 1), "standalone": [0.3 + 0.05 * i, 0.32 + 0.05 * i],
            "standalone_mean": 0.31 + 0.05 * i} for i in range(5)]
  means = [a["standalone_mean"] for a in archs]
  settings = {"today": [0.2, 0.3, 0.25, 0.4, 0.5], "inplace": [0.2, 0.25, 0.3, 0.4, 0.5]}
  boot = ranking.bootstrap(means, settings, reference="today", resamples=200)
  return {"version": ranking.RANKING_VERSION, "task": "toy", "seeds": [0, 1], "archs": archs,
          "seed_agreement": ranking.seed_agreement([a["standalone"] for a in archs]),
          "settings": {k: {"inherited": v, "search_seconds": 12.0, **boot["settings"][k]} for k, v in settings.items()},
          "differences": boot["differences"], "bootstrap": {"resamples": boot["resamples"], "level": 0.95}}


def test_check_record_names_the_missing_key():
  ranking.check_record(_record())
  bad = _record()
  bad["settings"]["today"]["inherited"] = [0.1]
  with pytest.raises(ValueError, match=r"x.json: settings\['today'\].inherited has 1 accuracies for 5 archs"):
    ranking.check_record(bad, "x.json")
  bad = _record()
  del bad["archs"][2]["standalone_mean"]
  with pytest.raises(ValueError, match=r"archs\[2\] has no 'standalone_mean'"):
    ranking.check_record(bad)
  with pytest.raises(ValueError, match="version"):
    ranking.check_record({**_record(), "version": 99})


def test_report_draws_the_ranking_and_tabulates_it(tmp_path):
  from test_report import check_png
  paths = report.write_report(tmp_path, {"title": "toy", "models": [], "ranking": _record()})
  check_png(paths["ranking"])
  md = open(paths["report"]).read()
  assert "## Supernet ranking" in md and "![supernet ranking](ranking.png)" in md
  assert "Kendall tau between seeds, mean over pairs): 1.00" in md
  row = [line for line in md.splitlines() if line.startswith("| inplace |")][0]
  tau = _record()["settings"]["inplace"]["kendall_tau"]
  assert f"{tau[0]:.2f} [{tau[1]:.2f}, {tau[2]:.2f}]" in row


def test_run_reads_a_workdirs_ranking_record_and_rejects_a_bad_one(tmp_path):
  from autox3d_jax.run import ranking_extra
  assert ranking_extra(str(tmp_path)) == {}
  (tmp_path / "ranking").mkdir()
  path = tmp_path / "ranking" / "ranking.json"
  path.write_text(json.dumps(_record()))
  assert ranking_extra(str(tmp_path))["ranking"]["task"] == "toy"
  path.write_text(json.dumps({**_record(), "settings": {}}))
  with pytest.raises(ValueError, match=f"{path}: 'settings' must map"):
    ranking_extra(str(tmp_path))
