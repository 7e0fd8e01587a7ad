"""The discretisation gap of the gradient strategies, with and without SSR.

A relaxed search (dnas, gdas, msg) trains the supernet under soft architecture weights and then
keeps one choice per decision. The gap is what that costs: the soft supernet's top-1 (every
decision weighted by softmax(logits)) minus the derived network's top-1 with its inherited
weights, both with BN statistics re-estimated for their own architecture on the same training
batches (as SPOS does). `gap_trained_bn` is the soft supernet with its statistics as trained. `search.ssr_weight` (our reading of
SSR, `search/strategies/base.py:ssr_loss`) pulls the weights towards one-hot during the search and
should shrink the gap.

On the embedded benchmark at the demo's scale (configs/demo.py, the speed task; the demo's
single-path settings sandwich / largest_warmup_steps reset, which the gradient strategies do not
use), one search per `--ssr` weight, all on the validation split. Prints and appends JSON lines to
benchmarks/results/discretisation.jsonl.

  python benchmarks/bench_discretisation.py --strategy dnas --ssr 0,1 --workdir /tmp/autox3d_gap
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from common import append_line  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--strategy", default="dnas", choices=("dnas", "gdas", "msg"))
  parser.add_argument("--ssr", default="0,1", help="search.ssr_weight values, one search each")
  parser.add_argument("--steps", type=int, default=0, help="search.steps (0: the demo's)")
  parser.add_argument("--config-arg", default="speed", help="configs/demo.py's variant (tiny: a smoke run)")
  parser.add_argument("--workdir", default="/tmp/autox3d_gap", help="search runs (kept: a rerun resumes)")
  parser.add_argument("--out", default=os.path.join(HERE, "results", "discretisation.jsonl"))
  args = parser.parse_args()

  import jax
  import jax.numpy as jnp
  import numpy as np

  from autox3d_jax import config as config_lib
  from autox3d_jax import configs
  from autox3d_jax.cost.analytic import arch_cost
  from autox3d_jax.cpu import hostmem
  from autox3d_jax.search import supernet as sn
  from autox3d_jax.search.distribution import ArchDistribution
  from autox3d_jax.search.recalibrate import make_arch_scorer, make_point_scorer
  from autox3d_jax.train import setup
  from autox3d_jax.train.search_loop import restore_supernet_variables, run_search, split_names

  hostmem.keep_freed_memory_on_cpu()
  base = configs.get("demo", args.config_arg)
  setup.ensure_dataset(base)
  space = setup.build_space(base)
  dist = ArchDistribution(space)
  evaluation = [{"video": np.asarray(b["video"])[:, 0], "label": np.asarray(b["label"]), "mask": np.asarray(b["mask"])}
                for b in setup.eval_pipeline(base)]

  for weight in (float(w) for w in args.ssr.split(",")):
    cfg = configs.get("demo", args.config_arg)
    cfg.mode = "search"
    cfg.search.strategy = args.strategy
    cfg.search.sandwich, cfg.search.largest_warmup_steps = False, 0
    cfg.search.ssr_weight = weight
    cfg.search.steps = args.steps or cfg.search.steps
    config_lib.validate(cfg)
    workdir = os.path.join(args.workdir, f"{args.strategy}_ssr{weight:g}")
    t0 = time.time()
    found = run_search(cfg, workdir, space)
    seconds = time.time() - t0
    variables = jax.tree_util.tree_map(np.asarray, restore_supernet_variables(workdir))
    logits = {k: jnp.asarray(v) for k, v in _logits(workdir).items()}
    probs = dist.probs(logits)
    model = sn.Supernet(space, dtype=setup.compute_dtype(cfg))
    soft = jax.jit(lambda v, x: model.apply(v, x, probs, False))
    hits = total = 0
    for b in evaluation:
      predicted = np.asarray(jnp.argmax(soft(variables, jnp.asarray(b["video"])), -1))
      hits += int(np.sum((predicted == b["label"]) & b["mask"]))
      total += int(np.sum(b["mask"]))
    soft_top1 = hits / total
    weight_split, _ = split_names(cfg)
    calib = [{"video": b["video"], "label": b["label"]}
             for b, _ in zip(setup.train_pipeline(cfg, weight_split, seed_offset=2), range(cfg.search.evolution.bn_batches))]
    derived_top1 = make_point_scorer(model, space, variables, calib, evaluation)([found.point])[0]
    # The soft supernet with its BN statistics re-estimated under its own soft weights, as the
    # derived network's are: the gap then compares architectures, not stale statistics.
    soft_recalibrated = make_arch_scorer(model, variables, calib, evaluation)(probs)
    max_probs = [float(jnp.max(p)) for p in probs.values()]
    append_line(args.out, "discretisation", {
        "task": cfg.data.name, "strategy": args.strategy, "ssr_weight": weight, "steps": cfg.search.steps,
        "soft_top1": round(soft_top1, 4), "soft_recalibrated_top1": round(soft_recalibrated, 4),
        "derived_inherited_top1": round(derived_top1, 4), "gap": round(soft_recalibrated - derived_top1, 4),
        "gap_trained_bn": round(soft_top1 - derived_top1, 4), "mean_max_prob": round(float(np.mean(max_probs)), 4),
        "entropy": round(float(dist.entropy(logits)), 3), "derived_gflops": round(arch_cost(found.spec).gflops, 6),
        "search_seconds": round(seconds, 1)})


def _logits(workdir: str) -> dict:
  """The search's final architecture logits (search/logits.json, written by run_search)."""
  import json
  with open(os.path.join(workdir, "search", "logits.json")) as f:
    return json.load(f)


if __name__ == "__main__":
  main()
