"""Supernet training step vs the standalone largest child, and K=4 architecture groups vs K=1 (issue #4).

    python benchmarks/bench_supernet.py                  # X3D-S clip, 2 warm-up + 7 timed steps each
    python benchmarks/bench_supernet.py --clip demo      # the demo's 8 x 40^2 clip (per-op-bound, below)
    python benchmarks/bench_supernet.py --k4-points random --note "..."
    python benchmarks/bench_supernet.py --skip-k4 --ops x3d:3x3x3,x3d:5x3x3,x2d:1x3x3   # ablation:
        # the same space without the r2plus1d family (what the second family costs the supernet)
    python benchmarks/bench_supernet.py --clip demo --skip-k4 --ops hybrid   # configs/demo.py:hybrid's ops

Space: configs/demo.py's ('' variant: 4 stages, ops x3d:3x3x3 / x3d:5x3x3 / x2d:1x3x3 /
r2plus1d:3x3x3, 3 expansions, 3 SE ratios), 12 classes, batch 16, random clips.

Clip (--clip): 'x3d_s' (default) is 13 x 160^2, X3D-S's training clip and so the input an AutoX3D-S
search trains on (configs/search_autox3d.py); the targets (<= 1.3x, <= 1.1x) are judged there.
'demo' is configs/demo.py's 8 x 40^2. At the demo clip a K=4 group is 4 clips of 40^2, every XLA
instruction works on a few kilobytes, and the step costs per instruction, not per FLOP: each group
adds a fixed set of instructions, so K=4 / K=1 is larger there than at search-sized clips
(RESULTS.md, 'what the K-group overhead is made of'). --frames / --crop override the preset.

Routing (--routing): 'exclusive' (default; lax.switch runs only the sampled family, K groups via
an unrolled lax.scan) or 'mix' (the gated sum over every family, vmap over groups).

One step = jit(value_and_grad of mean softmax CE w.r.t. params) + optax.sgd(momentum=0.9) update,
BN in training mode (batch_stats updated), dropout on; params / opt state / batch_stats donated.
  a  supernet_k1: `apply_groups(Supernet(space), ...)` with K=1: the one-hot of space.largest_point()
     (archs are jit arguments, as in the search step, so nothing is constant-folded away);
  b  child:       `builder.build(space.to_arch(space.largest_point()))`, the standalone network;
  c  supernet_k4: K=4 groups, the same batch 16 split 4 x 4. --k4-points largest (default): every
     group runs the largest point, so c does a's work split into 4 groups and c / a is the grouping
     overhead the <= 1.1x target is about; random: 4 random one-hot points, whose own costs differ.
Each is compiled (compile_s, via .lower().compile()) and warmed up, then timed steps are interleaved
a, b, c, a, b, c, ... so all three see the same background load (the CPU is shared). Reported per
measurement: median / min / max step time (block_until_ready); summary: ratio_supernet_vs_child =
median(a) / median(b) (target <= 1.3) and ratio_k4_vs_k1 = median(c) / median(a) (target <= 1.1),
plus the same ratios from the per-round paired ratios and from the min steps. `uptime` load is
recorded before and after. Every line is printed and appended to benchmarks/results/supernet.jsonl.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

from common import load_avg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "benchmarks", "results", "supernet.jsonl")
BATCH, CLASSES, LR, MOMENTUM = 16, 12, 0.05, 0.9
TARGET_SUPERNET, TARGET_K4 = 1.3, 1.1
CLIPS = {"x3d_s": (13, 160), "demo": (8, 40)}  # (frames, crop)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=7, help="timed steps per measurement (>= 5)")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--note", default="")
  p.add_argument("--no-save", action="store_true")
  p.add_argument("--ops", default="", help="ablation: comma-separated ops replacing the demo space's "
                 "(e.g. x3d:3x3x3,x3d:5x3x3,x2d:1x3x3 drops the r2plus1d family); 'hybrid': the demo's "
                 "hybrid variant's conv + attention ops")
  p.add_argument("--routing", default="exclusive", choices=("exclusive", "mix"),
                 help="exclusive: only the sampled family runs (lax.switch; what probabilistic/SPOS "
                 "searches use); mix: gated sum over all families (what soft / straight-through use)")
  p.add_argument("--k4-points", default="largest", choices=("random", "largest"),
                 help="the K=4 groups' archs: 4 random points, or 4 x the largest point (pure grouping "
                 "overhead: same work as K=1 split into 4 groups)")
  p.add_argument("--skip-k4", action="store_true", help="measure only a and b (no K=4 ratio)")
  p.add_argument("--batch", type=int, default=BATCH, help="clips per step (K=4 splits it in 4)")
  p.add_argument("--clip", choices=tuple(CLIPS), default="x3d_s",
                 help="x3d_s: 13 x 160^2 (what an AutoX3D-S search trains on); demo: 8 x 40^2")
  p.add_argument("--frames", type=int, default=0, help="clip length (0: the --clip preset's)")
  p.add_argument("--crop", type=int, default=0, help="crop size (0: the --clip preset's)")
  p.add_argument("--host-memory", choices=("keep", "default"), default="keep",
                 help="keep: hostmem.keep_freed_memory() first, as the search does on CPU; default: glibc's")
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from autox3d_jax.models import builder
  from autox3d_jax.ops import depthwise
  from autox3d_jax.search import supernet as sn
  from autox3d_jax.train.setup import build_space
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  import demo  # configs/demo.py
  from autox3d_jax.cpu import hostmem
  host_memory_kept = args.host_memory == "keep" and hostmem.keep_freed_memory()

  run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
  load_before = load_avg()
  cfg = demo.get_config("")
  if args.batch < 4 or args.batch % 4:
    raise SystemExit(f"--batch must be a positive multiple of 4 (K=4 groups), got {args.batch}")
  cfg.data.num_frames = args.frames or CLIPS[args.clip][0]
  cfg.data.crop_size = args.crop or CLIPS[args.clip][1]
  if args.ops == "hybrid":
    from autox3d_jax.configs.demo import HYBRID_OPS
    cfg.space.ops = HYBRID_OPS
  elif args.ops:
    cfg.space.ops = tuple(args.ops.split(","))
  space = build_space(cfg, classes=CLASSES)
  c = space.config
  largest = space.largest_point()
  child_spec = space.to_arch(largest, name="largest_child")
  common = dict(bench="supernet_step", run_id=run_id, host=platform.node(), cpus=os.cpu_count(),
                host_memory="keep" if host_memory_kept else "default",
                devices=jax.device_count(), batch=args.batch, frames=c.num_frames, crop=c.crop_size,
                classes=CLASSES, warmup=args.warmup, note=args.note, routing=args.routing,
                k4_points=args.k4_points, clip=args.clip,
                ops=",".join(o.string for o in c.ops))
  try:
    common["depthwise_plan"] = "/".join(depthwise.execution_plan())
  except Exception as e:  # pragma: no cover
    common["depthwise_plan"] = f"? ({e})"

  rs = np.random.default_rng(0)
  x = jnp.asarray(rs.normal(size=(args.batch, c.num_frames, c.crop_size, c.crop_size, c.in_channels)), jnp.float32)
  y = jnp.asarray(rs.integers(0, CLASSES, args.batch), jnp.int32)
  tx = optax.sgd(LR, momentum=MOMENTUM)

  def ce(logits, labels):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

  # ---------------------------------------------------------------- supernet step (K from archs)
  model = sn.Supernet(space, exclusive=args.routing == "exclusive")

  def supernet_step(params, batch_stats, opt_state, x, y, archs, rng):
    def loss_fn(p):
      logits, stats = sn.apply_groups(model, {"params": p, "batch_stats": batch_stats}, x, archs,
                                      train=True, rngs={"dropout": rng})
      return ce(logits, y), stats
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  # ---------------------------------------------------------------- standalone child step
  child = builder.build(child_spec)

  def child_step(params, batch_stats, opt_state, x, y, rng):
    def loss_fn(p):
      logits, upd = child.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                rngs={"dropout": rng}, mutable=["batch_stats"])
      return ce(logits, y), upd["batch_stats"]
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  def stack(points):
    ones = [sn.one_hot_arch(space, pt) for pt in points]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ones)

  random_points = [{d.label: int(rs.integers(d.size)) for d in space.decisions} for _ in range(4)]
  sv = sn.init_supernet(space, jax.random.PRNGKey(0))
  cv = builder.init_variables(child_spec, jax.random.PRNGKey(0))

  def nparams(tree):
    return int(sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(tree)))

  # name -> (step fn, extra args after the state, params count)
  setups = {
      "supernet_k1": (supernet_step, sv, (x, y, stack([largest])), "a"),
      "child": (child_step, cv, (x, y), "b"),
      "supernet_k4": (supernet_step, sv, (x, y, stack(random_points if args.k4_points == "random"
                                                      else [largest] * 4)), "c"),
  }
  if args.skip_k4:
    del setups["supernet_k4"]
  runners = {}
  for name, (fn, variables, extra, tag) in setups.items():
    params = jax.tree_util.tree_map(jnp.copy, variables["params"])
    stats = jax.tree_util.tree_map(jnp.copy, variables["batch_stats"])
    opt = tx.init(params)
    rng = jax.random.PRNGKey(1)
    t0 = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=(0, 1, 2)).lower(params, stats, opt, *extra, rng).compile()
    compile_s = time.perf_counter() - t0
    state = [params, stats, opt]
    warm = []
    for _ in range(args.warmup):
      t0 = time.perf_counter()
      out = compiled(*state, *extra, rng)
      jax.block_until_ready(out)
      warm.append(time.perf_counter() - t0)
      state = list(out[:3])
    runners[name] = dict(compiled=compiled, state=state, extra=extra, rng=rng, tag=tag, times=[],
                         compile_s=compile_s, warmup_s=warm, params=nparams(variables["params"]),
                         loss=float(out[3]))
    print(f"# {name}: compiled in {compile_s:.1f}s, warm-up {[round(w, 3) for w in warm]}", file=sys.stderr,
          flush=True)

  for r in range(args.steps):
    for name, rn in runners.items():
      t0 = time.perf_counter()
      out = rn["compiled"](*rn["state"], *rn["extra"], rn["rng"])
      jax.block_until_ready(out)
      rn["times"].append(time.perf_counter() - t0)
      rn["state"] = list(out[:3])
      rn["loss"] = float(out[3])
    print(f"# round {r + 1}: " + ", ".join(f"{n}={rn['times'][-1]:.3f}s" for n, rn in runners.items()),
          file=sys.stderr, flush=True)
  load_after = load_avg()

  lines = []
  for name, rn in runners.items():
    t = rn["times"]
    lines.append(dict(common, measurement=name, tag=rn["tag"], params=rn["params"],
                      groups=4 if name == "supernet_k4" else 1, compile_s=round(rn["compile_s"], 2),
                      warmup_s=[round(w, 4) for w in rn["warmup_s"]], timed_steps=len(t),
                      step_s_median=round(statistics.median(t), 4), step_s_min=round(min(t), 4),
                      step_s_max=round(max(t), 4), step_s_all=[round(v, 4) for v in t],
                      final_loss=round(rn["loss"], 4), load_before=load_before, load_after=load_after))
  a, b = runners["supernet_k1"]["times"], runners["child"]["times"]
  k4 = runners["supernet_k4"]["times"] if "supernet_k4" in runners else None
  r_sc = statistics.median(a) / statistics.median(b)
  r_k4 = statistics.median(k4) / statistics.median(a) if k4 else None

  def rnd(v, n=3):
    return None if v is None else round(v, n)
  lines.append(dict(
      common, measurement="summary",
      ratio_supernet_vs_child=round(r_sc, 3), target_supernet_vs_child=TARGET_SUPERNET,
      meets_supernet_target=bool(r_sc <= TARGET_SUPERNET),
      ratio_k4_vs_k1=rnd(r_k4), target_k4_vs_k1=TARGET_K4,
      meets_k4_target=None if r_k4 is None else bool(r_k4 <= TARGET_K4),
      paired_ratio_supernet_vs_child_median=round(statistics.median(u / v for u, v in zip(a, b)), 3),
      paired_ratio_k4_vs_k1_median=rnd(statistics.median(u / v for u, v in zip(k4, a)) if k4 else None),
      min_ratio_supernet_vs_child=round(min(a) / min(b), 3), min_ratio_k4_vs_k1=rnd(min(k4) / min(a) if k4 else None),
      supernet_params=runners["supernet_k1"]["params"], child_params=runners["child"]["params"],
      load_before=load_before, load_after=load_after))
  for line in lines:
    print(json.dumps(line), flush=True)
  if not args.no_save:
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "a") as f:
      for line in lines:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
  main()
