"""benchmarks/bench_x3d_expansion.py's comparison report: the searched, X3D-expanded and X3D-like
networks side by side at their own clips, with per-seed top-1, the paired differences and the path."""
import json
import os
import sys

from autox3d_jax import configs
from autox3d_jax.models import zoo
from autox3d_jax.models.zoo import X3DFactors, X3DSkeleton

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_x3d_expansion as bench  # noqa: E402


def test_the_comparison_report_shows_all_three_networks_at_their_clips(tmp_path):
  skeleton = X3DSkeleton(stem_base=4, stage_bases=(4, 8), stage_repeats=(1, 1), head_width=16, width_divisor=4)
  factors = X3DFactors(frames=4, sampling_stride=2, crop=44, width=2.0, bottleneck=2.25, depth=1.0)
  expanded = zoo.from_factors(factors, 8, skeleton, "X3D-expanded")
  other = zoo.x3d("S", 8, num_frames=8, crop_size=40, depths=(1, 1), widths=(8, 16))
  networks = {"AutoX3D (searched)": (other, None), "X3D-expanded": (expanded.replace(num_frames=8, crop_size=40), factors),
              "X3D-like baseline": (other, None)}
  top1 = {"AutoX3D (searched)": [0.7, 0.72], "X3D-expanded": [0.69, 0.75], "X3D-like baseline": [0.71, 0.7]}
  summary = {"searched_minus_expanded": bench._paired(top1["AutoX3D (searched)"], top1["X3D-expanded"]),
             "searched_minus_baseline": bench._paired(top1["AutoX3D (searched)"], top1["X3D-like baseline"]),
             "expanded_minus_baseline": bench._paired(top1["X3D-expanded"], top1["X3D-like baseline"]),
             "search_cost": {"AutoX3D (searched)": {"seconds": 189, "steps": 600, "networks_trained": 1},
                             "X3D-expanded": {"seconds": 374.7, "networks_trained": 2}}}
  candidates = [{"step": 0, "axis": "", "kind": "base", "gflops": 1e-4, "top1": 0.2, "chosen": True, "final": False,
                 "factors": {**factors.__dict__, "frames": 2}, "cost": 1e5},
                {"step": 1, "axis": "temporal", "kind": "expand", "gflops": 2e-4, "top1": 0.3, "chosen": True,
                 "final": True, "factors": factors.__dict__, "cost": 2e5}]
  written = bench._report(str(tmp_path), networks, top1, [0, 1], summary, {"expansion": {"candidates": candidates}},
                          configs.get("demo", "speed"))
  results = json.loads(open(written["results"]).read())
  rows = {m["name"]: m for m in results["models"]}
  assert set(rows) == set(networks)
  assert rows["X3D-expanded"]["kind"] == "x3d-expanded" and rows["X3D-expanded"]["top1_per_seed"] == [0.69, 0.75]
  assert rows["X3D-expanded"]["arch"]["num_frames"] == 4 and rows["X3D-expanded"]["arch"]["crop_size"] == 44
  assert abs(rows["X3D-like baseline"]["top1"] - 0.705) < 1e-9
  md = open(written["report"]).read()
  assert "AutoX3D minus X3D-expanded: -1.00 points, standard error 2.00" in md and "375 s of training, 2 networks" in md
  assert os.path.getsize(written["expansion"]) > 10_000 and os.path.exists(written["pareto"])
