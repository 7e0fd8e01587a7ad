"""Build a measured latency table on this backend and validate it against end-to-end latency.

  python benchmarks/bench_latency_table.py                   # both presets, 30 random archs each
  python benchmarks/bench_latency_table.py --preset demo     # 16x56 demo-sized space only
  python benchmarks/bench_latency_table.py --preset x3d_s --num-archs 30 --rebuild

Presets (reduced candidate sets so a table is a few hundred unique blocks, minutes to build on CPU):
  x3d_s  X3D-S skeleton at 13x160 (X3D-S widths 24/48/96/192 and half of them, X3D-S depths as the
         maximum), expansions {2.25, 4.5}, SE {0, 1/16}, ops {x3d 3x3x3, x3d 5x5x5, x2d 1x3x3,
         r2plus1d 3x3x3}.
  demo   the same candidates at the demo's clip size, 16x56.

For each preset: `load_or_build` the table (reused from benchmarks/results/latency/<preset>_b<B>.json
when its meta matches this backend, else measured and saved), then `validate_table` with
`--num-archs` random architectures (JSON + scatter PNG into benchmarks/results/latency/<preset>_b<B>/).
Primary figures: the stored table vs end-to-end latency. By default the pieces the sampled networks
use are also re-timed in the validation session ("same_session" figures): on a shared machine the
load drifts between table build and validation, and that isolates the additive model's own error.
One JSON summary line per preset on stdout, also appended to benchmarks/results/latency.jsonl, with
the machine's load average (on a shared 2-core box other jobs skew every figure).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position

from autox3d_jax import config as config_lib  # pylint: disable=wrong-import-position
from autox3d_jax.cost import latency as L  # pylint: disable=wrong-import-position
from autox3d_jax.search.cost_table import CostTable  # pylint: disable=wrong-import-position
from autox3d_jax.search.space import Op, SearchSpace, space_config  # pylint: disable=wrong-import-position

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
OPS = (Op("x3d", (3, 3, 3)), Op("x3d", (5, 5, 5)), Op("x2d", (1, 3, 3)), Op("r2plus1d", (3, 3, 3)))
REDUCED = dict(stage_widths=((12, 24), (24, 48), (48, 96), (96, 192)), min_depths=(1, 2, 5, 3),
               max_depths=(3, 5, 11, 7), expansions=(2.25, 4.5), se_ratios=(0.0, 1 / 16), ops=OPS)
PRESETS = {
    "x3d_s": dict(num_frames=13, crop_size=160, **REDUCED),
    "demo": dict(num_frames=16, crop_size=56, **REDUCED),
}


def _load() -> float:
  return round(os.getloadavg()[0], 2)


def run_preset(name: str, args) -> dict:
  space = SearchSpace(space_config(**PRESETS[name]))  # the default stem / head (X3D-S)
  tag = f"{name}_b{args.batch_size}" + ("" if args.statistic == "median" else f"_{args.statistic}")
  out_dir = os.path.join(RESULTS_DIR, "latency", tag)
  path = os.path.join(RESULTS_DIR, "latency", f"{tag}.json")
  if args.rebuild and os.path.exists(path):
    os.remove(path)
  blocks, _, _ = L.required_queries(space)
  print(f"# {name}: {space.config.num_frames}x{space.config.crop_size}, 10^{space.log10_size():.1f} archs, "
        f"{len(blocks)} unique block measurements (of "
        f"{sum(t.size for t in CostTable.build(space, 'flops').blocks.values())} CostTable cells)",
        file=sys.stderr)
  t0, load0 = time.perf_counter(), _load()
  cfg = config_lib.base_config().latency
  cfg.update(batch_size=args.batch_size, repeats=args.repeats, warmup=args.warmup, path=path,
             statistic=args.statistic, min_time_s=args.min_time_s, num_archs=args.num_archs, seed=args.seed)
  table = L.load_or_build(space, cfg)
  build_s = time.perf_counter() - t0
  print(f"# table: {table.origin}", file=sys.stderr)
  t1, load1 = time.perf_counter(), _load()
  res = L.validate_table(space, table, cfg, out_dir, retime=not args.no_retime,
                         repeats=args.validate_repeats or args.repeats)
  ss = res["same_session"] or {}
  record = {
      "bench": "latency_table", "preset": name, "num_frames": space.config.num_frames,
      "crop_size": space.config.crop_size, "batch_size": args.batch_size, "dtype": table.meta["dtype"],
      "table_entries": len(table), "table_origin": table.origin.split(";")[0][:160],
      "table_build_s": round(build_s, 1), "table_built_loadavg": [load0, _load()],
      "overhead_ms": round(table.overhead_ms, 4),
      "num_archs": res["num_archs"], "kendall_tau": round(res["kendall_tau"], 4),
      "mean_abs_rel_error": round(res["mean_abs_rel_error"], 4),
      "median_abs_rel_error": round(res["median_abs_rel_error"], 4),
      "max_abs_rel_error": round(res["max_abs_rel_error"], 4),
      "mean_signed_rel_error": round(res["mean_signed_rel_error"], 4),
      "kendall_tau_vs_min": round(res["kendall_tau_vs_min"], 4),
      "load_drift": round(res["load_drift"], 4),
      "mean_abs_rel_error_drift_corrected": round(res["mean_abs_rel_error_drift_corrected"], 4),
      "same_session_kendall_tau": round(ss["kendall_tau"], 4) if ss else None,
      "same_session_mean_abs_rel_error": round(ss["mean_abs_rel_error"], 4) if ss else None,
      "same_session_mean_signed_rel_error": round(ss["mean_signed_rel_error"], 4) if ss else None,
      "same_session_pieces": ss.get("pieces_retimed"),
      "same_session_by_statistic": ({stat: {"kendall_tau": round(v["kendall_tau"], 4),
                                            "mean_abs_rel_error": round(v["mean_abs_rel_error"], 4),
                                            "mean_signed_rel_error": round(v["mean_signed_rel_error"], 4)}
                                     for stat, v in res["same_session_by_statistic"].items()}
                                    if res["same_session_by_statistic"] else None),
      "flops_kendall_tau": round(res["flops_kendall_tau"], 4),
      "measured_ms_range": [round(min(a["measured_ms"] for a in res["archs"]), 2),
                            round(max(a["measured_ms"] for a in res["archs"]), 2)],
      "peak_activation_mb_range": [None if v is None else round(v, 2)
                                   for v in (res["peak_activation_mb"]["min"], res["peak_activation_mb"]["max"])],
      "validate_s": round(time.perf_counter() - t1, 1), "validate_loadavg": [load1, _load()],
      "targets_met": bool(res["kendall_tau"] >= 0.8 and res["mean_abs_rel_error"] <= 0.15),
      "plot": os.path.relpath(res["plot_path"], os.path.dirname(RESULTS_DIR)),
      "backend": jax.default_backend(), "device_kind": table.meta["device_kind"],
      "depthwise": table.meta["depthwise_impl"], "jax": jax.__version__, "cpus": os.cpu_count(),
      "statistic": args.statistic, "repeats": args.repeats, "validate_repeats": args.validate_repeats or args.repeats, "warmup": args.warmup, "min_time_s": args.min_time_s, "seed": args.seed,
      "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
  }
  line = json.dumps(record)
  print(line, flush=True)
  os.makedirs(RESULTS_DIR, exist_ok=True)
  with open(os.path.join(RESULTS_DIR, "latency.jsonl"), "a", encoding="utf-8") as f:
    f.write(line + "\n")
  return record


def main(argv=None) -> None:
  defaults = config_lib.base_config().latency
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", choices=("all", *PRESETS), default="all")
  p.add_argument("--num-archs", type=int, default=defaults.num_archs)
  p.add_argument("--batch-size", type=int, default=defaults.batch_size)
  p.add_argument("--repeats", type=int, default=10,
                 help=f"timing rounds per piece (the figures in RESULTS used 10; config.latency.repeats is "
                      f"{defaults.repeats})")
  p.add_argument("--validate-repeats", type=int, default=0,
                 help="timing rounds in the validation (0: --repeats); rounds are cheap next to compiles")
  p.add_argument("--warmup", type=int, default=defaults.warmup)
  p.add_argument("--min-time-s", type=float, default=defaults.min_time_s,
                 help="keep timing a piece until this much timed wall time (>= --repeats calls)")
  p.add_argument("--statistic", choices=L.STATISTICS, default=defaults.statistic,
                 help="what summarises a piece's timed calls (and the networks' in the validation)")
  p.add_argument("--seed", type=int, default=defaults.seed)
  p.add_argument("--rebuild", action="store_true", help="ignore a stored table")
  p.add_argument("--no-retime", action="store_true",
                 help="do not re-time the sampled networks' pieces in the validation session (faster; "
                      "then only a few probe pieces estimate the machine's drift)")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  for name in (PRESETS if args.preset == "all" else [args.preset]):
    run_preset(name, args)


if __name__ == "__main__":
  main()
