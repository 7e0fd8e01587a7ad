"""What a report shows, as frozen dataclasses: `Results` holds `ModelResult`s, `FamilyPoint`s, a
`DecisionHistory` and a `SearchInfo`.

    res = Results.from_dict(d)   # d: a results dict / a loaded results.json -> Results (ValueError on bad input)
    d2 = res.to_dict()           # -> a JSON-native dict, exactly what write_report stores as results.json

`from_dict` checks the input and fills in defaults (title, kind 'other', params from the arch, ...); its
ValueErrors name the offending key ("results['models'][1]['top1'] must be a fraction in [0, 1] ...").
`to_dict` writes ArchSpecs as their dicts, NaN as None, tuples as lists. For a valid results dict in
results.json form (as `read_results` gives it), `Results.from_dict(d).to_dict() == d`, key order
included. Keys a class does not know are kept in its `extra` and written back where they were.

Built directly (e.g. `ModelResult(name=..., gflops=..., arch=spec)`), nothing is checked until
`write_report`, which runs every check of `from_dict` on `to_dict()` first; keys then come out in the
canonical order (the order of each class's fields below). Imports neither matplotlib nor numpy at
module level.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import os
from typing import Any, Mapping, Sequence

from autox3d_jax.cost.analytic import arch_cost
from autox3d_jax.models.spec import ArchSpec

DEFAULT_TITLE = "AutoX3D search report"

_field = dataclasses.field
_record = dataclasses.dataclass(frozen=True, kw_only=True)


# ------------------------------------------------------------------------------------------ checks
def is_missing(x: Any) -> bool:
  """None or NaN (what tables print as '–')."""
  if x is None:
    return True
  try:
    return math.isnan(float(x))
  except (TypeError, ValueError):
    return False


def _num(value: Any, where: str, *, optional: bool) -> float | None:
  if is_missing(value):
    if optional:
      return None
    raise ValueError(f"{where} is required and must be a number, got {value!r}")
  if isinstance(value, bool):
    raise ValueError(f"{where} must be a number, got {value!r}")
  try:
    return float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{where} must be a number, got {value!r}") from None


def _fraction(value: Any, where: str) -> float | None:
  v = _num(value, where, optional=True)
  if v is not None and not 0.0 <= v <= 1.0:
    raise ValueError(f"{where} must be a fraction in [0, 1] (not a percentage), got {value!r}")
  return v


def _require(d: Any, key: str, where: str) -> Any:
  if not isinstance(d, Mapping):
    raise ValueError(f"{where} must be a dict, got {type(d).__name__}")
  if key not in d:
    raise ValueError(f"{where} is missing required key '{key}'")
  return d[key]


def _is_list(x: Any) -> bool:
  return isinstance(x, Sequence) and not isinstance(x, (str, bytes))


def as_spec(arch: Any, where: str) -> ArchSpec:
  """An ArchSpec, or its dict parsed; ValueError naming `where` otherwise."""
  if isinstance(arch, ArchSpec):
    return arch
  if isinstance(arch, Mapping):
    try:
      return ArchSpec.from_dict(arch)
    except ValueError as e:  # SpecError
      raise ValueError(f"{where}: {e}") from e
  raise ValueError(f"{where} must be an ArchSpec or its dict, got {type(arch).__name__}")


# ------------------------------------------------------------------------------------------ JSON
def jsonable(obj: Any) -> Any:
  """`obj` as JSON-native data: ArchSpecs and the classes here via their dicts, other dataclasses via
  `asdict`, arrays via `tolist`, NaN / inf as None, dates as ISO strings, paths as strings, the rest str."""
  if isinstance(obj, _RECORDS):
    return obj.to_dict()
  if isinstance(obj, ArchSpec):
    return jsonable(obj.to_dict())  # its tuples as lists
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return jsonable(dataclasses.asdict(obj))
  if isinstance(obj, Mapping):
    return {str(k): jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple, set, frozenset)):
    return [jsonable(v) for v in obj]
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if obj is None or isinstance(obj, (str, int, bool)):
    return obj
  if hasattr(obj, "tolist"):  # numpy / jax arrays and scalars
    return jsonable(obj.tolist())
  if isinstance(obj, (datetime.date, datetime.datetime)):
    return obj.isoformat()
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  return str(obj)


def _extra(d: Mapping, known: Sequence[str]) -> dict:
  return {k: v for k, v in d.items() if k not in known}


def _order(d: Mapping, appended: Sequence[str]) -> tuple:
  """The key order of the checked dict: `d`'s own keys, then the defaults filled in, in `appended` order."""
  return tuple(d) + tuple(k for k in appended if k not in d)


def _emit(fields: Sequence[tuple[str, Any, bool]], extra: Mapping, key_order: Sequence) -> dict:
  """fields: (key, value, always); an optional key is written when not None or when the source had it.
  Keys come in `key_order` (the source's), then the rest in canonical order."""
  present = set(key_order)
  d = {k: v for k, v, always in fields if always or v is not None or k in present}
  d.update(extra)
  if key_order:
    ordered = {k: d[k] for k in key_order if k in d}
    ordered.update((k, v) for k, v in d.items() if k not in ordered)
    d = ordered
  return jsonable(d)


def _no_order():
  # `_key_order`: the key order of the dict a record was read from, so to_dict writes its keys back in
  # that order (results.json unchanged by a round trip); () when built directly: canonical order.
  return _field(default=(), compare=False, repr=False)


# ------------------------------------------------------------------------------------------ records
@_record
class ModelResult:
  """One row of the results table (and one point of pareto.png).

  top1 / top5: fractions in [0, 1] or None (unknown); with several seeds top1 is their mean and
  `top1_per_seed` each seed's value. params None: taken from `arch` (its `arch_cost`). arch: the
  network, written to <name>.json and drawn as a per-block table."""
  name: str
  gflops: float
  params: int | float | None = None
  kind: str = "other"
  top1: float | None = None
  top5: float | None = None
  arch: ArchSpec | None = None
  seeds: tuple | None = None
  top1_per_seed: tuple[float | None, ...] | None = None
  latency_ms: float | None = None
  extra: Mapping[str, Any] = _field(default_factory=dict)
  _key_order: tuple = _no_order()

  @classmethod
  def from_dict(cls, m: Any, where: str = "model") -> "ModelResult":
    name = _require(m, "name", where)
    if not isinstance(name, str) or not name:
      raise ValueError(f"{where}['name'] must be a non-empty string, got {name!r}")
    kind = str(m.get("kind") or "other")
    gflops = _num(_require(m, "gflops", where), f"{where}['gflops']", optional=False)
    arch = m.get("arch")
    spec = as_spec(arch, f"{where}['arch']") if arch is not None else None
    if m.get("params") is None and arch is not None:
      params = arch_cost(spec).params
    else:
      params = _num(_require(m, "params", where), f"{where}['params']", optional=False)
      params = int(params) if float(params).is_integer() else params
    top1 = _fraction(m.get("top1"), f"{where}['top1']")
    top5 = _fraction(m.get("top5"), f"{where}['top5']")
    per_seed = m.get("top1_per_seed")
    seeds = m.get("seeds")
    if per_seed is not None:
      if not _is_list(per_seed) or not per_seed:
        raise ValueError(f"{where}['top1_per_seed'] must be a non-empty list of fractions, got {per_seed!r}")
      per_seed = tuple(_fraction(v, f"{where}['top1_per_seed'][{k}]") for k, v in enumerate(per_seed))
      if seeds is not None and len(seeds) != len(per_seed):
        raise ValueError(f"{where}['seeds'] has {len(seeds)} entries for {len(per_seed)} per-seed top-1 values")
    if seeds is not None:
      if hasattr(seeds, "tolist"):
        seeds = seeds.tolist()
      if not _is_list(seeds):
        raise ValueError(f"{where}['seeds'] must be a list, got {seeds!r}")
      seeds = tuple(seeds)
    latency = _num(m.get("latency_ms"), f"{where}['latency_ms']", optional=True)
    known = ("name", "gflops", "params", "kind", "top1", "top5", "arch", "seeds", "top1_per_seed", "latency_ms")
    return cls(name=name, gflops=gflops, params=params, kind=kind, top1=top1, top5=top5, arch=spec,
               seeds=seeds, top1_per_seed=per_seed, latency_ms=latency, extra=_extra(m, known),
               _key_order=_order(m, ("kind", "params", "top1", "top5", "latency_ms")))

  def to_dict(self) -> dict:
    return _emit([("name", self.name, True), ("kind", self.kind, True), ("top1", self.top1, True),
                  ("top5", self.top5, True), ("gflops", self.gflops, True), ("params", self.params, True),
                  ("arch", self.arch, False), ("seeds", self.seeds, False),
                  ("top1_per_seed", self.top1_per_seed, False), ("latency_ms", self.latency_ms, True)],
                 self.extra, self._key_order)


@_record
class FamilyPoint:
  """One model of the baseline family (the grey line of pareto.png): cost, and top-1 if known."""
  name: str
  gflops: float
  top1: float | None = None
  extra: Mapping[str, Any] = _field(default_factory=dict)
  _key_order: tuple = _no_order()

  @classmethod
  def from_dict(cls, b: Any, where: str = "baseline family row") -> "FamilyPoint":
    name = _require(b, "name", where)
    return cls(name=str(name), gflops=_num(_require(b, "gflops", where), f"{where}['gflops']", optional=False),
               top1=_fraction(b.get("top1"), f"{where}['top1']"),
               extra=_extra(b, ("name", "gflops", "top1")), _key_order=_order(b, ("top1",)))

  def to_dict(self) -> dict:
    return _emit([("name", self.name, True), ("gflops", self.gflops, True), ("top1", self.top1, True)],
                 self.extra, self._key_order)


@_record
class DecisionHistory:
  """How each decision's distribution moved during the search (decisions.png).

  steps: the logged search steps. probs: label -> one row per logged step of one probability per
  choice. choices: label -> the choices' names (from_dict fills in '0', '1', ... where missing)."""
  steps: tuple
  probs: Mapping[str, tuple[tuple[float, ...], ...]]
  choices: Mapping[str, tuple[str, ...]] = _field(default_factory=dict)
  extra: Mapping[str, Any] = _field(default_factory=dict)
  _key_order: tuple = _no_order()

  @classmethod
  def from_dict(cls, history: Any, where: str = "results['decision_history']") -> "DecisionHistory":
    import numpy as np
    probs = _require(history, "probs", where)
    if not isinstance(probs, Mapping):
      raise ValueError(f"{where}['probs'] must be a dict label -> [[p per choice] per step]")
    arrays = {}
    for label, rows in probs.items():
      w = f"{where}['probs'][{label!r}]"
      try:
        a = np.asarray(rows, dtype=np.float64)
      except (TypeError, ValueError) as e:
        raise ValueError(f"{w} must be a rectangular [steps][choices] array: {e}") from None
      if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"{w} must be a [steps][choices] array, got shape {a.shape}")
      if not np.all(np.isfinite(a)):
        raise ValueError(f"{w} contains NaN or inf")
      arrays[str(label)] = a
    n_steps = {a.shape[0] for a in arrays.values()}
    if len(n_steps) > 1:
      raise ValueError(f"{where}['probs']: labels have different step counts {n_steps}")
    n = n_steps.pop() if n_steps else 0
    steps = history.get("steps")
    if steps is None:
      steps = list(range(n))
    steps = [s.item() if hasattr(s, "item") else s for s in np.asarray(steps).reshape(-1).tolist()]
    if len(steps) != n:
      raise ValueError(f"{where}['steps'] has {len(steps)} entries but probs have {n} logged steps")
    choices = dict(history.get("choices") or {})
    for label, a in arrays.items():
      names = choices.get(label)
      if names is None:
        choices[label] = tuple(str(k) for k in range(a.shape[1]))
      elif len(names) != a.shape[1]:
        raise ValueError(f"{where}['choices'][{label!r}] has {len(names)} names but probs have "
                         f"{a.shape[1]} choices")
      else:
        choices[label] = tuple(str(c) for c in names)
    return cls(steps=tuple(steps), probs={k: tuple(map(tuple, a.tolist())) for k, a in arrays.items()},
               choices=choices, extra=_extra(history, ("steps", "probs", "choices")),
               _key_order=_order(history, ("steps", "probs", "choices")))

  def to_dict(self) -> dict:
    return _emit([("steps", self.steps, True), ("probs", self.probs, True), ("choices", self.choices, True)],
                 self.extra, self._key_order)


@_record
class SearchInfo:
  """The search's settings and outcome, printed as the report's 'Search' table. Nothing is checked:
  every field is optional metadata (None fields are left out); other keys go to `extra`.

  strategy / steps / cost_metric: config.search's. seconds: search wall time. cost_target: the
  budget; derived_cost: the derived architecture's cost in cost_metric units. point: label -> choice
  index of the derived architecture."""
  strategy: str | None = None
  steps: int | None = None
  cost_metric: str | None = None
  seconds: float | None = None
  cost_target: float | None = None
  derived_cost: float | None = None
  point: Mapping[str, int] | None = None
  extra: Mapping[str, Any] = _field(default_factory=dict)
  _key_order: tuple = _no_order()

  _KEYS = ("strategy", "steps", "cost_metric", "seconds", "cost_target", "derived_cost", "point")

  @classmethod
  def from_dict(cls, s: Any, where: str = "results['search']") -> "SearchInfo":
    if not isinstance(s, Mapping):
      raise ValueError(f"{where} must be a dict of settings, got {type(s).__name__}")
    return cls(**{k: s[k] for k in cls._KEYS if k in s}, extra=_extra(s, cls._KEYS), _key_order=tuple(s))

  def to_dict(self) -> dict:
    return _emit([(k, getattr(self, k), False) for k in self._KEYS], self.extra, self._key_order)


@_record
class Results:
  """Everything one report shows. models: the results table rows, in order. baseline_family: the
  reference curve (None: not given). decision_history / search / notes: optional sections. title
  None: 'AutoX3D search report'."""
  models: tuple[ModelResult, ...]
  title: str | None = None
  baseline_family: tuple[FamilyPoint, ...] | None = None
  notes: tuple[str, ...] | None = None
  search: SearchInfo | None = None
  decision_history: DecisionHistory | None = None
  extra: Mapping[str, Any] = _field(default_factory=dict)
  _key_order: tuple = _no_order()

  @classmethod
  def from_dict(cls, results: Any) -> "Results":
    """`results`: a dict as documented in `autox3d_jax.report` (or a loaded results.json); a Results is
    returned as it is. ValueError naming the offending key, e.g. "results['models'][1]['top1']"."""
    if isinstance(results, Results):
      return results
    if not isinstance(results, Mapping):
      raise ValueError(f"results must be a dict, got {type(results).__name__}")
    title = str(results.get("title") or DEFAULT_TITLE)
    models = _require(results, "models", "results")
    if not _is_list(models):
      raise ValueError(f"results['models'] must be a list, got {type(models).__name__}")
    models = tuple(ModelResult.from_dict(m, f"results['models'][{i}]") for i, m in enumerate(models))
    family = results.get("baseline_family")
    if family is not None:
      family = tuple(FamilyPoint.from_dict(b, f"results['baseline_family'][{i}]") for i, b in enumerate(family))
    history = results.get("decision_history")
    if history is not None:
      history = DecisionHistory.from_dict(history)
    notes = results.get("notes")
    if notes is not None:
      if isinstance(notes, str):
        notes = [notes]
      notes = tuple(str(n) for n in notes)
    search = results.get("search")
    if search is not None:
      search = SearchInfo.from_dict(search)
    known = ("title", "models", "baseline_family", "decision_history", "search", "notes")
    return cls(title=title, models=models, baseline_family=family, decision_history=history, search=search,
               notes=notes, extra=_extra(results, known), _key_order=_order(results, ("title",)))

  def to_dict(self) -> dict:
    """The results.json dict (JSON-native)."""
    return _emit([("title", self.title, True), ("models", self.models, True),
                  ("baseline_family", self.baseline_family, False), ("notes", self.notes, False),
                  ("search", self.search, False), ("decision_history", self.decision_history, False)],
                 self.extra, self._key_order)


_RECORDS = (ModelResult, FamilyPoint, DecisionHistory, SearchInfo, Results)
