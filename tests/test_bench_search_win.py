"""The benchmarks' shared stand-alone cache key and bench_search_win's paired statistics."""
import dataclasses
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_search_win as bench  # noqa: E402
import common  # noqa: E402

from autox3d_jax import config as config_lib  # noqa: E402
from autox3d_jax.models.spec import ArchSpec  # noqa: E402

import toys  # noqa: E402


def test_the_paired_gain_and_its_standard_error():
  out = bench.paired([0.70, 0.74, 0.72], [0.69, 0.70, 0.72])
  assert [round(d, 6) for d in out["diffs"]] == [1.0, 4.0, 0.0]
  assert math.isclose(out["gain"], 5 / 3)
  assert math.isclose(out["se"], math.sqrt(((1 - 5 / 3) ** 2 + (4 - 5 / 3) ** 2 + (5 / 3) ** 2) / 2) / math.sqrt(3))


def test_the_cache_key_ignores_later_fields_at_their_neutral_values_only():
  """A spec written before the attention heads and downsampling modules existed keys the same
  training as today's spec of the same network; a module or heads make another key."""
  space = toys.tiny_space()
  spec = space.to_arch(space.largest_point(), name="n")
  old = spec.to_dict()
  for stage in old["stages"]:
    del stage["downsample"], stage["downsample_heads"]
    for block in stage["blocks"]:
      del block["heads"]
  assert json.loads(common.canonical_json(spec)) == json.loads(json.dumps(old))
  assert ArchSpec.from_dict(old) == spec
  cfg = toys.set_keys(config_lib.base_config(), {"mode": "train"})
  moved = dataclasses.replace(spec, stages=(dataclasses.replace(spec.stages[0], downsample="local"),) + spec.stages[1:])
  assert common.training_key(cfg, spec) != common.training_key(cfg, moved)
