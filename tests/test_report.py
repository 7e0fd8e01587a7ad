"""report: arch tables, report.md / results.json / per-model JSON, pareto.png and decisions.png, and the
typed Results object (dict -> Results -> dict round trips)."""
import dataclasses
import json
import math
import re

import numpy as np
import pytest

from autox3d_jax import report
from autox3d_jax.cost.analytic import arch_cost
from autox3d_jax.models import zoo
from autox3d_jax.models.spec import ArchSpec

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def small_x3d():
  return zoo.x3d("XS", num_classes=10, num_frames=4, crop_size=64, depths=(1, 2, 2, 1))


def searched_spec():
  base = small_x3d()
  stages = list(base.stages)
  s2 = stages[1]
  stages[1] = dataclasses.replace(s2, blocks=(
      dataclasses.replace(s2.blocks[0], kernel=(5, 3, 3), inner=96, se_ratio=0.25),
      dataclasses.replace(s2.blocks[1], type="x2d", kernel=(1, 5, 5), inner=144, se_ratio=0.3)))
  return base.replace(name="AutoX3D-tiny", stages=tuple(stages))


def fake_history(labels_choices, steps=6, seed=0):
  rng = np.random.default_rng(seed)
  probs = {}
  for label, names in labels_choices.items():
    logits = rng.normal(size=(steps, len(names))).cumsum(axis=0)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs[label] = (p / p.sum(axis=1, keepdims=True)).tolist()
  return {"steps": list(range(0, 10 * steps, 10)), "probs": probs, "choices": labels_choices}


def make_results(history=None):
  base, srch = small_x3d(), searched_spec()
  cb, cs = arch_cost(base), arch_cost(srch)
  return {
      "title": "tiny search",
      "models": [
          {"name": "AutoX3D-tiny", "kind": "searched", "top1": 0.7345, "top5": 0.9, "gflops": cs.gflops,
           "params": cs.params, "latency_ms": 1.5, "arch": srch},
          {"name": "X3D-XS (tiny)", "kind": "baseline", "top1": 0.701, "top5": None, "gflops": cb.gflops,
           "params": cb.params, "latency_ms": float("nan"), "arch": base.to_dict()},
          {"name": "no-acc", "kind": "random", "top1": None, "gflops": 0.5, "params": 1_234_567},
      ],
      "baseline_family": [{"name": f"X3D-{v}", "gflops": g, "top1": t}
                          for v, g, t in [("XS", 0.6, 0.686), ("S", 1.96, 0.729), ("M", 4.73, None)]],
      "decision_history": history if history is not None else fake_history(
          {"s1_width": ["12", "24", "36"], "s1_depth": ["1", "2"], "s1_b1_op": ["x3d_333", "x2d_133"],
           "s1_b1_se": ["0", "1/16"]}),
      "search": {"strategy": "gumbel", "steps": 50, "target": {"gflops": 0.02}},
      "notes": ["tiny test run"],
  }


def check_png(path):
  with open(path, "rb") as f:
    data = f.read()
  assert data[:8] == PNG_SIGNATURE
  assert len(data) > 1024
  import matplotlib.image
  img = matplotlib.image.imread(path)
  assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
  assert img[..., :3].std() > 0.01  # not a blank canvas


def test_format_helpers():
  assert report.fmt_se(0.0) == "-"
  assert report.fmt_se(1 / 16) == "1/16"
  assert report.fmt_se(0.3) == "0.3"
  assert report.fmt_gflops(1.9627) == "1.96"
  assert report.fmt_gflops(0.012345) == "0.0123"
  assert report.fmt_gflops(24.831) == "24.83"
  for missing in (None, float("nan")):
    assert report.fmt_gflops(missing) == report.fmt_percent(missing) == report.fmt_ms(missing) == "–"
  assert report.fmt_percent(0.7345) == "73.5" or report.fmt_percent(0.7345) == "73.4"


def test_arch_table_rows_and_totals():
  spec = searched_spec()
  cost = arch_cost(spec)
  table = report.arch_table(spec)
  assert table == report.arch_table(spec.to_dict())  # dicts accepted too
  header = table.splitlines()[0]
  assert "AutoX3D-tiny" in header and "4 × 64×64" in header
  assert f"{report.fmt_gflops(cost.gflops)} GFLOPs" in header
  assert f"{report.fmt_params_m(cost.params)} M params" in header
  rows = {line.split("|")[2].strip(): [c.strip() for c in line.strip("|").split("|")]
          for line in table.splitlines() if line.startswith("| ")}
  for label in ["stem", "s1_b1", "s2_b1", "s2_b2", "s3_b2", "s4_b1", "head"]:
    assert label in rows, label
    assert int(rows[label][9].replace(",", "")) == cost.layers[label].params
    assert float(rows[label][10].replace(",", "")) == pytest.approx(cost.layers[label].flops / 1e6, abs=0.006)
  # stage, block, type, kernel, width, inner, expansion, SE, stride
  assert rows["s2_b1"][:9] == ["2", "s2_b1", "x3d", "5x3x3", "48", "96", "2.00", "1/4", "2"]
  assert rows["s2_b2"][:9] == ["2", "s2_b2", "x2d", "1x5x5", "48", "144", "3.00", "0.3", "1"]
  assert rows["s1_b1"][7] == "1/16"
  with_heads = spec.replace(stages=(spec.stages[0], spec.stages[1].__class__(
      (dataclasses.replace(spec.stages[1].blocks[0], type="lsa", kernel=(2, 4, 4), heads=3),)
      + spec.stages[1].blocks[1:])) + spec.stages[2:])
  attention_row = [line for line in report.arch_table(with_heads).splitlines() if "| s2_b1 |" in line][0]
  assert "| lsa (3 heads) | 2x4x4 |" in attention_row
  total = [line for line in table.splitlines() if "**total**" in line][0]
  nums = re.findall(r"\*\*([\d,.]+)\*\*", total)
  assert int(nums[0].replace(",", "")) == cost.params
  assert float(nums[1].replace(",", "")) == pytest.approx(cost.flops / 1e6, abs=0.006)
  n_blocks = sum(spec.depths)
  n_rows = len([line for line in table.splitlines() if line.startswith("| ")])
  assert n_rows == 1 + n_blocks + 3  # column header, stem, blocks, head, total


def test_write_report_files_and_round_trip(tmp_path):
  results = make_results()
  paths = report.write_report(tmp_path / "rep", results)
  for key in ["results", "report", "pareto", "decisions", "arch:AutoX3D-tiny", "arch:X3D-XS (tiny)"]:
    assert key in paths and (tmp_path / "rep").joinpath(paths[key]).exists(), key
  assert not any(k.endswith("_skipped") for k in paths)
  assert paths["arch:X3D-XS (tiny)"].endswith("X3D-XS_tiny.json")
  assert ArchSpec.load(paths["arch:AutoX3D-tiny"]) == searched_spec()

  back = report.read_results(tmp_path / "rep")
  assert back == json.load(open(paths["results"]))
  assert ArchSpec.from_dict(back["models"][0]["arch"]) == searched_spec()
  assert ArchSpec.from_dict(back["models"][1]["arch"]) == small_x3d()
  assert back["models"][1]["latency_ms"] is None  # NaN stored as null
  assert back["search"]["target"] == {"gflops": 0.02}
  np.testing.assert_allclose(back["decision_history"]["probs"]["s1_width"],
                             results["decision_history"]["probs"]["s1_width"])
  assert report.read_results(tmp_path / "rep", as_specs=True)["models"][0]["arch"] == searched_spec()

  md = open(paths["report"]).read()
  cs, cb = arch_cost(searched_spec()), arch_cost(small_x3d())
  assert md.startswith("# tiny search")
  assert (f"| AutoX3D-tiny | searched | 73.5 | 90.0 | {report.fmt_gflops(cs.gflops)} | "
          f"{report.fmt_params_m(cs.params)} | 1.50 |") in md
  assert (f"| X3D-XS (tiny) | baseline | 70.1 | – | {report.fmt_gflops(cb.gflops)} | "
          f"{report.fmt_params_m(cb.params)} | – |") in md
  assert "| no-acc | random | – | – | 0.500 | 1.23 | – |" in md
  assert report.arch_table(searched_spec()) in md and report.arch_table(small_x3d()) in md
  assert "| target.gflops | 0.02 |" in md and "- tiny test run" in md
  assert "pareto.png" in md and "decisions.png" in md
  check_png(paths["pareto"])
  check_png(paths["decisions"])

  # A reloaded results.json renders again (archs as dicts; history dropped to keep the test fast).
  back.pop("decision_history")
  again = open(report.write_report(tmp_path / "again", back)["report"]).read()
  section = lambda text, name: text.split(f"## {name}")[1].split("\n## ")[0]
  for name in ("Results", "Architectures", "Search"):
    assert section(again, name) == section(md, name)


def test_optional_parts_missing(tmp_path):
  results = {"models": [{"name": "m|1", "gflops": 1.0, "params": 2_000_000}]}
  paths = report.write_report(tmp_path, results)
  assert "decisions" not in paths and "no decision_history" in paths["decisions_skipped"]
  assert not (tmp_path / "decisions.png").exists()
  check_png(paths["pareto"])  # cost axis only
  md = open(paths["report"]).read()
  assert r"| m\|1 | other | – | – | 1.00 | 2.00 | – |" in md
  assert "## Architectures" not in md
  paths = report.write_report(tmp_path / "empty", {"title": "nothing", "models": []})
  assert set(paths) == {"results", "report", "pareto_skipped", "decisions_skipped"}


def test_decisions_many_labels(tmp_path):
  from autox3d_jax.search.space import SearchSpace, space_config
  space = SearchSpace(space_config())
  labels = {d.label: [str(getattr(c, "label", c)) for c in d.choices] for d in space.decisions}
  assert len(labels) > report.MAX_DECISION_PANELS
  results = make_results(fake_history(labels, steps=5))
  results.pop("baseline_family")
  paths = report.write_report(tmp_path, results)
  check_png(paths["decisions"])


def test_single_step_history(tmp_path):
  results = make_results({"steps": [7], "probs": {"s1_width": [[0.2, 0.8]]}})
  check_png(report.write_report(tmp_path, results)["decisions"])


@pytest.mark.parametrize("mutate, key", [
    (lambda r: r.pop("models"), "'models'"),
    (lambda r: r["models"][1].pop("name"), "results['models'][1] is missing required key 'name'"),
    (lambda r: r["models"][0].pop("gflops"), "results['models'][0] is missing required key 'gflops'"),
    (lambda r: r["models"][2].pop("params"), "results['models'][2] is missing required key 'params'"),
    (lambda r: r["models"][0].update(top1=73.4), "results['models'][0]['top1']"),
    (lambda r: r["models"][0].update(gflops="lots"), "results['models'][0]['gflops']"),
    (lambda r: r["baseline_family"][2].pop("gflops"), "results['baseline_family'][2]"),
    (lambda r: r["decision_history"]["steps"].pop(), "results['decision_history']['steps']"),
    (lambda r: r["decision_history"]["choices"]["s1_width"].pop(), "['choices']['s1_width']"),
    (lambda r: r["models"][0].update(top1_per_seed=[0.7, 73.0]), "results['models'][0]['top1_per_seed'][1]"),
    (lambda r: r["models"][0].update(top1_per_seed=0.7), "results['models'][0]['top1_per_seed']"),
    (lambda r: r["models"][0].update(top1_per_seed=[0.7, 0.8], seeds=[0]), "results['models'][0]['seeds']"),
])
def test_bad_input_names_the_key(tmp_path, mutate, key):
  results = make_results()
  mutate(results)
  with pytest.raises(ValueError) as e:
    report.write_report(tmp_path / "bad", results)
  assert key in str(e.value)
  assert not (tmp_path / "bad").exists()  # nothing written on bad input


def test_params_derived_from_arch(tmp_path):
  spec = small_x3d()
  paths = report.write_report(tmp_path, {"models": [{"name": "a", "gflops": 0.1, "arch": spec}]})
  assert report.read_results(tmp_path)["models"][0]["params"] == arch_cost(spec).params
  assert math.isclose(report.read_results(paths["results"])["models"][0]["gflops"], 0.1)


def test_per_seed_column_only_when_several_seeds(tmp_path):
  results = {"models": [
      {"name": "searched", "kind": "searched", "gflops": 0.1, "params": 1000, "top1": 0.6545,
       "top1_per_seed": [0.68, 0.6275, 0.6587, 0.6963, 0.61], "seeds": [0, 1, 2, 3, 4]},
      {"name": "one-seed", "kind": "baseline", "gflops": 0.1, "params": 1000, "top1": 0.5, "top1_per_seed": [0.5]},
      {"name": "no-seeds", "gflops": 0.2, "params": 1000, "top1": 0.4}]}
  md = open(report.write_report(tmp_path / "a", results)["report"]).read()
  assert "| model | kind | top-1 % (mean) | top-5 % | GFLOPs | params (M) | latency ms | top-1 % per seed |" in md
  assert "| searched | searched | 65.5 | – | 0.100 | 0.00100 | – | 68.0 / 62.7 / 65.9 / 69.6 / 61.0 |" in md
  assert "| one-seed | baseline | 50.0 | – | 0.100 | 0.00100 | – | 50.0 |" in md
  assert "| no-seeds | other | 40.0 | – | 0.200 | 0.00100 | – | – |" in md
  assert report.read_results(tmp_path / "a")["models"][0]["top1_per_seed"] == results["models"][0]["top1_per_seed"]
  # One seed per model: the plain table, as before.
  results["models"][0]["top1_per_seed"] = [0.6545]
  del results["models"][0]["seeds"]
  md = open(report.write_report(tmp_path / "b", results)["report"]).read()
  assert "| model | kind | top-1 % | top-5 % | GFLOPs | params (M) | latency ms |\n" in md


# ------------------------------------------------------------------------------------------ Results
def _report_files(d):
  """Every file of a report folder, report.md without its timestamp line."""
  out = {}
  for p in sorted(d.iterdir()):
    data = p.read_bytes()
    if p.name == "report.md":
      data = re.sub(rb"_Written [^\n]* by", b"_Written by", data)
    out[p.name] = data
  return out


def test_results_round_trip_is_identity(tmp_path):
  results = make_results()
  res = report.Results.from_dict(results)
  assert isinstance(res.models[0], report.ModelResult) and res.models[1].arch == small_x3d()
  assert res.models[1].latency_ms is None and res.models[2].kind == "random"
  assert isinstance(res.baseline_family[0], report.FamilyPoint) and res.baseline_family[2].top1 is None
  assert isinstance(res.decision_history, report.DecisionHistory) and res.decision_history.steps[-1] == 50
  assert res.search.strategy == "gumbel" and res.search.steps == 50 and res.search.extra == {"target": {"gflops": 0.02}}
  assert res.notes == ("tiny test run",)

  paths = report.write_report(tmp_path, results)
  stored = report.read_results(tmp_path)
  # A raw dict comes out as exactly what results.json holds ...
  assert res.to_dict() == stored
  assert json.dumps(res.to_dict(), indent=2) == open(paths["results"]).read()
  # ... and results.json round trips to itself, key order included.
  again = report.Results.from_dict(stored).to_dict()
  assert again == stored and json.dumps(again) == json.dumps(stored)
  assert report.Results.from_dict(stored) == res
  # ArchSpecs (read_results(as_specs=True)) parse to the same Results.
  assert report.Results.from_dict(report.read_results(tmp_path, as_specs=True)) == res


def test_round_trip_keeps_unknown_keys_and_order():
  d = {"models": [{"gflops": 1.5, "name": "a", "params": 10, "mine": {"x": [1, 2]}, "extra": 1, "arch": None,
                   "top1_per_seed": [0.5, None], "seeds": [3, 4]}],
       "baseline_family": None, "notes": None, "custom": 7,
       "search": {"point": {"s1_width": 2}, "seconds": 1.5, "target": {"gflops": 0.1}},
       "decision_history": {"probs": {"s1_width": [[0.5, 0.5]]}, "temperature": [1.0]}}
  out = report.Results.from_dict(d).to_dict()
  # Defaults are filled in after the given keys, exactly as results.json has always had them.
  assert list(out) == ["models", "baseline_family", "notes", "custom", "search", "decision_history", "title"]
  assert list(out["models"][0]) == ["gflops", "name", "params", "mine", "extra", "arch", "top1_per_seed", "seeds", "kind",
                                    "top1", "top5", "latency_ms"]
  assert out["models"][0]["mine"] == {"x": [1, 2]} and out["models"][0]["extra"] == 1
  assert out["models"][0]["arch"] is None
  assert out["models"][0]["top1_per_seed"] == [0.5, None] and out["models"][0]["seeds"] == [3, 4]
  assert out["baseline_family"] is None and out["notes"] is None and out["custom"] == 7
  assert out["search"] == d["search"] and list(out["search"]) == ["point", "seconds", "target"]
  assert out["decision_history"] == {"probs": {"s1_width": [[0.5, 0.5]]}, "temperature": [1.0], "steps": [0],
                                     "choices": {"s1_width": ["0", "1"]}}
  assert out["title"] == "AutoX3D search report"
  assert report.Results.from_dict(out).to_dict() == out
  assert json.dumps(report.Results.from_dict(out).to_dict()) == json.dumps(out)


def test_results_object_writes_the_same_files_as_the_dict(tmp_path):
  results = make_results()
  report.write_report(tmp_path / "dict", results)
  report.write_report(tmp_path / "obj", report.Results.from_dict(results))
  assert _report_files(tmp_path / "dict") == _report_files(tmp_path / "obj")


def test_results_built_directly(tmp_path):
  """The constructor calls run.py makes: what it writes equals what the equivalent dict writes."""
  spec, base = searched_spec(), small_x3d()
  hist = fake_history({"s1_width": ["12", "24", "36"], "s1_b1_op": ["x3d_333", "x2d_133"]}, steps=4)
  direct = report.Results(
      title="autox3d_jax demo: tiny",
      models=[report.ModelResult(name=spec.name, kind="searched", top1=0.61, top5=0.9,
                                 gflops=arch_cost(spec).gflops, params=arch_cost(spec).params, arch=spec,
                                 seeds=[0, 1], top1_per_seed=[0.6, 0.62]),
              report.ModelResult(name="X3D-XS", kind="baseline", gflops=arch_cost(base).gflops, arch=base)],
      baseline_family=[report.FamilyPoint(name="X3D-XS @ 4x64", gflops=0.03, top1=None)],
      notes=["a note"],
      search=report.SearchInfo(strategy="gumbel", steps=40, cost_metric="gflops", seconds=3.2, cost_target=0.04,
                               derived_cost=0.039, point={"s1_width": 1, "s1_b1_op": 0}),
      decision_history=report.DecisionHistory(steps=hist["steps"], probs=hist["probs"], choices=hist["choices"]))
  as_dict = {"title": "autox3d_jax demo: tiny",
             "models": [{"name": spec.name, "kind": "searched", "top1": 0.61, "top5": 0.9,
                         "gflops": arch_cost(spec).gflops, "params": arch_cost(spec).params, "arch": spec,
                         "seeds": [0, 1], "top1_per_seed": [0.6, 0.62]},
                        {"name": "X3D-XS", "kind": "baseline", "gflops": arch_cost(base).gflops, "arch": base}],
             "baseline_family": [{"name": "X3D-XS @ 4x64", "gflops": 0.03, "top1": None}],
             "notes": ["a note"],
             "search": {"strategy": "gumbel", "steps": 40, "cost_metric": "gflops", "seconds": 3.2,
                        "cost_target": 0.04, "derived_cost": 0.039, "point": {"s1_width": 1, "s1_b1_op": 0}},
             "decision_history": hist}
  paths = report.write_report(tmp_path / "obj", direct)
  report.write_report(tmp_path / "dict", as_dict)
  obj, dct = _report_files(tmp_path / "obj"), _report_files(tmp_path / "dict")
  # results.json: the same content; the dict's second model lists its defaults after 'arch'.
  assert json.loads(obj.pop("results.json")) == json.loads(dct.pop("results.json"))
  assert obj == dct
  stored = report.read_results(paths["results"])
  assert stored["models"][1]["params"] == arch_cost(base).params  # derived from the arch
  assert list(stored) == ["title", "models", "baseline_family", "notes", "search", "decision_history"]
  assert list(stored["models"][0]) == ["name", "kind", "top1", "top5", "gflops", "params", "arch", "seeds",
                                       "top1_per_seed", "latency_ms"]


def test_results_object_checked_like_a_dict(tmp_path):
  bad = report.Results(models=[report.ModelResult(name="a", gflops=0.1, params=5),
                               report.ModelResult(name="b", gflops=0.1, params=5, top1=73.4)])
  with pytest.raises(ValueError, match=re.escape("results['models'][1]['top1'] must be a fraction")):
    report.write_report(tmp_path / "bad", bad)
  assert not (tmp_path / "bad").exists()
  with pytest.raises(ValueError, match=re.escape("results['search'] must be a dict")):
    report.Results.from_dict({"models": [], "search": "gumbel"})
