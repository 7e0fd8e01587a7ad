"""X3D-S training step, our JAX model vs pytorchvideo's `create_x3d`, side by side on this CPU.

    python benchmarks/bench_x3d_train.py                 # both sizes, both frameworks, paired
    python benchmarks/bench_x3d_train.py --quick --sizes b
    python benchmarks/bench_x3d_train.py --frameworks jax --sizes a --steps 8
    python benchmarks/bench_x3d_train.py --sequential    # one framework after the other

Sizes (X3D-S structure -- depths 3/5/11/7, widths 24/48/96/192, SE, head 432 -> 2048 -> classes):
  a: batch 8, 13 x 160 x 160, 400 classes (X3D-S's training clip)
  b: batch 16, 8 x 64 x 64, 400 classes (same head on both sides)

One step = forward + backward + SGD-momentum update, BN in training mode (running stats updated).
JAX: `builder.build(spec)` + optax.sgd(momentum=0.9), one jitted step with donated state, dropout on.
PyTorch: pytorchvideo `create_x3d(..., head_activation=None)`, torch.optim.SGD(momentum=0.9),
`torch.set_num_threads(N)` with N = the CPU count (2 here), model.train().

Each framework runs in its own worker process. The workers are set up one after the other (JAX
compile time and the first step are reported separately and never overlap the other's timing), then:
* paired (default with both frameworks): the driver alternates single timed steps, jax, torch, jax,
  torch, ... so both see the same background load -- other processes may share this CPU, and a
  load change between two sequential runs would otherwise show up as a speedup;
* --sequential: all of one framework's steps, then all of the other's.
Only one worker computes at any time. Reported per framework: median (and min / max) of `--steps`
timed steps after `--warmup` untimed ones; clips/s = batch / median step time; `uptime` load before
and after; cpu_s_median = process CPU seconds (all threads) per step, sys_cpu_s_median its kernel
part; peak_rss_gib. A 'compare' line per size gives speedup = jax_clips_per_s / torch_clips_per_s
(target >= 1.5), speedup_from_min_step (fastest step
vs fastest step: the least-disturbed estimate on a shared machine), cpu_s_ratio (torch / jax CPU
seconds per step) and, in paired mode, the median of the per-round ratios torch_step / jax_step.

Host memory (--host-memory): by default both workers first call autox3d_jax.cpu.hostmem.keep_freed_memory()
(glibc's mmap for large blocks and heap trimming off), as our entry points do on CPU; without it each
step re-faults its freed buffers, a large share of the step's CPU time spent in the kernel, more in paired
mode (RESULTS.md, 'Freed host memory kept in the process'). `--host-memory default` keeps glibc's defaults
for both.

Each result is one JSON line on stdout, also appended to benchmarks/results/x3d_train.jsonl.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

from common import load_avg
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "x3d_train.jsonl")

SIZES = {
    "a": dict(batch=8, frames=13, crop=160, num_classes=400),
    "b": dict(batch=16, frames=8, crop=64, num_classes=400),
}
LR, MOMENTUM = 0.05, 0.9


def _median(xs: list[float]) -> float:
  ts = sorted(xs)
  n = len(ts)
  return ts[n // 2] if n % 2 else 0.5 * (ts[n // 2 - 1] + ts[n // 2])


def _stats(times: list[float], batch: int) -> dict:
  med = _median(times)
  return dict(step_s_median=round(med, 4), step_s_min=round(min(times), 4), step_s_max=round(max(times), 4),
              clips_per_s=round(batch / med, 3), timed_steps=len(times))


# ------------------------------------------------------------------------------------------ JAX
def _plan(depthwise) -> str:
  """Where (forward, input grad, weight grad) of the depthwise op run, and the host transport."""
  plan = getattr(depthwise, "execution_plan", None)
  text = "/".join(plan("auto")) if plan else "?"
  transport = getattr(depthwise, "host_transport", None)
  return f"{text} ({transport()})" if transport and "numba" in text else text


def _sha1(path: str) -> str:
  import hashlib
  with open(path, "rb") as f:
    return hashlib.sha1(f.read()).hexdigest()[:12]


class JaxBench:
  def __init__(self, size: dict):
    sys.path.insert(0, ROOT)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from autox3d_jax.models import builder, zoo
    from autox3d_jax.ops import depthwise

    self.jax = jax
    spec = zoo.x3d("S", num_classes=size["num_classes"], num_frames=size["frames"], crop_size=size["crop"])
    model = builder.build(spec)
    tx = optax.sgd(LR, momentum=MOMENTUM)
    b, t, c = size["batch"], size["frames"], size["crop"]
    rng = np.random.default_rng(0)
    self.x = jnp.asarray(rng.standard_normal((b, t, c, c, 3), np.float32))
    self.y = jnp.asarray(rng.integers(0, size["num_classes"], b))

    t0 = time.perf_counter()
    variables = builder.init_variables(spec, jax.random.PRNGKey(0))
    self.state = dict(params=variables["params"], batch_stats=variables["batch_stats"],
                      opt=tx.init(variables["params"]), step=jnp.zeros((), jnp.int32))
    jax.block_until_ready(self.state)
    init_s = time.perf_counter() - t0

    def train_step(state, x, y):
      drop_rng = jax.random.fold_in(jax.random.PRNGKey(1), state["step"])

      def loss_fn(params):
        logits, upd = model.apply({"params": params, "batch_stats": state["batch_stats"]}, x, train=True,
                                  mutable=["batch_stats"], rngs={"dropout": drop_rng})
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, upd["batch_stats"]

      (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
      updates, opt = tx.update(grads, state["opt"], state["params"])
      params = optax.apply_updates(state["params"], updates)
      return dict(params=params, batch_stats=new_stats, opt=opt, step=state["step"] + 1), loss

    t0 = time.perf_counter()
    self.compiled = jax.jit(train_step, donate_argnums=(0,)).lower(self.state, self.x, self.y).compile()
    compile_s = time.perf_counter() - t0
    self.loss = None
    self.info = dict(framework="jax", jax_version=jax.__version__, backend=jax.default_backend(),
                     devices=jax.device_count(), depthwise_impl=depthwise.resolved_impl("auto"),
                     depthwise_plan=_plan(depthwise), depthwise_env=os.environ.get(depthwise.ENV_VAR, ""),
                     depthwise_src_sha1=_sha1(depthwise.__file__),
                     init_s=round(init_s, 2), compile_s=round(compile_s, 2))

  def step(self) -> float:
    self.state, self.loss = self.compiled(self.state, self.x, self.y)
    self.jax.block_until_ready(self.loss)

  def final_loss(self) -> float:
    return float(self.loss)


# ---------------------------------------------------------------------------------------- torch
def _import_create_x3d():
  """pytorchvideo imports torchvision.ops.RoIAlign at module level; a stub is enough for X3D."""
  if "torchvision" not in sys.modules:
    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.RoIAlign = object
    tv.ops = ops
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.ops"] = ops
  from pytorchvideo.models.x3d import create_x3d
  return create_x3d


class TorchBench:
  def __init__(self, size: dict, threads: int):
    import torch
    self.torch = torch
    torch.set_num_threads(threads)
    create_x3d = _import_create_x3d()
    torch.manual_seed(0)
    b, t, c = size["batch"], size["frames"], size["crop"]
    t0 = time.perf_counter()
    self.model = create_x3d(input_clip_length=t, input_crop_size=c, model_num_class=size["num_classes"],
                            head_activation=None)  # X3D-S defaults: width 2.0, depth 2.2
    self.model.train()
    self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
    init_s = time.perf_counter() - t0
    self.x = torch.randn(b, 3, t, c, c)
    self.y = torch.randint(0, size["num_classes"], (b,))
    self.loss_fn = torch.nn.CrossEntropyLoss()
    self.loss = None
    self.info = dict(framework="torch", torch_version=torch.__version__, torch_threads=torch.get_num_threads(),
                     params=sum(p.numel() for p in self.model.parameters()),
                     init_s=round(init_s, 2), compile_s=0.0)

  def step(self) -> None:
    self.opt.zero_grad(set_to_none=True)
    loss = self.loss_fn(self.model(self.x), self.y)
    loss.backward()
    self.opt.step()
    self.loss = loss.item()

  def final_loss(self) -> float:
    return float(self.loss)


# --------------------------------------------------------------------------------------- worker
def _send(tag: str, payload) -> None:
  print(f"{tag} {json.dumps(payload)}", flush=True)


def timed(step) -> tuple[float, float, float]:
  """(wall seconds, process CPU seconds -- all threads, user + system, and the system part) of one step."""
  w0, t0 = time.perf_counter(), os.times()
  step()
  t1 = os.times()
  system = t1.system - t0.system
  return time.perf_counter() - w0, t1.user - t0.user + system, system


def worker(args) -> None:
  """Set up, run the first step and the warm-up, print READY; then obey STEP n / DONE on stdin."""
  size = SIZES[args.worker_size]
  load_before = load_avg()
  t0 = time.perf_counter()
  if args.host_memory == "keep":   # the same glibc setting for both frameworks (autox3d_jax/hostmem.py)
    from autox3d_jax.cpu.hostmem import keep_freed_memory
    if not keep_freed_memory():
      raise RuntimeError("--host-memory keep: mallopt is not available or failed here")
  bench = JaxBench(size) if args.worker == "jax" else TorchBench(size, args.threads)
  first_s = timed(bench.step)[0]
  for _ in range(args.warmup - 1):
    bench.step()
  _send("READY", dict(setup_s=round(time.perf_counter() - t0, 1)))
  times, cpu, system = [], [], []
  for line in sys.stdin:
    cmd = line.split()
    if not cmd:
      continue
    if cmd[0] == "STEP":
      new = [timed(bench.step) for _ in range(int(cmd[1]))]
      times += [w for w, _, _ in new]
      cpu += [c for _, c, _ in new]
      system += [s for _, _, s in new]
      _send("TIMES", [w for w, _, _ in new])
    elif cmd[0] == "DONE":
      break
  loss = bench.final_loss()
  res = dict(bench.info, first_step_s=round(first_s, 3), final_loss=round(loss, 4),
             loss_finite=loss == loss and abs(loss) != float("inf"), **_stats(times, size["batch"]),
             cpu_s_median=round(_median(cpu), 3), sys_cpu_s_median=round(_median(system), 3),
             peak_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
             load_before=load_before, load_after=load_avg())
  _send("RESULT", res)


class Worker:
  """Driver-side handle on a worker process."""

  def __init__(self, framework: str, size: str, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--worker-size", size,
           "--warmup", str(args.warmup), "--threads", str(args.threads), "--host-memory", args.host_memory]
    self.framework = framework
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, cwd=ROOT, bufsize=1)
    self.times: list[float] = []

  def _expect(self, tag: str):
    for line in self.proc.stdout:
      if line.startswith(tag + " "):
        return json.loads(line[len(tag) + 1:])
    err = self.proc.stderr.read().strip().splitlines()[-8:]
    raise RuntimeError(f"{self.framework} worker exited (rc {self.proc.wait()}) before {tag}: {err}")

  def ready(self) -> dict:
    return self._expect("READY")

  def steps(self, n: int) -> list[float]:
    self.proc.stdin.write(f"STEP {n}\n")
    self.proc.stdin.flush()
    new = self._expect("TIMES")
    self.times += new
    return new

  def finish(self) -> dict:
    self.proc.stdin.write("DONE\n")
    self.proc.stdin.flush()
    res = self._expect("RESULT")
    self.proc.wait(timeout=60)
    return res

  def kill(self) -> None:
    if self.proc.poll() is None:
      self.proc.kill()


# ---------------------------------------------------------------------------------------- driver
def emit(line: dict) -> None:
  text = json.dumps(line)
  print(text, flush=True)
  os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
  with open(RESULTS, "a") as f:
    f.write(text + "\n")


def run_size(size: str, frameworks: list[str], args, common: dict) -> bool:
  """Run one size; emit a line per framework (+ compare). Returns False on any failure."""
  paired = len(frameworks) == 2 and not args.sequential
  base = dict(common, size=size, **SIZES[size], mode="paired" if paired else "sequential")
  workers: dict[str, Worker] = {}
  ok = True
  results: dict[str, dict] = {}
  ratios: list[float] = []
  try:
    if paired:
      for f in frameworks:  # set up one at a time: compile never overlaps the other's steps
        workers[f] = Worker(f, size, args)
        workers[f].ready()
      for _ in range(args.steps):
        t = {f: workers[f].steps(1)[0] for f in frameworks}
        if "jax" in t and "torch" in t:
          ratios.append(t["torch"] / t["jax"])
      for f in frameworks:
        results[f] = workers.pop(f).finish()
    else:
      for f in frameworks:
        w = workers[f] = Worker(f, size, args)
        w.ready()
        w.steps(args.steps)
        results[f] = workers.pop(f).finish()
  except Exception as e:  # pylint: disable=broad-except
    ok = False
    emit(dict(base, framework=",".join(frameworks), error=str(e)[-2000:], load=load_avg()))
  finally:
    for w in workers.values():
      w.kill()
  for f in frameworks:
    if f in results:
      emit(dict(base, framework=f, **{k: v for k, v in results[f].items() if k != "framework"}))
  if "jax" in results and "torch" in results:
    jx, th = results["jax"], results["torch"]
    ratio = jx["clips_per_s"] / th["clips_per_s"]
    line = dict(base, framework="compare", jax_clips_per_s=jx["clips_per_s"], torch_clips_per_s=th["clips_per_s"],
                speedup=round(ratio, 3), target=1.5, meets_target=ratio >= 1.5,
                speedup_from_min_step=round(th["step_s_min"] / jx["step_s_min"], 3),
                cpu_s_ratio=round(th["cpu_s_median"] / jx["cpu_s_median"], 3),
                depthwise_plan=jx.get("depthwise_plan"), load=load_avg())
    if ratios:
      line.update(paired_ratio_median=round(_median(ratios), 3), paired_ratio_min=round(min(ratios), 3),
                  paired_ratio_max=round(max(ratios), 3))
    emit(line)
  return ok


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--sizes", default="a,b", help="comma list of %s (default a,b)" % sorted(SIZES))
  p.add_argument("--frameworks", default="jax,torch", help="comma list of jax,torch")
  p.add_argument("--quick", action="store_true", help="3 timed steps after 1 warm-up (default 10 after 2)")
  p.add_argument("--steps", type=int, default=None, help="timed steps per framework (overrides --quick)")
  p.add_argument("--warmup", type=int, default=None, help="untimed steps incl. the first (>= 1)")
  p.add_argument("--sequential", action="store_true", help="all steps of one framework, then the other")
  p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
  p.add_argument("--host-memory", choices=("keep", "default"), default="keep",
                 help="keep: both workers keep freed memory in-process (glibc mmap and trimming off, as "
                      "autox3d_jax's entry points do); default: glibc's defaults")
  p.add_argument("--note", default="", help="free text stored in every line")
  p.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
  p.add_argument("--worker-size", choices=sorted(SIZES), help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.steps is None:
    args.steps = 3 if args.quick else 10
  if args.warmup is None:
    args.warmup = 1 if args.quick else 2
  args.warmup = max(1, args.warmup)
  if args.worker:
    worker(args)
    return 0

  sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
  frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
  for s in sizes:
    if s not in SIZES:
      p.error(f"unknown size {s!r}; known: {sorted(SIZES)}")
  for f in frameworks:
    if f not in ("jax", "torch"):
      p.error(f"unknown framework {f!r}")
  run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
  common = dict(bench="x3d_s_train_step", run_id=run_id, host=platform.node(), cpus=os.cpu_count(),
                quick=args.quick, warmup=args.warmup, host_memory=args.host_memory, note=args.note)
  ok = all([run_size(s, frameworks, args, common) for s in sizes])
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
