"""Markdown for a report: number formatting, the per-block architecture table and report.md itself.

    fmt_gflops(1.9627) -> '1.96'; fmt_percent(0.7345) -> '73.5'; fmt_se(1 / 16) -> '1/16'; '–' when unknown
    arch_table(spec)        ArchSpec (or its dict) -> markdown str: header line + per-block table
    report_markdown(res, …) Results -> the text of report.md

Everything returns strings; nothing here writes files or imports matplotlib.
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

from autox3d_jax import labels
from autox3d_jax.cost.analytic import arch_cost
from autox3d_jax.models.spec import ArchSpec
from autox3d_jax.report.results import FamilyPoint, ModelResult, Results, SearchInfo, as_spec, is_missing

DASH = "–"  # printed wherever a value is unknown (None / NaN)


# ------------------------------------------------------------------------------------------ formatting
def fmt_sig(x: Any, sig: int = 3) -> str:
  """Fixed-point with >= 2 decimals and at least `sig` significant digits; '–' when unknown.

  1.9627 -> '1.96', 24.83 -> '24.83', 0.01234 -> '0.0123', 0 -> '0.00'."""
  if is_missing(x):
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
  return DASH if is_missing(params) else fmt_sig(float(params) / 1e6)


def fmt_percent(frac: Any) -> str:
  """A fraction in [0, 1] as a percentage with one decimal ('72.3'); '–' when unknown."""
  return DASH if is_missing(frac) else f"{100.0 * float(frac):.1f}"


def fmt_ms(x: Any) -> str:
  return DASH if is_missing(x) else f"{float(x):.2f}"


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


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str) -> str:
  """A markdown table; align: one char per column, 'l' or 'r'. Cells are escaped."""
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
  lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------ tables
def arch_table(spec: ArchSpec | Mapping) -> str:
  """Markdown per-block table of an ArchSpec: a header line (name, input clip, total params / GFLOPs),
  one row for the stem, each block (label from `labels.block`) and the head, and a totals row.

  Params are exact integers and MFLOPs per layer come from `cost.analytic.arch_cost`, so the totals row
  equals `arch_cost(spec).params` / `.flops`."""
  spec = as_spec(spec, "spec")
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
    if stage.downsample:
      name = labels.downsample_module(i)
      heads = f" ({stage.downsample_heads} heads)" if stage.downsample_heads else ""
      rows.append([i + 1, name, f"downsample {stage.downsample}{heads}", "1x3x3", stage.width, DASH, DASH, "-", 2,
                   _fmt_int(layers[name].params), mflops(name)])
    for j, b in enumerate(stage.blocks):
      name = labels.block(i, j)
      rows.append([i + 1, name, _type_cell(b), "x".join(map(str, b.kernel)), b.width, b.inner,
                   f"{b.inner / b.width:.2f}", fmt_se(b.se_ratio), b.stride,
                   _fmt_int(layers[name].params), mflops(name)])
  head = spec.head
  rows.append(["head", "head", f"conv5 + fc ({head.num_classes} classes)", "1x1x1", head.conv5_width,
               head.head_width, DASH, "-", 1, _fmt_int(layers["head"].params), mflops("head")])
  rows.append(["**total**", "", "", "", "", "", "", "", "", f"**{_fmt_int(cost.params)}**",
               f"**{cost.flops / 1e6:,.2f}**"])
  table = md_table(["stage", "block", "type", "kernel t×h×w", "width", "inner", "exp.", "SE", "stride",
                    "params", "MFLOPs"], rows, "llllrrrlrrr")
  return header + "\n\n" + table + "\n"


def results_table(models: Sequence[ModelResult]) -> str:
  """One row per model: top-1 / top-5 %, GFLOPs, params (M), latency; a per-seed column when some model
  has more than one seed."""
  rows = [[m.name, m.kind, fmt_percent(m.top1), fmt_percent(m.top5), fmt_gflops(m.gflops),
           fmt_params_m(m.params), fmt_ms(m.latency_ms)] for m in models]
  header, align = ["model", "kind", "top-1 %", "top-5 %", "GFLOPs", "params (M)", "latency ms"], "llrrrrr"
  if any(len(m.top1_per_seed or ()) > 1 for m in models):
    # With several seeds top-1 is their mean; each seed's value shows how far one retraining can stray.
    header[2], align = "top-1 % (mean)", align + "l"
    header.append("top-1 % per seed")
    for row, m in zip(rows, models):
      row.append(" / ".join(fmt_percent(v) for v in m.top1_per_seed or ()) or DASH)
  return md_table(header, rows, align)


def family_table(family: Sequence[FamilyPoint]) -> str:
  return md_table(["model", "GFLOPs", "top-1 %"],
                  [[b.name, fmt_gflops(b.gflops), fmt_percent(b.top1)] for b in family], "lrr")


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
  if isinstance(d, Mapping) and d:
    out = []
    for k, v in d.items():
      out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    return out
  return [(prefix, d)]


def _fmt_meta(v: Any) -> str:
  if is_missing(v):
    return DASH
  if isinstance(v, float):
    return f"{v:.6g}"
  if isinstance(v, (list, dict)):
    return json.dumps(v)
  return str(v)


def search_table(search: SearchInfo) -> str:
  """setting | value, nested settings flattened to dotted keys ('target.gflops')."""
  return md_table(["setting", "value"], [[k, _fmt_meta(v)] for k, v in _flatten(search.to_dict())], "ll")


def expansion_table(candidates: Sequence[Mapping]) -> str:
  """One row per trained candidate of an X3D expansion: step, axis, clip, factors, cost, top-1;
  the chosen ones in bold, the final one marked."""
  rows = []
  for c in candidates:
    f = c["factors"]
    mark = " (final)" if c.get("final") else ""
    step = f"**{c['step']}**" if c.get("chosen") else str(c["step"])
    rows.append([step, (c.get("axis") or "base") + (" (contracted)" if c.get("kind") == "contract" else "") + mark,
                 f"{f['frames']}x{f['sampling_stride']}, {f['crop']}px",
                 f"w {f['width']:.3g} b {f['bottleneck']:.3g} d {f['depth']:.3g}",
                 fmt_gflops(c.get("gflops")), fmt_params_m(c.get("params")), fmt_percent(c.get("top1"))])
  return md_table(["step", "axis", "frames x stride, crop", "factors", "GFLOPs", "params (M)", "top-1"], rows,
                  "llllrrr")


def _seed_agreement_note(agreement: Mapping | None) -> str:
  if not agreement or is_missing(agreement.get("kendall_tau")):
    return ""
  return (f" The stand-alone ranking's own reproducibility (Kendall tau between seeds, mean over pairs): "
          f"{agreement['kendall_tau']:.2f}; no proxy can be judged much above it.")


def ranking_table(record: Mapping) -> str:
  """One row per supernet setting of a ranking record: Kendall's tau and Spearman's rho with their
  bootstrap intervals, the difference to the reference setting, and the search's wall time."""
  def interval(v):
    v = v if isinstance(v, (list, tuple)) else [v]
    return f"{v[0]:.2f}" + (f" [{v[1]:.2f}, {v[2]:.2f}]" if len(v) == 3 else "")
  diffs = record.get("differences") or {}
  rows = [[name, interval(s["kendall_tau"]), interval(s["spearman_rho"]),
           interval(diffs[name]["kendall_tau"]) if name in diffs else DASH,
           f"{s['search_seconds']:.0f}" if s.get("search_seconds") is not None else DASH]
          for name, s in record["settings"].items()]
  return md_table(["supernet setting", "Kendall tau", "Spearman rho", "tau - reference", "search (s)"], rows, "lrrrr")


# ------------------------------------------------------------------------------------------ report.md
def _type_cell(b) -> str:
  """A block's type, with its heads for the attention types: 'lsa (3 heads)'."""
  return f"{b.type} ({b.heads} head{'s' if b.heads > 1 else ''})" if b.heads else b.type


def _block_cell(b) -> str:
  return f"{_type_cell(b)} {'x'.join(map(str, b.kernel))}, {b.width}/{b.inner}, SE {fmt_se(b.se_ratio)}"


def tasks_table(tasks: Sequence[str], specs: Sequence[ArchSpec]) -> str:
  """A multi-task search's networks side by side: one row per block position (type, kernel,
  width / inner width, SE; '-' where a network is shallower), one column per task, and whether
  the tasks' blocks differ."""
  depth = [max(len(s.stages[i].blocks) for s in specs) for i in range(len(specs[0].stages))]
  rows = []
  for i, n in enumerate(depth):
    for j in range(n):
      if j == 0 and any(s.stages[i].downsample for s in specs):
        cells = [s.stages[i].downsample or DASH for s in specs]
        rows.append([labels.downsample_module(i)] + cells + ["yes" if len(set(cells)) > 1 else ""])
      cells = [_block_cell(s.stages[i].blocks[j]) if j < len(s.stages[i].blocks) else DASH for s in specs]
      rows.append([labels.block(i, j)] + cells + ["yes" if len(set(cells)) > 1 else ""])
  rows.append(["GFLOPs"] + [fmt_gflops(arch_cost(s).gflops) for s in specs] + [""])
  return md_table(["block"] + list(tasks) + ["differs"], rows, "l" + "l" * len(specs) + "l")


def report_markdown(res: Results, *, written: str, arch_files: Mapping[int, str],
                    pareto_skipped: str | None, decisions_skipped: str | None) -> str:
  """The text of report.md. written: the timestamp printed under the title. arch_files: model index ->
  its ArchSpec JSON file name. *_skipped: why that plot was not drawn (None: it was, and is linked)."""
  md = [f"# {res.title}", "",
        f"_Written {written} by autox3d_jax.report. "
        f"Top-1 / top-5 in %, GFLOPs per clip, '{DASH}' = unknown._", "", "## Results", "",
        results_table(res.models), ""]
  if res.baseline_family:
    md += ["### Baseline family", "", family_table(res.baseline_family), ""]
  md += ["## Plots", ""]
  md += [f"_No accuracy/cost plot: {pareto_skipped}._" if pareto_skipped else "![top-1 vs GFLOPs](pareto.png)",
         ""]
  md += [f"_No decision plot: {decisions_skipped}._" if decisions_skipped
         else "![decision distributions](decisions.png)", ""]
  with_arch = [(i, m) for i, m in enumerate(res.models) if m.arch is not None]
  if with_arch:
    md += ["## Architectures", ""]
    for i, m in with_arch:
      md += [f"### {m.name} ({m.kind})", "", f"ArchSpec: [`{arch_files[i]}`]({arch_files[i]})", "",
             arch_table(m.arch), ""]
  if res.search is not None and res.search.to_dict():
    md += ["## Search", "", search_table(res.search), ""]
  expansion = res.extra.get("expansion")
  if expansion and expansion.get("candidates"):
    md += ["## X3D expansion", "", "![expansion path](expansion.png)", "", expansion_table(expansion["candidates"]), ""]
  tasks = res.extra.get("tasks")
  if tasks:
    specs = {m.name: m.arch for m in res.models}
    md += ["## Tasks", "", "Each task's network from the one multi-task search (type kernel, width/inner, SE):", "",
           tasks_table(tasks["names"], [specs[name] for name in tasks["models"]]), ""]
  ranking = res.extra.get("ranking")
  if ranking and ranking.get("settings"):
    level = (ranking.get("bootstrap") or {}).get("level", 0.95)
    md += ["## Supernet ranking", "",
           f"Inherited (BN recalibrated) vs stand-alone top-1 of {len(ranking['archs'])} architectures "
           f"(stand-alone: mean of seeds {ranking.get('seeds')}); intervals: {100 * level:.0f}% bootstrap over the "
           "architectures." + _seed_agreement_note(ranking.get("seed_agreement")), "",
           "![supernet ranking](ranking.png)", "", ranking_table(ranking), ""]
  if res.notes:
    md += ["## Notes", ""] + [f"- {n}" for n in res.notes] + [""]
  return "\n".join(md)
