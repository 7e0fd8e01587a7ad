"""What a user looks at after a search: per-block architecture tables, a markdown report and two plots.

    from autox3d_jax import report
    print(report.arch_table(spec))                      # markdown table of one ArchSpec
    paths = report.write_report("runs/s1/report", results)
    results = report.read_results("runs/s1/report")      # the results.json written above

`results` is a `report.Results` (typed, see `results.py`) or a plain dict, so it can be built in a
notebook or reloaded from results.json:

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
     "search": {"strategy", "steps", "cost_metric", "seconds", "cost_target", "derived_cost",
                "point", ...any other JSON-able metadata},                                    (optional)
     "notes": [str]}                                                                           (optional)

`Results.from_dict(d)` checks such a dict (ValueError naming the key) and `Results.to_dict()` gives
back the results.json form.

Modules: `results` (the dataclasses and their checks), `tables` (number formatting, markdown tables,
report.md), `plots` (pareto.png, decisions.png; matplotlib imported lazily), `write` (write_report,
read_results). Everything public is re-exported here.
"""
from autox3d_jax.report.plots import MAX_DECISION_PANELS, MAX_LEGEND_CHOICES, plot_decisions, plot_pareto
from autox3d_jax.report.results import (DecisionHistory, FamilyPoint, ModelResult, Results, SearchInfo,
                                        jsonable)
from autox3d_jax.report.tables import (DASH, arch_table, fmt_gflops, fmt_ms, fmt_params_m, fmt_percent, fmt_se,
                                       fmt_sig, md_table, report_markdown, results_table)
from autox3d_jax.report.write import read_results, write_report

__all__ = ["DASH", "MAX_DECISION_PANELS", "MAX_LEGEND_CHOICES", "DecisionHistory", "FamilyPoint", "ModelResult",
           "Results", "SearchInfo", "arch_table", "fmt_gflops", "fmt_ms", "fmt_params_m", "fmt_percent", "fmt_se",
           "fmt_sig", "jsonable", "md_table", "plot_decisions", "plot_pareto", "read_results", "report_markdown",
           "results_table", "write_report"]
