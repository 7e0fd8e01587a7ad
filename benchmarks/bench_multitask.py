"""One multi-task search against single-task searches of the same budget (FBNetV5 / RSBNet at demo
scale).

Runs configs/demo.py:multitask (one search over the motion, appearance and speed tasks: a head, an
architecture distribution and a derived network per task), then, per task, a single-task search
with the same recipe, steps, groups and batch, so that each single-task search costs what the whole
multi-task search costs. Every derived network is retrained on its task with --seeds (each the
same recipe: config.train at --train-steps) and evaluated on the task's validation split.
Writes <workdir>/comparison.md (the per-task networks side by side, FLOPs, temporal extent, mean
top-1 and its standard error, the paired difference per task) and appends one JSON line per task
and a summary to benchmarks/results/multitask.jsonl.

  python benchmarks/bench_multitask.py --seeds 0,1,2 --workdir /tmp/autox3d_multitask

A rerun with the same --workdir resumes every search and retraining from its checkpoints.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from common import append_line, mean_se  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def comparison_markdown(rows, multitask_seconds, single_seconds, seeds, train_steps) -> str:
  """The report: one section per task (rows: {'task', 'dataset', 'networks': {kind: {...}}})."""
  md = ["# Multi-task search vs single-task searches of the same budget", "",
        f"One multi-task search ({multitask_seconds:.0f} s) against one single-task search per task "
        f"({', '.join(f'{t} {s:.0f} s' for t, s in single_seconds.items())}), each with the multi-task search's "
        f"steps, groups and batch. Every network retrained {train_steps} steps with seeds {seeds}; top-1 in %, "
        "mean ± standard error over the seeds; the paired difference is over the same seeds.", ""]
  header = "| task | network | MFLOPs | mean k_t | temporal FLOPs | top-1 | per seed |"
  md += [header, "|" + "---|" * 7]
  for row in rows:
    for kind, n in row["networks"].items():
      md.append(f"| {row['task']} | {kind} | {n['mflops']:.2f} | {n['mean_kt']:.2f} | "
                f"{100 * n['temporal_flops_share']:.0f}% | {100 * n['top1']:.1f} ± {100 * n['top1_se']:.1f} | "
                f"{', '.join(f'{100 * v:.1f}' for v in n['top1_per_seed'])} |")
  md += ["", "Paired difference (multi-task minus single-task) per task:", ""]
  for row in rows:
    d = row["difference"]
    md.append(f"- {row['task']}: {100 * d['mean']:+.1f} ± {100 * d['se']:.1f} points; the two networks differ in "
              f"{row['differing_blocks']} of {row['blocks']} block positions.")
  return "\n".join(md) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", default="0,1,2", help="retraining seeds of every network")
  parser.add_argument("--train-steps", type=int, default=600)
  parser.add_argument("--config-arg", default="multitask", help="configs/demo.py's variant (a multi-task search)")
  parser.add_argument("--workdir", default="/tmp/autox3d_multitask")
  parser.add_argument("--out", default=os.path.join(HERE, "results", "multitask.jsonl"))
  args = parser.parse_args()

  from autox3d_jax import config as config_lib
  from autox3d_jax import configs, run
  from autox3d_jax.cost.analytic import arch_cost, temporal_extent
  from autox3d_jax.cpu import hostmem
  from autox3d_jax.tasks import task_config, tasks_of

  hostmem.keep_freed_memory_on_cpu()
  seeds = [int(s) for s in args.seeds.split(",")]
  cfg = configs.get("demo", args.config_arg)
  config_lib.validate(cfg)
  tasks = tasks_of(cfg)

  start = time.time()
  multi = run.search(cfg, os.path.join(args.workdir, "multitask"))
  multitask_seconds = time.time() - start
  single, single_seconds = {}, {}
  for task in tasks:
    tcfg = task_config(cfg, task)
    config_lib.validate(tcfg)
    start = time.time()
    single[task.name] = run.search(tcfg, os.path.join(args.workdir, f"single_{task.name}"))
    single_seconds[task.name] = time.time() - start

  rows = []
  for task in tasks:
    tcfg = task_config(cfg, task)
    tcfg.train.steps = args.train_steps
    networks = {}
    for kind, spec in (("multi-task", multi.tasks[task.name].spec), ("single-task", single[task.name].spec)):
      spec = spec.replace(name=f"{task.name} {kind}")
      results = run.retrain_seeds(tcfg, os.path.join(args.workdir, "retrain"), spec, spec.name, seeds)
      top1 = [r.top1 for r in results]
      mean, se = mean_se(top1)
      t = temporal_extent(spec)
      networks[kind] = {"mflops": arch_cost(spec).flops / 1e6, "mean_kt": t.mean_kt,
                        "temporal_flops_share": t.temporal_flops_share, "top1": mean, "top1_se": se,
                        "top1_per_seed": top1, "arch": spec.to_dict()}
    diff = [a - b for a, b in zip(networks["multi-task"]["top1_per_seed"], networks["single-task"]["top1_per_seed"])]
    d_mean, d_se = mean_se(diff)
    blocks_m = [b for s in multi.tasks[task.name].spec.stages for b in s.blocks]
    blocks_s = [b for s in single[task.name].spec.stages for b in s.blocks]
    differing = sum(a != b for a, b in zip(blocks_m, blocks_s)) + abs(len(blocks_m) - len(blocks_s))
    row = {"task": task.name, "dataset": task.dataset, "networks": networks,
           "difference": {"mean": d_mean, "se": d_se}, "differing_blocks": differing,
           "blocks": max(len(blocks_m), len(blocks_s))}
    rows.append(row)
    append_line(args.out, "multitask", {**row, "seeds": seeds, "train_steps": args.train_steps,
                                        "search_steps": cfg.search.steps, "workdir": args.workdir})
  md = comparison_markdown(rows, multitask_seconds, single_seconds, seeds, args.train_steps)
  with open(os.path.join(args.workdir, "comparison.md"), "w") as f:
    f.write(md)
  append_line(args.out, "multitask", {"summary": True, "seeds": seeds, "multitask_seconds": round(multitask_seconds, 1),
                                      "single_seconds": {k: round(v, 1) for k, v in single_seconds.items()},
                                      "difference": {r["task"]: r["difference"] for r in rows}})
  print(md)


if __name__ == "__main__":
  main()
