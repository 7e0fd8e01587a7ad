"""The attention and MLP block types next to X3D's depthwise block of equal FLOPs (issue #23).

    python benchmarks/bench_attention.py                    # X3D-S stage 3: 13 x 20 x 20, inner 108
    python benchmarks/bench_attention.py --note "..."

Each op runs as a whole residual block (`models.blocks.ResidualBlock`: the shared skeleton around its
middle), batch 2, at an X3D-S-like tensor: stage 3's input of a 13 x 160^2 clip (13 x 20 x 20 x 48,
width 48, inner 108, stride 1, SE 1/16), in float32 on this machine's default backend (CPU here:
the depthwise convs on the project's numba op).
Per op:
  * fwd+bwd time: jit(value_and_grad of the block's summed output w.r.t. its params), median of
    --steps timed runs after one warm-up, interleaved over the ops so all see the same load;
  * its analytic FLOPs, and an x3d:3x3x3 block whose inner width is chosen so its FLOPs are the
    closest to the op's (`x3d_equal_flops_inner`), timed alongside: `time_vs_x3d_equal_flops` is the
    op's median over that block's;
  * peak memory: XLA's memory analysis of the compiled fwd+bwd (temp + argument + output bytes),
    and the largest score tensor the op holds at once (per head: P x W for windows of W positions,
    P x L for an axis of length L) against the P x P a global attention over all P positions would
    hold, in bytes for float32.
Lines are printed and appended to benchmarks/results/attention.jsonl.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

from common import append_line, compile_with_peak

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "benchmarks", "results", "attention.jsonl")
OPS = ("x3d:3x3x3", "lsa:1x5x5:h3", "lsa:3x5x5:h3", "lsa:13x20x20:h3", "axial:3x7x7:h3", "mlp:1x5x5:h3",
       "csn:3x3x3", "ip_csn:3x3x3", "stm:3x3x3", "tea:3x3x3")


def x3d_equal_flops_inner(flops: int, width: int, in_width: int, thw) -> int:
  """The inner width of an x3d:3x3x3 block (SE 1/16) whose analytic FLOPs are closest to `flops`."""
  from autox3d_jax.cost.analytic import block_cost
  from autox3d_jax.models.spec import BlockSpec
  return min(range(1, 64 * width), key=lambda n: abs(
      block_cost(BlockSpec("x3d", (3, 3, 3), width, n, 1 / 16), in_width, thw)[0].flops - flops))


def score_bytes(op, thw) -> tuple[int, int]:
  """(largest score tensor of the op per clip, a global attention's) in float32 bytes, all heads."""
  import math
  from autox3d_jax.models import windows
  p = math.prod(thw)
  if op.type == "lsa":
    window, count = windows.window_grid(op.kernel, thw)
    held = count * math.prod(window) ** 2 * op.heads
  elif op.type == "axial":
    held = max(p * length * op.heads for length, span in zip(thw, op.kernel) if span > 1)
  else:
    return 0, 0
  return 4 * held, 4 * p * p * op.heads


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=7)
  p.add_argument("--ops", default=",".join(OPS))
  p.add_argument("--note", default="")
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp

  from autox3d_jax.cost.analytic import block_cost
  from autox3d_jax.models.blocks import ResidualBlock
  from autox3d_jax.search.space import ops_from_strings

  batch, thw, width, inner, in_width = 2, (13, 20, 20), 48, 108, 48
  x = jax.random.normal(jax.random.PRNGKey(0), (batch,) + thw + (in_width,))
  run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
  entries = {}
  for op in ops_from_strings(args.ops.split(",")):
    spec = op.block(width, inner, 1 / 16)
    flops = block_cost(spec, in_width, thw)[0].flops
    twin = ops_from_strings(["x3d:3x3x3"])[0].block(width, x3d_equal_flops_inner(flops, width, in_width, thw), 1 / 16)
    for name, s in ((op.string, spec), (f"x3d_equal_flops_of:{op.string}", twin)):
      block = ResidualBlock(s)
      variables = block.init(jax.random.PRNGKey(1), x)

      def loss(params, block=block, stats=variables["batch_stats"]):
        y, _ = block.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(y)

      compiled, compile_s, peak = compile_with_peak(jax.value_and_grad(loss), variables["params"])
      jax.block_until_ready(compiled(variables["params"]))
      entries[name] = dict(spec=s, compiled=compiled, params=variables["params"], times=[], compile_s=compile_s,
                           peak_bytes=peak, flops=block_cost(s, in_width, thw)[0].flops)
  for _ in range(args.steps):
    for e in entries.values():
      t0 = time.perf_counter()
      jax.block_until_ready(e["compiled"](e["params"]))
      e["times"].append(time.perf_counter() - t0)
  for op in ops_from_strings(args.ops.split(",")):
    e, twin = entries[op.string], entries[f"x3d_equal_flops_of:{op.string}"]
    held, global_ = score_bytes(op, thw)
    append_line(RESULTS, "attention_op", dict(
        run_id=run_id, host=platform.node(), backend=jax.default_backend(), batch=batch, thw=list(thw),
        width=width, inner=inner, op=op.string, flops=e["flops"], median_s=statistics.median(e["times"]),
        min_s=min(e["times"]), compile_s=round(e["compile_s"], 2), peak_bytes=e["peak_bytes"],
        x3d_equal_flops_inner=twin["spec"].inner, x3d_equal_flops=twin["flops"],
        x3d_equal_flops_median_s=statistics.median(twin["times"]),
        time_vs_x3d_equal_flops=statistics.median(e["times"]) / statistics.median(twin["times"]),
        x3d_equal_flops_peak_bytes=twin["peak_bytes"], score_bytes_per_clip=held,
        global_attention_score_bytes_per_clip=global_, steps=args.steps, note=args.note))


if __name__ == "__main__":
  main()
