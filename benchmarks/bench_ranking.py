"""Does the supernet rank its children as stand-alone training does? The measurement every search
claim rests on.

On the embedded benchmark at the demo's scale (configs/demo.py, the speed task):
1. `--archs` architectures of the demo space spread over its FLOPs range (`search.ranking.spread_points`);
2. each trained stand-alone with the demo's retraining recipe, once per `--seeds`; the mean top-1 on
   the validation split is its true accuracy. Every training is cached in
   benchmarks/results/ranking_standalone.jsonl under its run identity (seed, data, recipe,
   architecture, code version), so a later run retrains only what changed;
3. the demo's supernet trained once per `--settings` (today's demo, and each lever), each child
   scored with its inherited weights after batch-norm recalibration (SPOS's, on
   search.evolution.bn_batches training batches) on the same validation split;
4. Kendall's tau and Spearman's rho between the two, with percentile-bootstrap intervals over the
   architectures, and each lever's difference to `today` on the same resamples.

Prints and appends JSON lines to benchmarks/results/ranking.jsonl, writes the whole record to
<workdir>/ranking/ranking.json (the report of a run in that workdir draws it: `mode=report`) and
a copy to benchmarks/results/ranking_<tag>.json.

  python benchmarks/bench_ranking.py --archs 12 --seeds 0,1 --settings today,inplace --workdir /tmp/ranking
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from common import StandaloneCache, append_line  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

# Supernet settings: config overrides on configs/demo.py in mode search. 'today' is the demo as shipped.
# TEACHER stands for the trained teacher's checkpoint directory (`_teacher`).
TEACHER = "<teacher>"
SETTINGS = {
    "today": {},
    "inplace": {"search.distill": "inplace"},
    "no_sandwich": {"search.sandwich": False, "search.largest_warmup_steps": 0},
    "flownas": {"search.feature_distill.teacher": TEACHER},
    "flownas_all_stages": {"search.feature_distill.teacher": TEACHER, "search.feature_distill.stages": (0, 1, 2, 3)},
    "inplace_flownas": {"search.distill": "inplace", "search.feature_distill.teacher": TEACHER},
}

def _set(cfg, key: str, value) -> None:
  *parents, leaf = key.split(".")
  node = cfg
  for name in parents:
    node = node[name]
  node[leaf] = value


def _teacher(args, space) -> str:
  """The feature teacher's checkpoint directory: the space's X3D-like point trained stand-alone
  with the demo's recipe (seed 0) in <workdir>/teacher, trained on first use and kept."""
  from autox3d_jax import configs
  from autox3d_jax.train import loop, setup
  from autox3d_jax.train.train_loop import run_train
  spec = space.to_arch(setup.x3d_like_point(space), name="teacher")
  workdir = os.path.join(args.workdir, "teacher")
  directory = loop.run_dirs(workdir, "train", spec.name).checkpoints
  if not os.path.isdir(directory):
    cfg = configs.get("demo", args.config_arg)
    cfg.mode, cfg.seed = "train", 0
    r = run_train(cfg, workdir, spec, spec.name)
    print(f"teacher {spec.name}: top-1 {r.top1:.4f}", flush=True)
  return directory


def _validation_batches(cfg) -> list:
  """The validation split as the scorer's batches: one view per clip (the demo's protocol), padding masked."""
  import numpy as np
  from autox3d_jax.train import setup
  if cfg.data.num_temporal_views * cfg.data.num_spatial_crops != 1:
    raise SystemExit("bench_ranking scores one view per clip: set data.num_temporal_views = num_spatial_crops = 1")
  return [{"video": np.asarray(b["video"])[:, 0], "label": np.asarray(b["label"]), "mask": np.asarray(b["mask"])}
          for b in setup.eval_pipeline(cfg)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--archs", type=int, default=12)
  parser.add_argument("--arch-seed", type=int, default=0, help="seed of the architectures' draw")
  parser.add_argument("--seeds", default="0,1", help="stand-alone retraining seeds")
  parser.add_argument("--settings", default="today,inplace", help=f"supernet settings, of {list(SETTINGS)}")
  parser.add_argument("--bootstrap", type=int, default=2000)
  parser.add_argument("--workdir", default="/tmp/autox3d_ranking", help="supernet runs (kept: a rerun resumes)")
  parser.add_argument("--tag", default="", help="name of the record's copy in --results ('' = none)")
  parser.add_argument("--config-arg", default="speed", help="configs/demo.py's variant (tiny: a seconds-long smoke run)")
  parser.add_argument("--resume", default="", help="config.resume for the supernet runs kept in --workdir (keys "
                      "allowed to differ from their checkpoints', e.g. ones added to the config since)")
  parser.add_argument("--results", default=RESULTS, help="folder of ranking.jsonl, ranking_standalone.jsonl and the copy")
  args = parser.parse_args()
  out_path = os.path.join(args.results, "ranking.jsonl")
  standalone_path = os.path.join(args.results, "ranking_standalone.jsonl")
  settings = [s.strip() for s in args.settings.split(",") if s.strip()]
  unknown = [s for s in settings if s not in SETTINGS]
  if unknown or "today" not in settings:
    raise SystemExit(f"--settings: {unknown or 'today is required (the reference)'}; choose from {list(SETTINGS)}")

  import jax
  import numpy as np

  from autox3d_jax import config as config_lib
  from autox3d_jax import configs
  from autox3d_jax.cpu import hostmem
  from autox3d_jax.cost.analytic import arch_cost
  from autox3d_jax.search import ranking
  from autox3d_jax.search import supernet as sn
  from autox3d_jax.search.recalibrate import make_point_scorer
  from autox3d_jax.train import setup
  from autox3d_jax.train.search_loop import restore_supernet_variables, run_search, split_names

  hostmem.keep_freed_memory_on_cpu()
  seeds = [int(s) for s in args.seeds.split(",")]
  base = configs.get("demo", args.config_arg)
  setup.ensure_dataset(base)
  space = setup.build_space(base)
  table = setup.build_cost_table(space, base)
  points = ranking.spread_points(space, table.of_point, args.archs, seed=args.arch_seed)
  specs = [space.to_arch(p, name=f"ranked-{i:02d}") for i, p in enumerate(points)]

  # 2. Stand-alone accuracies (cached by run identity).
  cache = StandaloneCache(standalone_path)
  standalone = []
  for spec, point in zip(specs, points):
    tops = []
    for seed in seeds:
      cfg = configs.get("demo", args.config_arg)
      cfg.mode, cfg.seed = "train", seed
      tops.append(cache.train(cfg, spec, os.path.join(args.workdir, "standalone"), {"point": point}))
    standalone.append(tops)
  means = [statistics.mean(t) for t in standalone]

  # 3. Inherited accuracies, one supernet per setting.
  eval_batches = _validation_batches(base)
  record = {"version": ranking.RANKING_VERSION, "task": base.data.name, "seeds": seeds,
            "seed_agreement": ranking.seed_agreement(standalone),
            "archs": [{"name": s.name, "point": p, "gflops": arch_cost(s).gflops, "standalone": t,
                       "standalone_mean": m} for s, p, t, m in zip(specs, points, standalone, means)],
            "settings": {}}
  for name in settings:
    cfg = configs.get("demo", args.config_arg)
    cfg.mode = "search"
    for key, value in SETTINGS[name].items():
      _set(cfg, key, _teacher(args, space) if value == TEACHER else value)
    cfg.resume = args.resume
    config_lib.validate(cfg)
    workdir = os.path.join(args.workdir, name)
    t0 = time.time()
    found = run_search(cfg, workdir, space)
    seconds = time.time() - t0
    variables = jax.tree_util.tree_map(np.asarray, restore_supernet_variables(workdir))
    weight_split, _ = split_names(cfg)
    calib = [{"video": b["video"], "label": b["label"]}
             for b, _ in zip(setup.train_pipeline(cfg, weight_split, seed_offset=2), range(cfg.search.evolution.bn_batches))]
    model = sn.Supernet(space, dtype=setup.compute_dtype(cfg))
    t1 = time.time()
    score = make_point_scorer(model, space, variables, calib, eval_batches)
    inherited = score(points)
    searched_inherited = score([found.point])[0]
    record["settings"][name] = {"overrides": SETTINGS[name], "inherited": inherited,
                                "search_seconds": round(seconds, 1), "search_steps": cfg.search.steps,
                                "score_seconds": round(time.time() - t1, 1), "searched": found.spec.to_dict(),
                                "searched_inherited": searched_inherited,
                                **ranking.correlations(means, inherited)}
    append_line(out_path, "ranking", {"what": "setting", "setting": name, "task": base.data.name, "archs": len(points),
                                 "seeds": seeds, **{k: v for k, v in record["settings"][name].items()
                                                    if k not in ("searched",)}})

  # 4. Intervals, and each lever against today's supernet on the same resamples.
  boot = ranking.bootstrap(means, {k: v["inherited"] for k, v in record["settings"].items()}, reference="today",
                           resamples=args.bootstrap)
  for name, stats in boot["settings"].items():
    record["settings"][name].update(stats)
  record["differences"] = boot["differences"]
  record["bootstrap"] = {"resamples": boot["resamples"], "level": boot["level"]}
  ranking.check_record(record)
  out_dir = os.path.join(args.workdir, "ranking")
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "ranking.json"), "w") as f:
    json.dump(record, f, indent=1)
  if args.tag:
    with open(os.path.join(args.results, f"ranking_{args.tag}.json"), "w") as f:
      json.dump(record, f, indent=1)
  from autox3d_jax.report.plots import plot_ranking
  plot_ranking(record, os.path.join(out_dir, "ranking.png"), base.data.name)
  append_line(out_path, "ranking", {"what": "summary", "task": base.data.name, "archs": len(points), "seeds": seeds,
                               "standalone_mean": [round(m, 4) for m in means],
                               "seed_agreement": {k: round(v, 3) for k, v in record["seed_agreement"].items()},
                               "settings": {k: {s: [round(x, 3) for x in v[s]] for s in ranking.STATISTICS}
                                            for k, v in record["settings"].items()},
                               "differences": {k: {s: [round(x, 3) for x in v[s]] for s in ranking.STATISTICS}
                                               for k, v in record["differences"].items()},
                               "bootstrap": record["bootstrap"]})


if __name__ == "__main__":
  main()
