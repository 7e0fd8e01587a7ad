"""Windowed attention's score budget: peak memory and time of one block's fwd+bwd as the budget
(`models.attention.SCORE_BUDGET_BYTES`) shrinks and the windows run in chunks (issue #23).

    python benchmarks/bench_attention_memory.py          # lsa 3x8x8, 3 heads, X3D-S stage 1: 13 x 40 x 40

One residual block of the op (width 24, inner 54, SE 1/16), batch 2, float32, on this machine's
default backend. Per budget: XLA's memory analysis of the compiled fwd+bwd (temp + arguments +
outputs), the windows per chunk, and the median of --steps timed runs. Lines are printed and
appended to benchmarks/results/attention_memory.jsonl.
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
RESULTS = os.path.join(ROOT, "benchmarks", "results", "attention_memory.jsonl")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--op", default="lsa:3x8x8:h3")
  p.add_argument("--budgets", default=f"{2 ** 40},{32 * 2 ** 20},{4 * 2 ** 20}", help="bytes, comma-separated")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--note", default="")
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp

  from autox3d_jax.models import attention, windows
  from autox3d_jax.models.blocks import ResidualBlock
  from autox3d_jax.search.space import ops_from_strings

  batch, thw, width, inner = 2, (13, 40, 40), 24, 54
  op = ops_from_strings([args.op])[0]
  spec = op.block(width, inner, 1 / 16)
  x = jax.random.normal(jax.random.PRNGKey(0), (batch,) + thw + (width,))
  block = ResidualBlock(spec)
  variables = block.init(jax.random.PRNGKey(1), x)

  def loss(params, x):
    y, _ = block.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                       mutable=["batch_stats"])
    return jnp.sum(y)

  window, count = windows.window_grid(op.kernel, thw)
  size = math.prod(window)
  run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
  for budget in (int(b) for b in args.budgets.split(",")):
    attention.SCORE_BUDGET_BYTES = budget
    compiled, compile_s, peak = compile_with_peak(jax.value_and_grad(loss), variables["params"], x)
    jax.block_until_ready(compiled(variables["params"], x))
    times = []
    for _ in range(args.steps):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(variables["params"], x))
      times.append(time.perf_counter() - t0)
    append_line(RESULTS, "attention_score_budget", dict(
        run_id=run_id, host=platform.node(), backend=jax.default_backend(), op=op.string, batch=batch,
        thw=list(thw), width=width, inner=inner, budget_bytes=budget,
        windows=batch * count, windows_per_chunk=attention.window_chunk(batch * count, size, op.heads, 4),
        all_scores_bytes=batch * count * size * size * op.heads * 4, peak_bytes=peak,
        compile_s=round(compile_s, 2), median_s=statistics.median(times), steps=args.steps, note=args.note))


if __name__ == "__main__":
  main()
