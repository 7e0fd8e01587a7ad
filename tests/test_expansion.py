"""X3D's stepwise expansion (search/expansion.py, train/expansion_loop.py, strategy 'x3d_expansion'):
the axes, the selection rule, backward contraction, the checks, resume from the record, the report,
and (slow) the shipped tiny config end to end from the command line, killed and resumed."""
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from autox3d_jax import config as config_lib
from autox3d_jax import configs
from autox3d_jax.cost.analytic import arch_cost
from autox3d_jax.models import zoo
from autox3d_jax.models.zoo import X3DFactors, X3DSkeleton
from autox3d_jax.search import expansion as E
from autox3d_jax.train import expansion_loop, train_loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = X3DSkeleton(stem_base=4, stage_bases=(4, 8, 16), stage_repeats=(1, 1, 1), head_width=32, width_divisor=4)
BASE = X3DFactors(frames=1, sampling_stride=8, crop=32, width=2.0, bottleneck=1.0, depth=1.0)


def small_plan(**kw):
  kw.setdefault("target", 40 * E.Plan(BASE, SMALL, 5, 1.0).cost(BASE))
  return E.Plan(kw.pop("base", BASE), SMALL, 5, crop_divisor=4, **kw)


# ------------------------------------------------------------------------------------------ axes
def test_each_axis_expands_only_itself_as_x3d_defines_it():
  f = X3DFactors(frames=4, sampling_stride=8, crop=32, width=2.0, bottleneck=1.0, depth=1.0)
  assert E.expand(f, "temporal", 2.0) == dataclasses.replace(f, frames=8)             # longer clip, same stride
  fast = E.expand(f, "fast", 2.0)
  assert (fast.frames, fast.sampling_stride) == (8, 4)                                 # same duration, 2x rate
  assert fast.frames * fast.sampling_stride == f.frames * f.sampling_stride
  assert E.expand(f, "spatial", math.sqrt(2), crop_divisor=8) == dataclasses.replace(f, crop=48)   # 45.25 -> 48
  assert E.expand(f, "width", 1.5).width == 3.0
  assert E.expand(f, "bottleneck", 2.25).bottleneck == 2.25
  assert E.expand(f, "depth", 2.2).depth == 2.2
  assert E.expand(dataclasses.replace(f, sampling_stride=1), "fast", 2.0) is None     # no faster than every frame
  assert E.expand(f, "temporal", 1.1).frames == 5                                      # at least one more frame
  with pytest.raises(E.ExpansionError, match="unknown expansion axis 'time'"):
    E.expand(f, "time", 2.0)


def test_paper_factors_about_double_x2d_cost():
  """REFERENCES-round2 [D]: each step factor multiplies X2D's FLOPs by about 2 (1.83-1.98 there; width
  x sqrt2 gives 1.75 here, with pytorchvideo's rounding to multiples of 8 instead of SlowFast's 1)."""
  x2d = E.Plan(dataclasses.replace(zoo.X2D, sampling_stride=16), X3DSkeleton(), 400, 1e12)
  base = x2d.cost(x2d.base)
  ratios = {c.axis: x2d.cost(c.factors) / base for c in E.candidates(x2d, x2d.base, 1)}
  assert set(ratios) == set(E.AXES)
  assert all(1.7 <= r <= 2.0 for r in ratios.values()), ratios


def test_candidates_respect_limits_and_skip_axes_that_build_the_same_network():
  plan = small_plan(limits=E.Limits(span=9, crop=32))
  axes = [c.axis for c in E.candidates(plan, BASE, 1)]
  assert axes == ["temporal", "fast", "width", "bottleneck", "depth"]     # crop 32 is the limit
  at_span = dataclasses.replace(BASE, frames=2)                             # span 9: temporal would be 17
  assert "temporal" not in [c.axis for c in E.candidates(plan, at_span, 2)]
  tiny_step = small_plan(factors={**E.PAPER_FACTORS, "width": 1.01})      # rounds to the same channels
  assert "width" not in [c.axis for c in E.candidates(tiny_step, BASE, 1)]


def test_selection_rules():
  plan = small_plan()
  cur = E.Scored(E.Candidate(0, "", "base", BASE), cost=100.0, top1=0.50)
  cheap = E.Scored(E.Candidate(1, "width", "expand", BASE), cost=150.0, top1=0.55)   # +5 points over 0.58 doublings
  dear = E.Scored(E.Candidate(1, "temporal", "expand", BASE), cost=400.0, top1=0.60)  # +10 points over 2 doublings
  assert E.select(plan, cur, [dear, cheap]) == 1                                         # 8.5 > 5 points / doubling
  assert E.select(dataclasses.replace(plan, selection="accuracy"), cur, [dear, cheap]) == 0
  same = E.Scored(E.Candidate(1, "depth", "expand", BASE), cost=150.0, top1=0.55)
  tie = E.Scored(E.Candidate(1, "spatial", "expand", BASE), cost=140.0, top1=0.55)
  assert E.select(dataclasses.replace(plan, selection="accuracy"), cur, [same, tie]) == 1   # tie: the cheaper


@pytest.mark.parametrize("axis", E.AXES)
def test_contraction_lands_on_the_costliest_setting_within_the_target(axis):
  plan = small_plan()
  prev = X3DFactors(frames=2, sampling_stride=4, crop=32, width=2.0, bottleneck=1.0, depth=1.0)
  expanded = E.expand(prev, axis, 3.0 if axis != "spatial" else 2.0, plan.crop_divisor)
  lo, hi = plan.cost(prev), plan.cost(expanded)
  plan = dataclasses.replace(plan, target=(lo + hi) / 2)
  got = E.contract(plan, prev, axis, expanded)
  between = [f for f in E._between(prev, axis, expanded, plan.crop_divisor) if lo < plan.cost(f) <= plan.target]
  assert between, "the grid has settings inside the target"
  assert got != prev and lo < plan.cost(got) <= plan.target
  assert plan.cost(got) == max(plan.cost(f) for f in between)
  # Every field but the contracted axis's is the previous network's.
  changed = {k for k, v in dataclasses.asdict(got).items() if v != getattr(prev, k)}
  assert changed <= {"temporal": {"frames"}, "fast": {"frames", "sampling_stride"}, "spatial": {"crop"}}.get(axis, {axis})
  # Nothing between fits: the previous network is kept.
  assert E.contract(dataclasses.replace(plan, target=lo * 1.0001), prev, axis, expanded) == prev


def test_contraction_falls_back_to_another_axis_of_the_last_network():
  """2 -> 4 frames passes the target and so does 3: the 4-frame network shrinks another axis."""
  plan = small_plan()
  prev = X3DFactors(frames=2, sampling_stride=2, crop=56, width=2.0, bottleneck=1.0, depth=1.0)
  expanded = E.expand(prev, "temporal", 2.0)
  three = dataclasses.replace(prev, frames=3)
  plan = dataclasses.replace(plan, target=(plan.cost(prev) + plan.cost(three)) / 2)
  assert E.contract(plan, prev, "temporal", expanded) == prev
  axis, got = E.contract_other_axis(plan, prev, "temporal", expanded)
  assert plan.cost(prev) < plan.cost(got) <= plan.target
  changed = {k for k, v in dataclasses.asdict(got).items() if v != getattr(expanded, k)}
  assert changed == {"fast": {"frames", "sampling_stride"}, "spatial": {"crop"}}.get(axis, {axis})
  brute = max(plan.cost(dataclasses.replace(expanded, crop=c)) for c in range(BASE.crop, expanded.crop, 4)
              if plan.cost(dataclasses.replace(expanded, crop=c)) <= plan.target)
  assert plan.cost(got) >= brute        # at least as close as the best crop alone
  assert E.contract_other_axis(dataclasses.replace(plan, target=plan.cost(prev) * 1.0001), prev, "temporal",
                               expanded) is None


# ------------------------------------------------------------------------------------ procedure
def synthetic_score(plan):
  """A deterministic accuracy that rewards frames most, then cost: a task that needs time."""
  base = plan.cost(plan.base)
  return lambda c: min(0.99, 0.1 + 0.08 * math.log2(c.factors.frames) + 0.03 * math.log2(plan.cost(c.factors) / base))


def test_run_expands_greedily_then_contracts_onto_the_target():
  plan = small_plan(limits=E.Limits(span=12))
  seen = []
  score = synthetic_score(plan)
  result = E.run(plan, lambda c: seen.append(c) or score(c))
  assert [s.candidate for s in result.scored] == seen                     # each candidate scored once, in order
  path = result.path
  assert path[0].candidate.kind == "base" and path[0].cost < plan.target
  costs = [s.cost for s in path]
  assert costs == sorted(costs[:-1]) + [costs[-1]] and all(c < plan.target for c in costs[:-2])
  # Every step kept what the rule selects among that step's candidates.
  for k, chosen in enumerate(path[1:], start=1):
    if chosen.candidate.kind == "contract":
      continue
    step = [s for s in result.scored if s.candidate.step == k and s.candidate.kind == "expand"]
    assert step[E.select(plan, path[k - 1], step)] is chosen
    assert len(step) == len(E.candidates(plan, path[k - 1].candidate.factors, k))
  # The task rewards frames: the first steps grow time, as far as the 12-frame videos allow.
  assert path[1].candidate.axis in ("temporal", "fast")
  assert all(f.span <= 12 for f in (s.candidate.factors for s in result.scored))
  final, last, within = result.final, path[-2], path[-3]   # the contraction, the step past the target, the one before
  assert final is path[-1] and final.candidate.kind == "contract" and final.cost <= plan.target < last.cost
  if final.candidate.axis != last.candidate.axis:   # no setting of the last axis fits: another axis shrank
    assert E.contract(plan, within.candidate.factors, last.candidate.axis, last.candidate.factors) == \
        within.candidate.factors
    assert (final.candidate.axis, final.candidate.factors) == E.contract_other_axis(
        plan, within.candidate.factors, last.candidate.axis, last.candidate.factors)
  assert final.cost > within.cost
  # With the target halfway into the last step, the same expansion contracts that step onto it.
  halfway = dataclasses.replace(plan, target=(within.cost + last.cost) / 2)
  again = E.run(halfway, score)
  assert [s.candidate for s in again.path[:-1]] == [s.candidate for s in path[:-1]]
  final = again.final
  assert final.candidate.kind == "contract" and final.candidate.axis == last.candidate.axis
  assert within.cost < final.cost <= halfway.target


def test_bad_plans_are_rejected_naming_the_setting():
  where = "config.search.x3d_expansion"
  with pytest.raises(E.ExpansionError, match=rf"{where}.axes: unknown axis 'time'"):
    E.check(small_plan(axes=("temporal", "time")), where)
  with pytest.raises(E.ExpansionError, match=rf"{where}.factors.width = 1.0 must be > 1"):
    E.check(small_plan(factors={**E.PAPER_FACTORS, "width": 1.0}), where)
  with pytest.raises(E.ExpansionError, match="not above the base network's"):
    E.check(small_plan(target=10.0), where)
  # The largest network the steps reach: X-Fast to 8 frames at stride 1 (span 8), crop 32 -> 44 (62 > 48).
  bounded = small_plan(axes=("temporal", "fast", "spatial"), limits=E.Limits(span=8, crop=48))
  reach = bounded.cost(dataclasses.replace(BASE, frames=8, sampling_stride=1, crop=44))
  with pytest.raises(E.ExpansionError, match=rf"above what the axes \['temporal', 'fast', 'spatial'\] reach within "
                                             rf"their limits \({re.escape(f'{reach:.6g}')}\); raise the limits \({where}.max_\*\)"):
    E.check(dataclasses.replace(bounded, target=reach * 1.01), where)
  E.check(dataclasses.replace(bounded, target=reach * 0.99), where)
  with pytest.raises(E.ExpansionError, match=rf"{where}.base .* is outside the limits"):
    E.check(small_plan(limits=E.Limits(crop=16)), where)


# ------------------------------------------------------------------------------- from a config
def tiny_config(**overrides):
  cfg = configs.get("search_x3d_expansion", "tiny")
  cfg.space.num_classes = 5
  for key, value in overrides.items():
    section = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      section = section[p]
    section[leaf] = value
  return config_lib.validate(cfg)


@pytest.mark.parametrize("key, value, message", [
    ("mode", "demo", "runs in mode 'search', not 'demo'"),
    ("search.num_groups", 2, "config.search.num_groups is a supernet setting"),
    ("search.cost_metric", "latency", "config.search.cost_metric = 'latency' is not allowed"),
    ("search.x3d_expansion.axes", ("temporal", "temporal"), "config.search.x3d_expansion.axes must name distinct"),
    ("search.x3d_expansion.factors.depth", 0.5, "config.search.x3d_expansion.factors.depth = 0.5 must be > 1"),
    ("search.x3d_expansion.selection", "best", "config.search.x3d_expansion.selection = 'best' is not allowed"),
    ("search.x3d_expansion.scorer", "supernet", "config.search.x3d_expansion.scorer = 'supernet' is not allowed"),
    ("search.x3d_expansion.inherited_steps", 50, "inherited_steps = 50 is set but config.search.x3d_expansion.scorer "
                                                 "is 'standalone'"),
    ("search.x3d_expansion.inherited_steps", -1, "config.search.x3d_expansion.inherited_steps"),
])
def test_config_errors_name_the_key(key, value, message):
  with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    tiny_config(**{key: value})


def test_the_section_is_rejected_under_another_strategy():
  cfg = config_lib.base_config()
  cfg.search.target_arch = "X3D"
  cfg.search.x3d_expansion.train_steps = 5
  with pytest.raises(config_lib.ConfigError, match="config.search.x3d_expansion.train_steps is set but "
                                                   "config.search.strategy is 'probabilistic'"):
    config_lib.validate(cfg)


def test_candidate_config_sets_the_clip_and_the_short_recipe():
  cfg = tiny_config()
  cfg.train.steps, cfg.train.optimizer.warmup_steps = 100, 10
  cfg.search.x3d_expansion.train_steps = 40
  c = expansion_loop.candidate_config(cfg, X3DFactors(6, 2, 24, 2.0, 1.0, 1.0))
  assert (c.data.num_frames, c.data.sampling_stride, c.data.crop_size) == (6, 2, 24)
  assert tuple(c.data.scale_jitter) == (24, 27)        # (32, 36) scaled by 24 / 32
  assert (c.train.steps, c.train.optimizer.warmup_steps) == (40, 4)
  assert cfg.data.num_frames == 4                      # the config itself is untouched


def test_the_tiny_configs_target_is_the_demo_spaces_x3d_point_and_reachable():
  cfg = tiny_config()
  plan = expansion_loop.check_plan(cfg, 5)
  from autox3d_jax.train import setup
  space = setup.build_space(cfg, 5)
  assert plan.target == setup.build_cost_table(space, cfg).of_point(setup.x3d_like_point(space))
  assert plan.cost(plan.base) < plan.target


@pytest.mark.parametrize("target", zoo.STANDARD_WIDTH_VARIANTS)
def test_the_kinetics_variant_expands_x2d_to_an_x3d_variants_flops(target):
  cfg = config_lib.validate(configs.get("search_x3d_expansion", f"kinetics,target={target}"))
  plan = expansion_loop.check_plan(cfg, 400)
  assert plan.base == dataclasses.replace(zoo.X2D, sampling_stride=16) and plan.skeleton == X3DSkeleton()
  assert round(plan.target / 1e9, 3) == round(arch_cost(zoo.x3d(target)).gflops, 3)
  assert (cfg.data.num_frames, cfg.data.sampling_stride) == (zoo.X3D_VARIANTS[target]["frames"],
                                                             zoo.X3D_VARIANTS[target]["sampling_stride"])


def fake_result(cfg, spec, name) -> train_loop.TrainResult:
  """A deterministic 'trained' result: top-1 from the clip's frames, then the cost."""
  cost = arch_cost(spec)
  top1 = min(0.99, 0.1 + 0.08 * math.log2(cfg.data.num_frames) + 0.01 * math.log2(cost.flops / 1e4))
  return train_loop.TrainResult(name, spec, top1, top1, cost.gflops, cost.params, 0.1, 32)


def patch_training(monkeypatch, fake_run_train) -> None:
  """expansion_loop trains with `fake_run_train` and reads no dataset."""
  monkeypatch.setattr(expansion_loop, "run_train", fake_run_train)
  monkeypatch.setattr(expansion_loop.setup, "ensure_dataset", lambda cfg: None)
  monkeypatch.setattr(expansion_loop.data_registry, "get_source", lambda *a, **k: None)


@pytest.fixture
def fake_training(monkeypatch):
  """run_train replaced by `fake_result`; no dataset is read. Returns the run names trained."""
  calls = []

  def fake_run_train(cfg, workdir, spec, name, init=None):
    calls.append(name)
    return fake_result(cfg, spec, name)
  patch_training(monkeypatch, fake_run_train)
  return calls


def test_a_killed_expansion_resumes_from_its_record_without_retraining(tmp_path, fake_training):
  cfg = tiny_config()
  whole = expansion_loop.run_expansion(cfg, str(tmp_path / "whole"))
  n = len(whole.records)
  assert whole.trained == n == len(fake_training) == len(set(fake_training))
  fake_training.clear()

  killed = str(tmp_path / "killed")
  real = expansion_loop.run_train

  def dies_after_5(*args, **kwargs):
    if len(fake_training) == 5:
      raise KeyboardInterrupt("killed")
    return real(*args, **kwargs)
  expansion_loop.run_train = dies_after_5
  with pytest.raises(KeyboardInterrupt):
    expansion_loop.run_expansion(cfg, killed)
  expansion_loop.run_train = real
  saved = json.loads(open(expansion_loop.record_path(killed)).read())
  assert len(saved["candidates"]) == 5
  fake_training.clear()
  resumed = expansion_loop.run_expansion(cfg, killed)
  assert resumed.trained == n - 5 == len(fake_training)
  strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
  for a, b in zip(strip(resumed.records), strip(whole.records)):
    assert a == b, {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}
  assert len(resumed.records) == len(whole.records)
  # A third run trains nothing.
  fake_training.clear()
  assert expansion_loop.run_expansion(cfg, killed).trained == 0 and not fake_training


def test_a_record_from_other_settings_is_not_reused(tmp_path, fake_training):
  cfg = tiny_config()
  expansion_loop.run_expansion(cfg, str(tmp_path))
  fake_training.clear()
  other = tiny_config(**{"search.x3d_expansion.train_steps": 3})
  again = expansion_loop.run_expansion(other, str(tmp_path))
  assert again.trained == len(again.records) > 0      # the identity (train.steps) differs: trained again


def test_a_corrupt_record_fails_naming_the_file_before_the_dataset(tmp_path, fake_training, monkeypatch):
  path = expansion_loop.record_path(str(tmp_path))
  os.makedirs(os.path.dirname(path))
  with open(path, "w") as f:
    f.write("{not json")
  monkeypatch.setattr(expansion_loop.setup, "ensure_dataset", lambda cfg: pytest.fail("dataset built first"))
  with pytest.raises(config_lib.ConfigError, match="candidates.json is not an expansion record"):
    expansion_loop.run_expansion(tiny_config(), str(tmp_path))
  assert open(path).read() == "{not json"      # left as it was


@pytest.fixture
def fake_inheriting_training(monkeypatch):
  """run_train replaced by a deterministic 'training' that adds the clip's frame count to every
  parameter of its start (the given init, else a fresh init) and saves the result where a real run
  leaves its checkpoint; records (name, steps, init) per call."""
  from autox3d_jax.models import builder
  from autox3d_jax.train import loop, weights
  calls = []

  def fake_run_train(cfg, workdir, spec, name, init=None):
    calls.append((name, cfg.train.steps, init))
    start = init if init is not None else jax.tree_util.tree_map(lambda a: np.ones(a.shape, a.dtype),
                                                                 builder.variable_shapes(spec))
    trained = {"params": jax.tree_util.tree_map(lambda a: np.asarray(a) + cfg.data.num_frames, start["params"]),
               "batch_stats": jax.tree_util.tree_map(np.asarray, start["batch_stats"])}
    directory = loop.run_dirs(workdir, "train", name).checkpoints
    shutil.rmtree(directory, ignore_errors=True)     # a retrained candidate replaces its checkpoint
    weights.save(directory, spec, trained)
    return fake_result(cfg, spec, name)
  patch_training(monkeypatch, fake_run_train)
  return calls


INHERITED = {"search.x3d_expansion.scorer": "inherited", "search.x3d_expansion.inherited_steps": 1,
             "search.x3d_expansion.axes": ("temporal", "width")}


@pytest.mark.slow   # in CI's slow selection, with the CLI kill-and-resume run of both scorers
def test_inherited_scorer_starts_each_candidate_from_its_parents_trained_weights(tmp_path, fake_inheriting_training):
  from autox3d_jax.models import morph
  from autox3d_jax.train import loop, weights
  cfg = tiny_config(**INHERITED)
  workdir = str(tmp_path)
  run_ = expansion_loop.run_expansion(cfg, workdir)
  plan = run_.plan
  by_name = {r["name"]: r for r in run_.records}
  calls = {name: (steps, init) for name, steps, init in fake_inheriting_training}
  assert len(calls) == len(run_.records) == run_.trained
  (base,) = [r for r in run_.records if r["kind"] == "base"]
  assert base["scorer"] == "standalone" and base["parent"] is None and calls[base["name"]] == (2, None)
  children = [r for r in run_.records if r["kind"] != "base"]
  assert children and {r["axis"] for r in children} >= {"temporal", "width"}
  for r in children:
    steps, init = calls[r["name"]]
    assert r["scorer"] == "inherited" and r["steps"] == steps == 1
    parent = by_name[r["parent"]]
    parent_spec = zoo.from_factors(X3DFactors(**parent["factors"]), 5, plan.skeleton)
    parent_weights = weights.read(loop.run_dirs(workdir, "train", parent["name"]).checkpoints, "test")
    want = morph.grow(parent_spec, parent_weights, plan.spec(X3DFactors(**r["factors"])), jax.random.PRNGKey(cfg.seed))
    for a, b in zip(jax.tree_util.tree_leaves(init), jax.tree_util.tree_leaves(want)):
      np.testing.assert_array_equal(np.asarray(a), b)
    # the parent is the network this candidate expands: one step before it on the chosen path
    assert parent["chosen"] and parent["step"] == r["step"] - 1 or r["kind"] == "contract"
  # A rerun trains nothing; a retrained parent (other settings) retrains its children under new names.
  fake_inheriting_training.clear()
  assert expansion_loop.run_expansion(cfg, workdir).trained == 0 and not fake_inheriting_training
  other = tiny_config(**INHERITED, **{"search.x3d_expansion.train_steps": 3})
  again = expansion_loop.run_expansion(other, workdir)
  assert again.trained == len(again.records)
  assert not {r["name"] for r in again.records if r["kind"] != "base"} & {r["name"] for r in children}


@pytest.mark.slow   # in CI's slow selection, with the inherited scorer's other runs
def test_inherited_scorer_fails_naming_a_parent_whose_weights_are_gone(tmp_path, fake_inheriting_training):
  from autox3d_jax.train import loop
  cfg = tiny_config(**{**INHERITED, "search.x3d_expansion.axes": ("width",)})
  run_ = expansion_loop.run_expansion(cfg, str(tmp_path))
  record = json.loads(open(expansion_loop.record_path(str(tmp_path))).read())
  (base,) = [r for r in run_.records if r["kind"] == "base"]
  # Forget every candidate but the base, and lose the base's weights.
  json_path = expansion_loop.record_path(str(tmp_path))
  with open(json_path, "w") as f:
    json.dump({**record, "candidates": [r for r in record["candidates"] if r["name"] == base["name"]]}, f)
  shutil.rmtree(loop.run_dirs(str(tmp_path), "train", base["name"]).checkpoints)
  with pytest.raises(config_lib.ConfigError, match=re.escape(f"the trained weights of {base['name']!r}")):
    expansion_loop.run_expansion(cfg, str(tmp_path))


def test_a_version_1_record_is_still_read(tmp_path, fake_training):
  cfg = tiny_config()
  expansion_loop.run_expansion(cfg, str(tmp_path))
  path = expansion_loop.record_path(str(tmp_path))
  data = json.loads(open(path).read())
  for r in data["candidates"]:
    for key in ("scorer", "parent", "steps"):
      r.pop(key)
  with open(path, "w") as f:
    json.dump({**data, "version": 1}, f)
  fake_training.clear()
  assert expansion_loop.run_expansion(cfg, str(tmp_path)).trained == 0 and not fake_training


def test_search_mode_reports_the_expansion(tmp_path, fake_training):
  from autox3d_jax import run
  run.MODES["search"](tiny_config(), str(tmp_path))
  report = tmp_path / "report"
  results = json.loads((report / "results.json").read_text())
  (model,) = results["models"]
  cands = results["expansion"]["candidates"]
  final = [c for c in cands if c["final"]]
  assert model["name"] == "X3D-expanded" and len(final) == 1 and model["top1"] == final[0]["top1"]
  assert model["gflops"] == final[0]["gflops"] and final[0]["chosen"]
  assert (report / "expansion.png").stat().st_size > 10_000
  md = (report / "report.md").read_text()
  assert "## X3D expansion" in md and "(final)" in md
  rows = [line for line in md.splitlines() if line.startswith("| ") and "px |" in line]
  assert len(rows) == len(cands)
  spec = zoo.from_factors(X3DFactors(**final[0]["factors"]), 5,
                          expansion_loop.expansion_plan(tiny_config(), 5, 1.0).skeleton)
  assert json.loads((report / "X3D-expanded.json").read_text())["stages"] == json.loads(spec.to_json())["stages"]


def test_cli_rejects_an_unreachable_target_before_building_the_dataset(tmp_path):
  data = tmp_path / "data"
  out = subprocess.run(
      [sys.executable, "-m", "autox3d_jax.main", "--config=configs/search_x3d_expansion.py:tiny",
       f"--workdir={tmp_path / 'w'}", f"--config.data.data_dir={data}", "--config.search.x3d_expansion.axes=('spatial',)",
       "--config.search.x3d_expansion.max_crop=24"],
      capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  assert "above what the axes ['spatial'] reach" in out.stderr and "config.search.x3d_expansion.max_*" in out.stderr
  assert not data.exists()


# ----------------------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.parametrize("scorer", ["standalone", "inherited"])
def test_tiny_expansion_from_the_cli_survives_a_kill(tmp_path, scorer):
  """The shipped tiny config, really trained: killed (SIGKILL) once some candidates are recorded,
  rerun with the same command, it finishes without retraining them and writes the report. With
  the inherited scorer the candidates after the kill read their parents' weights from disk."""
  workdir, data = tmp_path / "w", tmp_path / "data"
  cmd = [sys.executable, "-m", "autox3d_jax.main", "--config=configs/search_x3d_expansion.py:tiny",
         f"--workdir={workdir}", f"--config.data.data_dir={data}",
         "--config.search.x3d_expansion.axes=('temporal', 'fast', 'width')"]
  if scorer == "inherited":
    cmd += ["--config.search.x3d_expansion.scorer=inherited", "--config.search.x3d_expansion.inherited_steps=1"]
  record = workdir / "expansion" / "candidates.json"
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if record.exists() and len(json.loads(record.read_text())["candidates"]) >= 3:
      break
    time.sleep(0.5)
  assert proc.poll() is None, proc.stderr.read()[-2000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  before = len(json.loads(record.read_text())["candidates"])
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((workdir / "report" / "results.json").read_text())
  assert results["expansion"]["trained"] == len(results["expansion"]["candidates"]) - before
  assert (workdir / "report" / "expansion.png").exists()
  (final,) = [c for c in results["expansion"]["candidates"] if c["final"]]
  cfg = configs.get("search_x3d_expansion", "tiny")
  assert final["cost"] <= expansion_loop.cost_target(cfg, results["models"][0]["arch"]["head"]["num_classes"])
  children = [c for c in results["expansion"]["candidates"] if c["kind"] != "base"]
  assert {c["scorer"] for c in children} == {scorer} and all((c["parent"] is None) == (scorer == "standalone")
                                                            for c in children)
