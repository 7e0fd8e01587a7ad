"""The real search step (what `run_search` jits) in float32 and bfloat16, with the device's own
matmul rate and copy bandwidth measured in the same run, so a step's achieved FLOP/s and bytes/s
read as a fraction of what the device can do.

    python benchmarks/bench_search_step.py                                  # configs/demo.py, its clip
    python benchmarks/bench_search_step.py --config search_autox3d --arg target=S --batch 32   # TPU/GPU
    python benchmarks/bench_search_step.py --dtypes float32 --steps 5 --no-save
    python benchmarks/bench_search_step.py --dtypes float32 --compare search.distill=inplace   # a lever's cost
    python benchmarks/bench_search_step.py --dtypes float32 --compare search.feature_distill.teacher=<checkpoint dir>

The step is `search_loop.build_search_step` for the named shipped config (`autox3d_jax.configs.get`),
with its space at its clip, `--batch` clips per train and val batch and random clips; its state
is placed on one device. Timed steps of the dtypes are interleaved (float32, bfloat16, float32,
...), so all see the same background load. Per dtype: compile seconds, median / min step time,
XLA's cost analysis of the compiled step (flops and bytes accessed; on the CPU the depthwise
convs run in host callbacks that XLA does not count, so there they are lower bounds), and the
achieved rates. Device references: a square matmul's FLOP/s in each dtype (`--matmul-size`) and
a large array copy's bytes/s. Every line is printed and appended to
benchmarks/results/search_step.jsonl.
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
RESULTS = os.path.join(ROOT, "benchmarks", "results", "search_step.jsonl")


def _cost(compiled) -> tuple[float, float]:
  """(flops, bytes accessed) of a compiled program by XLA's cost analysis (0 where absent)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  analysis = analysis or {}
  return float(analysis.get("flops", 0.0)), float(analysis.get("bytes accessed", 0.0))


def _time(fn, repeats: int) -> list[float]:
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t0)
  return out


def device_references(matmul_size: int, copy_mib: int, repeats: int) -> dict:
  """The device's square-matmul FLOP/s per dtype and copy bytes/s (read + write), medians."""
  import jax
  import jax.numpy as jnp
  refs = {}
  for dtype in ("float32", "bfloat16"):
    a = jnp.ones((matmul_size, matmul_size), dtype)
    mm = jax.jit(lambda x, y: x @ y)
    mm(a, a).block_until_ready()
    t = statistics.median(_time(lambda: mm(a, a).block_until_ready(), repeats))
    refs[f"matmul_{dtype}_flops_per_s"] = 2 * matmul_size ** 3 / t
  n = copy_mib * 2 ** 20 // 4
  x = jnp.ones((n,), jnp.float32)
  copy = jax.jit(lambda v: v + 1.0)
  copy(x).block_until_ready()
  t = statistics.median(_time(lambda: copy(x).block_until_ready(), repeats))
  refs["copy_bytes_per_s"] = 2 * x.nbytes / t
  return refs


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="demo", help="a shipped config (autox3d_jax/configs/<name>.py)")
  p.add_argument("--arg", default="", help="the config's argument (e.g. target=S)")
  p.add_argument("--batch", type=int, default=0, help="clips per batch (0: the config's data.batch_size)")
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--steps", type=int, default=7)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--matmul-size", type=int, default=2048)
  p.add_argument("--copy-mib", type=int, default=256)
  p.add_argument("--note", default="")
  p.add_argument("--compare", action="append", default=[], metavar="KEY=VALUE",
                 help="also time the step with this config override (repeatable; each a variant of every "
                      "dtype, interleaved with the plain step)")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="a config override of every variant (repeatable), e.g. search.strategy=msg")
  p.add_argument("--no-save", action="store_true")
  args = p.parse_args(argv)

  import jax
  import numpy as np

  from autox3d_jax import configs
  from autox3d_jax.cpu import hostmem
  from autox3d_jax.search.cost_table import CostTable
  from autox3d_jax.train import search_loop, setup
  hostmem.keep_freed_memory_on_cpu()

  run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
  device = jax.devices()[0]
  common = dict(bench="search_step", run_id=run_id, host=platform.node(), backend=jax.default_backend(),
                device=getattr(device, "device_kind", str(device)), config=f"{args.config}:{args.arg}",
                note=args.note, load_before=load_avg())
  lines = []

  def emit(record):
    record = {**common, **record}
    print(json.dumps(record), flush=True)
    lines.append(record)

  refs = device_references(args.matmul_size, args.copy_mib, max(args.steps, 3))
  emit({"what": "device", "matmul_size": args.matmul_size, **refs})

  base = configs.get(args.config, args.arg or None)
  if args.batch:
    base.data.batch_size = args.batch
  classes = 12
  rs = np.random.default_rng(0)
  runners = {}
  variants = [(dtype, {}) for dtype in args.dtypes.split(",")]
  for item in args.compare:
    key, _, value = item.partition("=")
    variants += [(f"{dtype} {key}={value}", {key: value}) for dtype in args.dtypes.split(",")]
  fixed = dict(item.partition("=")[::2] for item in args.set)
  for name, overrides in variants:
    dtype = name.split()[0]
    cfg = base.copy_and_resolve_references()
    cfg.train.dtype = dtype
    for key, value in {**fixed, **overrides}.items():
      *parents, leaf = key.split(".")
      node = cfg
      for part in parents:
        node = node[part]
      node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], bool) else value == "True"
    space = setup.build_space(cfg, classes=classes)
    table = CostTable.build(space, "flops")
    program = search_loop.build_search_step(cfg, space, table, setup.resolve_cost_target(space, table, cfg),
                                            search_loop.feature_teacher(cfg))
    c = space.config
    shape = (cfg.data.batch_size, c.num_frames, c.crop_size, c.crop_size, c.in_channels)
    batch = {"video": jax.numpy.asarray(rs.normal(size=shape), np.float32),
             "label": jax.numpy.asarray(rs.integers(0, classes, shape[0]), np.int32)}
    state = program.init_state()
    t0 = time.perf_counter()
    compiled = jax.jit(program.step, donate_argnums=(0,)).lower(state, batch, batch).compile()
    compile_s = time.perf_counter() - t0
    flops, nbytes = _cost(compiled)
    holder = {"state": state}

    def one(compiled=compiled, holder=holder, batch=batch):
      holder["state"], metrics = compiled(holder["state"], batch, batch)
      jax.block_until_ready(metrics)
    for _ in range(args.warmup):
      one()
    runners[name] = (one, dict(batch=shape[0], frames=c.num_frames, crop=c.crop_size, compile_s=compile_s,
                                xla_flops=flops, xla_bytes=nbytes))
  times = {d: [] for d in runners}
  for _ in range(args.steps):
    for dtype, (one, _) in runners.items():
      times[dtype].extend(_time(one, 1))
  for name, (_, info) in runners.items():
    dtype = name.split()[0]
    median = statistics.median(times[name])
    emit({"what": "step", "dtype": dtype, "variant": name, **info, "median_s": median, "min_s": min(times[name]),
          "steps": args.steps, "achieved_flops_per_s": info["xla_flops"] / median,
          "achieved_bytes_per_s": info["xla_bytes"] / median,
          "fraction_of_matmul_rate": info["xla_flops"] / median / refs[f"matmul_{dtype}_flops_per_s"],
          "fraction_of_copy_bandwidth": info["xla_bytes"] / median / refs["copy_bytes_per_s"]})
  for name in runners:
    if " " in name:
      emit({"what": "compare", "variant": name, "vs_plain_step": statistics.median(times[name])
            / statistics.median(times[name.split()[0]])})
  if "float32" in times and "bfloat16" in times:
    emit({"what": "summary", "bf16_vs_fp32_step": statistics.median(times["bfloat16"]) / statistics.median(times["float32"]),
          "load_after": load_avg()})
  if not args.no_save:
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as f:
      for record in lines:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
  main()
