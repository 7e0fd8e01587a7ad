"""Does the search adapt to the task? Searches on a motion task and on an appearance task should
differ in how much temporal extent they choose, in the direction the tasks imply.

Runs configs/demo.py's search (variant `--config-arg`, default motion: 300 steps; mode search, no
retraining) once per task and seed, and measures each searched network's temporal extent
(`cost.analytic.temporal_extent`): the mean temporal kernel k_t over its blocks and the share of
the blocks' FLOPs in blocks with k_t > 1. Prints and appends one JSON line per search to
benchmarks/results/task_adaptation.jsonl, then a summary: per measure, how many (motion, appearance)
seed pairs are ordered as the tasks imply (motion higher), over matched seeds and over all pairs.

  python benchmarks/bench_task_adaptation.py --seeds 0,1,2 --workdir /tmp/autox3d_tasks

A rerun with the same --workdir resumes finished searches from their checkpoints.
"""
import argparse
import itertools
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from common import append_line  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MEASURES = ("mean_kt", "temporal_flops_share")


def ordered_pairs(motion: dict, appearance: dict) -> dict:
  """{measure: {'matched': [k, n], 'all': [k, n]}}: of the matched-seed pairs and of all pairs,
  how many have the motion search's measure strictly above the appearance search's.
  `motion` / `appearance`: {seed: {measure: value}}."""
  out = {}
  for m in MEASURES:
    matched = [(motion[s][m], appearance[s][m]) for s in motion if s in appearance]
    every = [(a[m], b[m]) for a, b in itertools.product(motion.values(), appearance.values())]
    out[m] = {"matched": [sum(x > y for x, y in matched), len(matched)],
              "all": [sum(x > y for x, y in every), len(every)]}
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--motion", default="moving_digits/motion_small")
  parser.add_argument("--appearance", default="moving_digits/appearance_small")
  parser.add_argument("--config-arg", default="motion", help="configs/demo.py's variant (the search recipe)")
  parser.add_argument("--workdir", default="/tmp/autox3d_tasks")
  parser.add_argument("--out", default=os.path.join(HERE, "results", "task_adaptation.jsonl"))
  args = parser.parse_args()

  from autox3d_jax import config as config_lib
  from autox3d_jax import configs, run
  from autox3d_jax.cost.analytic import arch_cost, temporal_extent
  from autox3d_jax.cpu import hostmem

  hostmem.keep_freed_memory_on_cpu()
  seeds = [int(s) for s in args.seeds.split(",")]
  found = {"motion": {}, "appearance": {}}
  for kind, task in (("motion", args.motion), ("appearance", args.appearance)):
    for seed in seeds:
      cfg = configs.get("demo", args.config_arg)
      cfg.mode = "search"
      cfg.data.name = task
      cfg.seed = seed
      config_lib.validate(cfg)
      workdir = os.path.join(args.workdir, f"{task.replace('/', '_')}_seed{seed}")
      start = time.time()
      result = run.search(cfg, workdir)
      t = temporal_extent(result.spec)
      found[kind][seed] = {"mean_kt": t.mean_kt, "temporal_flops_share": t.temporal_flops_share}
      append_line(args.out, "task_adaptation", {
          "task": task, "kind": kind, "seed": seed, "mean_kt": round(t.mean_kt, 4),
          "temporal_flops_share": round(t.temporal_flops_share, 4), "blocks": t.blocks,
          "ops": [f"{b.type}:{'x'.join(map(str, b.kernel))}" for s in result.spec.stages for b in s.blocks],
          "gflops": round(arch_cost(result.spec).gflops, 6), "search_steps": cfg.search.steps,
          "seconds": round(time.time() - start, 1), "workdir": workdir})
  append_line(args.out, "task_adaptation", {"summary": True, "seeds": seeds, "config_arg": args.config_arg,
                                            "motion_above_appearance": ordered_pairs(found["motion"],
                                                                                     found["appearance"]),
                                            "values": found})


if __name__ == "__main__":
  main()
