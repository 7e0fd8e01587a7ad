"""The measured latency table: its JSON file, building it, reusing it, and the search's cost hooks.

FLOPs do not predict latency (depthwise 3D convs are memory-bound; SE adds tiny but serialising
reductions), so the search can instead optimise milliseconds measured on the device it targets
(FBNet-style). A `LatencyTable` holds one figure per distinct piece of the space's networks
(`queries.required_queries`): blocks by `block_key`, the stem, the head per final-stage width, and
the per-call overhead, each timed with `measure.measure_modules` and summarised by the median
(or, with statistic='mean', the mean) of its timed calls.

Per-call overhead. Timing each piece as its own program counts the per-call cost (dispatch, argument
handling, synchronisation) once per piece, while the whole network pays it once. The table also
stores `overhead_ms`, the median time of a trivial compiled program; `latency_fns` subtracts it from
every block and from the head and keeps it in the stem, so a predicted network pays it exactly once.
This is a measured constant, not fitted to any network.

File format (JSON):
  {"meta": {backend, device_kind, platform/cpu details, dtype, batch_size, jax/jaxlib/flax/numba
            versions, depthwise implementation, space fingerprint, ...},
   "entries": {block_key: ms}, "stem_ms": ms, "head_ms": {width: ms}, "overhead_ms": ms,
   "timing": {warmup, repeats, min_time_s, statistic, build seconds, load average}}
`load_or_build(space, cfg.latency, path)` reuses a file whose meta matches the current backend /
settings / space (`meta.meta_mismatch`) and rebuilds it (logging which fields differ) otherwise.

The search consumes a table through `table.cost_fns()` (= `latency_fns(table)`), the (stem_fn,
block_fn, head_fn) hooks of `CostTable.build(space, 'latency', fns=...)`, which
`CostTable.from_latency(space, table)` calls (search/cost_table.py): the expected latency
under the architecture distribution is then the CostTable's exact einsum expectation,
differentiable in the probabilities. `predict_ms` gives one network's figure from the same hooks.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Mapping

import jax
import numpy as np

from autox3d_jax import paths
from autox3d_jax.cost.latency import measure
from autox3d_jax.cost.latency.meta import current_meta, meta_mismatch
from autox3d_jax.cost.latency.queries import HEAD_ITEM, STEM_ITEM, block_key, network_queries, required_queries
from autox3d_jax.models.spec import ArchSpec, BlockSpec

_log = logging.getLogger(__name__)


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

  def cost_fns(self, subtract_overhead: bool = True):
    """(stem_fn, block_fn, head_fn) for `CostTable.build(space, 'latency', fns=...)`, in ms.

    With `subtract_overhead`, blocks and head give (measured - per-call overhead) and the stem keeps
    its overhead, so a network's predicted latency counts the per-call cost once, as it runs.
    """
    o = self.overhead_ms if subtract_overhead else 0.0

    def stem_fn():
      return self.stem_ms

    def block_fn(spec, in_width, thw):
      return max(self.block_ms(spec, in_width, thw) - o, 0.0)

    def head_fn(width, thw):
      del thw  # fixed per space (the fingerprint covers it)
      return max(self.head_of(width) - o, 0.0)

    return stem_fn, block_fn, head_fn

  # --------------------------------------------------------------------------------------- JSON
  def to_dict(self) -> dict:
    return {"meta": self.meta, "entries": dict(sorted(self.entries.items())), "stem_ms": self.stem_ms,
            "head_ms": {str(k): v for k, v in self.head_ms.items()}, "overhead_ms": self.overhead_ms,
            "timing": self.timing}

  @classmethod
  def from_dict(cls, d: Mapping, origin: str = "") -> "LatencyTable":
    """Inverse of `to_dict`; files written before 'statistic' and 'overhead_ms' existed read as a
    median table without overhead. Raises ValueError for anything that is not a table."""
    try:
      return cls(meta={"statistic": "median", "latency_backend": "jax", **d["meta"]}, entries={str(k): float(v) for k, v in d["entries"].items()},
                 stem_ms=float(d["stem_ms"]), head_ms={str(k): float(v) for k, v in d["head_ms"].items()},
                 overhead_ms=float(d.get("overhead_ms", 0.0)), timing=dict(d.get("timing", {})),
                 origin=origin)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      raise ValueError(f"not a latency table: {e!r}") from e

  def save(self, path: str) -> str:
    return paths.write_json(path, self.to_dict(), indent=1)   # atomic: never half a table

  @classmethod
  def load(cls, path: str) -> "LatencyTable":
    return cls.from_dict(paths.read_json(path), origin=f"loaded from {path}")


# ---------------------------------------------------------------------------------- build / reuse
def _loadavg() -> float | None:
  return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def build_table(space, *, batch_size: int, dtype: str, warmup: int, repeats: int, min_time_s: float,
                statistic: str, progress: bool = True, backend: str = "jax") -> LatencyTable:
  """Time every unique piece the space's networks contain (`required_queries`: blocks, stem, head
  widths) plus the per-call overhead, on the current default backend (interleaved protocol:
  `measure.measure_modules`). Every setting is explicit; `load_or_build` reads them from the config.

  backend: 'jax' (XLA on this device) or 'tflite' (each piece converted to TFLite and run by its
  interpreter: `measure`'s module doc).

  statistic: what summarises a piece's timed calls. 'median' is robust to rare outliers; 'mean' is
  additive in expectation, which matters on a loaded machine: a short piece's median often misses
  the preemptions a long whole-network run cannot escape (see `validate_table`'s
  `same_session_by_statistic`). On a quiet machine the two agree."""
  meta = current_meta(space, batch_size, dtype, statistic, backend)
  blocks, head_widths, head_thw = required_queries(space)
  c = space.config
  t0 = time.perf_counter()
  load0 = _loadavg()
  overhead = measure.measure_overhead_ms(backend=backend)
  items = {STEM_ITEM: measure.stem_item(c, batch_size, dtype)}
  for key in sorted(blocks):
    spec, in_width, thw = blocks[key]
    items[key] = measure.block_item(spec, in_width, thw, batch_size, dtype)
  for w in head_widths:
    items[f"{HEAD_ITEM}{w}"] = measure.head_item(c.head, w, head_thw, batch_size, dtype)
  where = meta["device_kind"] if backend == "jax" else f"TFLite on {meta['cpu_model']}"
  stats = measure.measure_modules(items, warmup, repeats, min_time_s, progress, backend=backend,
                                  desc=f"latency table ({where}, batch {batch_size}, {dtype}, {len(items)} entries)")
  ms = {k: v[f"{statistic}_ms"] for k, v in stats.items()}
  entries = {k: ms[k] for k in sorted(blocks)}
  head_ms = {str(w): ms[f"{HEAD_ITEM}{w}"] for w in head_widths}
  timing = {"warmup": int(warmup), "repeats": int(repeats), "min_time_s": float(min_time_s),
            "statistic": statistic, "protocol": "interleaved rounds (measure_modules)",
            "build_s": round(time.perf_counter() - t0, 2), "num_block_queries_unique": len(blocks),
            "loadavg_1m_start": load0, "loadavg_1m_end": _loadavg(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
  return LatencyTable(meta, entries, ms[STEM_ITEM], head_ms, overhead, timing,
                      origin=f"built ({len(blocks)} unique blocks) in {timing['build_s']} s")


def load_or_build(space, latency_cfg, path: str | None = None, *, dtype: str | None = None,
                  progress: bool = True, min_time_s: float | None = None,
                  statistic: str | None = None) -> LatencyTable:
  """The table for `space` on this backend: reuse `path` (or `latency_cfg.path`) when its meta matches
  (backend, device, dtype, batch size, library versions, depthwise impl, space), otherwise measure a
  new one -- logging why -- and save it there. Without any path ('' in the config) the table is
  built, not saved.

  latency_cfg: `cfg.latency` (`config.base_config().latency`); read: backend, batch_size, repeats,
  warmup, min_time_s, dtype, statistic, path. Keyword arguments given (not None) win over it.
  """
  batch_size = int(latency_cfg.batch_size)
  repeats = int(latency_cfg.repeats)
  warmup = int(latency_cfg.warmup)
  min_time_s = float(latency_cfg.min_time_s if min_time_s is None else min_time_s)
  dtype = dtype or latency_cfg.dtype
  statistic = statistic or latency_cfg.statistic
  path = path or latency_cfg.path or None
  backend = latency_cfg.backend
  wanted = current_meta(space, batch_size, dtype, statistic, backend)
  reason = "no table path given" if path is None else f"no table at {path}"
  if path is not None and paths.exists(path):
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
  table = build_table(space, batch_size=batch_size, dtype=dtype, warmup=warmup, repeats=repeats,
                      min_time_s=min_time_s, statistic=statistic, progress=progress, backend=backend)
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


# ------------------------------------------------------------------------------- prediction hooks
def latency_fns(table: LatencyTable, subtract_overhead: bool = True):
  """`table.cost_fns(subtract_overhead)`: the (stem_fn, block_fn, head_fn) hooks of
  `CostTable.build(space, 'latency', fns=...)`, in ms."""
  return table.cost_fns(subtract_overhead)


def predict_ms(space, table: LatencyTable, spec: ArchSpec, subtract_overhead: bool = True) -> float:
  """Table-predicted latency of one network of `space`: stem + its blocks + head, from `latency_fns`.

  Accumulated in float32 in network order, as `CostTable.expected` does, so the figure equals
  `CostTable.from_latency(space, table, subtract_overhead).of_point(point)` bit for bit (on CPU),
  the number the search optimises."""
  stem_fn, block_fn, head_fn = latency_fns(table, subtract_overhead)
  blocks, (width, thw) = network_queries(space, spec)
  total = np.float32(stem_fn())
  for block, in_width, block_thw in blocks:
    total = np.float32(total + np.float32(block_fn(block, in_width, block_thw)))
  return float(np.float32(total + np.float32(head_fn(width, thw))))
