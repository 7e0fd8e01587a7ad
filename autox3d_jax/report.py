"""What a user looks at after a search: per-block architecture tables, a markdown report and two plots.

    from autox3d_jax import report
    print(report.arch_table(spec))                      # markdown table of one ArchSpec
    paths = report.write_report("runs/s1/report", results)
    results = report.read_results("runs/s1/report")      # the results.json written above

`results` (a plain dict, so it can be built in a notebook or reloaded from results.json):

    {"title": str,                                                     (optional)
     "models": [{"name": str, "gflops": float,                         (required)
                 "params": int,                                        (required unless "arch" is given)
                 "kind": "searched" | "baseline" | other,              (optional, default "other")
                 "top1": float | None, "top5": float | None,           fractions in [0, 1]
                 "top1_per_seed": [float], "seeds": [int],              (optional: top1 is their mean)
                 "latency_ms": float | None,
                 "arch": ArchSpec | its dict}, ...],                   (optional)
     "baseline_family": [{"name": str, "gflops": float, "top1": float | None}, ...],        (optional)
     "decision_history": {"steps": [int], "probs": {label: [[p per choice] per step]},
                          "choices": {label: [str per choice]}},                              (optional)
     "search": {...JSON-able metadata...},                                                     (optional)
     "notes": [str]}                                                                           (optional)

Plots are drawn on stand-alone Agg canvases (`matplotlib.figure.Figure` + `FigureCanvasAgg`), never
through pyplot: nothing is displayed, no global backend is switched (an inline Colab session keeps its
backend), and no figure is left registered with pyplot.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import re
from typing import Any, Mapping, Sequence

from autox3d_jax.cost.analytic import arch_cost
from autox3d_jax.models.builder import block_name
from autox3d_jax.models.spec import ArchSpec

DASH = "–"  # printed wherever a value is unknown (None / NaN)
MAX_DECISION_PANELS = 24  # above this many decision labels, decisions.png switches to the summary view
MAX_LEGEND_CHOICES = 8  # decisions with more choices get a colour ramp instead of a legend

_BLOCK_LABEL = re.compile(r"^(s\d+)_b\d+_(.+)$")
_RESERVED_STEMS = {"results", "report", "pareto", "decisions"}


# ------------------------------------------------------------------------------------------ formatting
def _is_missing(x: Any) -> bool:
  if x is None:
    return True
  try:
    return math.isnan(float(x))
  except (TypeError, ValueError):
    return False


def fmt_sig(x: Any, sig: int = 3) -> str:
  """Fixed-point with >= 2 decimals and at least `sig` significant digits; '–' when unknown.

  1.9627 -> '1.96', 24.83 -> '24.83', 0.01234 -> '0.0123', 0 -> '0.00'."""
  if _is_missing(x):
    return DASH
  x = float(x)
  if x == 0 or not math.isfinite(x):
    return f"{x:.2f}"
  decimals = max(2, min(8, sig - 1 - math.floor(math.log10(abs(x)))))
  return f"{x:.{decimals}f}"


def fmt_gflops(x: Any) -> str:
  return fmt_sig(x)


def fmt_params_m(params: Any) -> str:
  """Parameter count in millions ('3.79'); '–' when unknown."""
  return DASH if _is_missing(params) else fmt_sig(float(params) / 1e6)


def fmt_percent(frac: Any) -> str:
  """A fraction in [0, 1] as a percentage with one decimal ('72.3'); '–' when unknown."""
  return DASH if _is_missing(frac) else f"{100.0 * float(frac):.1f}"


def fmt_ms(x: Any) -> str:
  return DASH if _is_missing(x) else f"{float(x):.2f}"


def fmt_se(ratio: float) -> str:
  """'-' for no SE, '1/16' for 0.0625, otherwise the float ('0.3')."""
  if not ratio:
    return "-"
  n = 1.0 / ratio
  if abs(n - round(n)) < 1e-6 * n:
    return f"1/{round(n)}"
  return f"{ratio:g}"


def _fmt_int(n: int) -> str:
  return f"{int(n):,}"


def _md(text: Any) -> str:
  """Escape a value for a markdown table cell."""
  return str(text).replace("|", r"\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str) -> str:
  """align: one char per column, 'l' or 'r'."""
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
  lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------ arch table
def _as_spec(arch: Any, where: str) -> ArchSpec:
  if isinstance(arch, ArchSpec):
    return arch
  if isinstance(arch, Mapping):
    try:
      return ArchSpec.from_dict(arch)
    except ValueError as e:  # SpecError
      raise ValueError(f"{where}: {e}") from e
  raise ValueError(f"{where} must be an ArchSpec or its dict, got {type(arch).__name__}")


def arch_table(spec: ArchSpec | Mapping) -> str:
  """Markdown per-block table of an ArchSpec: a header line (name, input clip, total params / GFLOPs),
  one row for the stem, each block (label from `builder.block_name`) and the head, and a totals row.

  Params are exact integers and MFLOPs per layer come from `cost.analytic.arch_cost`, so the totals row
  equals `arch_cost(spec).params` / `.flops`."""
  spec = _as_spec(spec, "spec")
  cost = arch_cost(spec)
  layers = cost.layers
  header = (f"**{spec.name}** — input {spec.num_frames} × {spec.crop_size}×{spec.crop_size} "
            f"(frames × crop), {spec.in_channels} channels · {fmt_params_m(cost.params)} M params · "
            f"{fmt_gflops(cost.gflops)} GFLOPs · depths {'/'.join(map(str, spec.depths))}")

  def mflops(name):
    return f"{layers[name].flops / 1e6:,.2f}"

  stem = spec.stem
  rows = [["stem", "stem", "conv + dw",
           f"1x{stem.spatial_kernel}x{stem.spatial_kernel} + {stem.temporal_kernel}x1x1",
           stem.width, DASH, DASH, "-", stem.spatial_stride,
           _fmt_int(layers["stem"].params), mflops("stem")]]
  for i, stage in enumerate(spec.stages):
    for j, b in enumerate(stage.blocks):
      name = block_name(i, j)
      rows.append([i + 1, name, b.type, "x".join(map(str, b.kernel)), b.width, b.inner,
                   f"{b.inner / b.width:.2f}", fmt_se(b.se_ratio), b.stride,
                   _fmt_int(layers[name].params), mflops(name)])
  head = spec.head
  rows.append(["head", "head", f"conv5 + fc ({head.num_classes} classes)", "1x1x1", head.conv5_width,
               head.head_width, DASH, "-", 1, _fmt_int(layers["head"].params), mflops("head")])
  rows.append(["**total**", "", "", "", "", "", "", "", "", f"**{_fmt_int(cost.params)}**",
               f"**{cost.flops / 1e6:,.2f}**"])
  table = _md_table(["stage", "block", "type", "kernel t×h×w", "width", "inner", "exp.", "SE", "stride",
                     "params", "MFLOPs"], rows, "llllrrrlrrr")
  return header + "\n\n" + table + "\n"


# ------------------------------------------------------------------------------------------ validation
def _num(value: Any, where: str, *, optional: bool) -> float | None:
  if _is_missing(value):
    if optional:
      return None
    raise ValueError(f"{where} is required and must be a number, got {value!r}")
  if isinstance(value, bool):
    raise ValueError(f"{where} must be a number, got {value!r}")
  try:
    return float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{where} must be a number, got {value!r}") from None


def _fraction(value: Any, where: str) -> float | None:
  v = _num(value, where, optional=True)
  if v is not None and not 0.0 <= v <= 1.0:
    raise ValueError(f"{where} must be a fraction in [0, 1] (not a percentage), got {value!r}")
  return v


def _require(d: Any, key: str, where: str) -> Any:
  if not isinstance(d, Mapping):
    raise ValueError(f"{where} must be a dict, got {type(d).__name__}")
  if key not in d:
    raise ValueError(f"{where} is missing required key '{key}'")
  return d[key]


def _normalize(results: Mapping) -> dict:
  """Checks `results` and returns a copy with defaults filled in and archs as ArchSpecs."""
  if not isinstance(results, Mapping):
    raise ValueError(f"results must be a dict, got {type(results).__name__}")
  out = dict(results)
  out["title"] = str(results.get("title") or "AutoX3D search report")
  models = _require(results, "models", "results")
  if not isinstance(models, Sequence) or isinstance(models, (str, bytes)):
    raise ValueError(f"results['models'] must be a list, got {type(models).__name__}")
  out["models"] = []
  for i, m in enumerate(models):
    where = f"results['models'][{i}]"
    name = _require(m, "name", where)
    if not isinstance(name, str) or not name:
      raise ValueError(f"{where}['name'] must be a non-empty string, got {name!r}")
    nm = dict(m)
    nm["kind"] = str(m.get("kind") or "other")
    nm["gflops"] = _num(_require(m, "gflops", where), f"{where}['gflops']", optional=False)
    arch = m.get("arch")
    if arch is not None:
      nm["arch"] = _as_spec(arch, f"{where}['arch']")
    if m.get("params") is None and arch is not None:
      nm["params"] = arch_cost(nm["arch"]).params
    else:
      params = _num(_require(m, "params", where), f"{where}['params']", optional=False)
      nm["params"] = int(params) if float(params).is_integer() else params
    nm["top1"] = _fraction(m.get("top1"), f"{where}['top1']")
    nm["top5"] = _fraction(m.get("top5"), f"{where}['top5']")
    per_seed = m.get("top1_per_seed")
    if per_seed is not None:
      if not isinstance(per_seed, Sequence) or isinstance(per_seed, (str, bytes)) or not per_seed:
        raise ValueError(f"{where}['top1_per_seed'] must be a non-empty list of fractions, got {per_seed!r}")
      nm["top1_per_seed"] = [_fraction(v, f"{where}['top1_per_seed'][{k}]") for k, v in enumerate(per_seed)]
      seeds = m.get("seeds")
      if seeds is not None and len(seeds) != len(per_seed):
        raise ValueError(f"{where}['seeds'] has {len(seeds)} entries for {len(per_seed)} per-seed top-1 values")
    nm["latency_ms"] = _num(m.get("latency_ms"), f"{where}['latency_ms']", optional=True)
    out["models"].append(nm)

  family = results.get("baseline_family")
  if family is not None:
    out["baseline_family"] = []
    for i, b in enumerate(family):
      where = f"results['baseline_family'][{i}]"
      name = _require(b, "name", where)
      nb = dict(b)
      nb["name"] = str(name)
      nb["gflops"] = _num(_require(b, "gflops", where), f"{where}['gflops']", optional=False)
      nb["top1"] = _fraction(b.get("top1"), f"{where}['top1']")
      out["baseline_family"].append(nb)

  history = results.get("decision_history")
  if history is not None:
    out["decision_history"] = _check_history(history)
  notes = results.get("notes")
  if notes is not None:
    if isinstance(notes, str):
      notes = [notes]
    out["notes"] = [str(n) for n in notes]
  return out


def _check_history(history: Any) -> dict:
  import numpy as np
  probs = _require(history, "probs", "results['decision_history']")
  if not isinstance(probs, Mapping):
    raise ValueError("results['decision_history']['probs'] must be a dict label -> [[p per choice] per step]")
  arrays = {}
  for label, rows in probs.items():
    where = f"results['decision_history']['probs'][{label!r}]"
    try:
      a = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as e:
      raise ValueError(f"{where} must be a rectangular [steps][choices] array: {e}") from None
    if a.ndim != 2 or a.shape[1] == 0:
      raise ValueError(f"{where} must be a [steps][choices] array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
      raise ValueError(f"{where} contains NaN or inf")
    arrays[str(label)] = a
  n_steps = {a.shape[0] for a in arrays.values()}
  if len(n_steps) > 1:
    raise ValueError(f"results['decision_history']['probs']: labels have different step counts {n_steps}")
  n = n_steps.pop() if n_steps else 0
  steps = history.get("steps")
  if steps is None:
    steps = list(range(n))
  steps = [s.item() if hasattr(s, "item") else s for s in np.asarray(steps).reshape(-1).tolist()]
  if len(steps) != n:
    raise ValueError(f"results['decision_history']['steps'] has {len(steps)} entries but probs have {n} "
                     f"logged steps")
  choices = dict(history.get("choices") or {})
  for label, a in arrays.items():
    names = choices.get(label)
    if names is None:
      choices[label] = [str(k) for k in range(a.shape[1])]
    elif len(names) != a.shape[1]:
      raise ValueError(f"results['decision_history']['choices'][{label!r}] has {len(names)} names but "
                       f"probs have {a.shape[1]} choices")
    else:
      choices[label] = [str(c) for c in names]
  out = dict(history)
  out.update(steps=steps, probs={k: a.tolist() for k, a in arrays.items()}, choices=choices)
  return out


# ------------------------------------------------------------------------------------------ JSON
def _jsonable(obj: Any) -> Any:
  if isinstance(obj, ArchSpec):
    return obj.to_dict()
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return _jsonable(dataclasses.asdict(obj))
  if isinstance(obj, Mapping):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple, set, frozenset)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if obj is None or isinstance(obj, (str, int, bool)):
    return obj
  if hasattr(obj, "tolist"):  # numpy / jax arrays and scalars
    return _jsonable(obj.tolist())
  if isinstance(obj, (datetime.date, datetime.datetime)):
    return obj.isoformat()
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  return str(obj)


def _file_stem(name: str, taken: set[str]) -> str:
  stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
  base, k = stem, 2
  while stem.lower() in taken or stem.lower() in _RESERVED_STEMS:
    stem, k = f"{base}_{k}", k + 1
  taken.add(stem.lower())
  return stem


def read_results(report_dir: str | os.PathLike, *, as_specs: bool = False) -> dict:
  """Reloads the results.json written by `write_report` (give the folder or the file itself).

  Archs come back as dicts (as stored) unless `as_specs`, which turns them into ArchSpecs. The dict can
  be passed to `write_report` again to re-render a report."""
  path = os.fspath(report_dir)
  if os.path.isdir(path):
    path = os.path.join(path, "results.json")
  with open(path) as f:
    results = json.load(f)
  if as_specs:
    for m in results.get("models", []):
      if m.get("arch") is not None:
        m["arch"] = ArchSpec.from_dict(m["arch"])
  return results


# ------------------------------------------------------------------------------------------ plots
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


def plot_pareto(results: Mapping, path: str) -> str | None:
  """top-1 vs GFLOPs of every model (+ the baseline family). Returns None when there is nothing to plot;
  `results` must already be normalized (see `write_report`)."""
  models = results["models"]
  family = results.get("baseline_family") or []
  if not models and not family:
    return None
  from matplotlib.lines import Line2D
  fig = _new_figure(9.5, 5.6)
  ax = fig.add_subplot()
  known = [(m["gflops"], 100 * m["top1"]) for m in models if m["top1"] is not None]
  known += [(b["gflops"], 100 * b["top1"]) for b in family if b["top1"] is not None]
  xs = [m["gflops"] for m in models] + [b["gflops"] for b in family]
  if min(xs) > 0 and max(xs) / min(xs) > 8:
    ax.set_xscale("log")
  handles, others, seen_kinds = [], {}, []
  unknown_note = []

  fam_known = sorted([(b["gflops"], 100 * b["top1"], b["name"]) for b in family if b["top1"] is not None])
  if fam_known:
    ax.plot([p[0] for p in fam_known], [p[1] for p in fam_known], "-o", color="0.45", lw=1.5, ms=5,
            zorder=2)
    for x, y, name in fam_known:
      ax.annotate(name, (x, y), xytext=(0, -13), textcoords="offset points", ha="center", fontsize=8,
                  color="0.3")
    handles.append(Line2D([], [], color="0.45", marker="o", ms=5, label="baseline family"))
  fam_unknown = [b for b in family if b["top1"] is None]
  for b in fam_unknown:
    ax.axvline(b["gflops"], color="0.6", ls=":", lw=1.2, zorder=1)
    ax.annotate(b["name"], (b["gflops"], 0.02), xycoords=("data", "axes fraction"), rotation=90,
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
    style = _kind_style(m["kind"], others)
    if m["top1"] is None:
      ax.axvline(m["gflops"], color=style["color"], ls="--", lw=1.2, zorder=1)
      ax.annotate(m["name"], (m["gflops"], 0.98), xycoords=("data", "axes fraction"), rotation=90,
                  xytext=(3, 0), textcoords="offset points", fontsize=8, color=style["color"], va="top")
      if "dashed: model with unknown top-1" not in unknown_note:
        unknown_note.append("dashed: model with unknown top-1")
    else:
      ax.scatter([m["gflops"]], [100 * m["top1"]], edgecolors="black", linewidths=0.6, **style)
      ax.annotate(m["name"], (m["gflops"], 100 * m["top1"]), xytext=(8, 6 if k % 2 == 0 else -12),
                  textcoords="offset points", fontsize=9, color=style["color"], weight="bold")
    if m["kind"] not in seen_kinds:
      seen_kinds.append(m["kind"])
      handles.append(Line2D([], [], ls="", marker=style["marker"], color=style["color"],
                            markeredgecolor="black", ms=12 if style["marker"] == "*" else 8, label=m["kind"]))

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
  title = f"{results['title']}: top-1 vs cost"
  if unknown_note:
    title += "\n(" + "; ".join(unknown_note) + ")"
  ax.set_title(title, fontsize=11)
  # Outside the axes, so it never hides a point or a label.
  ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
  fig.savefig(path)
  return path


def _normalized_rows(rows) -> "np.ndarray":
  import numpy as np
  a = np.clip(np.asarray(rows, dtype=np.float64), 0.0, None)
  s = a.sum(axis=1, keepdims=True)
  return np.where(s > 0, a / np.where(s > 0, s, 1.0), 1.0 / a.shape[1])


def _entropy(p) -> "np.ndarray":
  """Normalized entropy (0 = decided, 1 = uniform) of each row of p."""
  import numpy as np
  k = p.shape[1]
  if k < 2:
    return np.zeros(p.shape[0])
  with np.errstate(divide="ignore", invalid="ignore"):
    h = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
  return h / math.log(k)


def _decision_panel(ax, steps, probs, names, label, show_x: bool):
  import numpy as np
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
  import numpy as np
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


def plot_decisions(history: Mapping, path: str, title: str = "") -> str | None:
  """Evolution of each decision's distribution (`history` normalized by `write_report`). With more than
  MAX_DECISION_PANELS labels: stage-level decisions as stacked areas plus per-stage mean entropy of the
  block decisions. Returns None when the history has no labels or no steps."""
  import numpy as np
  probs, choices, steps = history["probs"], history["choices"], history["steps"]
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
  fig.savefig(path)
  return path


# ------------------------------------------------------------------------------------------ report
def _results_table(models) -> str:
  rows = [[m["name"], m["kind"], fmt_percent(m["top1"]), fmt_percent(m["top5"]), fmt_gflops(m["gflops"]),
           fmt_params_m(m["params"]), fmt_ms(m["latency_ms"])] for m in models]
  header, align = ["model", "kind", "top-1 %", "top-5 %", "GFLOPs", "params (M)", "latency ms"], "llrrrrr"
  if any(len(m.get("top1_per_seed") or ()) > 1 for m in models):
    # With several seeds top-1 is their mean; each seed's value shows how far one retraining can stray.
    header[2], align = "top-1 % (mean)", align + "l"
    header.append("top-1 % per seed")
    for row, m in zip(rows, models):
      row.append(" / ".join(fmt_percent(v) for v in m.get("top1_per_seed") or ()) or DASH)
  return _md_table(header, rows, align)


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
  if isinstance(d, Mapping) and d:
    out = []
    for k, v in d.items():
      out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    return out
  return [(prefix, d)]


def _fmt_meta(v: Any) -> str:
  if _is_missing(v):
    return DASH
  if isinstance(v, float):
    return f"{v:.6g}"
  if isinstance(v, (list, dict)):
    return json.dumps(v)
  return str(v)


def write_report(report_dir: str | os.PathLike, results: Mapping) -> dict[str, str]:
  """Writes results.json, report.md, one <model>.json ArchSpec per model with an arch, pareto.png and
  decisions.png into `report_dir` (created). Returns {key: path} of what was written: 'results',
  'report', 'pareto', 'decisions' and 'arch:<model name>'; a file that was not written instead has a key
  '<name>_skipped' whose value says why (e.g. 'decisions_skipped': 'no decision_history given').

  Raises ValueError naming the offending key on bad input (missing models[i].name / gflops / params, a
  top-1 given as a percentage, ragged decision history, ...), before anything is written."""
  res = _normalize(results)
  report_dir = os.fspath(report_dir)
  os.makedirs(report_dir, exist_ok=True)
  paths: dict[str, str] = {}

  # Per-model ArchSpec JSON.
  taken: set[str] = set()
  arch_files: dict[int, str] = {}
  for i, m in enumerate(res["models"]):
    if m.get("arch") is not None:
      fname = _file_stem(m["name"], taken) + ".json"
      m["arch"].save(os.path.join(report_dir, fname))
      arch_files[i] = fname
      paths[f"arch:{m['name']}"] = os.path.join(report_dir, fname)

  # results.json: everything, ArchSpecs as dicts, NaN as null.
  paths["results"] = os.path.join(report_dir, "results.json")
  with open(paths["results"], "w") as f:
    json.dump(_jsonable(res), f, indent=2)

  # Plots.
  pareto = plot_pareto(res, os.path.join(report_dir, "pareto.png"))
  if pareto:
    paths["pareto"] = pareto
  else:
    paths["pareto_skipped"] = "no models or baselines to plot"
  history = res.get("decision_history")
  decisions = None
  if history is None:
    paths["decisions_skipped"] = "no decision_history given"
  else:
    decisions = plot_decisions(history, os.path.join(report_dir, "decisions.png"), res["title"])
    if decisions:
      paths["decisions"] = decisions
    else:
      paths["decisions_skipped"] = "decision_history has no labels or no steps"

  # report.md
  md = [f"# {res['title']}", "",
        f"_Written {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by autox3d_jax.report. "
        f"Top-1 / top-5 in %, GFLOPs per clip, '{DASH}' = unknown._", "", "## Results", "",
        _results_table(res["models"]), ""]
  family = res.get("baseline_family")
  if family:
    md += ["### Baseline family", "",
           _md_table(["model", "GFLOPs", "top-1 %"],
                     [[b["name"], fmt_gflops(b["gflops"]), fmt_percent(b["top1"])] for b in family], "lrr"),
           ""]
  md += ["## Plots", ""]
  md += ["![top-1 vs GFLOPs](pareto.png)" if pareto
         else f"_No accuracy/cost plot: {paths['pareto_skipped']}._", ""]
  md += ["![decision distributions](decisions.png)" if decisions
         else f"_No decision plot: {paths['decisions_skipped']}._", ""]
  with_arch = [(i, m) for i, m in enumerate(res["models"]) if m.get("arch") is not None]
  if with_arch:
    md += ["## Architectures", ""]
    for i, m in with_arch:
      md += [f"### {m['name']} ({m['kind']})", "", f"ArchSpec: [`{arch_files[i]}`]({arch_files[i]})", "",
             arch_table(m["arch"]), ""]
  if res.get("search"):
    md += ["## Search", "", _md_table(["setting", "value"],
                                      [[k, _fmt_meta(v)] for k, v in _flatten(_jsonable(res["search"]))],
                                      "ll"), ""]
  if res.get("notes"):
    md += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
  paths["report"] = os.path.join(report_dir, "report.md")
  with open(paths["report"], "w") as f:
    f.write("\n".join(md))
  return paths
