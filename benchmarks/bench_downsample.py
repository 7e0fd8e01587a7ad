"""A stage transition with UniNet's downsampling modules next to X3D's strided first block (issue #23).

    python benchmarks/bench_downsample.py                 # X3D-S stage 2's input: 13 x 40 x 40 x 24
    python benchmarks/bench_downsample.py --note "..."

What each variant computes, batch 2, float32 on this machine's default backend, at X3D-S's entry to
stage 2 (13 x 40 x 40 x 24 in, width 48, inner 108, SE 1/16, x3d:3x3x3 blocks):
  * `block`: X3D's first block of the stage, stride 2 with its projection shortcut (no module);
  * `local` / `local_global` (4 heads): the module (`models.downsample`), then the first block at
    stride 1 (identity shortcut).
Per variant: fwd+bwd time (jit(value_and_grad) of the summed output w.r.t. the params, median of
--steps runs after one warm-up, interleaved over the variants), analytic FLOPs and params, XLA's
peak-memory analysis of the compiled fwd+bwd, and for local_global the scores held per clip
(per frame (HW/4) x HW per head) against global attention over the clip's T H W positions.
Lines are printed and appended to benchmarks/results/downsample.jsonl.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time

from common import append_line, compile_with_peak

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "benchmarks", "results", "downsample.jsonl")
VARIANTS = ("block", "local", "local_global")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=7)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--note", default="")
  args = p.parse_args(argv)

  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from autox3d_jax.cost.analytic import block_cost, downsample_cost
  from autox3d_jax.models.blocks import ResidualBlock
  from autox3d_jax.models.downsample import Downsample
  from autox3d_jax.models.spec import BlockSpec

  batch, thw, in_width, width, inner = 2, (13, 40, 40), 24, 48, 108
  x = jax.random.normal(jax.random.PRNGKey(0), (batch,) + thw + (in_width,))
  out_thw = (thw[0], thw[1] // 2, thw[2] // 2)

  class Transition(nn.Module):
    kind: str

    @nn.compact
    def __call__(self, x, train: bool = True):
      if self.kind == "block":
        return ResidualBlock(BlockSpec("x3d", (3, 3, 3), width, inner, 1 / 16, stride=2))(x, train)
      heads = args.heads if self.kind == "local_global" else 0
      y = Downsample((self.kind,), width, heads)(x, train)
      return ResidualBlock(BlockSpec("x3d", (3, 3, 3), width, inner, 1 / 16, stride=1))(y, train)

  def cost(kind):
    if kind == "block":
      return block_cost(BlockSpec("x3d", (3, 3, 3), width, inner, 1 / 16, stride=2), in_width, thw)[0]
    module, _ = downsample_cost(kind, in_width, width, thw)
    return module + block_cost(BlockSpec("x3d", (3, 3, 3), width, inner, 1 / 16), width, out_thw)[0]

  run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
  entries = {}
  for kind in VARIANTS:
    model = Transition(kind)
    variables = model.init(jax.random.PRNGKey(1), x)

    def loss(params, model=model, stats=variables["batch_stats"]):
      y, _ = model.apply({"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])
      return jnp.sum(y)

    compiled, compile_s, peak = compile_with_peak(jax.value_and_grad(loss), variables["params"])
    jax.block_until_ready(compiled(variables["params"]))
    entries[kind] = dict(compiled=compiled, params=variables["params"], times=[], compile_s=compile_s, peak=peak)
  for _ in range(args.steps):
    for e in entries.values():
      t0 = time.perf_counter()
      jax.block_until_ready(e["compiled"](e["params"]))
      e["times"].append(time.perf_counter() - t0)
  base = statistics.median(entries["block"]["times"])
  for kind, e in entries.items():
    c = cost(kind)
    frame_scores = 4 * thw[0] * (out_thw[1] * out_thw[2]) * (thw[1] * thw[2]) * args.heads
    clip_scores = 4 * (thw[0] * out_thw[1] * out_thw[2]) * math.prod(thw) * args.heads
    append_line(RESULTS, "downsample_transition", dict(
        run_id=run_id, host=platform.node(), backend=jax.default_backend(), batch=batch, thw=list(thw),
        in_width=in_width, width=width, inner=inner, variant=kind, heads=args.heads if kind == "local_global" else 0,
        flops=c.flops, params=c.params, median_s=statistics.median(e["times"]), min_s=min(e["times"]),
        time_vs_block=statistics.median(e["times"]) / base, compile_s=round(e["compile_s"], 2),
        peak_bytes=e["peak"],
        score_bytes_per_clip=frame_scores if kind == "local_global" else 0,
        clip_attention_score_bytes_per_clip=clip_scores if kind == "local_global" else 0,
        steps=args.steps, note=args.note))


if __name__ == "__main__":
  main()
