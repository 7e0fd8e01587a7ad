"""Hardware-aware cost: a latency lookup table measured on the current backend (FBNet-style).

FLOPs do not predict latency (depthwise 3D convs are memory-bound; SE adds tiny but serialising
reductions), so the search can instead optimise milliseconds measured on the device it targets.

What is measured. The `CostTable` (search/cost_table.py) asks, per block position, for the cost of
every (previous width, width, expansion, op, SE) combination. A block's latency depends only on
(type, kernel, in_width, width, inner, se_ratio, stride, input T/H/W) -- plus batch size and dtype,
which are fixed for a whole table -- so the table enumerates exactly the block queries the CostTable
makes (by running `CostTable.build` with a recording hook), de-duplicates them (all blocks 2.. of a
stage share one set of keys), and times each *unique* block once. Stem and head are timed too (head
per final-stage width). Every piece is the module `models.builder` would build for it, run in eval
mode (`train=False`) with its variables as arguments, ahead-of-time compiled
(`jax.jit(...).lower(...).compile()`), warmed up, and timed with `block_until_ready`; its figure is
the median (or, with statistic='mean', the mean) of its timed calls (`measure_modules`). The calls are interleaved: after all pieces are
compiled, `repeats` rounds each visit every piece in a shuffled order, so the load of other jobs on
a shared machine (which drifts over minutes) spreads over all entries instead of inflating
whichever were measured during a busy minute. Fast pieces get more calls per round (>= `min_time_s`
of timed calls in all). Parameters are synthetic (right shapes, realistic scales): running each
block's `init` program would cost more compile time than the measurement itself.

Per-call overhead. Timing each piece as its own program counts the per-call cost (dispatch, argument
handling, synchronisation) once per piece, while the whole network pays it once. The table also
stores `overhead_ms`, the median time of a trivial compiled program; `latency_fns` subtracts it from
every block and from the head and keeps it in the stem, so a predicted network pays it exactly once.
This is a measured constant, not fitted to any network.

File format (JSON):
  {"meta": {backend, device_kind, platform/cpu details, dtype, batch_size, jax/jaxlib/flax/numba
            versions, depthwise implementation, space fingerprint, ...},
   "entries": {block_key: ms}, "stem_ms": ms, "head_ms": {width: ms}, "overhead_ms": ms,
   "timing": {warmup, repeats, statistic, build seconds, load average}}
`load_or_build` reuses a file whose meta matches the current backend / settings / space and
rebuilds it (logging which fields differ) otherwise.

The expected latency under the architecture distribution is then the CostTable's exact einsum
expectation (`latency_cost_table(space, table).expected(probs)`), differentiable in the
probabilities, and usable by every strategy wherever a FLOPs table is.

`validate_table` checks the additive model: random architectures, table-predicted vs measured
end-to-end latency (Kendall tau, mean absolute relative error), peak activation memory from XLA's
memory analysis, a JSON record and a scatter plot.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import statistics
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from autox3d_jax.models import registry
from autox3d_jax.models.builder import Head, Stem, build
from autox3d_jax.models.spec import ArchSpec, BlockSpec

_log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Meta fields that must agree for a stored table to be reused (the rest is informational).
MATCH_FIELDS = ("format_version", "backend", "platform", "device_kind", "device_count", "cpu_model",
                "cpu_count", "dtype", "batch_size", "jax", "jaxlib", "flax", "numba", "depthwise_impl",
                "depthwise_plan", "numba_threads", "xla_flags", "statistic", "space_fingerprint")
DTYPES = ("float32", "bfloat16")
STATISTICS = ("median", "mean")


# ------------------------------------------------------------------------------------------ keys
def block_key(spec: BlockSpec, in_width: int, thw) -> str:
  """Self-describing key of one block measurement (batch size and dtype are table-wide, in meta)."""
  t, h, w = (int(v) for v in thw)
  return (f"{spec.type}_{''.join(map(str, spec.kernel))}|in{int(in_width)}|w{spec.width}|i{spec.inner}"
          f"|se{float(spec.se_ratio):.6g}|s{spec.stride}|{t}x{h}x{w}")


def required_queries(space) -> tuple[dict, list, tuple]:
  """What `CostTable.build` will ask a hook for, de-duplicated.

  Returns (blocks: {key: (BlockSpec, in_width, thw)}, head_widths: [w, ...], head_thw). Found by
  running `CostTable.build` with recording hooks, so the table always covers exactly the queries the
  search makes (no second copy of the enumeration logic to drift).
  """
  from autox3d_jax.search.cost_table import CostTable  # local: cost_table imports cost.analytic
  blocks: dict[str, tuple] = {}
  heads: dict[int, tuple] = {}

  def block_fn(spec, in_width, thw):
    blocks.setdefault(block_key(spec, in_width, thw), (spec, int(in_width), tuple(int(v) for v in thw)))
    return 0.0

  def head_fn(width, thw):
    heads[int(width)] = tuple(int(v) for v in thw)
    return 0.0

  CostTable.build(space, "latency", fns=(lambda: 0.0, block_fn, head_fn))
  head_thw = next(iter(heads.values()))
  return blocks, sorted(heads), head_thw


# ------------------------------------------------------------------------------------------ meta
def space_fingerprint(space) -> str:
  """Stable hash of everything that defines the space (widths, depths, candidates, clip, stem/head)."""
  text = json.dumps(dataclasses.asdict(space.config), sort_keys=True, default=str)
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


def current_meta(space, batch_size: int, dtype: str = "float32", statistic: str = "median") -> dict:
  """The meta a table measured here and now, for `space`, would carry (the match fields)."""
  from autox3d_jax.ops import depthwise as dw  # pylint: disable=import-outside-toplevel
  import jaxlib  # pylint: disable=import-outside-toplevel
  import flax  # pylint: disable=import-outside-toplevel
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
  }


def meta_mismatch(stored: Mapping, wanted: Mapping) -> list[str]:
  """Human-readable list of the match fields that differ ('' list = reusable)."""
  return [f"{k}: stored {stored.get(k)!r} != current {wanted.get(k)!r}"
          for k in MATCH_FIELDS if stored.get(k) != wanted.get(k)]


def _cfg_get(cfg, name: str, default=None):
  if cfg is None:
    return default
  if isinstance(cfg, Mapping):
    return cfg.get(name, default)
  try:
    return getattr(cfg, name)
  except (AttributeError, KeyError):
    return default


# ---------------------------------------------------------------------------------------- timing
def _module_dtype(dtype: str):
  # float32 -> None: exactly what `builder.build(spec)` (no dtype) runs.
  return None if dtype == "float32" else jnp.dtype(dtype)


MAX_REPEATS = 200
DEFAULT_MIN_TIME_S = 0.2
STEM_ITEM, HEAD_ITEM = "__stem__", "__head__|w"


def time_compiled(fn: Callable, args: tuple, warmup: int, repeats: int, min_time_s: float = 0.0) -> dict:
  """Run `fn(*args)` `warmup` times (at least once: first-call host-kernel loading), then time calls,
  each ended by block_until_ready: at least `repeats` of them, and more (up to MAX_REPEATS) until
  `min_time_s` of timed calls have accumulated -- cheap for fast pieces, whose medians are the most
  sensitive to other jobs on the machine. Returns {'median_ms', 'min_ms', 'times_ms'}."""
  for _ in range(max(1, int(warmup))):
    jax.block_until_ready(fn(*args))
  times: list[float] = []
  total = 0.0
  while len(times) < max(1, int(repeats)) or (total < min_time_s and len(times) < MAX_REPEATS):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    dt = time.perf_counter() - t0
    total += dt
    times.append(dt * 1e3)
  return {"median_ms": statistics.median(times), "min_ms": min(times), "times_ms": times}


def _random_input(shape, dtype: str, seed: int = 0):
  # numpy, not jax.random: that compiles a sampler per shape (seconds each on a loaded CPU).
  x = np.random.default_rng(seed).standard_normal(tuple(shape), dtype=np.float32)
  return jnp.asarray(x, jnp.dtype(dtype))


def synthetic_variables(module, x, seed: int = 0) -> dict:
  """Variables with the shapes `module.init` would give, filled on the host (no init program to
  compile: that costs seconds per block on CPU, several times the apply's own compile).

  Kernels ~ N(0, 1/fan_in) (activations keep their scale through deep random networks), BN scale and
  running variance 1, biases and running means 0. Latency does not depend on the values, as long as
  they are finite and not denormal.
  """
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x, train=False))
  rng = np.random.default_rng(seed)
  flat = {}
  for path, leaf in traverse_util.flatten_dict(_unfreeze(shapes)).items():
    name = path[-1]
    if name in ("scale", "var"):
      value = np.ones(leaf.shape, leaf.dtype)
    elif name in ("bias", "mean"):
      value = np.zeros(leaf.shape, leaf.dtype)
    else:
      fan_in = max(1, int(np.prod(leaf.shape[:-1])))
      value = (rng.standard_normal(leaf.shape) / math.sqrt(fan_in)).astype(leaf.dtype)
    flat[path] = jnp.asarray(value)
  return traverse_util.unflatten_dict(flat)


def _unfreeze(tree):
  return {k: _unfreeze(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree


def _compile_module(module, x):
  """(compiled eval-mode apply, variables) for `module` on input `x` (variables as arguments, as in
  real inference, so they are not folded into the program as constants)."""
  variables = synthetic_variables(module, x)
  compiled = jax.jit(lambda v, inp: module.apply(v, inp, train=False)).lower(variables, x).compile()
  return compiled, variables


def measure_modules(items: Mapping[str, tuple], warmup: int = 2, repeats: int = 5,
                    min_time_s: float = 0.0, progress: bool = False, desc: str = "measure",
                    memory: bool = False, seed: int = 0) -> dict:
  """Time many modules' eval forwards with one interleaved protocol; returns {name: stats}.

  items: name -> (module, input_shape, input_dtype). Each module is compiled ahead of time
  (`jax.jit(...).lower(...).compile()`, variables as arguments), run `warmup` times (at least once:
  first-call host-kernel loading) and timed once for an estimate. Then `repeats` rounds: each round
  visits every item (in a fresh shuffled order) and times k consecutive calls, each ended by
  `block_until_ready`, with k chosen so that every item accumulates >= `min_time_s` of timed calls
  (fast pieces get more samples; at most MAX_REPEATS). Stats: median_ms (the table's figure), min_ms,
  n calls, and with `memory` XLA's memory analysis of the compiled program.

  Interleaving matters on a shared machine: other jobs' load drifts over minutes, and timing items
  round-robin spreads that drift over all of them instead of letting it scale whichever items were
  measured during a busy minute.
  """
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  names = list(items)
  bar = tqdm(total=len(names) * (1 + max(1, int(repeats))), desc=f"{desc}: compile", unit="step",
             disable=not progress, dynamic_ncols=True)
  inputs: dict = {}
  programs, times, stats = {}, {}, {}
  try:
    for name in names:
      module, shape, in_dtype = items[name]
      key = (tuple(int(v) for v in shape), str(in_dtype))
      if key not in inputs:  # one input buffer per shape, shared by the items that take it
        inputs[key] = _random_input(key[0], key[1])
      compiled, variables = _compile_module(module, inputs[key])
      args = (variables, inputs[key])
      for _ in range(max(1, int(warmup))):
        jax.block_until_ready(compiled(*args))
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(*args))
      estimate = time.perf_counter() - t0
      per_round = max(1, min(MAX_REPEATS // max(1, int(repeats)),
                             math.ceil(min_time_s / max(1, int(repeats)) / max(estimate, 1e-6))))
      programs[name] = (compiled, args, per_round)
      times[name] = []
      if memory:
        stats[name] = {"memory": _memory_stats(compiled)}
      bar.update(1)
    bar.set_description(f"{desc}: time")
    rng = np.random.default_rng(seed)
    for _ in range(max(1, int(repeats))):
      for i in rng.permutation(len(names)):
        compiled, args, per_round = programs[names[i]]
        for _ in range(per_round):
          t0 = time.perf_counter()
          jax.block_until_ready(compiled(*args))
          times[names[i]].append((time.perf_counter() - t0) * 1e3)
        bar.update(1)
  finally:
    bar.close()
  for name in names:
    t = times[name]
    stats[name] = {**stats.get(name, {}), "median_ms": statistics.median(t), "mean_ms": statistics.fmean(t),
                   "min_ms": min(t), "n": len(t)}
  return stats


def time_module(module, input_shape, dtype: str, warmup: int = 2, repeats: int = 5,
                min_time_s: float = 0.0) -> dict:
  """One module's stats (`measure_modules` with a single item)."""
  return measure_modules({"m": (module, input_shape, dtype)}, warmup, repeats, min_time_s)["m"]


def time_block(spec: BlockSpec, in_width: int, thw, batch_size: int, dtype: str = "float32",
               warmup: int = 2, repeats: int = 5, min_time_s: float = 0.0) -> dict:
  """Time one block (the module `models.builder` would build for it) on this backend."""
  return time_module(block_module(spec, dtype), (batch_size, *thw, in_width), dtype, warmup, repeats,
                     min_time_s)


def block_module(spec: BlockSpec, dtype: str = "float32"):
  return registry.get(spec.type).module(spec, _module_dtype(dtype))


def measure_overhead_ms(repeats: int = 200) -> float:
  """Median wall time of a trivial compiled program: the per-call cost every timed piece includes."""
  x = jnp.ones((8,), jnp.float32)
  compiled = jax.jit(lambda v: v + 1.0).lower(x).compile()
  return time_compiled(compiled, (x,), warmup=5, repeats=repeats)["median_ms"]


# ----------------------------------------------------------------------------------------- table
@dataclasses.dataclass
class LatencyTable:
  """Measured milliseconds: blocks by `block_key`, stem, head by final-stage width, per-call overhead."""
  meta: dict
  entries: dict
  stem_ms: float
  head_ms: dict
  overhead_ms: float = 0.0
  timing: dict = dataclasses.field(default_factory=dict)
  origin: str = dataclasses.field(default="", compare=False)  # how this object came to be (not saved)

  # ------------------------------------------------------------------------------------ lookups
  def block_ms(self, spec: BlockSpec, in_width: int, thw) -> float:
    key = block_key(spec, in_width, thw)
    try:
      return float(self.entries[key])
    except KeyError:
      raise KeyError(f"latency table has no entry for block {key}: it was measured for another space "
                     f"(fingerprint {self.meta.get('space_fingerprint')}); rebuild it") from None

  def head_of(self, width: int) -> float:
    try:
      return float(self.head_ms[str(int(width))])
    except KeyError:
      raise KeyError(f"latency table has no head entry for width {width} (has {sorted(self.head_ms)})") from None

  def __len__(self) -> int:
    return len(self.entries) + 1 + len(self.head_ms)

  # --------------------------------------------------------------------------------------- JSON
  def to_dict(self) -> dict:
    return {"meta": self.meta, "entries": dict(sorted(self.entries.items())), "stem_ms": self.stem_ms,
            "head_ms": {str(k): v for k, v in self.head_ms.items()}, "overhead_ms": self.overhead_ms,
            "timing": self.timing}

  @classmethod
  def from_dict(cls, d: Mapping, origin: str = "") -> "LatencyTable":
    try:
      return cls(meta={"statistic": "median", **d["meta"]}, entries={str(k): float(v) for k, v in d["entries"].items()},
                 stem_ms=float(d["stem_ms"]), head_ms={str(k): float(v) for k, v in d["head_ms"].items()},
                 overhead_ms=float(d.get("overhead_ms", 0.0)), timing=dict(d.get("timing", {})),
                 origin=origin)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      raise ValueError(f"not a latency table: {e!r}") from e

  def save(self, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(self.to_dict(), f, indent=1)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a table
    return path

  @classmethod
  def load(cls, path: str) -> "LatencyTable":
    with open(path, encoding="utf-8") as f:
      return cls.from_dict(json.load(f), origin=f"loaded from {path}")


def build_table(space, batch_size: int = 1, dtype: str = "float32", warmup: int = 2, repeats: int = 5,
                progress: bool = True, min_time_s: float = DEFAULT_MIN_TIME_S,
                statistic: str = "median") -> LatencyTable:
  """Time every unique block the space's CostTable needs, plus stem, head widths and the per-call
  overhead, on the current default backend (interleaved protocol: `measure_modules`).

  statistic: what summarises a piece's timed calls. 'median' (default) is robust to rare outliers;
  'mean' is additive in expectation, which matters on a loaded machine: a short piece's median
  often misses the preemptions a long whole-network run cannot escape (see `validate_table`'s
  `same_session_by_statistic`). On a quiet machine the two agree."""
  meta = current_meta(space, batch_size, dtype, statistic)
  blocks, head_widths, head_thw = required_queries(space)
  c = space.config
  t0 = time.perf_counter()
  load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
  overhead = measure_overhead_ms()
  items = {STEM_ITEM: (Stem(c.stem, _module_dtype(dtype)),
                       (batch_size, c.num_frames, c.crop_size, c.crop_size, c.in_channels), dtype)}
  for key in sorted(blocks):
    spec, in_width, thw = blocks[key]
    items[key] = (block_module(spec, dtype), (batch_size, *thw, in_width), dtype)
  for w in head_widths:
    items[f"{HEAD_ITEM}{w}"] = (Head(c.head, _module_dtype(dtype)), (batch_size, *head_thw, w), dtype)
  stats = measure_modules(items, warmup, repeats, min_time_s, progress,
                          desc=f"latency table ({meta['device_kind']}, batch {batch_size}, {dtype}, "
                               f"{len(items)} entries)")
  ms = {k: v[f"{statistic}_ms"] for k, v in stats.items()}
  entries = {k: ms[k] for k in sorted(blocks)}
  head_ms = {str(w): ms[f"{HEAD_ITEM}{w}"] for w in head_widths}
  timing = {"warmup": int(warmup), "repeats": int(repeats), "min_time_s": float(min_time_s),
            "statistic": statistic, "protocol": "interleaved rounds (measure_modules)",
            "build_s": round(time.perf_counter() - t0, 2), "num_block_queries_unique": len(blocks),
            "loadavg_1m_start": load0,
            "loadavg_1m_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
  return LatencyTable(meta, entries, ms[STEM_ITEM], head_ms, overhead, timing,
                      origin=f"built ({len(blocks)} unique blocks) in {timing['build_s']} s")


def load_or_build(space, latency_cfg=None, path: str | None = None, *, dtype: str | None = None,
                  progress: bool = True, min_time_s: float | None = None,
                  statistic: str | None = None) -> LatencyTable:
  """The table for `space` on this backend: reuse `path` (or `latency_cfg.path`) when its meta matches
  (backend, device, dtype, batch size, library versions, depthwise impl, space), otherwise measure a
  new one -- logging why -- and save it there. `latency_cfg` is `cfg.latency` (batch_size, repeats,
  warmup, path; optional dtype (float32), min_time_s (0.2), statistic ('median')); keyword arguments
  win over it. Without any path the table is built, not saved.
  """
  batch_size = int(_cfg_get(latency_cfg, "batch_size", 1))
  repeats = int(_cfg_get(latency_cfg, "repeats", 5))
  warmup = int(_cfg_get(latency_cfg, "warmup", 2))
  if min_time_s is None:
    min_time_s = float(_cfg_get(latency_cfg, "min_time_s", DEFAULT_MIN_TIME_S))
  dtype = dtype or _cfg_get(latency_cfg, "dtype", None) or "float32"
  path = path or _cfg_get(latency_cfg, "path", "") or None
  statistic = statistic or _cfg_get(latency_cfg, "statistic", None) or "median"
  wanted = current_meta(space, batch_size, dtype, statistic)
  reason = "no table path given" if path is None else f"no table at {path}"
  if path is not None and os.path.exists(path):
    try:
      stored = LatencyTable.load(path)
      diffs = meta_mismatch(stored.meta, wanted)
      if not diffs:
        _log.info("latency table: reusing %s (%d entries)", path, len(stored))
        return stored
      reason = f"{path} does not match ({'; '.join(diffs)})"
    except (OSError, ValueError) as e:
      reason = f"{path} is unreadable ({e})"
  _log.warning("latency table: measuring a new one: %s", reason)
  table = build_table(space, batch_size, dtype, warmup, repeats, progress, min_time_s, statistic)
  table.origin = f"rebuilt: {reason}; {table.origin}"
  if path is not None:
    table.save(path)
    _log.info("latency table: saved %s (%d entries)", path, len(table))
  return table


def share_across_processes(table: LatencyTable) -> LatencyTable:
  """Process 0's measurements on every process (hosts time slightly differently; the search step
  must see the same costs everywhere). A no-op with one process."""
  if jax.process_count() == 1:
    return table
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  keys = sorted(table.entries)
  heads = sorted(table.head_ms)
  values = np.array([table.entries[k] for k in keys] + [table.head_ms[k] for k in heads]
                    + [table.stem_ms, table.overhead_ms], np.float64)
  shared = np.asarray(multihost_utils.broadcast_one_to_all(values.astype(np.float32)), np.float64)
  n = len(keys)
  return dataclasses.replace(
      table, entries=dict(zip(keys, shared[:n].tolist())),
      head_ms=dict(zip(heads, shared[n:n + len(heads)].tolist())), stem_ms=float(shared[-2]),
      overhead_ms=float(shared[-1]), origin=f"{table.origin}; process 0's values")


# --------------------------------------------------------------------------------- search hooks
def latency_fns(table: LatencyTable, subtract_overhead: bool = True):
  """(stem_fn, block_fn, head_fn) for `CostTable.build(space, 'latency', fns=...)`, in ms.

  With `subtract_overhead`, blocks and head give (measured - per-call overhead) and the stem keeps
  its overhead, so a network's predicted latency counts the per-call cost once, as it runs.
  """
  o = table.overhead_ms if subtract_overhead else 0.0

  def stem_fn():
    return table.stem_ms

  def block_fn(spec, in_width, thw):
    return max(table.block_ms(spec, in_width, thw) - o, 0.0)

  def head_fn(width, thw):
    del thw  # fixed per space (the fingerprint covers it)
    return max(table.head_of(width) - o, 0.0)

  return stem_fn, block_fn, head_fn


def latency_cost_table(space, table: LatencyTable, subtract_overhead: bool = True):
  """A `CostTable` in milliseconds: `.expected(probs)` is the exact, differentiable E[latency]."""
  from autox3d_jax.search.cost_table import CostTable  # pylint: disable=import-outside-toplevel
  return CostTable.build(space, "latency", fns=latency_fns(table, subtract_overhead))


# ------------------------------------------------------------------------------------ memory
def _memory_stats(compiled) -> dict:
  """XLA's buffer-assignment memory analysis of a compiled program (None fields where the backend
  does not report it). `temp_bytes` is the peak of live intermediates (activations) XLA allocates."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    m = None
  if m is None:
    return {"temp_bytes": None, "argument_bytes": None, "output_bytes": None, "peak_bytes": None,
            "peak_activation_bytes": None}
  get = lambda name: (int(getattr(m, name)) if getattr(m, name, None) is not None else None)
  out = {"temp_bytes": get("temp_size_in_bytes"), "argument_bytes": get("argument_size_in_bytes"),
         "output_bytes": get("output_size_in_bytes"), "peak_bytes": get("peak_memory_in_bytes")}
  if not out["peak_bytes"]:
    out["peak_bytes"] = None  # 0 = not reported by this backend
  # Activations: XLA's temporaries (params are arguments) plus the output buffer.
  out["peak_activation_bytes"] = (None if out["temp_bytes"] is None
                                  else out["temp_bytes"] + (out["output_bytes"] or 0))
  return out


def _arch_item(spec: ArchSpec, batch_size: int, dtype: str) -> tuple:
  """(module, input shape, input dtype) of a whole network's eval forward. The input is float32 even
  for bfloat16 compute: VideoNet casts it itself, as it does behind a real input pipeline."""
  return (build(spec, _module_dtype(dtype)),
          (batch_size, spec.num_frames, spec.crop_size, spec.crop_size, spec.in_channels), "float32")


def arch_memory(spec: ArchSpec, batch_size: int = 1, dtype: str = "float32") -> dict:
  """Peak activation memory of the eval forward of `spec` (compile only, nothing runs): usable as a
  constraint (e.g. `arch_memory(spec)['peak_activation_bytes'] <= budget` in evolution).
  Fields: peak_activation_bytes (XLA temporaries + output), temp_bytes, argument_bytes (params and
  input), output_bytes, peak_bytes (where the backend reports it); None where it reports nothing."""
  module, shape, in_dtype = _arch_item(spec, batch_size, dtype)
  compiled, _ = _compile_module(module, _random_input(shape, in_dtype))
  return _memory_stats(compiled)


def measure_arch(spec: ArchSpec, batch_size: int = 1, dtype: str = "float32", warmup: int = 2,
                 repeats: int = 5, min_time_s: float = DEFAULT_MIN_TIME_S) -> dict:
  """End-to-end eval-forward latency of a whole network (same protocol as the table) + memory."""
  return measure_modules({"arch": _arch_item(spec, batch_size, dtype)}, warmup, repeats, min_time_s,
                         memory=True)["arch"]


# -------------------------------------------------------------------------------- validation
def random_points(space, num: int, seed: int = 0) -> list[dict]:
  """`num` architectures drawn uniformly per decision (canonical points, duplicates removed)."""
  rng = np.random.default_rng(seed)
  points, seen = [], set()
  for _ in range(50 * num):
    p = space.canonical({d.label: int(rng.integers(d.size)) for d in space.decisions})
    key = tuple(sorted(p.items()))
    if key not in seen:
      seen.add(key)
      points.append(p)
    if len(points) == num:
      break
  return points


def _mismatch_warning(table: LatencyTable, space) -> list[str]:
  return meta_mismatch(table.meta, current_meta(space, table.meta["batch_size"], table.meta["dtype"],
                                               table.meta.get("statistic", "median")))


def _kendall(a, b) -> tuple[float, float]:
  from scipy import stats  # pylint: disable=import-outside-toplevel
  if len(a) < 2:
    return float("nan"), float("nan")
  r = stats.kendalltau(a, b)
  return float(r.statistic if hasattr(r, "statistic") else r[0]), float(r.pvalue)


def arch_pieces(space, spec: ArchSpec, dtype: str = "float32", batch_size: int = 1) -> dict:
  """The table pieces one network is made of: {table name: (module, input shape, input dtype)} with
  table names STEM_ITEM, a `block_key` per block and f"{HEAD_ITEM}{width}" (what its prediction sums)."""
  c = space.config
  t, h = c.num_frames, -(-c.crop_size // c.stem.spatial_stride)
  width = c.stem.width
  pieces = {STEM_ITEM: (Stem(c.stem, _module_dtype(dtype)),
                        (batch_size, c.num_frames, c.crop_size, c.crop_size, c.in_channels), dtype)}
  for block in spec.blocks:
    pieces[block_key(block, width, (t, h, h))] = (block_module(block, dtype), (batch_size, t, h, h, width), dtype)
    h, width = -(-h // block.stride), block.width
  pieces[f"{HEAD_ITEM}{width}"] = (Head(c.head, _module_dtype(dtype)), (batch_size, t, h, h, width), dtype)
  return pieces


def _with_retimed(table: LatencyTable, ms: Mapping[str, float]) -> LatencyTable:
  """A copy of `table` with the pieces in `ms` (table names as in `arch_pieces`) replaced."""
  entries = {**table.entries, **{k: v for k, v in ms.items() if k in table.entries}}
  heads = {**table.head_ms, **{k[len(HEAD_ITEM):]: v for k, v in ms.items() if k.startswith(HEAD_ITEM)}}
  return dataclasses.replace(table, entries=entries, head_ms=heads, stem_ms=ms.get(STEM_ITEM, table.stem_ms),
                             origin="re-timed in the validation session")


def _agreement(pred: np.ndarray, meas: np.ndarray) -> dict:
  rel = (pred - meas) / meas
  tau, p = _kendall(pred, meas)
  nan = float("nan")
  return {"kendall_tau": tau, "kendall_p": p,
          "mean_abs_rel_error": float(np.mean(np.abs(rel))) if len(rel) else nan,
          "median_abs_rel_error": float(np.median(np.abs(rel))) if len(rel) else nan,
          "max_abs_rel_error": float(np.max(np.abs(rel))) if len(rel) else nan,
          "mean_signed_rel_error": float(np.mean(rel)) if len(rel) else nan}


def validate_table(space, table: LatencyTable, latency_cfg=None, out_dir: str | None = None, *,
                   num_archs: int | None = None, seed: int | None = None, warmup: int | None = None,
                   repeats: int | None = None, min_time_s: float | None = None, progress: bool = True,
                   subtract_overhead: bool = True, num_probes: int = 12, retime: bool = False) -> dict:
  """Table-predicted vs measured end-to-end latency for `num_archs` random architectures.

  Called like `load_or_build`: `validate_table(space, table, cfg.latency, out_dir)`. Keyword arguments
  win over the config's keys of the same name (num_archs, seed, warmup, repeats, min_time_s), which
  win over the defaults: 30 architectures, seed 0, and the table's own timing settings.

  Same batch size, dtype and timing protocol as the table; the networks are timed interleaved
  (`measure_modules`). The primary figures compare the *stored* table with these measurements.

  Machine drift: on a shared machine the speed of a program depends on other jobs' load at the time
  (multi-threaded pieces more than small ones), so a table measured minutes earlier can be off by a
  common factor. To tell that apart from the additive model's own error, some table pieces are
  re-timed in the same interleaved rounds as the networks:
    retime=False: `num_probes` pieces (the stem and random blocks); `load_drift` = sum(now) /
      sum(at build time) over them.
    retime=True: every piece the sampled networks use; `same_session` holds the agreement figures
      with those contemporaneous timings (the additive model's error without drift), and
      `load_drift` is the median over networks of same-session / stored prediction.
  `mean_abs_rel_error_drift_corrected` (stored prediction x load_drift vs measured) is secondary.

  Returns (and, with `out_dir`, writes `latency_validation.json` and `latency_validation.png`):
    kendall_tau, kendall_p, mean/median/max_abs_rel_error, mean_signed_rel_error, flops_kendall_tau
    (FLOPs vs measured latency, for comparison), load_drift, same_session and
    same_session_by_statistic {median, mean, min} (retime only), peak_activation_mb {min, max}, archs: [{name, point, depths, predicted_ms, measured_ms,
    measured_min_ms, rel_error, gflops, params, memory: {peak_activation_bytes, temp_bytes, ...},
    predicted_same_session_ms (retime only)}], settings, meta.
  """
  from autox3d_jax.cost import analytic  # pylint: disable=import-outside-toplevel

  diffs = _mismatch_warning(table, space)
  if diffs:
    _log.warning("validate_table: the table does not match this backend/space: %s", "; ".join(diffs))
  batch_size, dtype = int(table.meta["batch_size"]), table.meta["dtype"]
  stat_key = f"{table.meta.get('statistic', 'median')}_ms"  # networks summarised like the table's pieces

  def pick(value, name, default):
    if value is not None:
      return value
    from_cfg = _cfg_get(latency_cfg, name, None)
    return default if from_cfg is None else from_cfg

  num_archs = int(pick(num_archs, "num_archs", 30))
  seed = int(pick(seed, "seed", 0))
  warmup = int(pick(warmup, "warmup", table.timing.get("warmup", 2)))
  repeats = int(pick(repeats, "repeats", table.timing.get("repeats", 5)))
  min_time_s = float(pick(min_time_s, "min_time_s", table.timing.get("min_time_s", DEFAULT_MIN_TIME_S)))
  cost = latency_cost_table(space, table, subtract_overhead)
  t0 = time.perf_counter()
  load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

  points = random_points(space, num_archs, seed)
  specs = [space.to_arch(p, name=f"random_{seed}_{k}") for k, p in enumerate(points)]
  items = {s.name: _arch_item(s, batch_size, dtype) for s in specs}
  pieces: dict = {}
  if retime:
    for spec in specs:
      pieces.update(arch_pieces(space, spec, dtype, batch_size))
  elif num_probes > 0:
    blocks, _, _ = required_queries(space)
    c = space.config
    pieces[STEM_ITEM] = (Stem(c.stem, _module_dtype(dtype)),
                         (batch_size, c.num_frames, c.crop_size, c.crop_size, c.in_channels), dtype)
    keys = sorted(k for k in blocks if k in table.entries)
    for i in np.random.default_rng(seed + 1).permutation(len(keys))[:max(0, num_probes - 1)]:
      spec, in_width, thw = blocks[keys[i]]
      pieces[keys[i]] = (block_module(spec, dtype), (batch_size, *thw, in_width), dtype)
  items.update({"piece|" + k: v for k, v in pieces.items()})
  measured = measure_modules(items, warmup, repeats, min_time_s, progress, memory=True, seed=seed,
                             desc=f"validate latency table ({len(specs)} archs + {len(pieces)} pieces)")
  now = {k: measured["piece|" + k][stat_key] for k in pieces}
  session_costs = {}  # statistic -> CostTable of the pieces re-timed now (retime only)
  if retime:
    for stat in ("median", "mean", "min"):
      retimed = {k: measured["piece|" + k][f"{stat}_ms"] for k in pieces}
      session_costs[stat] = latency_cost_table(space, _with_retimed(table, retimed), subtract_overhead)
  stored = {k: (table.stem_ms if k == STEM_ITEM else table.head_of(int(k[len(HEAD_ITEM):]))
                if k.startswith(HEAD_ITEM) else table.entries[k]) for k in pieces}

  archs = []
  for point, spec in zip(points, specs):
    m = measured[spec.name]
    predicted = cost.of_point(point)
    report = analytic.arch_cost(spec)
    archs.append({"name": spec.name, "point": point, "depths": spec.depths,
                  "predicted_ms": predicted, "measured_ms": m[stat_key], "measured_min_ms": m["min_ms"],
                  "rel_error": (predicted - m[stat_key]) / m[stat_key],
                  "gflops": report.gflops, "params": report.params, "memory": m["memory"]})
    if retime:
      archs[-1]["predicted_same_session_ms"] = session_costs[stat_key[:-3]].of_point(point)
      archs[-1]["same_session_by_statistic"] = {
          stat: {"predicted_ms": ct.of_point(point), "measured_ms": m[f"{stat}_ms"]}
          for stat, ct in session_costs.items()}
  pred = np.array([a["predicted_ms"] for a in archs])
  meas = np.array([a["measured_ms"] for a in archs])
  meas_min = np.array([a["measured_min_ms"] for a in archs])
  flops = np.array([a["gflops"] for a in archs])
  if retime:
    session = np.array([a["predicted_same_session_ms"] for a in archs])
    drift = float(np.median(session / pred))
  else:
    drift = float(sum(now.values()) / sum(stored.values())) if pieces else float("nan")
  mem = [a["memory"]["peak_activation_bytes"] for a in archs]
  have_mem = bool(mem) and all(m is not None for m in mem)
  agreement = _agreement(pred, meas)
  result = {
      **agreement,
      "kendall_tau_vs_min": _kendall(pred, meas_min)[0],
      "mean_abs_rel_error_vs_min": _agreement(pred, meas_min)["mean_abs_rel_error"],
      "load_drift": drift,
      "mean_abs_rel_error_drift_corrected": (_agreement(pred * drift, meas)["mean_abs_rel_error"]
                                             if pieces else float("nan")),
      "same_session": ({**_agreement(session, meas), "pieces_retimed": len(pieces)} if retime else None),
      # Pieces and networks both summarised by the median / mean / min of their timed calls. On a loaded
      # machine the median of a short piece often misses the preemptions a long network run suffers
      # (the median is not additive; the mean is, in expectation).
      "same_session_by_statistic": ({stat: _agreement(
          np.array([a["same_session_by_statistic"][stat]["predicted_ms"] for a in archs]),
          np.array([a["same_session_by_statistic"][stat]["measured_ms"] for a in archs]))
          for stat in session_costs} if retime else None),
      "flops_kendall_tau": _kendall(flops, meas)[0],
      "num_archs": len(archs),
      "peak_activation_mb": {"min": min(mem) / 2**20 if have_mem else None,
                             "max": max(mem) / 2**20 if have_mem else None},
      "pieces": {k: {"table_ms": stored[k], "now_ms": now[k]} for k in pieces},
      "settings": {"batch_size": batch_size, "dtype": dtype, "warmup": warmup, "repeats": repeats,
                   "min_time_s": min_time_s, "seed": seed, "subtract_overhead": subtract_overhead,
                   "retime": retime, "statistic": stat_key[:-3], "overhead_ms": table.overhead_ms, "crop_size": space.config.crop_size,
                   "num_frames": space.config.num_frames, "table_entries": len(table),
                   "validate_s": round(time.perf_counter() - t0, 2), "loadavg_1m_start": load0,
                   "loadavg_1m_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                   "table_loadavg_1m": [table.timing.get("loadavg_1m_start"), table.timing.get("loadavg_1m_end")],
                   "meta_mismatch": diffs},
      "meta": table.meta, "archs": archs,
  }
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "latency_validation.json")
    with open(json_path, "w", encoding="utf-8") as f:
      json.dump(_jsonable(result), f, indent=1)
    result["json_path"] = json_path
    result["plot_path"] = plot_validation(result, os.path.join(out_dir, "latency_validation.png"))
  return result


def _jsonable(x: Any):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.floating, float)):
    return None if not math.isfinite(float(x)) else float(x)
  if isinstance(x, np.integer):
    return int(x)
  return x


def plot_validation(result: Mapping, path: str) -> str:
  """Scatter: predicted vs measured latency (left), GFLOPs vs measured latency (right), coloured by
  peak activation memory. Stand-alone Agg canvas: no pyplot, no global backend switch."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  archs = result["archs"]
  pred = np.array([a["predicted_ms"] for a in archs], float)
  meas = np.array([a["measured_ms"] for a in archs], float)
  flops = np.array([a["gflops"] for a in archs], float)
  mem = [a["memory"]["peak_activation_bytes"] for a in archs]
  colour = np.array(mem, float) / 2**20 if mem and all(m is not None for m in mem) else None
  fig = Figure(figsize=(10, 4.4), dpi=110, layout="constrained")
  FigureCanvasAgg(fig)
  ax1, ax2 = fig.subplots(1, 2)
  kw = dict(c=colour, cmap="viridis", s=36, edgecolors="k", linewidths=0.4) if colour is not None else dict(s=36)
  sc = ax1.scatter(meas, pred, label="stored table", **kw)
  session = [a.get("predicted_same_session_ms") for a in archs]
  if session and all(v is not None for v in session):
    session = np.array(session, float)
    ss = result["same_session"]
    ax1.scatter(meas, session, marker="x", c="tab:red", s=28, linewidths=1,
                label=f"same-session re-timed (τ {ss['kendall_tau']:.2f}, {100 * ss['mean_abs_rel_error']:.0f}%)")
    pred = np.concatenate([pred, session])
  if len(meas):
    lo, hi = float(min(meas.min(), pred.min())), float(max(meas.max(), pred.max()))
    ax1.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax1.fill_between([lo, hi], [0.85 * lo, 0.85 * hi], [1.15 * lo, 1.15 * hi], color="0.85", alpha=0.5,
                     label="±15%")
    ax1.legend(loc="upper left", fontsize=8)
  s = result["settings"]
  ax1.set_xlabel("measured end-to-end latency (ms)")
  ax1.set_ylabel("table-predicted latency (ms)")
  ax1.set_title(f"stored table: Kendall τ = {result['kendall_tau']:.3f}, mean |rel err| = "
                f"{100 * result['mean_abs_rel_error']:.1f}%", fontsize=10)
  ax2.scatter(meas, flops, **kw)
  ax2.set_xlabel("measured end-to-end latency (ms)")
  ax2.set_ylabel("GFLOPs (analytic)")
  ax2.set_title(f"FLOPs vs latency: Kendall τ = {result['flops_kendall_tau']:.3f}", fontsize=10)
  if colour is not None:
    fig.colorbar(sc, ax=[ax1, ax2], label="peak activation memory (MiB)")
  m = result["meta"]
  fig.suptitle(f"{m['backend']} / {m['device_kind']}, batch {s['batch_size']}, {s['dtype']}, "
               f"{s['num_frames']}x{s['crop_size']}, {result['num_archs']} random archs", fontsize=10)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  return path
