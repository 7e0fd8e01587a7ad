"""A report folder, local or gs:// (every file through `autox3d_jax.paths`): `write_report` writes
it, `read_results` reads its results.json back.

    paths = write_report(dir, results)        Results or results dict -> {key: path written}
    d = read_results(dir, as_specs=False)     -> the results.json dict (archs as dicts or ArchSpecs)
"""
from __future__ import annotations

import datetime
import os
import re

from autox3d_jax import paths as paths_lib
from autox3d_jax.models.spec import ArchSpec
from autox3d_jax.report.plots import plot_decisions, plot_expansion, plot_pareto, plot_ranking
from autox3d_jax.report.results import Results
from autox3d_jax.report.tables import report_markdown

_RESERVED_STEMS = {"results", "report", "pareto", "decisions", "expansion", "ranking"}


def _file_stem(name: str, taken: set[str]) -> str:
  stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
  base, k = stem, 2
  while stem.lower() in taken or stem.lower() in _RESERVED_STEMS:
    stem, k = f"{base}_{k}", k + 1
  taken.add(stem.lower())
  return stem


def write_report(report_dir: str | os.PathLike, results: Results | dict) -> dict[str, str]:
  """Writes results.json, report.md, one <model>.json ArchSpec per model with an arch, pareto.png and
  decisions.png into `report_dir` (created), plus expansion.png / ranking.png when results carry an
  'expansion' / 'ranking' record. Returns {key: path} of what was written: 'results', 'report',
  'pareto', 'decisions', 'expansion', 'ranking' and 'arch:<model name>'; a file that was not written instead has a key
  '<name>_skipped' whose value says why (e.g. 'decisions_skipped': 'no decision_history given').

  `results`: a `Results`, or a dict as documented in `autox3d_jax.report` (read by `Results.from_dict`).
  A `Results` goes through the same checks (as its `to_dict()`), so either raises ValueError naming the
  offending key (missing models[i].name / gflops / params, a top-1 given as a percentage, ragged decision
  history, ...), before anything is written."""
  res = Results.from_dict(results.to_dict() if isinstance(results, Results) else results)
  report_dir = os.fspath(report_dir)
  paths_lib.makedirs(report_dir)
  paths: dict[str, str] = {}

  # Per-model ArchSpec JSON.
  taken: set[str] = set()
  arch_files: dict[int, str] = {}
  for i, m in enumerate(res.models):
    if m.arch is not None:
      fname = _file_stem(m.name, taken) + ".json"
      paths[f"arch:{m.name}"] = paths_lib.join(report_dir, fname)
      m.arch.save(paths[f"arch:{m.name}"])
      arch_files[i] = fname

  # results.json: everything, ArchSpecs as dicts, NaN as null.
  paths["results"] = paths_lib.join(report_dir, "results.json")
  paths_lib.write_json(paths["results"], res.to_dict(), indent=2)

  # Plots.
  pareto = plot_pareto(res, paths_lib.join(report_dir, "pareto.png"))
  if pareto:
    paths["pareto"] = pareto
  else:
    paths["pareto_skipped"] = "no models or baselines to plot"
  decisions = None
  if res.decision_history is None:
    paths["decisions_skipped"] = "no decision_history given"
  else:
    decisions = plot_decisions(res.decision_history, paths_lib.join(report_dir, "decisions.png"), res.title)
    if decisions:
      paths["decisions"] = decisions
    else:
      paths["decisions_skipped"] = "decision_history has no labels or no steps"

  expansion = res.extra.get("expansion")
  if expansion and plot_expansion(expansion.get("candidates", ()), paths_lib.join(report_dir, "expansion.png"),
                                  res.title):
    paths["expansion"] = paths_lib.join(report_dir, "expansion.png")

  ranking = res.extra.get("ranking")
  if ranking and plot_ranking(ranking, paths_lib.join(report_dir, "ranking.png"), res.title):
    paths["ranking"] = paths_lib.join(report_dir, "ranking.png")

  md = report_markdown(res, written=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), arch_files=arch_files,
                       pareto_skipped=None if pareto else paths["pareto_skipped"],
                       decisions_skipped=None if decisions else paths["decisions_skipped"])
  paths["report"] = paths_lib.join(report_dir, "report.md")
  paths_lib.write_text(paths["report"], md)
  return paths


def read_results(report_dir: str | os.PathLike, *, as_specs: bool = False) -> dict:
  """Reloads the results.json written by `write_report` (give the folder or the file itself) as a dict.

  Archs come back as dicts (as stored) unless `as_specs`, which turns them into ArchSpecs. The dict can
  be passed to `write_report` again to re-render a report, or to `Results.from_dict`."""
  path = os.fspath(report_dir)
  if paths_lib.isdir(path):
    path = paths_lib.join(path, "results.json")
  results = paths_lib.read_json(path)
  if as_specs:
    for m in results.get("models", []):
      if m.get("arch") is not None:
        m["arch"] = ArchSpec.from_dict(m["arch"])
  return results
