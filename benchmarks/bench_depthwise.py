"""Benchmark the depthwise 3D conv implementations (and torch's grouped Conv3d when installed).

  python benchmarks/bench_depthwise.py            # lax, shift, numba (both transports), torch
  python benchmarks/bench_depthwise.py --quick    # skip the slow ones (lax: seconds per call; shift bwd)

One JSON line per measurement on stdout, also appended to benchmarks/results/depthwise.jsonl.
fwd_s / fwd_bwd_s are medians over --repeats timed calls after one warm-up (compile) call, with
block_until_ready. fwd_bwd is y = conv(x, k) plus the VJP of a fixed random cotangent w.r.t. both
x and the kernel (torch: y.backward(g) with both requiring grad). The machine's load average is
recorded with every line: on a shared 2-core box other jobs skew the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from autox3d_jax.cpu import depthwise as CD  # pylint: disable=wrong-import-position
from autox3d_jax.ops import depthwise as D  # pylint: disable=wrong-import-position

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "depthwise.jsonl")


def _times(fn, repeats: int) -> list[float]:
  jax.block_until_ready(fn())  # warm-up: compilation, numba cache load
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return times


def _median_time(fn, repeats: int) -> float:
  return statistics.median(_times(fn, repeats))


def _fwd_and_fwd_bwd(fwd, fwd_bwd, repeats: int) -> dict:
  """Medians (the reported figures) plus minima (less sensitive to other jobs on the machine)."""
  tf, tfb = _times(fwd, repeats), _times(fwd_bwd, repeats)
  return {"fwd_s": statistics.median(tf), "fwd_bwd_s": statistics.median(tfb),
          "fwd_min_s": min(tf), "fwd_bwd_min_s": min(tfb)}


def _meta() -> dict:
  return {"backend": jax.default_backend(), "jax": jax.__version__,
          "loadavg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
          "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _emit(record: dict, out_path: str) -> None:
  record = {**record, **_meta()}
  line = json.dumps(record)
  print(line, flush=True)
  os.makedirs(os.path.dirname(out_path), exist_ok=True)
  with open(out_path, "a", encoding="utf-8") as f:
    f.write(line + "\n")


def bench_jax(impl, transport, x, k, g, stride, repeats):
  """fwd and fwd+bwd medians of `impl` (transport: AUTOX3D_DEPTHWISE_CALLBACK, None = default)."""
  if transport:
    os.environ[D.CALLBACK_ENV_VAR] = transport
  else:
    os.environ.pop(D.CALLBACK_ENV_VAR, None)
  conv = lambda x, k: D.depthwise_conv3d(x, k, stride, impl)  # traced below, under the env var

  def fwd_bwd(x, k, g):
    y, vjp = jax.vjp(conv, x, k)
    return (y, *vjp(g))

  fwd, fb = jax.jit(conv), jax.jit(fwd_bwd)
  plan = D.execution_plan(impl)
  result = {**_fwd_and_fwd_bwd(lambda: fwd(x, k), lambda: fb(x, k, g), repeats), "plan": list(plan)}
  if "numba" in plan:
    result["transport"] = D.host_transport()
  os.environ.pop(D.CALLBACK_ENV_VAR, None)
  return result


def bench_torch(x, k, g, stride, repeats):
  """torch grouped Conv3d on the same data (NCDHW, the layout torch users run)."""
  import torch  # pylint: disable=import-outside-toplevel
  c = x.shape[-1]
  to_ncdhw = lambda a: torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(a), -1, 1)))
  xt, gt = to_ncdhw(x), to_ncdhw(g)
  conv = torch.nn.Conv3d(c, c, k.shape[:3], stride=(1, stride, stride),
                         padding=tuple(s // 2 for s in k.shape[:3]), groups=c, bias=False)
  with torch.no_grad():
    conv.weight.copy_(torch.from_numpy(np.moveaxis(np.asarray(k), -1, 0)[:, None].copy()))

  def fwd():
    with torch.no_grad():
      return conv(xt)

  def fwd_bwd():
    xg = xt.detach().requires_grad_(True)
    conv.weight.grad = None
    conv(xg).backward(gt)
    return xg.grad

  # Sanity: same forward as ours (guards against a layout slip making the comparison unfair).
  ours = np.asarray(jax.jit(lambda x, k: D.depthwise_conv3d(x, k, stride, "numba"))(x, k))
  err = np.max(np.abs(np.moveaxis(fwd().numpy(), 1, -1) - ours)) / np.max(np.abs(ours))
  return {**_fwd_and_fwd_bwd(fwd, fwd_bwd, repeats), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
          "max_rel_diff_vs_numba": float(err)}


def bench_callback_overhead(x, repeats):
  """Per-call cost of a host callback inside jit: tiny array, and the 72 MB input of the conv."""
  tiny = jnp.ones((4,), jnp.float32)
  small = jax.ShapeDtypeStruct((4,), jnp.float32)
  plain = jax.jit(lambda a: a[:4] * 2)
  pure = jax.jit(lambda a: CD._pure_callback(lambda v: np.asarray(v).reshape(-1)[:4] * 2, small, a))
  records = [{"what": "jit_no_callback", "tiny_s": _median_time(lambda: plain(tiny), 50 * repeats),
              "big_input_s": _median_time(lambda: plain(x), 10 * repeats)},
             {"what": "pure_callback", "tiny_s": _median_time(lambda: pure(tiny), 50 * repeats),
              "big_input_s": _median_time(lambda: pure(x), 4 * repeats)}]
  if CD._buffer_callback_works():
    from jax.experimental.buffer_callback import buffer_callback  # pylint: disable=import-outside-toplevel

    def read(ctx, out, v):
      del ctx
      np.asarray(out)[...] = np.asarray(v).reshape(-1)[:4] * 2

    buf = jax.jit(buffer_callback(read, small))
    records.append({"what": "buffer_callback", "tiny_s": _median_time(lambda: buf(tiny), 50 * repeats),
                    "big_input_s": _median_time(lambda: buf(x), 10 * repeats)})
  return records


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true", help="skip lax and shift (seconds per call)")
  p.add_argument("--shape", default="8,13,40,40,108", help="N,T,H,W,C")
  p.add_argument("--kernel", default="3,3,3", help="kt,kh,kw")
  p.add_argument("--strides", default="1,2")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--slow-repeats", type=int, default=1, help="repeats for lax / shift")
  p.add_argument("--no-torch", action="store_true")
  p.add_argument("--out", default=RESULTS)
  args = p.parse_args(argv)

  shape = tuple(int(v) for v in args.shape.split(","))
  kshape = tuple(int(v) for v in args.kernel.split(",")) + (shape[-1],)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
  k = jnp.asarray(rng.standard_normal(kshape, dtype=np.float32))
  try:
    import torch  # pylint: disable=import-outside-toplevel,unused-import
    have_torch = not args.no_torch
  except ImportError:
    have_torch = False

  runs = [("numba", None, args.repeats), ("numba", "pure", args.repeats)]
  if not args.quick:
    runs += [("shift", None, args.slow_repeats), ("lax", None, args.slow_repeats)]
  for stride in (int(s) for s in args.strides.split(",")):
    g = jnp.asarray(rng.standard_normal(D.output_shape(shape, kshape, stride), dtype=np.float32))
    base = {"op": "depthwise_conv3d", "shape": list(shape), "kernel": list(kshape[:3]),
            "stride": stride, "dtype": "float32"}
    for impl, transport, repeats in runs:
      r = bench_jax(impl, transport, x, k, g, stride, repeats)
      _emit({**base, "impl": impl, **r, "repeats": repeats}, args.out)
    if have_torch:
      _emit({**base, "impl": "torch", **bench_torch(x, k, g, stride, args.repeats),
             "repeats": args.repeats}, args.out)
  for r in bench_callback_overhead(x, args.repeats):
    _emit({"op": "callback_overhead", "impl": r.pop("what"), "big_input_shape": list(shape), **r},
          args.out)


if __name__ == "__main__":
  main()
