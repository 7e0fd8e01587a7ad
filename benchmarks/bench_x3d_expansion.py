"""AutoX3D's search against X3D's own expansion at the same FLOPs budget, the paper's comparison.

Reads two finished runs' reports -- a demo (configs/demo.py: the supernet search and its X3D-like
baseline) and an X3D expansion (configs/search_x3d_expansion.py:demo) -- and retrains the searched
network, the X3D-expanded network (at its own clip: frames, stride, crop) and the X3D-like baseline
with the demo's retraining recipe, once per seed. Prints and appends one JSON line per training to
benchmarks/results/x3d_expansion.jsonl, then a summary line: mean top-1 per network, the paired
difference per seed with its mean and standard error, and each search's cost (wall seconds,
networks trained), and writes a report with the three networks side by side (their per-seed and
mean top-1, the paired differences, each search's cost) and the expansion's path: `--report`,
default <expansion workdir>/comparison.

  python -m autox3d_jax.main --config=configs/demo.py --workdir=/tmp/demo
  python -m autox3d_jax.main --config=configs/search_x3d_expansion.py:demo --workdir=/tmp/x3d_expansion
  python benchmarks/bench_x3d_expansion.py --demo /tmp/demo --expansion /tmp/x3d_expansion --seeds 0,1,2,3,4
"""
import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from common import append_line, mean_se  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "x3d_expansion.jsonl")


def _write(line: dict) -> None:
  append_line(OUT, "x3d_expansion", line)


def _paired(a: list[float], b: list[float]) -> dict:
  diffs = [x - y for x, y in zip(a, b)]
  mean, se = mean_se(diffs)
  return {"diffs": [round(d, 4) for d in diffs], "mean": round(mean, 4), "se": round(se, 4)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--demo", required=True, help="workdir of a finished configs/demo.py run")
  parser.add_argument("--expansion", required=True, help="workdir of a finished search_x3d_expansion.py run")
  parser.add_argument("--seeds", default="0,1,2,3,4")
  parser.add_argument("--config-arg", default="speed", help="configs/demo.py's variant (the recipe)")
  parser.add_argument("--reuse", action="store_true",
                      help="take each network's top-1 per seed from earlier lines of the results file with the "
                           "same --demo (and, for the expanded network, the same --expansion): retrain only "
                           "what has no line")
  parser.add_argument("--report", default="", help="where the comparison report goes (default "
                                                   "<expansion>/comparison)")
  args = parser.parse_args()

  from autox3d_jax import configs
  from autox3d_jax.cpu import hostmem
  from autox3d_jax.models.spec import ArchSpec
  from autox3d_jax.models.zoo import X3DFactors
  from autox3d_jax.report import read_results
  from autox3d_jax.train import expansion_loop
  from autox3d_jax.train.train_loop import run_train

  hostmem.keep_freed_memory_on_cpu()
  demo = read_results(os.path.join(args.demo, "report"))
  expanded = read_results(os.path.join(args.expansion, "report"))
  by_kind = {m["kind"]: m for m in demo["models"]}
  final = next(c for c in expanded["expansion"]["candidates"] if c["final"])
  f = final["factors"]
  recipe = configs.get("demo", args.config_arg)
  networks = {   # name: (network, its clip's factors; None = the recipe's clip)
      "AutoX3D (searched)": (ArchSpec.from_dict(by_kind["searched"]["arch"]), None),
      "X3D-expanded": (ArchSpec.from_dict(final["arch"]).replace(name="X3D-expanded"), X3DFactors(**f)),
      "X3D-like baseline": (ArchSpec.from_dict(by_kind["baseline"]["arch"]), None),
  }
  search_s = re.search(r"search (\d+) s", " ".join(demo.get("notes", [])))
  costs = {"AutoX3D (searched)": {"seconds": int(search_s.group(1)) if search_s else None,
                                  "networks_trained": 1, "steps": recipe.search.steps},
           "X3D-expanded": {"seconds": sum(c["seconds"] for c in expanded["expansion"]["candidates"]),
                            "networks_trained": len(expanded["expansion"]["candidates"])}}
  top1 = {name: [] for name in networks}
  seeds = [int(s) for s in args.seeds.split(",")]
  earlier = {}
  if args.reuse and os.path.exists(OUT):
    with open(OUT) as f:
      for line in map(json.loads, f):
        if line.get("demo") == args.demo and "network" in line and (
            line["network"] != "X3D-expanded" or line.get("expansion") == args.expansion):
          earlier[(line["network"], line["seed"])] = line["top1"]
  for seed in seeds:
    for name, (spec, clip) in networks.items():
      if (name, seed) in earlier:
        top1[name].append(earlier[(name, seed)])
        continue
      cfg = recipe.copy_and_resolve_references() if clip is None else expansion_loop.clip_config(recipe, clip)
      cfg.seed = seed
      spec = spec.replace(num_frames=cfg.data.num_frames, crop_size=cfg.data.crop_size)
      start = time.time()
      with tempfile.TemporaryDirectory() as workdir:
        result = run_train(cfg, workdir, spec, spec.name)
      top1[name].append(result.top1)
      _write({"network": name, "seed": seed, "top1": round(result.top1, 4), "gflops": round(result.gflops, 6),
              "params": result.params, "clip": [cfg.data.num_frames, cfg.data.sampling_stride, cfg.data.crop_size],
              "steps": cfg.train.steps, "seconds": round(time.time() - start, 1), "demo": args.demo,
              "expansion": args.expansion})
  summary = {"summary": True, "seeds": seeds,
             "mean_top1": {k: round(statistics.mean(v), 4) for k, v in top1.items()},
             "searched_minus_expanded": _paired(top1["AutoX3D (searched)"], top1["X3D-expanded"]),
             "expanded_minus_baseline": _paired(top1["X3D-expanded"], top1["X3D-like baseline"]),
             "searched_minus_baseline": _paired(top1["AutoX3D (searched)"], top1["X3D-like baseline"]),
             "search_cost": costs, "demo": args.demo, "expansion": args.expansion}
  _write(summary)
  written = _report(args.report or os.path.join(args.expansion, "comparison"), networks, top1, seeds, summary,
                    expanded, recipe)
  print(f"report: {written['report']}")


def _report(directory, networks, top1, seeds, summary, expanded, recipe) -> dict:
  """The comparison as an autox3d_jax report: one row per network (mean and per-seed top-1 at its
  own clip), notes with the paired differences and search costs, and the expansion's path."""
  from autox3d_jax import report
  from autox3d_jax.cost.analytic import arch_cost
  kinds = {"AutoX3D (searched)": "searched", "X3D-expanded": "x3d-expanded", "X3D-like baseline": "baseline"}
  models = []
  for name, (spec, clip) in networks.items():
    if clip is not None:
      spec = spec.replace(num_frames=clip.frames, crop_size=clip.crop)
    cost = arch_cost(spec)
    models.append({"name": name, "kind": kinds[name], "top1": statistics.mean(top1[name]), "gflops": cost.gflops,
                   "params": cost.params, "arch": spec, "seeds": seeds, "top1_per_seed": top1[name]})

  def paired(key, what):
    d = summary[key]
    return f"{what}: {100 * d['mean']:+.2f} points, standard error {100 * d['se']:.2f} (paired over seeds {seeds})."
  cost = summary["search_cost"]
  notes = [f"Each network retrained with configs/demo.py's recipe ({recipe.train.steps} steps) at its own clip, "
           f"top-1 on {recipe.data.name} {recipe.data.eval_split}, mean of {len(seeds)} seeds.",
           paired("searched_minus_expanded", "AutoX3D minus X3D-expanded"),
           paired("searched_minus_baseline", "AutoX3D minus the X3D-like baseline"),
           paired("expanded_minus_baseline", "X3D-expanded minus the X3D-like baseline"),
           f"Search cost: AutoX3D {cost['AutoX3D (searched)']['seconds']} s (one supernet of "
           f"{cost['AutoX3D (searched)']['steps']} steps); X3D's expansion {cost['X3D-expanded']['seconds']:.0f} s of "
           f"training, {cost['X3D-expanded']['networks_trained']} networks."]
  results = {"title": f"AutoX3D against X3D's expansion: {recipe.data.name}", "models": models, "notes": notes,
             "expansion": expanded["expansion"]}
  return report.write_report(directory, results)


if __name__ == "__main__":
  main()
