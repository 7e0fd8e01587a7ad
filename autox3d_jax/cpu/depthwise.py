"""The CPU kernels of the depthwise 3D conv (`autox3d_jax.ops.depthwise` dispatches to them).

Why they exist: XLA's grouped convolution (`feature_group_count=C`), the right op on TPU/GPU, is
two orders of magnitude slower on the CPU than these kernels, and its weight gradient written as
XLA reductions is still tens of times slower (benchmarks/RESULTS.md, 'Depthwise 3D conv'). So on
CPU the op is a `jax.custom_vjp` (`depthwise_conv3d_cpu`) whose three parts each run, as the
caller's `plan` says, either

* 'xla', by shift-and-add: the sum over the kt*kh*kw taps of a (strided) shifted slice of the
  padded input times kernel[tap]. The input gradient is the same with the flipped kernel over the
  cotangent, dilated first for stride 2. Fine for the forward, slow for the weight gradient
  (kt*kh*kw full reductions). This is impl='shift', the fallback without numba; or
* 'numba': parallel loops over (n, t) rows with channels innermost, called from the traced program
  through a host callback. numba is imported lazily, on first use (`numba_available`), so importing
  this module -- e.g. on a TPU host, where none of it runs -- never needs it.

Host callbacks (`host_transport`): jax.experimental.buffer_callback hands numba XLA's own buffers
(no copy, tens of microseconds per call), so forward, input gradient and weight gradient all run in
numba. Where it is missing (older/newer jax without it) or with several devices we use
jax.pure_callback, which copies inputs and outputs (tens of milliseconds for an activation-sized
array; RESULTS.md as above): then only the weight gradient goes to numba
(`ops.depthwise.execution_plan`). AUTOX3D_DEPTHWISE_CALLBACK=buffer|pure overrides the choice.

Sharding caveat: with several devices, pure_callback runs once, on one device, and XLA gathers the
(sharded) inputs to it -- correct, but the numba part does not scale with the device count (and
XLA may log an "Involuntary full rematerialization" warning). buffer_callback would instead run
redundantly on every device, which is why it is only used with a single device.

Every path computes the same values as the lax grouped conv (tests/test_depthwise.py: forward and
both gradients within 1e-5 relative, over every kernel of the search space at both strides).
"""
from __future__ import annotations

import functools
import inspect
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from autox3d_jax.ops._geometry import output_shape, padding

_log = logging.getLogger(__name__)

CALLBACK_ENV_VAR = "AUTOX3D_DEPTHWISE_CALLBACK"

# ---------------------------------------------------------------------------------------------
# Shift-and-add building blocks (pure XLA). Jitted so that eager calls compile once per shape
# instead of dispatching ~30 ops one by one; inside an outer jit they are simply inlined.
# ---------------------------------------------------------------------------------------------

def _taps(kernel_shape):
  kt, kh, kw = kernel_shape[:3]
  return [(a, b, c) for a in range(kt) for b in range(kh) for c in range(kw)]


def _tap_slice(xp, tap, out_thw, stride):
  """The slice of the padded input `xp` that tap (a, b, c) multiplies, for every output position."""
  (a, b, c), (to, ho, wo), s = tap, out_thw, stride
  start = (0, a, b, c, 0)
  limit = (xp.shape[0], a + to, b + s * (ho - 1) + 1, c + s * (wo - 1) + 1, xp.shape[4])
  return lax.slice(xp, start, limit, (1, 1, s, s, 1))


def _shift_conv(xp, kernel, out_thw, stride):
  """sum_tap slice(xp, tap) * kernel[tap]: a 'valid' strided depthwise correlation of padded xp."""
  out = None
  for tap in _taps(kernel.shape):
    term = _tap_slice(xp, tap, out_thw, stride) * kernel[tap]
    out = term if out is None else out + term
  return out



def _pad_input(x, kernel_shape):
  return jnp.pad(x, [(0, 0)] + [(p, p) for p, _ in padding(kernel_shape)] + [(0, 0)])


@functools.partial(jax.jit, static_argnums=2)
def _shift_forward(x, kernel, stride):
  out_thw = output_shape(x.shape, kernel.shape, stride)[1:4]
  return _shift_conv(_pad_input(x, kernel.shape), kernel, out_thw, stride)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _shift_input_grad(g, kernel, stride, in_thw):
  """dL/dx: transposed conv = correlation of the dilated+padded cotangent with the flipped kernel.

  Forward tap j reads x[s*o + j - p]; the transpose puts g[o] at s*o of a zero-dilated copy of g,
  padded by k-1-p in front and enough behind to give back the input length.
  """
  config = [(0, 0, 0)]
  for n_in, n_out, k, s in zip(in_thw, g.shape[1:4], kernel.shape[:3], (1, stride, stride)):
    lo = k - 1 - k // 2
    dilated = s * (n_out - 1) + 1
    config.append((lo, n_in + k - 1 - dilated - lo, s - 1))
  config.append((0, 0, 0))
  gp = lax.pad(g, jnp.zeros((), g.dtype), config)
  return _shift_conv(gp, kernel[::-1, ::-1, ::-1], in_thw, 1)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _shift_weight_grad(x, g, kernel_shape, stride):
  """dL/dkernel[tap] = sum over N,T,H,W of slice(x_padded, tap) * g (XLA; slow on CPU: fallback)."""
  xp = _pad_input(x, kernel_shape)
  rows = [jnp.sum(_tap_slice(xp, tap, g.shape[1:4], stride) * g, axis=(0, 1, 2, 3))
          for tap in _taps(kernel_shape)]
  return jnp.stack(rows).reshape(tuple(kernel_shape[:3]) + (x.shape[-1],))


# ---------------------------------------------------------------------------------------------
# numba kernels (host). Plain Python loops that numba compiles; `_prange` becomes numba.prange.
# Common layout: the outer parallel loop runs over (n, t) rows, the innermost over channels
# (contiguous in NTHWC, so it vectorises), and out-of-range taps are skipped instead of reading a
# padded copy. Each kernel fills every element of the `out` it is given -- with buffer_callback
# that is XLA's own result buffer, so no second buffer and copy (page-faulting a fresh buffer of
# activation size costs about as much as the conv itself).
# ---------------------------------------------------------------------------------------------

_prange = range


def _w_range(c, pw, s, w_in, w_out):
  """Output columns w whose input column s*w + c - pw lies inside [0, w_in)."""
  return max(0, (pw - c + s - 1) // s), min(w_out, (w_in - 1 + pw - c) // s + 1)


def _forward_loops(out, x, k, s):
  """out[n,t,h,w] = sum_{a,b,c} x[n, t+a-pt, s*h+b-ph, s*w+c-pw] * k[a,b,c]  (per channel)."""
  n_, t_, h_, w_, _ = x.shape
  kt, kh, kw = k.shape[0], k.shape[1], k.shape[2]
  pt, ph, pw = kt // 2, kh // 2, kw // 2
  ho_, wo_ = out.shape[2], out.shape[3]
  for r in _prange(n_ * t_):
    n, t = r // t_, r % t_
    for h in range(ho_):
      orow = out[n, t, h]
      orow[:] = 0
      for a in range(kt):
        ti = t + a - pt
        if ti < 0 or ti >= t_:
          continue
        for b in range(kh):
          hi = s * h + b - ph
          if hi < 0 or hi >= h_:
            continue
          xrow = x[n, ti, hi]
          for c in range(kw):
            kv = k[a, b, c]
            w0, w1 = _w_range(c, pw, s, w_, wo_)
            for w in range(w0, w1):
              xv = xrow[s * w + c - pw]
              for ch in range(kv.shape[0]):
                orow[w, ch] += xv[ch] * kv[ch]


def _input_grad_loops(out, g, k, s):
  """out = dL/dx: every input row (n, ti, hi) gathers the output rows its taps fed.

  Input row hi was read by output row h through tap b iff hi = s*h + b - ph; within the row the
  forward's column map wi = s*w + c - pw is scattered back (sequential, so no races).
  """
  n_, t_, h_, w_, _ = out.shape
  ho_, wo_ = g.shape[2], g.shape[3]
  kt, kh, kw = k.shape[0], k.shape[1], k.shape[2]
  pt, ph, pw = kt // 2, kh // 2, kw // 2
  for r in _prange(n_ * t_):
    n, ti = r // t_, r % t_
    for hi in range(h_):
      drow = out[n, ti, hi]
      drow[:] = 0
      for a in range(kt):
        t = ti - a + pt
        if t < 0 or t >= t_:
          continue
        for b in range(kh):
          hs = hi + ph - b
          if hs < 0 or hs % s != 0 or hs // s >= ho_:
            continue
          grow = g[n, t, hs // s]
          for c in range(kw):
            kv = k[a, b, c]
            w0, w1 = _w_range(c, pw, s, w_, wo_)
            for w in range(w0, w1):
              dv = drow[s * w + c - pw]
              for ch in range(kv.shape[0]):
                dv[ch] += grow[w, ch] * kv[ch]


def _weight_grad_loops(part, x, g, s):
  """part[i, a,b,c] = sum over the rows (n, t) of chunk i of g[n,t,h,w] * x[n, t+a-pt, s*h+b-ph,
  s*w+c-pw]  (per channel); the caller sums the chunks.

  The (n, t) rows are split into len(part) contiguous chunks run in parallel, each with its own
  float64 partial sums (no races; deterministic for a fixed chunk count). A row buffer in the
  input dtype sums the <= W terms of one image row before they enter the float64 accumulator:
  ~1e-7 relative accuracy at full float32 SIMD speed.
  """
  n_, t_, h_, w_, c_ = x.shape
  ho_, wo_ = g.shape[2], g.shape[3]
  nchunks, kt, kh, kw = part.shape[0], part.shape[1], part.shape[2], part.shape[3]
  pt, ph, pw = kt // 2, kh // 2, kw // 2
  rows = n_ * t_
  for i in _prange(nchunks):
    acc = part[i]
    acc[...] = 0
    buf = np.empty(c_, x.dtype)
    for r in range(i * rows // nchunks, (i + 1) * rows // nchunks):
      n, t = r // t_, r % t_
      for a in range(kt):
        ti = t + a - pt
        if ti < 0 or ti >= t_:
          continue
        for h in range(ho_):
          grow = g[n, t, h]
          for b in range(kh):
            hi = s * h + b - ph
            if hi < 0 or hi >= h_:
              continue
            xrow = x[n, ti, hi]
            for c in range(kw):
              w0, w1 = _w_range(c, pw, s, w_, wo_)
              buf[:] = 0
              for w in range(w0, w1):
                xv = xrow[s * w + c - pw]
                for ch in range(c_):
                  buf[ch] += grow[w, ch] * xv[ch]
              for ch in range(c_):
                acc[a, b, c, ch] += buf[ch]


def _weight_grad_host(weight_grad_loops, threads):
  """Host wrapper: float64 per-chunk partials (4 chunks per thread balances the rows that edge
  taps skip), summed here."""
  def run(out, x, g, s):
    nchunks = max(1, min(x.shape[0] * x.shape[1], 4 * threads()))
    part = np.empty((nchunks,) + out.shape, np.float64)
    weight_grad_loops(part, x, g, s)
    out[...] = part.sum(axis=0)
  return run


@functools.lru_cache(maxsize=None)
def _numba_kernels():
  """The numba-compiled kernels (compiled on first use, cached on disk), or None without numba.

  numba is imported lazily so that importing this module (e.g. on a TPU host) never needs it.
  The kernels keep the GIL (no nogil=True) on purpose: XLA may run two callbacks from different
  threads at once, and numba's default 'workqueue' threading layer aborts on concurrent parallel
  launches; holding the GIL serialises them.
  """
  global _prange, _w_range
  try:
    import numba  # pylint: disable=import-outside-toplevel
  except Exception as e:  # pragma: no cover - depends on the environment
    _log.warning("numba unavailable (%s): the CPU depthwise conv falls back to impl='shift' "
                 "(all XLA, weight gradient ~50x slower).", e)
    return None
  _prange = numba.prange
  _w_range = numba.njit(inline="always", cache=True)(_w_range)
  jit = numba.njit(parallel=True, fastmath=False, cache=True)
  return {
      "forward": jit(_forward_loops),
      "input_grad": jit(_input_grad_loops),
      "weight_grad": _weight_grad_host(jit(_weight_grad_loops), numba.get_num_threads),
  }


def numba_available() -> bool:
  return _numba_kernels() is not None


# ---------------------------------------------------------------------------------------------
# Calling the kernels from inside jit: host callbacks.
# ---------------------------------------------------------------------------------------------

def _apply_batched(kernel, out, arrays, core_ranks):
  """kernel(out[i], *arrays[i]) for every index i of the leading (vmap) axes of `out`.

  Under vmap_method='expand_dims' a vmapped argument arrives with a leading batch axis and an
  unbatched one with a size-1 axis; broadcasting covers both (and nested vmaps). Each batch
  element -- e.g. a supernet group with its own kernel -- is an independent conv.
  """
  lead = out.shape[:out.ndim - core_ranks[0]]
  views = [np.broadcast_to(a, lead + a.shape[a.ndim - r:]) for a, r in zip(arrays, core_ranks[1:])]
  for idx in np.ndindex(*lead):
    kernel(out[idx], *[v[idx] for v in views])


@functools.lru_cache(maxsize=None)
def _buffer_callback_works() -> bool:
  """Whether jax.experimental.buffer_callback (zero-copy, jax >= ~0.7) is usable here.

  It is experimental, so rather than trusting its signature we run it once on a tiny input
  (under ensure_compile_time_eval: this usually runs while tracing, and must execute, not be
  staged into the caller's computation).
  """
  try:
    from jax.experimental.buffer_callback import buffer_callback  # pylint: disable=import-outside-toplevel

    def add_one(ctx, out, a):
      del ctx
      np.asarray(out)[...] = np.asarray(a) + 1

    f = buffer_callback(add_one, jax.ShapeDtypeStruct((2,), np.float32), vmap_method="expand_dims")
    with jax.ensure_compile_time_eval():
      y = jax.jit(f)(np.arange(2, dtype=np.float32))
    return bool(np.array_equal(np.asarray(y), [1, 2]))
  except Exception as e:  # pylint: disable=broad-except
    _log.info("buffer_callback unusable (%s); depthwise_conv3d uses jax.pure_callback.", e)
    return False


def host_transport() -> str:
  """How host kernels are called: 'buffer' or 'pure'.

  'buffer' (jax.experimental.buffer_callback) hands numba the XLA buffers themselves (no copy).
  'pure' (jax.pure_callback) copies every input and output (tens of milliseconds for an
  activation-sized input; benchmarks/RESULTS.md, 'Depthwise 3D conv'), but with several devices
  it is the right choice: it runs once on one device (XLA gathers the sharded inputs), whereas
  buffer_callback would run redundantly on every device. So: 'buffer' on a single CPU device,
  'pure' otherwise. AUTOX3D_DEPTHWISE_CALLBACK=pure|buffer overrides.
  """
  forced = os.environ.get(CALLBACK_ENV_VAR, "").strip().lower()
  if forced in ("pure", "buffer"):
    return forced
  single_cpu = jax.default_backend() == "cpu" and jax.device_count() == 1
  return "buffer" if single_cpu and _buffer_callback_works() else "pure"


def _host_call(kernel_name, result, args, core_ranks, stride):
  """Run numba kernel `kernel_name`(out, *args, stride) from traced code; returns `out`."""
  kernel = _numba_kernels()[kernel_name]
  run = lambda out, *arrays: kernel(out, *arrays, stride)

  if host_transport() == "buffer":
    from jax.experimental.buffer_callback import buffer_callback  # pylint: disable=import-outside-toplevel

    def on_buffers(ctx, out, *bufs):
      del ctx
      _apply_batched(run, np.asarray(out), [np.asarray(b) for b in bufs], core_ranks)

    return buffer_callback(on_buffers, result, vmap_method="expand_dims")(*args)

  def on_arrays(*arrays):
    arrays = [np.asarray(a) for a in arrays]
    lead = np.broadcast_shapes(*(a.shape[:a.ndim - r] for a, r in zip(arrays, core_ranks[1:])))
    out = np.empty(lead + result.shape, result.dtype)
    _apply_batched(run, out, arrays, core_ranks)
    return out

  return _pure_callback(on_arrays, result, *args)


def _pure_callback(fn, result, *args):
  """`jax.pure_callback` with a leading-batch-axis vmap rule, across jax versions.

  jax >= 0.4.34 spells it vmap_method='expand_dims'; older versions had vectorized=True (which
  passes unbatched args without the size-1 axis -- `_apply_batched` broadcasts either way).
  """
  if "vmap_method" in inspect.signature(jax.pure_callback).parameters:
    return jax.pure_callback(fn, result, *args, vmap_method="expand_dims")
  return jax.pure_callback(fn, result, *args, vectorized=True)  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# The custom_vjp op: each of forward / input grad / weight grad runs in XLA or numba per `plan`.
# ---------------------------------------------------------------------------------------------

def _forward(x, kernel, stride, where):
  if where == "xla":
    return _shift_forward(x, kernel, stride)
  out = jax.ShapeDtypeStruct(output_shape(x.shape, kernel.shape, stride), x.dtype)
  return _host_call("forward", out, (x, kernel), (5, 5, 4), stride)


def _input_grad(g, kernel, stride, x_shape, where):
  if where == "xla":
    return _shift_input_grad(g, kernel, stride, tuple(x_shape[1:4]))
  out = jax.ShapeDtypeStruct(x_shape, g.dtype)
  return _host_call("input_grad", out, (g, kernel), (5, 5, 4), stride)


def _weight_grad(x, g, kernel_shape, stride, where):
  if where == "xla":
    return _shift_weight_grad(x, g, tuple(kernel_shape), stride)
  out = jax.ShapeDtypeStruct(tuple(kernel_shape), x.dtype)
  return _host_call("weight_grad", out, (x, g), (4, 5, 5), stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise_fast(x, kernel, stride, plan):
  return _forward(x, kernel, stride, plan[0])


def _depthwise_fast_fwd(x, kernel, stride, plan):
  # Residuals: x for the weight gradient, the kernel for the input gradient.
  return _forward(x, kernel, stride, plan[0]), (x, kernel)


def _depthwise_fast_bwd(stride, plan, res, g):
  x, kernel = res
  return (_input_grad(g, kernel, stride, x.shape, plan[1]),
          _weight_grad(x, g, kernel.shape, stride, plan[2]))


_depthwise_fast.defvjp(_depthwise_fast_fwd, _depthwise_fast_bwd)


def _compute_dtype(dtype) -> jnp.dtype:
  """float32 unless the input is float64: bf16/f16 taps would be summed in low precision (and
  are emulated on CPU anyway)."""
  return jnp.dtype(jnp.float64) if jnp.dtype(dtype) == jnp.float64 else jnp.dtype(jnp.float32)


def depthwise_conv3d_cpu(x: jax.Array, kernel: jax.Array, stride: int,
                         plan: tuple[str, str, str]) -> jax.Array:
  """The custom_vjp depthwise conv; `plan` = where (forward, input grad, weight grad) run, each
  'xla' (shift-and-add) or 'numba' (see `ops.depthwise.execution_plan`).

  Arguments as `ops.depthwise.depthwise_conv3d` (already checked there). Computes in float32
  (float64 for float64 input) and returns x's dtype promoted with the kernel's, so bf16
  activations work.
  """
  out_dtype = jnp.result_type(x.dtype, kernel.dtype)
  cdt = _compute_dtype(out_dtype)
  y = _depthwise_fast(x.astype(cdt), kernel.astype(cdt), int(stride), tuple(plan))
  return y.astype(out_dtype)
