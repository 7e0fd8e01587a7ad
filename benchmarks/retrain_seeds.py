"""Retrain ArchSpecs with several seeds under a config's training recipe and print their top-1.

Why: one retraining of a tiny network for a few hundred steps is a lottery (the same network's
top-1 spreads widely over seeds; benchmarks/RESULTS.md, 'Demo retraining over seeds'), so a
searched-vs-baseline comparison needs several seeds before it means anything. Appends JSON lines
to benchmarks/results/retrain_seeds.jsonl.

  python benchmarks/retrain_seeds.py --seeds 0,1,2,3,4 \
      /tmp/autox3d_demo/report/AutoX3D_searched.json /tmp/autox3d_demo/report/X3D-like_baseline.json
  # the demo's motion variant, or any config key as with --config.KEY=VALUE:
  python benchmarks/retrain_seeds.py --config-arg motion --set train.steps=300 \
      benchmarks/results/archs/x3d_like_baseline.json

The default recipe is configs/demo.py's default variant (the speed task).
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from common import load_avg  # noqa: E402


def apply_override(cfg, key: str, value: str) -> None:
  """`--set a.b=value`, parsed like absl's --config.a.b=value: as the existing field's type."""
  import ast
  *parents, leaf = key.split(".")
  node = cfg
  for name in parents:
    node = node[name]
  if leaf not in node:
    raise KeyError(f"--set {key}: no such config key")
  old = node[leaf]
  node[leaf] = value if isinstance(old, str) else type(old)(ast.literal_eval(value)) \
      if isinstance(old, (int, float, bool)) else ast.literal_eval(value)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("archs", nargs="+", help="ArchSpec JSON files (or zoo names)")
  parser.add_argument("--config", default="configs/demo.py", help="config file whose recipe is used")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--steps", type=int, default=0, help="0: the config's train.steps")
  parser.add_argument("--lr", type=float, default=0.0, help="0: the config's train.optimizer.lr")
  parser.add_argument("--warmup", type=int, default=0, help="0: the config's train.optimizer.warmup_steps")
  parser.add_argument("--config-arg", default="", help="the config file's variant argument")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="config override, e.g. --set data.name=moving_digits/motion_small (repeatable)")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "retrain_seeds.jsonl"))
  args = parser.parse_args()

  import importlib.util
  from autox3d_jax.run import load_arch
  from autox3d_jax.train import setup
  from autox3d_jax.cpu import hostmem
  from autox3d_jax.train.train_loop import run_train

  hostmem.keep_freed_memory_on_cpu()   # as main does for every run
  spec_module = importlib.util.spec_from_file_location("bench_config", args.config)
  module = importlib.util.module_from_spec(spec_module)
  spec_module.loader.exec_module(module)
  for path in args.archs:
    for seed in (int(s) for s in args.seeds.split(",")):
      cfg = module.get_config(args.config_arg)
      for item in args.set:
        key, _, value = item.partition("=")
        apply_override(cfg, key, value)
      cfg.seed = seed
      cfg.train.steps = args.steps or cfg.train.steps
      cfg.train.optimizer.lr = args.lr or cfg.train.optimizer.lr
      cfg.train.optimizer.warmup_steps = args.warmup or cfg.train.optimizer.warmup_steps
      spec = load_arch(path, setup.num_classes(cfg)).replace(num_frames=cfg.data.num_frames,
                                                               crop_size=cfg.data.crop_size)
      start = time.time()
      with tempfile.TemporaryDirectory() as workdir:
        result = run_train(cfg, workdir, spec, spec.name)
      line = {"bench": "retrain_seeds", "config": args.config, "overrides": args.set, "arch": path,
              "name": spec.name, "seed": seed, "steps": cfg.train.steps, "lr": cfg.train.optimizer.lr,
              "warmup": cfg.train.optimizer.warmup_steps, "top1": round(result.top1, 4),
              "gflops": round(result.gflops, 6), "seconds": round(time.time() - start, 1), "load": load_avg()}
      print(json.dumps(line), flush=True)
      os.makedirs(os.path.dirname(args.out), exist_ok=True)
      with open(args.out, "a") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
  main()
