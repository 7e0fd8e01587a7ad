"""X3D's own search: stepwise expansion along one axis at a time, then backward contraction.

X3D (Feichtenhofer, CVPR 2020; shared/REFERENCES-round2.md section 1) starts from a tiny image network
(X2D) and, at each step, trains one candidate per axis -- each expands a single axis of `X3DFactors`
by a factor that roughly doubles the cost -- keeps the candidate with the best accuracy / complexity
trade-off, and repeats until the cost passes a target; the last expansion is then shrunk (backward
contraction) so that the network lands on the target. Where no setting of the last axis fits between
the previous network and the target, we shrink another axis of the last network instead
(`contract_other_axis`, our extension), so that the result still lands near the target. This module is the procedure as data and pure
functions; training a candidate is the caller's `score` callback (`train.expansion_loop` trains it
stand-alone and keeps a record so that a killed run resumes without retraining).

The axes (the paper's names): temporal (X-Temporal: frames x f, stride kept: a longer clip), fast
(X-Fast: frame rate x f at the same duration: frames x f, stride / f), spatial (X-Spatial: crop x f),
width (X-Width: gamma_w x f), bottleneck (X-Bottleneck: gamma_b x f), depth (X-Depth: gamma_d x f).
The paper's exact per-step factors are not in the text we checked; `PAPER_FACTORS` are the factors
that each about double X2D's FLOPs (REFERENCES-round2: frames x2 -> x1.94, crop x sqrt2 -> x1.87,
depth x2.2 -> x1.85, bottleneck x2.25 -> x1.98, width x sqrt2 -> x1.83).

Selection: 'gain_per_cost' takes the largest top-1 gain per doubling of cost, (top1_c - top1) /
log2(cost_c / cost), our reading of the paper's "best accuracy / complexity trade-off" (with equal
cost steps it is the most accurate candidate); 'accuracy' takes the most accurate candidate.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

from autox3d_jax import config as config_lib
from autox3d_jax.cost.analytic import arch_cost
from autox3d_jax.models import zoo
from autox3d_jax.models.spec import ArchSpec
from autox3d_jax.models.zoo import X3DFactors, X3DSkeleton

AXES = config_lib.EXPANSION_AXES
PAPER_FACTORS = config_lib.EXPANSION_FACTORS
SELECTIONS = config_lib.EXPANSION_SELECTIONS
COST_METRICS = ("flops", "params")


class ExpansionError(ValueError):
  """The expansion as configured cannot run (unknown axis, factor <= 1, unreachable target); the
  message names the setting (the config key when the caller passes `where`)."""


@dataclasses.dataclass(frozen=True)
class Limits:
  """The largest value each axis may reach; 0 = unbounded. span: source-video frames one clip may
  cover, (frames - 1) x stride + 1 (the clips of a dataset are that long)."""
  span: int = 0
  crop: int = 0
  width: float = 0.0
  bottleneck: float = 0.0
  depth: float = 0.0

  def allows(self, f: X3DFactors) -> bool:
    return all(not cap or value <= cap + 1e-9 for cap, value in (
        (self.span, f.span), (self.crop, f.crop), (self.width, f.width), (self.bottleneck, f.bottleneck),
        (self.depth, f.depth)))


@dataclasses.dataclass(frozen=True)
class Plan:
  """One expansion: its start, skeleton and class count, the axes and their factors, the axes' limits,
  the cost target (in `metric` units: multiply-adds or parameters), the selection rule and the crop's
  rounding."""
  base: X3DFactors
  skeleton: X3DSkeleton
  num_classes: int
  target: float
  axes: tuple[str, ...] = AXES
  factors: dict = dataclasses.field(default_factory=lambda: dict(PAPER_FACTORS))
  limits: Limits = Limits()
  metric: str = "flops"
  selection: str = "gain_per_cost"
  crop_divisor: int = 8

  def spec(self, f: X3DFactors, name: str = "") -> ArchSpec:
    return zoo.from_factors(f, self.num_classes, self.skeleton, name)

  def cost(self, f: X3DFactors) -> float:
    return float(getattr(arch_cost(self.spec(f)), self.metric))


@dataclasses.dataclass(frozen=True)
class Candidate:
  """A network the expansion trains: at `step` (0 = the base), expanding `axis` ('' for the base) of
  the current network, or its backward contraction (kind 'contract'). `parent`: the network it was
  made from (the current network; for a contraction the network before the last expansion, or the
  last network where another of its axes shrinks), None for the base."""
  step: int
  axis: str
  kind: str            # base | expand | contract
  factors: X3DFactors
  parent: X3DFactors | None = None


@dataclasses.dataclass(frozen=True)
class Scored:
  candidate: Candidate
  cost: float
  top1: float


@dataclasses.dataclass
class ExpansionResult:
  """Every scored candidate in training order, the chosen path (the base, the kept candidate of each
  step, then the contraction if there is one) and the final network (the contraction, or the last
  network within the target)."""
  scored: list[Scored]
  path: list[Scored]
  final: Scored


# ------------------------------------------------------------------------------------------ axes
def _round_to(value: float, divisor: int) -> int:
  return max(divisor, int(round(value / divisor)) * divisor)


def expand(f: X3DFactors, axis: str, factor: float, crop_divisor: int = 8) -> X3DFactors | None:
  """`f` with `axis` expanded by `factor`, or None where the axis cannot grow (X-Fast at stride 1).
  Frames and crop grow by at least one frame / one crop step."""
  if axis == "temporal":
    return dataclasses.replace(f, frames=max(f.frames + 1, round(f.frames * factor)))
  if axis == "fast":
    if f.sampling_stride == 1:
      return None
    frames = max(f.frames + 1, round(f.frames * factor))
    return dataclasses.replace(f, frames=frames, sampling_stride=max(1, round(f.frames * f.sampling_stride / frames)))
  if axis == "spatial":
    return dataclasses.replace(f, crop=max(f.crop + crop_divisor, _round_to(f.crop * factor, crop_divisor)))
  if axis in ("width", "bottleneck", "depth"):
    return dataclasses.replace(f, **{axis: getattr(f, axis) * factor})
  raise ExpansionError(f"unknown expansion axis {axis!r}; known: {list(AXES)}")


def _between(prev: X3DFactors, axis: str, expanded: X3DFactors, crop_divisor: int) -> list[X3DFactors]:
  """The settings strictly between `prev` and `expanded` along `axis`, smallest first: what backward
  contraction chooses from."""
  if axis == "temporal":
    return [dataclasses.replace(prev, frames=t) for t in range(prev.frames + 1, expanded.frames)]
  if axis == "fast":   # fewer frames over the same duration
    duration = prev.frames * prev.sampling_stride
    return [dataclasses.replace(prev, frames=t, sampling_stride=max(1, round(duration / t)))
            for t in range(prev.frames + 1, expanded.frames)]
  if axis == "spatial":
    return [dataclasses.replace(prev, crop=c) for c in range(prev.crop + crop_divisor, expanded.crop, crop_divisor)]
  lo, hi = getattr(prev, axis), getattr(expanded, axis)
  grid = [lo * (hi / lo) ** (k / 64) for k in range(1, 64)]
  return [dataclasses.replace(prev, **{axis: round(v, 4)}) for v in grid]


def candidates(plan: Plan, current: X3DFactors, step: int) -> list[Candidate]:
  """The one-axis expansions of `current` within the plan's limits, one per axis; an axis that
  cannot grow, would pass its limit or would build the same network is left out."""
  out = []
  same = plan.spec(current).stages
  for axis in plan.axes:
    f = expand(current, axis, plan.factors[axis], plan.crop_divisor)
    if f is None or not plan.limits.allows(f):
      continue
    if axis in ("width", "bottleneck", "depth") and plan.spec(f).stages == same:
      continue
    out.append(Candidate(step, axis, "expand", f, current))
  return out


def select(plan: Plan, current: Scored, scored: Sequence[Scored]) -> int:
  """Index in `scored` of the candidate the plan's rule keeps (ties: the more accurate, then the
  cheaper)."""
  def key(s: Scored):
    if plan.selection == "accuracy":
      return (s.top1, -s.cost)
    doublings = max(math.log2(s.cost / current.cost), 1e-6)
    return ((s.top1 - current.top1) / doublings, s.top1, -s.cost)
  return max(range(len(scored)), key=lambda i: key(scored[i]))


def contract(plan: Plan, prev: X3DFactors, axis: str, expanded: X3DFactors) -> X3DFactors:
  """Backward contraction: along `axis`, the setting between `prev` and `expanded` whose cost is
  the largest not above the target (`prev` itself when every step along the axis passes it)."""
  best, best_cost = prev, plan.cost(prev)
  for f in _between(prev, axis, expanded, plan.crop_divisor):
    cost = plan.cost(f)
    if best_cost < cost <= plan.target:   # strictly costlier: a factor that rounds to prev's network is not a step
      best, best_cost = f, cost
  return best


def contract_other_axis(plan: Plan, prev: X3DFactors, axis: str, expanded: X3DFactors
                        ) -> tuple[str, X3DFactors] | None:
  """Where no setting of the last expanded `axis` lands within the target (e.g. 2 -> 4 frames
  passes it and 3 frames does too), shrink one of the other axes of `expanded` instead, down to the
  base's value: the (axis, factors) whose cost is the largest not above the target and above
  `prev`'s, or None. Our extension: the paper only contracts the last expansion."""
  base, best, best_cost = plan.base, None, plan.cost(prev)
  for other in plan.axes:
    if other == axis:
      continue
    if other == "fast":     # fewer frames over the expanded clip's duration
      low = dataclasses.replace(expanded, frames=1, sampling_stride=expanded.frames * expanded.sampling_stride)
    elif other == "temporal":
      low = dataclasses.replace(expanded, frames=base.frames)
    elif other == "spatial":
      low = dataclasses.replace(expanded, crop=base.crop)
    else:
      low = dataclasses.replace(expanded, **{other: getattr(base, other)})
    for f in _between(low, other, expanded, plan.crop_divisor):
      cost = plan.cost(f)
      if best_cost < cost <= plan.target and plan.limits.allows(f):
        best, best_cost = (other, f), cost
  return best


# ------------------------------------------------------------------------------------- checks
def check(plan: Plan, where: str = "") -> None:
  """ExpansionError, naming `where`'s keys, for: an unknown axis or selection, a factor <= 1, a base
  outside the limits, a target below the base's cost, or above what the axes can reach within
  their limits (only decidable when every axis in use is bounded)."""
  at = (lambda key: f"{where}.{key}") if where else (lambda key: key)
  if not plan.axes:
    raise ExpansionError(f"{at('axes')} is empty: name at least one of {list(AXES)}")
  for axis in plan.axes:
    if axis not in AXES:
      raise ExpansionError(f"{at('axes')}: unknown axis {axis!r}; known: {list(AXES)}")
  for axis, factor in plan.factors.items():
    if axis not in AXES:
      raise ExpansionError(f"{at('factors')}: unknown axis {axis!r}; known: {list(AXES)}")
    if not factor > 1:
      raise ExpansionError(f"{at('factors.' + axis)} = {factor!r} must be > 1 (an expansion grows its axis)")
  if plan.selection not in SELECTIONS:
    raise ExpansionError(f"{at('selection')} = {plan.selection!r}; choose one of {list(SELECTIONS)}")
  if plan.metric not in COST_METRICS:
    raise ExpansionError(f"the expansion's cost metric must be one of {list(COST_METRICS)}, got {plan.metric!r}")
  if not plan.limits.allows(plan.base):
    raise ExpansionError(f"{at('base')} {plan.base} is outside the limits {plan.limits}")
  base_cost = plan.cost(plan.base)
  if plan.target <= base_cost:
    raise ExpansionError(f"the cost target {plan.target:.6g} ({plan.metric}) is not above the base network's "
                         f"{base_cost:.6g}: nothing to expand; raise the target or shrink {at('base')}")
  reach = _reach(plan)
  if reach is not None and reach < plan.target:
    raise ExpansionError(f"the cost target {plan.target:.6g} ({plan.metric}) is above what the axes {list(plan.axes)} "
                         f"reach within their limits ({reach:.6g}); raise the limits ({at('max_*')}) or "
                         "lower the target")


def _unbounded(plan: Plan, axis: str) -> bool:
  """Whether `axis` can grow without end under the plan's limits (X-Fast always stops at stride 1)."""
  caps = {"temporal": plan.limits.span, "fast": 1, "spatial": plan.limits.crop, "width": plan.limits.width,
          "bottleneck": plan.limits.bottleneck, "depth": plan.limits.depth}
  return not caps[axis]


def _reach(plan: Plan) -> float | None:
  """The cost of the largest network the axes reach within their limits (each grown in turn until
  none can), or None when an axis in use is unbounded (any target is reachable)."""
  if any(_unbounded(plan, axis) for axis in plan.axes):
    return None
  f, grew = plan.base, True
  while grew:
    grew = False
    for axis in plan.axes:
      g = expand(f, axis, plan.factors[axis], plan.crop_divisor)
      if g is not None and plan.limits.allows(g):
        f, grew = g, True
  return plan.cost(f)


# ---------------------------------------------------------------------------------- the procedure
def run(plan: Plan, score: Callable[[Candidate], float], log: Callable[[str], None] = lambda _: None
        ) -> ExpansionResult:
  """The expansion: score the base, then per step score every one-axis candidate of the current
  network and keep the one `select` picks, until the kept one's cost passes the target; then
  contract it onto the target and score the contracted network. `score(candidate) -> top-1` trains
  and evaluates a candidate (the caller may answer from a record)."""
  check(plan)
  scored: list[Scored] = []

  def do(c: Candidate) -> Scored:
    s = Scored(c, plan.cost(c.factors), float(score(c)))
    scored.append(s)
    return s

  current = do(Candidate(0, "", "base", plan.base))
  path = [current]
  step = 0
  while current.cost < plan.target:
    step += 1
    cands = candidates(plan, current.candidate.factors, step)
    if not cands:   # every axis at its limit (a path can stop below the round-robin reach `check` tested)
      log(f"expansion step {step}: every axis is at its limit at {current.cost:.6g}, below the target "
          f"{plan.target:.6g}; the final network is step {step - 1}'s")
      break
    results = [do(c) for c in cands]
    chosen = results[select(plan, current, results)]
    log(f"expansion step {step}: {chosen.candidate.axis} -> top-1 {chosen.top1:.4f} at {chosen.cost:.6g} "
        f"({', '.join(f'{r.candidate.axis} {r.top1:.4f}' for r in results)})")
    path.append(chosen)
    previous, current = current, chosen
    if current.cost > plan.target:
      axis, shrunk = current.candidate.axis, contract(plan, previous.candidate.factors, current.candidate.axis,
                                                       current.candidate.factors)
      if shrunk == previous.candidate.factors:
        other = contract_other_axis(plan, previous.candidate.factors, axis, current.candidate.factors)
        if other is None:
          log(f"contraction: no setting of step {step}'s network fits the target; the final network is step "
              f"{step - 1}'s")
          current = previous
          break
        log(f"contraction: every {axis} setting past step {step - 1} is above the target; shrinking "
            f"{other[0]} of step {step}'s network instead")
        axis, shrunk = other
        parent = current.candidate.factors
      else:
        parent = previous.candidate.factors
      current = do(Candidate(step, axis, "contract", shrunk, parent))
      path.append(current)
      break
  return ExpansionResult(scored, path, current)
