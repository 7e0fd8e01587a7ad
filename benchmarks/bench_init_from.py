"""Does a search on task B gain from starting at a network trained on task A (search.init_from)?

Measures, on the embedded benchmark at the demo's scale (configs/demo.py, the speed task as B):
1. the demo space's X3D-like point trained on task A (default moving_digits/motion_small) with the
   demo's retraining recipe;
2. the demo's search on B twice, at the same step budget: from random weights, and from that
   network (`search.init_from`, `search.init_new_blocks` as given);
3. each derived network fine-tuned from its inherited supernet weights with the demo's retraining
   recipe (`--finetune-steps`, default the recipe's train.steps), once per seed; top-1 on B's
   validation split.
Prints and appends one JSON line per measurement to benchmarks/results/init_from.jsonl, then a
summary line (mean top-1 per start, the paired difference per seed, its mean and standard error).

  python benchmarks/bench_init_from.py --seeds 0,1,2,3,4 [--task-a moving_digits/appearance_small]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from common import append_line, mean_se  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "init_from.jsonl")


def _write(line: dict) -> None:
  append_line(OUT, "init_from", line)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", default="0,1,2,3,4")
  parser.add_argument("--task-a", default="moving_digits/motion_small")
  parser.add_argument("--jitter-a", default="40,48", help="task A's scale jitter (configs/demo.py:motion's)")
  parser.add_argument("--new-blocks", default="identity", choices=("identity", "copy_last"))
  parser.add_argument("--finetune-steps", type=int, default=0, help="0: the demo recipe's train.steps")
  parser.add_argument("--workdir", default="", help="'' = a temporary directory (kept runs resume)")
  args = parser.parse_args()

  import jax
  import numpy as np

  from autox3d_jax import configs
  from autox3d_jax.cpu import hostmem
  from autox3d_jax.search import derive as derive_lib
  from autox3d_jax.train import loop, setup
  from autox3d_jax.train.search_loop import pretrained_network, restore_supernet_variables, run_search
  from autox3d_jax.train.train_loop import run_train

  hostmem.keep_freed_memory_on_cpu()
  root = args.workdir or tempfile.mkdtemp(prefix="autox3d_init_from_")
  seeds = [int(s) for s in args.seeds.split(",")]

  # 1. The X3D-like point of the demo space, trained on task A.
  cfg_a = configs.get("demo")
  cfg_a.mode = "train"
  cfg_a.data.name = args.task_a
  cfg_a.data.scale_jitter = tuple(int(v) for v in args.jitter_a.split(","))
  setup.ensure_dataset(cfg_a)
  space_a = setup.build_space(cfg_a)
  network = space_a.to_arch(setup.x3d_like_point(space_a), name="X3D-like on A")
  start = time.time()
  trained_a = run_train(cfg_a, os.path.join(root, "a"), network, network.name)
  _write({"what": "task A network", "task": args.task_a, "name": network.name, "top1": round(trained_a.top1, 4),
          "steps": cfg_a.train.steps, "seconds": round(time.time() - start, 1)})
  a_checkpoints = loop.run_dirs(os.path.join(root, "a"), "train", network.name).checkpoints

  # 2. + 3. The demo's search on B from random weights and from the task-A network; fine-tuning.
  results = {}
  for start_from in ("random", "pretrained"):
    cfg_b = configs.get("demo")
    cfg_b.mode = "search"
    if start_from == "pretrained":
      cfg_b.search.init_from = a_checkpoints
      cfg_b.search.init_new_blocks = args.new_blocks
    pretrained = pretrained_network(cfg_b)
    setup.ensure_dataset(cfg_b)
    space = setup.build_space(cfg_b)
    workdir = os.path.join(root, f"b_{start_from}")
    t0 = time.time()
    found = run_search(cfg_b, workdir, space, pretrained)
    _write({"what": "search", "start": start_from, "task": cfg_b.data.name, "steps": cfg_b.search.steps,
            "arch": found.spec.to_dict(), "cost": found.cost, "cost_target": found.cost_target,
            "seconds": round(time.time() - t0, 1)})
    supernet = jax.tree_util.tree_map(np.asarray, restore_supernet_variables(workdir))   # the train step donates
    point = space.point_of(found.spec)
    results[start_from] = []
    for seed in seeds:
      cfg_t = configs.get("demo")
      cfg_t.mode, cfg_t.seed = "train", seed
      cfg_t.train.steps = args.finetune_steps or cfg_t.train.steps
      init = derive_lib.inherit_variables(space, point, supernet, found.spec)
      t0 = time.time()
      r = run_train(cfg_t, workdir, found.spec, f"finetune seed {seed}", init)
      results[start_from].append(r.top1)
      _write({"what": "fine-tune", "start": start_from, "seed": seed, "steps": cfg_t.train.steps,
              "top1": round(r.top1, 4), "gflops": round(r.gflops, 6), "seconds": round(time.time() - t0, 1)})

  diffs = [p - r for p, r in zip(results["pretrained"], results["random"])]
  diff_mean, se = mean_se(diffs)
  _write({"what": "summary", "task_a": args.task_a, "new_blocks": args.new_blocks, "seeds": seeds,
          "mean_top1": {k: round(statistics.mean(v), 4) for k, v in results.items()},
          "paired_diff_mean": round(diff_mean, 4), "paired_diff_se": round(se, 4),
          "per_seed": {k: [round(t, 4) for t in v] for k, v in results.items()}})


if __name__ == "__main__":
  main()
