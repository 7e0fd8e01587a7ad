"""Does the search beat the X3D-like baseline, and does it reach AutoX3D's cost ratio? #24's two
search targets, on the embedded benchmark at the demo's scale (configs/demo.py, the speed task).

1. Search: one search per `--search-seeds` (the demo's search, with a `--setting` of
   bench_ranking.SETTINGS), each derived network retrained with the demo's recipe once per
   `--seeds`; the X3D-like baseline (the search's FLOPs target) retrained with the same seeds.
   Per search: the mean top-1 gain over the baseline, paired over the retraining seeds, and its
   standard error. Target: every search gains, and the mean gain over the searches is at least 3
   standard errors (the SE of that mean: the per-search SEs combined, searches independent).
2. Cost headline (`--headline`): the same search with the FLOPs target at the baseline's / 1.74
   (AutoX3D's "up to x1.74 less computation at similar accuracy"), its network retrained with the
   same seeds. Target: its mean top-1 is at least the baseline's.
Stand-alone trainings are cached with bench_ranking's (benchmarks/results/ranking_standalone.jsonl,
by run identity); searches keep their workdirs, so a rerun resumes. Prints and appends JSON lines to
benchmarks/results/search_win.jsonl.

  python benchmarks/bench_search_win.py --search-seeds 0,1,2 --seeds 0,1,2,3,4 --headline
"""
import argparse
import dataclasses
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_ranking import SETTINGS, TEACHER, _set, _teacher  # noqa: E402
from common import StandaloneCache, append_line  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
AUTOX3D_COST_RATIO = 1.74


def paired(searched: list[float], baseline: list[float]) -> dict:
  """Mean and SE of the per-seed differences searched - baseline (top-1, points)."""
  diffs = [100 * (s - b) for s, b in zip(searched, baseline)]
  se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
  return {"gain": statistics.mean(diffs), "se": se, "diffs": diffs}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--search-seeds", default="0,1,2")
  parser.add_argument("--seeds", default="0,1,2,3,4", help="retraining seeds of every network")
  parser.add_argument("--setting", default="today", help=f"the supernet's setting, one of {list(SETTINGS)}")
  parser.add_argument("--headline", action="store_true", help="also search at the baseline's FLOPs / 1.74")
  parser.add_argument("--workdir", default="/tmp/autox3d_search_win")
  parser.add_argument("--config-arg", default="speed", help="configs/demo.py's variant (tiny: a smoke run)")
  parser.add_argument("--results", default=RESULTS)
  args = parser.parse_args()
  if args.setting not in SETTINGS:
    raise SystemExit(f"--setting {args.setting!r}: choose from {list(SETTINGS)}")
  search_seeds = [int(s) for s in args.search_seeds.split(",")]
  seeds = [int(s) for s in args.seeds.split(",")]

  from autox3d_jax import config as config_lib
  from autox3d_jax import configs
  from autox3d_jax.cost.analytic import arch_cost
  from autox3d_jax.cpu import hostmem
  from autox3d_jax.train import setup
  from autox3d_jax.train.search_loop import run_search

  hostmem.keep_freed_memory_on_cpu()
  out_path = os.path.join(args.results, "search_win.jsonl")
  cache = StandaloneCache(os.path.join(args.results, "ranking_standalone.jsonl"))
  base = configs.get("demo", args.config_arg)
  setup.ensure_dataset(base)
  space = setup.build_space(base)
  baseline_point = setup.x3d_like_point(space)
  baseline_spec = space.to_arch(baseline_point, name="X3D-like baseline")
  standalone_dir = os.path.join(args.workdir, "standalone")

  def retrain(spec):
    tops = []
    for seed in seeds:
      cfg = configs.get("demo", args.config_arg)
      cfg.mode, cfg.seed = "train", seed
      tops.append(cache.train(cfg, spec, standalone_dir))
    return tops

  def search(seed: int, cost_target: float = 0.0):
    cfg = configs.get("demo", args.config_arg)
    cfg.mode, cfg.seed = "search", seed
    for key, value in SETTINGS[args.setting].items():
      _set(cfg, key, _teacher(args, space) if value == TEACHER else value)
    if cost_target:
      cfg.search.cost_target, cfg.search.target_arch = cost_target, ""
    config_lib.validate(cfg)
    name = f"seed{seed}" + (f"_target{cost_target:.6g}" if cost_target else "")
    found = run_search(cfg, os.path.join(args.workdir, args.setting, name), space)
    return dataclasses.replace(found.spec, name=f"searched-{args.setting}-{name}")

  baseline = retrain(baseline_spec)
  baseline_gflops = arch_cost(baseline_spec).gflops
  common = {"task": base.data.name, "setting": args.setting, "seeds": seeds,
            "baseline_top1": baseline, "baseline_gflops": round(baseline_gflops, 6)}
  rows = []
  for seed in search_seeds:
    spec = search(seed)
    tops = retrain(spec)
    row = {"search_seed": seed, "gflops": round(arch_cost(spec).gflops, 6), "top1": tops,
           "arch": spec.to_dict(), **paired(tops, baseline)}
    rows.append(row)
    append_line(out_path, "search_win", {"what": "search", **common, **{k: v for k, v in row.items() if k != "arch"}})
  gains = [r["gain"] for r in rows]
  mean_gain = statistics.mean(gains)
  se = math.sqrt(sum(r["se"] ** 2 for r in rows)) / len(rows)
  summary = {"what": "summary", **common, "search_seeds": search_seeds, "gains": gains, "mean_gain": mean_gain,
             "se": se, "gain_over_se": mean_gain / se if se > 0 else float("nan"),
             "every_search_gains": all(g > 0 for g in gains), "target_met": all(g > 0 for g in gains)
             and mean_gain >= 3 * se}
  if args.headline:
    table = setup.build_cost_table(space, base)
    target = table.of_point(baseline_point) / AUTOX3D_COST_RATIO   # in the table's units, as search.cost_target
    spec = search(search_seeds[0], cost_target=target)
    tops = retrain(spec)
    summary["headline"] = {"cost_target": target, "gflops": round(arch_cost(spec).gflops, 6),
                           "flops_ratio": baseline_gflops / arch_cost(spec).gflops, "top1": tops,
                           "arch": spec.to_dict(), **paired(tops, baseline),
                           "target_met": statistics.mean(tops) >= statistics.mean(baseline)}
  append_line(out_path, "search_win", {k: v for k, v in summary.items() if k != "headline"}
              | ({"headline": {k: v for k, v in summary["headline"].items() if k != "arch"}} if args.headline else {}))


if __name__ == "__main__":
  main()
