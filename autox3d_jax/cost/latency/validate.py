"""Checks a latency table's additive model against end-to-end timing of random networks.

`validate_table(space, table, cfg.latency, out_dir)` samples `num_archs` random architectures,
predicts each from the table (`table.predict_ms`, the number the search optimises), times each
whole network with the table's batch size, dtype and interleaved protocol
(`measure.measure_modules`), and returns agreement statistics (Kendall tau, relative errors),
machine-drift estimates from re-timed table pieces, FLOPs-vs-latency tau, and peak activation memory
from XLA's memory analysis; with `out_dir` it also writes `latency_validation.json` and the scatter
plot `latency_validation.png` (`plot.plot_validation`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any, Mapping

import numpy as np

from autox3d_jax import paths
from autox3d_jax.cost import analytic
from autox3d_jax.cost.latency import measure
from autox3d_jax.cost.latency.meta import current_meta, meta_mismatch
from autox3d_jax.cost.latency.plot import plot_validation
from autox3d_jax.cost.latency.queries import HEAD_ITEM, STEM_ITEM, block_key, network_queries, required_queries
from autox3d_jax.cost.latency.table import LatencyTable, predict_ms
from autox3d_jax.models.spec import ArchSpec

_log = logging.getLogger(__name__)


def random_points(space, num: int, seed: int) -> list[dict]:
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


def arch_pieces(space, spec: ArchSpec, dtype: str = "float32", batch_size: int = 1) -> dict:
  """The table pieces one network is made of: {table name: (module, input shape, input dtype)} with
  table names STEM_ITEM, a `block_key` per block and f"{HEAD_ITEM}{width}" (what its prediction sums)."""
  c = space.config
  blocks, (width, thw) = network_queries(space, spec)
  pieces = {STEM_ITEM: measure.stem_item(c, batch_size, dtype)}
  for block, in_width, block_thw in blocks:
    pieces[block_key(block, in_width, block_thw)] = measure.block_item(block, in_width, block_thw, batch_size, dtype)
  pieces[f"{HEAD_ITEM}{width}"] = measure.head_item(c.head, width, thw, batch_size, dtype)
  return pieces


def _mismatch_warning(table: LatencyTable, space) -> list[str]:
  return meta_mismatch(table.meta, current_meta(space, table.meta["batch_size"], table.meta["dtype"],
                                               table.meta.get("statistic", "median"),
                                               table.meta.get("latency_backend", "jax")))


def _kendall(a, b) -> tuple[float, float]:
  from scipy import stats  # pylint: disable=import-outside-toplevel
  if len(a) < 2:
    return float("nan"), float("nan")
  r = stats.kendalltau(a, b)
  return float(r.statistic if hasattr(r, "statistic") else r[0]), float(r.pvalue)


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


def validate_table(space, table: LatencyTable, latency_cfg, out_dir: str | None = None, *,
                   num_archs: int | None = None, seed: int | None = None, warmup: int | None = None,
                   repeats: int | None = None, min_time_s: float | None = None, progress: bool = True,
                   subtract_overhead: bool = True, num_probes: int = 12, retime: bool = False) -> dict:
  """Table-predicted vs measured end-to-end latency for `num_archs` random architectures.

  Called like `load_or_build`: `validate_table(space, table, cfg.latency, out_dir)`. Reads
  latency_cfg.num_archs, .seed, .warmup, .repeats, .min_time_s; keyword arguments given (not None)
  win over them. Batch size, dtype, statistic and backend (jax or tflite) are the table's own (its meta).

  The networks are timed interleaved (`measure_modules`). The primary figures compare the *stored*
  table with these measurements.

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
  diffs = _mismatch_warning(table, space)
  if diffs:
    _log.warning("validate_table: the table does not match this backend/space: %s", "; ".join(diffs))
  batch_size, dtype = int(table.meta["batch_size"]), table.meta["dtype"]
  stat_key = f"{table.meta.get('statistic', 'median')}_ms"  # networks summarised like the table's pieces

  num_archs = int(latency_cfg.num_archs if num_archs is None else num_archs)
  seed = int(latency_cfg.seed if seed is None else seed)
  warmup = int(latency_cfg.warmup if warmup is None else warmup)
  repeats = int(latency_cfg.repeats if repeats is None else repeats)
  min_time_s = float(latency_cfg.min_time_s if min_time_s is None else min_time_s)
  t0 = time.perf_counter()
  load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

  points = random_points(space, num_archs, seed)
  specs = [space.to_arch(p, name=f"random_{seed}_{k}") for k, p in enumerate(points)]
  items = {s.name: measure.arch_item(s, batch_size, dtype) for s in specs}
  pieces: dict = {}
  if retime:
    for spec in specs:
      pieces.update(arch_pieces(space, spec, dtype, batch_size))
  elif num_probes > 0:
    blocks, _, _ = required_queries(space)
    pieces[STEM_ITEM] = measure.stem_item(space.config, batch_size, dtype)
    keys = sorted(k for k in blocks if k in table.entries)
    for i in np.random.default_rng(seed + 1).permutation(len(keys))[:max(0, num_probes - 1)]:
      spec, in_width, thw = blocks[keys[i]]
      pieces[keys[i]] = measure.block_item(spec, in_width, thw, batch_size, dtype)
  items.update({"piece|" + k: v for k, v in pieces.items()})
  measured = measure.measure_modules(items, warmup, repeats, min_time_s, progress, memory=True, seed=seed,
                                     backend=table.meta.get("latency_backend", "jax"),
                                     desc=f"validate latency table ({len(specs)} archs + {len(pieces)} pieces)")
  now = {k: measured["piece|" + k][stat_key] for k in pieces}
  session_tables = {}  # statistic -> the table with the pieces re-timed now (retime only)
  if retime:
    for stat in ("median", "mean", "min"):
      session_tables[stat] = _with_retimed(table, {k: measured["piece|" + k][f"{stat}_ms"] for k in pieces})
  stored = {k: (table.stem_ms if k == STEM_ITEM else table.head_of(int(k[len(HEAD_ITEM):]))
                if k.startswith(HEAD_ITEM) else table.entries[k]) for k in pieces}

  archs = []
  for point, spec in zip(points, specs):
    m = measured[spec.name]
    predicted = predict_ms(space, table, spec, subtract_overhead)
    report = analytic.arch_cost(spec)
    archs.append({"name": spec.name, "point": point, "depths": spec.depths,
                  "predicted_ms": predicted, "measured_ms": m[stat_key], "measured_min_ms": m["min_ms"],
                  "rel_error": (predicted - m[stat_key]) / m[stat_key],
                  "gflops": report.gflops, "params": report.params, "memory": m["memory"]})
    if retime:
      archs[-1]["predicted_same_session_ms"] = predict_ms(space, session_tables[stat_key[:-3]], spec,
                                                          subtract_overhead)
      archs[-1]["same_session_by_statistic"] = {
          stat: {"predicted_ms": predict_ms(space, t, spec, subtract_overhead), "measured_ms": m[f"{stat}_ms"]}
          for stat, t in session_tables.items()}
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
          for stat in session_tables} if retime else None),
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
    json_path = paths.write_json(paths.join(out_dir, "latency_validation.json"), _jsonable(result), indent=1)
    result["json_path"] = json_path
    result["plot_path"] = plot_validation(result, paths.join(out_dir, "latency_validation.png"))
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
