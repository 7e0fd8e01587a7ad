"""benchmarks/bench_task_adaptation.py's pair count: which (motion, appearance) search pairs are
ordered as the tasks imply."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_task_adaptation as bench  # noqa: E402


def test_pairs_are_counted_over_matched_seeds_and_over_all_pairs():
  motion = {0: {"mean_kt": 3.0, "temporal_flops_share": 0.9}, 1: {"mean_kt": 2.0, "temporal_flops_share": 0.5}}
  appearance = {0: {"mean_kt": 1.0, "temporal_flops_share": 0.6}, 1: {"mean_kt": 2.5, "temporal_flops_share": 0.5}}
  out = bench.ordered_pairs(motion, appearance)
  assert out["mean_kt"] == {"matched": [1, 2], "all": [3, 4]}                  # 2.0 < 2.5: seed 1 is not ordered
  assert out["temporal_flops_share"] == {"matched": [1, 2], "all": [2, 4]}     # ties do not count
