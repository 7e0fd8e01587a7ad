"""The latency validation's figure: table-predicted and FLOPs vs measured latency, one PNG.

`plot_validation(result, path)` takes `validate_table`'s result (archs with predicted_ms,
measured_ms, gflops, memory, optional predicted_same_session_ms; kendall_tau, mean_abs_rel_error,
flops_kendall_tau, same_session, settings, meta) and writes the scatter plot to `path` (local or
gs://, through `autox3d_jax.paths`), returning `path`. matplotlib is imported only here, only when
a plot is drawn.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from autox3d_jax import paths


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
  where = (f"TFLite, {m.get('tflite_threads')} thread(s)" if m.get("latency_backend") == "tflite" else
           f"{m['backend']} / {m['device_kind']}")
  fig.suptitle(f"{where}, batch {s['batch_size']}, {s['dtype']}, "
               f"{s['num_frames']}x{s['crop_size']}, {result['num_archs']} random archs", fontsize=10)
  return paths.save_figure(fig, path)   # creates the folder; local or gs://
