"""The report's figures, drawn with matplotlib (imported inside the functions, never at import).

    plot_pareto(results, path)                  Results (or a results dict) -> path of pareto.png, or None
    plot_decisions(history, path, title="")     DecisionHistory (or its dict) -> path of decisions.png, or None
    plot_expansion(candidates, path, title="")  X3D expansion candidates -> path of expansion.png, or None
    plot_ranking(record, path, title="")        a ranking record (search.ranking) -> path of ranking.png, or None

Each returns None, writing nothing, when there is nothing to draw; `path` may be local or gs://
(written through `autox3d_jax.paths`). Plots are drawn on stand-alone Agg canvases
(`matplotlib.figure.Figure` + `FigureCanvasAgg`), never through pyplot: nothing is displayed, no
global backend is switched (an inline Colab session keeps its backend), and no figure is left
registered with pyplot.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import numpy as np

from autox3d_jax import paths
from autox3d_jax.report.results import DecisionHistory, Results

MAX_DECISION_PANELS = 24  # above this many decision labels, decisions.png switches to the summary view
MAX_LEGEND_CHOICES = 8  # decisions with more choices get a colour ramp instead of a legend

_BLOCK_LABEL = re.compile(r"^(s\d+)_b\d+_(.+)$")  # labels.block_decision(i, j, kind) -> (stage, kind)

_KIND_STYLE = {"searched": dict(marker="*", color="tab:red", s=220, zorder=5),
               "baseline": dict(marker="s", color="tab:blue", s=70, zorder=4)}
_OTHER_MARKERS = "D^vP<>ohX"
_OTHER_COLORS = ("tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def _new_figure(width: float, height: float):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _kind_style(kind: str, others: dict) -> dict:
  if kind in _KIND_STYLE:
    return _KIND_STYLE[kind]
  if kind not in others:
    k = len(others)
    others[kind] = dict(marker=_OTHER_MARKERS[k % len(_OTHER_MARKERS)],
                        color=_OTHER_COLORS[k % len(_OTHER_COLORS)], s=80, zorder=4)
  return others[kind]


def _pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
  front, best = [], -math.inf
  for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
    if y > best:
      front.append((x, y))
      best = y
  return front


def plot_pareto(results: Results | Mapping, path: str) -> str | None:
  """top-1 vs GFLOPs of every model (+ the baseline family) into `path`. Returns `path`, or None when
  there is nothing to plot. A dict is checked by `Results.from_dict` first."""
  results = Results.from_dict(results)
  models = results.models
  family = results.baseline_family or ()
  if not models and not family:
    return None
  from matplotlib.lines import Line2D
  fig = _new_figure(9.5, 5.6)
  ax = fig.add_subplot()
  known = [(m.gflops, 100 * m.top1) for m in models if m.top1 is not None]
  known += [(b.gflops, 100 * b.top1) for b in family if b.top1 is not None]
  xs = [m.gflops for m in models] + [b.gflops for b in family]
  if min(xs) > 0 and max(xs) / min(xs) > 8:
    ax.set_xscale("log")
  handles, others, seen_kinds = [], {}, []
  unknown_note = []

  fam_known = sorted([(b.gflops, 100 * b.top1, b.name) for b in family if b.top1 is not None])
  if fam_known:
    ax.plot([p[0] for p in fam_known], [p[1] for p in fam_known], "-o", color="0.45", lw=1.5, ms=5,
            zorder=2)
    for x, y, name in fam_known:
      ax.annotate(name, (x, y), xytext=(0, -13), textcoords="offset points", ha="center", fontsize=8,
                  color="0.3")
    handles.append(Line2D([], [], color="0.45", marker="o", ms=5, label="baseline family"))
  fam_unknown = [b for b in family if b.top1 is None]
  for b in fam_unknown:
    ax.axvline(b.gflops, color="0.6", ls=":", lw=1.2, zorder=1)
    ax.annotate(b.name, (b.gflops, 0.02), xycoords=("data", "axes fraction"), rotation=90,
                xytext=(3, 0), textcoords="offset points", fontsize=8, color="0.4", va="bottom")
  if fam_unknown:
    handles.append(Line2D([], [], color="0.6", ls=":", label="baseline family (cost only)"))
    unknown_note.append("dotted: baseline family with unknown top-1")

  if len(known) >= 2:
    front = _pareto_front(known)
    if len(front) >= 2:
      ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.8", lw=4, zorder=1)
      handles.append(Line2D([], [], color="0.8", lw=4, label="Pareto front"))

  for k, m in enumerate(models):
    style = _kind_style(m.kind, others)
    if m.top1 is None:
      ax.axvline(m.gflops, color=style["color"], ls="--", lw=1.2, zorder=1)
      ax.annotate(m.name, (m.gflops, 0.98), xycoords=("data", "axes fraction"), rotation=90,
                  xytext=(3, 0), textcoords="offset points", fontsize=8, color=style["color"], va="top")
      if "dashed: model with unknown top-1" not in unknown_note:
        unknown_note.append("dashed: model with unknown top-1")
    else:
      ax.scatter([m.gflops], [100 * m.top1], edgecolors="black", linewidths=0.6, **style)
      ax.annotate(m.name, (m.gflops, 100 * m.top1), xytext=(8, 6 if k % 2 == 0 else -12),
                  textcoords="offset points", fontsize=9, color=style["color"], weight="bold")
    if m.kind not in seen_kinds:
      seen_kinds.append(m.kind)
      handles.append(Line2D([], [], ls="", marker=style["marker"], color=style["color"],
                            markeredgecolor="black", ms=12 if style["marker"] == "*" else 8, label=m.kind))

  if known:
    ys = [p[1] for p in known]
    pad = max(1.0, 0.12 * (max(ys) - min(ys)))
    ax.set_ylim(min(ys) - pad, max(ys) + pad)
  else:
    ax.set_ylim(0, 100)
    ax.text(0.5, 0.5, "no top-1 known yet: models placed on the cost axis only", transform=ax.transAxes,
            ha="center", va="center", fontsize=10, color="0.4")
  ax.margins(x=0.12)
  ax.set_xlabel("GFLOPs per clip" + (" (log scale)" if ax.get_xscale() == "log" else ""))
  ax.set_ylabel("top-1 accuracy (%)")
  ax.grid(True, which="major", alpha=0.3)
  title = f"{results.title}: top-1 vs cost"
  if unknown_note:
    title += "\n(" + "; ".join(unknown_note) + ")"
  ax.set_title(title, fontsize=11)
  # Outside the axes, so it never hides a point or a label.
  ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
  return paths.save_figure(fig, path)


def _normalized_rows(rows) -> "np.ndarray":
  a = np.clip(np.asarray(rows, dtype=np.float64), 0.0, None)
  s = a.sum(axis=1, keepdims=True)
  return np.where(s > 0, a / np.where(s > 0, s, 1.0), 1.0 / a.shape[1])


def _entropy(p) -> "np.ndarray":
  """Normalized entropy (0 = decided, 1 = uniform) of each row of p."""
  k = p.shape[1]
  if k < 2:
    return np.zeros(p.shape[0])
  with np.errstate(divide="ignore", invalid="ignore"):
    h = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
  return h / math.log(k)


def _decision_panel(ax, steps, probs, names, label, show_x: bool):
  from matplotlib import colormaps
  p = _normalized_rows(probs)
  x = np.asarray(steps, dtype=np.float64)
  if len(x) == 1:  # one logged step: draw it as a band so it is visible
    ax.set_xticks([x[0]])
    x = np.array([x[0] - 0.5, x[0] + 0.5])
    p = np.repeat(p, 2, axis=0)
  k = p.shape[1]
  ramp = k > MAX_LEGEND_CHOICES  # too many choices for a legend: colour ramp, dark = first choice
  cmap = colormaps["viridis" if ramp else "tab10"]
  colors = [cmap(i / max(1, k - 1) if ramp else i) for i in range(k)]
  ax.stackplot(x, p.T, colors=colors, labels=names, linewidth=0)
  ax.set_xlim(x[0], x[-1])
  ax.set_ylim(0, 1)
  best = int(np.argmax(p[-1]))
  ax.set_title(f"{label} → {names[best]} (p={p[-1, best]:.2f})", fontsize=9)
  ax.tick_params(labelsize=7)
  if not show_x:
    ax.tick_params(labelbottom=False)
  if not ramp:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False, handlelength=1.0,
              borderaxespad=0.0, labelspacing=0.25)
  else:
    ax.text(1.02, 0.5, f"{k} choices\ncolour:\n{names[0]} (dark)\n→ {names[-1]}\n(yellow)",
            transform=ax.transAxes, fontsize=7, va="center")


def _entropy_panel(ax, steps, groups: dict, stage: str, show_x: bool):
  """groups: kind -> list of [steps][choices] arrays (the block decisions of one stage)."""
  all_h = []
  for kind, arrays in sorted(groups.items()):
    h = np.mean([_entropy(_normalized_rows(a)) for a in arrays], axis=0)
    all_h.extend(_entropy(_normalized_rows(a)) for a in arrays)
    ax.plot(steps, h, lw=1.2, label=f"{kind} ({len(arrays)} blocks)")
  ax.plot(steps, np.mean(all_h, axis=0), color="black", lw=2.2, label="mean")
  if len(steps) > 1:
    ax.set_xlim(steps[0], steps[-1])
  ax.set_ylim(-0.02, 1.05)
  ax.set_title(f"{stage} block decisions: normalized entropy", fontsize=9)
  ax.tick_params(labelsize=7)
  if not show_x:
    ax.tick_params(labelbottom=False)
  ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False, handlelength=1.2,
            borderaxespad=0.0, labelspacing=0.25)


def plot_decisions(history: DecisionHistory | Mapping, path: str, title: str = "") -> str | None:
  """Evolution of each decision's distribution into `path` (a dict is checked by
  `DecisionHistory.from_dict` first). With more than MAX_DECISION_PANELS labels: stage-level decisions
  as stacked areas plus per-stage mean entropy of the block decisions. Returns `path`, or None when the
  history has no labels or no steps."""
  if not isinstance(history, DecisionHistory):
    history = DecisionHistory.from_dict(history)
  probs, choices, steps = history.probs, history.choices, history.steps
  if not probs or not steps:
    return None
  labels = list(probs)
  summary = len(labels) > MAX_DECISION_PANELS
  panels: list[tuple[str, Any]] = []
  if summary:
    block_groups: dict[str, dict[str, list]] = {}
    stage_level = []
    for label in labels:
      m = _BLOCK_LABEL.match(label)
      if m:
        block_groups.setdefault(m.group(1), {}).setdefault(m.group(2), []).append(np.asarray(probs[label]))
      else:
        stage_level.append(label)
    dropped = max(0, len(stage_level) - MAX_DECISION_PANELS)
    stage_level = stage_level[:MAX_DECISION_PANELS]
    panels = [("dist", l) for l in stage_level]
    panels += [("entropy", s) for s in sorted(block_groups, key=lambda s: int(s[1:]))]
    what = (f"{len(labels)} decisions: stage-level ones as stacked probabilities, block decisions as mean "
            f"normalized entropy per stage (0 = decided, 1 = uniform)")
    if dropped:
      what += f"; {dropped} further stage-level decisions not shown"
  else:
    panels = [("dist", l) for l in labels]
    what = f"probability of each choice of all {len(labels)} decisions (stacked)"

  ncols = min(3, len(panels))
  nrows = math.ceil(len(panels) / ncols)
  fig = _new_figure(4.6 * ncols, 0.6 + 2.0 * nrows)
  axes = fig.subplots(nrows, ncols, squeeze=False)
  x = np.asarray(steps, dtype=np.float64)
  for n, (kind, key) in enumerate(panels):
    ax = axes[n // ncols][n % ncols]
    # x tick labels only on the lowest panel of each column.
    show_x = n + ncols >= len(panels)
    if kind == "dist":
      _decision_panel(ax, x, probs[key], choices[key], key, show_x)
    else:
      _entropy_panel(ax, x, block_groups[key], key, show_x)
    if show_x:
      ax.set_xlabel("search step", fontsize=8)
  for n in range(len(panels), nrows * ncols):
    axes[n // ncols][n % ncols].set_visible(False)
  fig.suptitle(f"{title + ': ' if title else ''}decision distributions over the search\n{what}", fontsize=10)
  return paths.save_figure(fig, path)




_AXIS_COLORS = {"": "0.2", "temporal": "tab:blue", "fast": "tab:cyan", "spatial": "tab:green", "width": "tab:orange",
                "bottleneck": "tab:purple", "depth": "tab:brown"}


def plot_expansion(candidates, path: str, title: str = "") -> str | None:
  """X3D's expansion path (like the paper's Figure 2): top-1 vs GFLOPs of every trained candidate,
  coloured by the axis it expands, the chosen path joined and the final network starred.
  `candidates`: the report's results['expansion']['candidates'] (dicts with gflops, top1, axis,
  kind, chosen, final). Returns `path`, or None when no candidate has a top-1."""
  points = [c for c in candidates if c.get("top1") is not None and c.get("gflops")]
  if not points:
    return None
  from matplotlib.lines import Line2D
  fig = _new_figure(9.5, 5.6)
  ax = fig.add_subplot()
  path_points = sorted((c for c in points if c.get("chosen")), key=lambda c: (c["step"], c["kind"] == "contract"))
  ax.plot([c["gflops"] for c in path_points], [100 * c["top1"] for c in path_points], "-", color="0.3", lw=2,
          zorder=2)
  for c in points:
    color = _AXIS_COLORS.get(c.get("axis", ""), "0.5")
    marker = "*" if c.get("final") else ("s" if c.get("kind") == "contract" else "o")
    size = 260 if c.get("final") else (70 if c.get("chosen") else 35)
    ax.scatter([c["gflops"]], [100 * c["top1"]], marker=marker, s=size, color=color,
               edgecolors="black" if c.get("chosen") else "none", linewidths=0.8, zorder=4 if c.get("chosen") else 3,
               alpha=1.0 if c.get("chosen") else 0.6)
    if c.get("chosen"):
      ax.annotate(f"{c['step']}", (c["gflops"], 100 * c["top1"]), xytext=(6, 4), textcoords="offset points",
                  fontsize=8)
  xs = [c["gflops"] for c in points]
  if min(xs) > 0 and max(xs) / min(xs) > 8:
    ax.set_xscale("log")
  handles = [Line2D([], [], ls="", marker="o", color=_AXIS_COLORS[a], label=a or "base")
             for a in _AXIS_COLORS if any(c.get("axis", "") == a for c in points)]
  handles += [Line2D([], [], color="0.3", lw=2, label="chosen path (step number)"),
              Line2D([], [], ls="", marker="*", color="0.3", ms=13, label="final network")]
  if any(c.get("kind") == "contract" for c in points):
    handles.append(Line2D([], [], ls="", marker="s", color="0.3", label="backward contraction"))
  ax.set_xlabel("GFLOPs per clip" + (" (log scale)" if ax.get_xscale() == "log" else ""))
  ax.set_ylabel("top-1 accuracy (%), short recipe")
  ax.grid(True, alpha=0.3)
  ax.set_title(f"{title + ': ' if title else ''}X3D expansion path", fontsize=11)
  ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
  return paths.save_figure(fig, path)


def plot_ranking(record: Mapping, path: str, title: str = "") -> str | None:
  """How the supernet ranks its children (`search.ranking`'s record): one panel per supernet
  setting, inherited top-1 (BN recalibrated) against the stand-alone mean top-1 of every
  architecture, seeds' range as horizontal bars, Kendall's tau and Spearman's rho with their
  bootstrap intervals in the panel's title. Returns `path`, or None without settings or archs."""
  archs, settings = record.get("archs") or [], record.get("settings") or {}
  if len(archs) < 2 or not settings:
    return None
  fig = _new_figure(4.2 * len(settings) + 0.6, 4.4)
  x = [100 * a["standalone_mean"] for a in archs]
  spread = [[100 * (a["standalone_mean"] - min(a.get("standalone") or [a["standalone_mean"]])) for a in archs],
            [100 * (max(a.get("standalone") or [a["standalone_mean"]]) - a["standalone_mean"]) for a in archs]]
  gflops = [a["gflops"] for a in archs]
  axes = fig.subplots(1, len(settings), squeeze=False)[0]
  for ax, (name, s) in zip(axes, settings.items()):
    y = [100 * v for v in s["inherited"]]
    ax.errorbar(x, y, xerr=spread, fmt="none", ecolor="0.6", lw=1, zorder=2)
    points = ax.scatter(x, y, c=gflops, cmap="viridis", s=40, zorder=3)

    def fmt(stat):
      v = s[stat] if isinstance(s[stat], (list, tuple)) else [s[stat]]
      return f"{v[0]:.2f}" + (f" [{v[1]:.2f}, {v[2]:.2f}]" if len(v) == 3 else "")
    ax.set_title(f"{name}\ntau {fmt('kendall_tau')}, rho {fmt('spearman_rho')}", fontsize=9)
    ax.set_xlabel("stand-alone top-1 (%), seed mean")
    ax.grid(True, alpha=0.3)
  axes[0].set_ylabel("inherited top-1 (%), BN recalibrated")
  fig.colorbar(points, ax=list(axes), label="GFLOPs", fraction=0.03)
  fig.suptitle(f"{title + ': ' if title else ''}supernet ranking of {len(archs)} architectures", fontsize=11)
  return paths.save_figure(fig, path)
