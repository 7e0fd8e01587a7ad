"""Where and how a latency table was measured, and whether a stored one may be reused here.

`current_meta(space, batch_size, dtype, statistic)` returns the meta a table measured here and now
would carry: backend, device, CPU, library versions, depthwise implementation, XLA flags, the table
settings and `space_fingerprint(space)`. `meta_mismatch(stored, wanted)` lists the MATCH_FIELDS that
differ (an empty list: the stored table is reusable). Milliseconds measured under another backend,
library version, batch size, dtype or space are not these milliseconds, so they are never reused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
from typing import Mapping

import flax
import jax
import jaxlib

from autox3d_jax.ops import depthwise as dw

FORMAT_VERSION = 1
# Meta fields that must agree for a stored table to be reused (the rest is informational).
MATCH_FIELDS = ("format_version", "backend", "platform", "device_kind", "device_count", "cpu_model",
                "cpu_count", "dtype", "batch_size", "jax", "jaxlib", "flax", "numba", "depthwise_impl",
                "depthwise_plan", "numba_threads", "xla_flags", "statistic", "space_fingerprint",
                "latency_backend", "tensorflow", "tflite_threads")
DTYPES = ("float32", "bfloat16")
STATISTICS = ("median", "mean")


def space_fingerprint(space) -> str:
  """Stable hash of everything that defines the space's networks (widths, depths, candidates, clip,
  stem/head). The sampling stride changes no network, and empty input axes none either, so neither
  enters the hash (tables measured before those fields existed still match)."""
  fields = dataclasses.asdict(space.config)
  fields.pop("sampling_stride", None)
  for key in ("input_frames", "input_strides", "input_crops"):
    if not fields.get(key):
      fields.pop(key, None)
  text = json.dumps(fields, sort_keys=True, default=str)
  return hashlib.sha1(text.encode()).hexdigest()[:16]


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _version(module_name: str) -> str | None:
  try:
    module = __import__(module_name)
    return getattr(module, "__version__", None)
  except Exception:  # pylint: disable=broad-except
    return None


def _numba_threads() -> int | None:
  try:
    import numba  # pylint: disable=import-outside-toplevel
    return int(numba.get_num_threads())
  except Exception:  # pylint: disable=broad-except
    return None


def current_meta(space, batch_size: int, dtype: str, statistic: str, backend: str = "jax") -> dict:
  """The meta a table measured here and now, for `space`, on latency `backend` ('jax' or 'tflite':
  `measure`), would carry (the match fields). Raises ValueError for a dtype not in DTYPES, a
  statistic not in STATISTICS, an unknown backend, or bfloat16 on the TFLite backend."""
  from autox3d_jax.cost.latency.measure import TFLITE_THREADS, check_backend  # pylint: disable=import-outside-toplevel
  check_backend(backend)
  if backend == "tflite" and dtype != "float32":
    raise ValueError(f"the TFLite latency backend times float32 models, not {dtype!r}")
  if dtype not in DTYPES:
    raise ValueError(f"latency dtype must be one of {DTYPES}, got {dtype!r}")
  if statistic not in STATISTICS:
    raise ValueError(f"latency statistic must be one of {STATISTICS}, got {statistic!r}")
  dev = jax.devices()[0]
  impl = dw.resolved_impl()
  plan = list(dw.execution_plan()) if impl != "lax" else ["lax"] * 3
  return {
      "format_version": FORMAT_VERSION,
      "backend": jax.default_backend(),
      "platform": dev.platform,
      "device_kind": dev.device_kind,
      "device_count": jax.device_count(),
      "cpu_model": _cpu_model(),
      "cpu_count": os.cpu_count(),
      "dtype": dtype,
      "batch_size": int(batch_size),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "numba": _version("numba") if impl == "numba" else None,
      "depthwise_impl": impl,
      "depthwise_plan": plan,
      "numba_threads": _numba_threads() if impl == "numba" else None,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "statistic": statistic,
      "space_fingerprint": space_fingerprint(space),
      "latency_backend": backend,
      "tensorflow": _version("tensorflow") if backend == "tflite" else None,
      "tflite_threads": TFLITE_THREADS if backend == "tflite" else None,
  }


def meta_mismatch(stored: Mapping, wanted: Mapping) -> list[str]:
  """Human-readable list of the match fields that differ ('' list = reusable)."""
  return [f"{k}: stored {stored.get(k)!r} != current {wanted.get(k)!r}"
          for k in MATCH_FIELDS if stored.get(k) != wanted.get(k)]
