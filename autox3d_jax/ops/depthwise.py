"""Depthwise (channel-wise) 3D convolution, the op every X3D-style block is built on.

This module is the public op: `depthwise_conv3d`, its argument checks, `output_shape`, the `lax`
reference path and the dispatch that picks an implementation at trace time. The CPU kernels it
dispatches to (shift-and-add, numba, the host-callback transport, the custom VJP) live in
`autox3d_jax.cpu.depthwise`, because XLA's grouped conv is two orders of magnitude slower on the
CPU than they are; on TPU/GPU none of them runs.

Layout: x is (N, T, H, W, C), kernel is (kt, kh, kw, C). Padding is symmetric k//2 on every axis
(PyTorch `padding=k//2`, which is what pytorchvideo's X3D uses -- XLA's "SAME" pads asymmetrically
for stride 2 and would not match). Temporal stride is 1; spatial stride (H and W) is 1 or 2, so an
odd H gives ceil(H/2) rows at stride 2.

Why more than one implementation: XLA's grouped convolution (`feature_group_count=C`) is the right
op on TPU/GPU but two orders of magnitude slower than numba on CPU (benchmarks/RESULTS.md,
'Depthwise 3D conv'). On CPU we use a `jax.custom_vjp` op instead whose three parts -- forward,
input gradient, weight gradient -- each run in XLA by shift-and-add or in numba through a host
callback (`cpu.depthwise` explains both).

Implementations (`impl=`):
  'lax'    grouped conv (reference; used on TPU/GPU).
  'numba'  custom_vjp; see `execution_plan` for which parts run in numba.
  'shift'  custom_vjp, all XLA: the fallback when numba cannot be imported.
  'frames' kt 2-D depthwise convs (`depthwise_conv3d_frames`): for exporters (TFLite) only.
  'auto'   one CPU device -> 'numba' ('shift' with a one-time warning without numba); several
           CPU devices -> 'shift'; TPU/GPU -> 'lax'.
AUTOX3D_DEPTHWISE_IMPL=lax|shift|numba overrides what 'auto' resolves to (debugging);
AUTOX3D_DEPTHWISE_CALLBACK=buffer|pure overrides the host-callback transport (`host_transport`).

numba is never imported by importing this module: only when a numba plan is first resolved.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os

import jax
import jax.numpy as jnp
from jax import lax

from autox3d_jax.cpu import depthwise as _cpu
# Re-exported: the CPU transport and numba probe are part of this op's dispatch API.
from autox3d_jax.cpu.depthwise import CALLBACK_ENV_VAR, host_transport, numba_available  # noqa: F401
from autox3d_jax.ops._geometry import output_shape, padding as _padding  # noqa: F401

_log = logging.getLogger(__name__)

ENV_VAR = "AUTOX3D_DEPTHWISE_IMPL"
IMPLS = ("lax", "shift", "numba", "frames")


def depthwise_conv3d_lax(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """Reference: XLA grouped convolution (fast on TPU/GPU, very slow on CPU)."""
  c = x.shape[-1]
  return lax.conv_general_dilated(
      x, kernel[..., None, :].reshape(kernel.shape[:3] + (1, c)),
      window_strides=(1, stride, stride), padding=_padding(kernel.shape),
      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), feature_group_count=c)


def depthwise_conv3d_frames(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """The same conv as a sum over the kt temporal taps of 2-D depthwise convs of the temporally
  shifted frames. Why: a runtime with a 2-D depthwise conv but no grouped 3-D conv (TFLite:
  DEPTHWISE_CONV_2D, float and int8) runs this natively, kt ops per conv; the 'shift' form would
  be kt*kh*kw multiply-adds, each rounded again when quantised to int8."""
  n, t, h, w, c = x.shape
  kt, kh, kw, _ = kernel.shape
  padded = jnp.pad(x, ((0, 0), (kt // 2, kt // 2), (0, 0), (0, 0), (0, 0)))
  out = None
  for dt in range(kt):
    frames = padded[:, dt:dt + t].reshape((n * t, h, w, c))
    y = lax.conv_general_dilated(frames, kernel[dt][:, :, None, :], window_strides=(stride, stride),
                                 padding=[(kh // 2, kh // 2), (kw // 2, kw // 2)],
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
    out = y if out is None else out + y
  return out.reshape((n, t) + out.shape[1:])


# ---------------------------------------------------------------------------------------------
# Dispatch: which implementation runs, and where its three parts run (decided at trace time).
# ---------------------------------------------------------------------------------------------

def execution_plan(impl: str = "auto") -> tuple[str, str, str]:
  """Where (forward, input grad, weight grad) run for a fast impl: each 'xla' or 'numba'
  (('lax',) * 3 for 'lax').

  'shift' is all XLA. 'numba' runs all three in numba when calls are zero-copy ('buffer'
  transport); with copying callbacks ('pure') the copies cost more than numba saves on the forward
  and input gradient (both cheap enough in XLA), so only the weight gradient (by far the slowest
  part in XLA) goes to numba.
  """
  impl = resolved_impl(impl)
  if impl in ("lax", "frames"):
    return (impl,) * 3
  if impl == "shift":
    return ("xla",) * 3
  return ("numba",) * 3 if _cpu.host_transport() == "buffer" else ("xla", "xla", "numba")


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
  _log.warning(message)


_FORCED: list[str] = []   # a stack: the innermost `forced_impl` wins


@contextlib.contextmanager
def forced_impl(impl: str):
  """Within this block (at trace time), 'auto' resolves to `impl` (one of IMPLS),
  before AUTOX3D_DEPTHWISE_IMPL and the backend are consulted. For code that needs one op form
  whatever the machine, e.g. an export: 'lax' (one grouped conv, what TPU/GPU run) for a portable
  StableHLO artifact, 'frames' (2-D depthwise convs) where the consumer has no grouped 3D conv
  (the TFLite runtime)."""
  if impl not in IMPLS:
    raise ValueError(f"unknown depthwise impl {impl!r}; expected one of {IMPLS}")
  _FORCED.append(impl)
  try:
    yield
  finally:
    _FORCED.pop()


def resolved_impl(impl: str = "auto") -> str:
  """The implementation `depthwise_conv3d(..., impl=impl)` actually runs (decided at trace time).

  'auto' honours `forced_impl`, then the AUTOX3D_DEPTHWISE_IMPL override, then picks by
  `jax.default_backend()`. 'numba' degrades to 'shift' (with a one-time warning) when numba
  cannot be imported.
  """
  if impl == "auto" and _FORCED:
    impl = _FORCED[-1]
  if impl == "auto":
    impl = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
  if impl == "auto":
    # Several CPU devices (a simulated slice, or several processes): stay inside XLA. A host
    # callback there must gather sharded operands to one device, and inside the vmapped, sharded
    # supernet step that aborted the process (seen with 8 simulated devices).
    if jax.default_backend() != "cpu":
      impl = "lax"
    else:
      impl = "numba" if jax.device_count() == 1 else "shift"
  if impl not in IMPLS:
    raise ValueError(f"unknown depthwise impl {impl!r}; expected 'auto' or one of {IMPLS}")
  if impl == "numba" and not _cpu.numba_available():
    _warn_once("depthwise_conv3d: numba unavailable, using impl='shift' (all XLA) instead.")
    impl = "shift"
  return impl


# ---------------------------------------------------------------------------------------------
# Public entry point.
# ---------------------------------------------------------------------------------------------

def _check_args(x, kernel, stride):
  if x.ndim != 5 or kernel.ndim != 4:
    raise ValueError(f"expected x (N,T,H,W,C) and kernel (kt,kh,kw,C); got {x.shape}, {kernel.shape}")
  if kernel.shape[-1] != x.shape[-1]:
    raise ValueError(f"kernel channels {kernel.shape[-1]} != input channels {x.shape[-1]}")
  if stride not in (1, 2):
    raise ValueError(f"spatial stride must be 1 or 2, got {stride}")


def depthwise_conv3d(x: jax.Array, kernel: jax.Array, stride: int = 1, impl: str = "auto") -> jax.Array:
  """Depthwise 3D conv; `impl` in {'auto'} + IMPLS (see the module docstring).

  x: (N, T, H, W, C); kernel: (kt, kh, kw, C); symmetric k//2 padding; spatial `stride` 1 or 2.
  The fast paths compute in float32 (float64 for float64 input) and return x's dtype promoted with
  the kernel's, so bf16 activations work everywhere.
  """
  _check_args(x, kernel, stride)
  plan = execution_plan(impl)
  if plan[0] == "lax":
    return depthwise_conv3d_lax(x, kernel, stride)
  if plan[0] == "frames":
    return depthwise_conv3d_frames(x, kernel, stride)
  return _cpu.depthwise_conv3d_cpu(x, kernel, int(stride), plan)
