"""What the multi-host preemption vote costs per step: `preemption.ProcessVote` (one int32
all-reduced over the processes, after waiting for the step) between local processes joined by
jax.distributed (gloo collectives on the CPU), next to the same loop of a small jitted step
without the vote, in the same processes.

    python benchmarks/bench_process_vote.py                 # 2 processes, 300 ballots
    python benchmarks/bench_process_vote.py --processes 4 --ballots 500 --no-save

Per run, process 0 prints and appends to benchmarks/results/process_vote.jsonl: the median and p90
milliseconds of one ballot, and of one small step (a 256x256 matmul chain, batch on each process's
device) with and without a ballot after it, interleaved so both see the same load.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

from common import load_avg

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(index: int, count: int, port: int, ballots: int, out: str | None, note: str) -> None:
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
  sys.path.insert(0, os.path.dirname(HERE))
  import jax
  import jax.numpy as jnp
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=count, process_id=index)
  from autox3d_jax import preemption
  vote = preemption.ProcessVote()
  step = jax.jit(lambda x: jnp.tanh(x @ x) @ x)
  x = jnp.ones((256, 256), jnp.float32) / 256
  for _ in range(5):   # compile and warm both
    vote(False, step(x))
  ballot_ms, plain_ms, voted_ms = [], [], []
  for _ in range(ballots):
    began = time.perf_counter()
    vote(False, None)
    ballot_ms.append(1e3 * (time.perf_counter() - began))
    began = time.perf_counter()
    jax.block_until_ready(step(x))
    plain_ms.append(1e3 * (time.perf_counter() - began))
    began = time.perf_counter()
    vote(False, step(x))
    voted_ms.append(1e3 * (time.perf_counter() - began))
  if index == 0:
    def stats(values):
      values = sorted(values)
      return {"median_ms": statistics.median(values), "p90_ms": values[int(0.9 * (len(values) - 1))]}
    row = {"bench": "process_vote", "run_id": datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ"),
           "host": platform.node(), "backend": jax.default_backend(), "processes": count, "ballots": ballots,
           "note": note, "load": load_avg(), "ballot": stats(ballot_ms), "step": stats(plain_ms),
           "step_and_ballot": stats(voted_ms)}
    print(json.dumps(row), flush=True)
    if out:
      with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")
  jax.distributed.shutdown()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--processes", type=int, default=2)
  parser.add_argument("--ballots", type=int, default=300)
  parser.add_argument("--note", default="")
  parser.add_argument("--no-save", action="store_true")
  parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  out = None if args.no_save else os.path.join(HERE, "results", "process_vote.jsonl")
  if args.worker is not None:
    worker(args.worker, args.processes, args.port, args.ballots, out, args.note)
    return
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(i), "--port", str(port), "--processes",
                             str(args.processes), "--ballots", str(args.ballots), "--note", args.note]
                            + (["--no-save"] if args.no_save else []), env=env) for i in range(args.processes)]
  codes = [p.wait(timeout=600) for p in procs]
  if any(codes):
    sys.exit(f"a worker failed: exit codes {codes}")


if __name__ == "__main__":
  main()
