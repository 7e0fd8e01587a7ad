"""Keep freed host memory inside the process (glibc malloc tuning for CPU training).

Why: XLA's CPU runtime allocates every large temporary buffer of a step with malloc and frees it at
the end. glibc serves blocks above 32 MiB with mmap and gives them back with munmap, so every step
page-faults (and the kernel zeroes) its activations again. For an X3D-S training step on the CPU
that kernel time is a large share of the step (more still when other processes run between
steps), and with mmap and trimming off it all but disappears and the step takes about half as
long (benchmarks/RESULTS.md, 'Freed host memory kept in the process'). The cost: the process keeps
its peak heap for its lifetime, as accelerator runtimes do with device memory.

`keep_freed_memory()` sets this with `mallopt` at run time (the same effect as starting the process
with MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<larger than the peak heap>). It only affects later
allocations, so call it early. Opt out with AUTOX3D_KEEP_HOST_MEMORY=0. On a non-glibc platform it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# mallopt takes an int and glibc stores M_TRIM_THRESHOLD as size_t: -1 becomes SIZE_MAX, "never trim".
# A finite int is not enough: INT_MAX (2 GiB) is below an X3D-S step's peak heap, so glibc still
# trims after every step (benchmarks/RESULTS.md).
_NEVER = -1

_applied: bool | None = None


def keep_freed_memory() -> bool:
  """Turn off malloc's mmap for large blocks and heap trimming. Returns True when it is in effect."""
  global _applied
  if _applied is not None:
    return _applied
  _applied = False
  if os.environ.get("AUTOX3D_KEEP_HOST_MEMORY", "1").strip().lower() in ("0", "false", "no", "off"):
    return False
  name = ctypes.util.find_library("c")
  if not name:
    return False
  try:
    libc = ctypes.CDLL(name)
    mallopt = libc.mallopt
  except (OSError, AttributeError):   # musl, macOS, Windows: no mallopt
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _NEVER) == 1
  _applied = ok
  log.info("host memory: freed blocks kept in-process (mallopt %s)", "applied" if ok else "failed")
  return ok


def keep_freed_memory_on_cpu() -> bool:
  """`keep_freed_memory()` when JAX computes on the host CPU; accelerator hosts keep glibc's defaults."""
  import jax
  if jax.default_backend() != "cpu":
    return False
  return keep_freed_memory()
