"""X3D's stepwise expansion (`search.expansion`) run from a config: each candidate trained and evaluated.

    plan = expansion_plan(cfg, classes, target)   # config.search.x3d_expansion -> a checked Plan
    out = run_expansion(cfg, workdir)             # -> ExpansionRun (result, records, seconds)

Each candidate is trained by `train_loop.run_train` with config.train's recipe for
search.x3d_expansion.train_steps steps (warm-up scaled in proportion) on its own clip (frames,
sampling stride and crop from its factors; the scale jitter scaled with the crop), then evaluated on
config.data.eval_split. With search.x3d_expansion.scorer = 'inherited', every candidate but the base
starts from the trained weights of the network it was made from (`models.morph.grow`: it computes
that network's function at the start) and trains search.x3d_expansion.inherited_steps: a cheaper
proxy than training each from scratch, stated as such in the report. Every finished candidate is
appended to `workdir/expansion/candidates.json` with its training run's identity, so a killed run
resumes without retraining what it has (and a candidate killed mid-training resumes from its own
checkpoint, as any training run).

Candidates of one step differ in shape, so each compiles its own step: nothing is shared between
them except JAX's persistent compilation cache, which lets a rerun skip the compiles.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time

import jax
import ml_collections

from autox3d_jax import paths
from autox3d_jax.config import ConfigError
from autox3d_jax.data import registry as data_registry
from autox3d_jax.models import morph
from autox3d_jax.models.convert_torch import CheckpointError
from autox3d_jax.models.zoo import X3DFactors, X3DSkeleton
from autox3d_jax.search import expansion
from autox3d_jax.search.inputs import ClipInput
from autox3d_jax.train import identity, loop, setup, weights
from autox3d_jax.train.train_loop import run_train

log = logging.getLogger(__name__)

SECTION = "search.x3d_expansion"
RECORD_VERSION = 2      # 2: records carry 'scorer' and, for inherited candidates, 'parent'


@dataclasses.dataclass
class ExpansionRun:
  """The plan run (its target included), the procedure's result, one record per scored candidate (training order; dicts as stored in
  candidates.json plus 'chosen' / 'final' flags) and the wall seconds of this process's run."""
  plan: expansion.Plan
  result: expansion.ExpansionResult
  records: list[dict]
  seconds: float
  trained: int      # candidates this process trained (the rest came from the record)


def expansion_plan(cfg: ml_collections.ConfigDict, classes: int, target: float) -> expansion.Plan:
  """config.search.x3d_expansion as a Plan with `classes` outputs and `target` (metric units)."""
  e = cfg.search.x3d_expansion
  sk = e.skeleton
  return expansion.Plan(
      base=X3DFactors(**{k: e.base[k] for k in ("frames", "sampling_stride", "crop", "width", "bottleneck", "depth")}),
      skeleton=X3DSkeleton(stem_base=sk.stem_base, stage_bases=tuple(sk.stage_bases),
                           stage_repeats=tuple(sk.stage_repeats), kernel=tuple(sk.kernel), se_ratio=sk.se_ratio,
                           head_width=sk.head_width, dropout=sk.dropout, width_divisor=sk.width_divisor),
      num_classes=classes, target=float(target), axes=tuple(e.axes), factors=dict(e.factors.to_dict()),
      limits=expansion.Limits(span=e.max_span, crop=e.max_crop, width=e.max_width, bottleneck=e.max_bottleneck,
                              depth=e.max_depth),
      metric=cfg.search.cost_metric, selection=e.selection, crop_divisor=e.crop_divisor)


def cost_target(cfg: ml_collections.ConfigDict, classes: int) -> float:
  """config.search.cost_target, else the cost of config.search.target_arch in config.space at
  config.data's clip (the X3D-like point the supernet search targets: matched budgets)."""
  if cfg.search.cost_target > 0:
    return float(cfg.search.cost_target)
  space = setup.build_space(cfg, classes)
  return setup.build_cost_table(space, cfg).of_point(setup.target_point(space, cfg.search.target_arch))


def check_plan(cfg: ml_collections.ConfigDict, classes: int) -> expansion.Plan:
  """The plan, checked (`expansion.check`) with errors as ConfigError naming config keys."""
  plan = expansion_plan(cfg, classes, cost_target(cfg, classes))
  try:
    expansion.check(plan, where=f"config.{SECTION}")
  except expansion.ExpansionError as err:
    raise ConfigError(str(err)) from None
  return plan


def clip_config(cfg: ml_collections.ConfigDict, factors: X3DFactors) -> ml_collections.ConfigDict:
  """A copy of config at the clip of `factors` (frames, sampling stride, crop), its scale jitter
  scaled by crop / config.data.crop_size (`setup.clip_config`): how a network of the X3D family is
  trained at its input."""
  return setup.clip_config(cfg, ClipInput(factors.frames, factors.sampling_stride, factors.crop))


def candidate_steps(cfg: ml_collections.ConfigDict, inherited: bool = False) -> int:
  """Training steps per candidate: search.x3d_expansion.train_steps, 0 meaning train.steps; for a
  candidate that inherits its parent's weights, inherited_steps when set."""
  e = cfg.search.x3d_expansion
  if inherited and e.inherited_steps:
    return e.inherited_steps
  return e.train_steps or cfg.train.steps


def inherits(cfg: ml_collections.ConfigDict, candidate: expansion.Candidate) -> bool:
  """Whether `candidate` starts from its parent's trained weights (scorer 'inherited', not the base)."""
  return cfg.search.x3d_expansion.scorer == "inherited" and candidate.parent is not None


def candidate_config(cfg: ml_collections.ConfigDict, factors: X3DFactors,
                     inherited: bool = False) -> ml_collections.ConfigDict:
  """config for training the candidate with `factors`: its clip (`clip_config`) and the short
  recipe (train.steps = `candidate_steps`, warm-up scaled in proportion)."""
  c = clip_config(cfg, factors)
  c.train.steps = candidate_steps(cfg, inherited)
  c.train.optimizer.warmup_steps = round(cfg.train.optimizer.warmup_steps * c.train.steps / cfg.train.steps)
  return c


def record_path(workdir: str) -> str:
  return paths.join(workdir, "expansion", "candidates.json")


def _identity_hash(run_identity: dict) -> str:
  return hashlib.sha256(json.dumps(run_identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_records(path: str) -> list[dict]:
  if not paths.exists(path):
    return []
  try:
    data = json.loads(paths.read_text(path))
    if data.get("version") not in (1, RECORD_VERSION):    # version 1: every candidate standalone
      raise ValueError(f"version {data.get('version')!r}, expected {RECORD_VERSION}")
    return list(data["candidates"])
  except (ValueError, KeyError, TypeError, AttributeError) as err:
    raise ConfigError(f"{path} is not an expansion record ({err}); move it away to start the expansion "
                      "afresh") from None


def _parent_weights(directory: str, name: str, record: str) -> dict:
  """The trained weights of the parent `name` (its training run's checkpoint in `directory`);
  ConfigError naming both and the fix when they are gone."""
  try:
    return weights.read(directory, f"{SECTION}.scorer")
  except CheckpointError:
    raise ConfigError(f"search.x3d_expansion.scorer = 'inherited': the trained weights of {name!r}, which the next "
                      f"candidate inherits, are not in {directory} (removed?). Restore them, or move {record} and "
                      "the workdir's checkpoints away to run the expansion afresh") from None


def run_expansion(cfg: ml_collections.ConfigDict, workdir: str) -> ExpansionRun:
  """X3D's expansion from config.search.x3d_expansion.base up to the cost target, every candidate
  trained and evaluated (or read from this workdir's record), then the report's records."""
  start = time.time()
  stand_in = cfg.space.num_classes if cfg.space.num_classes > 0 else 2
  check_plan(cfg, stand_in)            # bad settings and a bad record fail before the dataset is built
  path = record_path(workdir)
  records = _read_records(path)
  setup.ensure_dataset(cfg)
  data_registry.get_source(cfg.data.name, cfg.data.eval_split, cfg.data.data_dir or None)  # candidates evaluate
  classes = setup.num_classes(cfg)
  plan = check_plan(cfg, classes)
  by_name = {r["name"]: r for r in records}
  scored_as: dict[X3DFactors, str] = {}     # factors -> the record name they were last scored under
  names: list[str] = []                     # the record name of each scored candidate, in scoring order
  trained = 0

  def record_name(c: expansion.Candidate) -> str:
    name = f"expansion {plan.spec(c.factors).name}"
    if not inherits(cfg, c):
      return name
    # The parent's identity in the name: a retrained parent gives its children new runs, not stale checkpoints.
    return f"{name} from {by_name[scored_as[c.parent]]['identity'][:8]}"

  def score(c: expansion.Candidate) -> float:
    nonlocal trained
    spec = plan.spec(c.factors)
    inherited = inherits(cfg, c)
    name = record_name(c)
    ccfg = candidate_config(cfg, c.factors, inherited)
    parent = by_name[scored_as[c.parent]] if inherited else None
    run_identity = identity.of_train(ccfg, spec.to_json())
    if parent is not None:
      run_identity["search.x3d_expansion.parent"] = parent["identity"]
    ident = _identity_hash(run_identity)
    old = by_name.get(name)
    if old is not None and old["identity"] == ident:
      log.info("%s: top-1 %.4f from %s", name, old["top1"], path)
      scored_as[c.factors] = name
      names.append(name)
      return old["top1"]
    init = None
    if parent is not None:
      parent_dir = loop.run_dirs(workdir, "train", parent["name"]).checkpoints
      init = morph.grow(plan.spec(c.parent), _parent_weights(parent_dir, parent["name"], path), spec,
                        jax.random.PRNGKey(cfg.seed))
    result = run_train(ccfg, workdir, spec, name, init)
    trained += 1
    entry = {"name": name, "identity": ident, "step": c.step, "axis": c.axis, "kind": c.kind,
             "factors": dataclasses.asdict(c.factors), "arch": json.loads(spec.to_json()), "cost": plan.cost(c.factors),
             "scorer": "inherited" if inherited else "standalone", "parent": parent["name"] if parent else None,
             "steps": ccfg.train.steps, "gflops": result.gflops, "params": result.params, "top1": result.top1,
             "top5": result.top5, "seconds": round(result.seconds, 1)}
    by_name[name] = entry
    scored_as[c.factors] = name
    names.append(name)
    records[:] = [r for r in records if r["name"] != name] + [entry]
    if jax.process_index() == 0:   # every process trains the candidate; one writes the record
      paths.write_json(path, {"version": RECORD_VERSION, "candidates": records}, indent=1)
    log.info("%s (step %d, %s%s): top-1 %.4f, %.4g %s, %.0f s", name, c.step, c.axis or "base",
             ", from its parent's weights" if inherited else "", result.top1, entry["cost"], plan.metric, result.seconds)
    return result.top1

  result = expansion.run(plan, score, log.info)
  chosen = {id(s) for s in result.path}
  out = []
  for s, name in zip(result.scored, names):
    r = dict(by_name[name])
    r.update(step=s.candidate.step, axis=s.candidate.axis, kind=s.candidate.kind, chosen=id(s) in chosen,
             final=s is result.final)
    out.append(r)
  return ExpansionRun(plan, result, out, time.time() - start, trained)
