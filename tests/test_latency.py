"""Measured latency table (cost/latency/): dedupe, JSON, reuse/rebuild, exact differentiable expectation,
validation against end-to-end timing, memory analysis. Timing values are never asserted (shared CPUs);
most tests replace the timer with a deterministic fake so they run in milliseconds."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autox3d_jax import config as config_lib
from autox3d_jax import labels
from autox3d_jax.cost import latency as L
from autox3d_jax.cost.latency import measure
from autox3d_jax.models.spec import HeadSpec, StemSpec
from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.space import Op, SearchSpace, SpaceConfig

HEAD = HeadSpec(conv5_width=32, head_width=64, dropout=0.0, num_classes=10)
STEM = StemSpec(width=8)


def small_space(**overrides) -> SearchSpace:
  """2 stages, 2-3 choices per decision, 4x32 clips."""
  kw = dict(num_frames=4, crop_size=32, stem=STEM, stage_widths=((8, 12), (16, 24)), min_depths=(1, 1),
            max_depths=(3, 3), expansions=(1.5, 3.0), se_ratios=(0.0, 0.25),
            ops=(Op("x3d", (3, 3, 3)), Op("x2d", (1, 3, 3)), Op("r2plus1d", (3, 3, 3))), head=HEAD,
            sampling_stride=1, input_frames=(), input_strides=(), input_crops=(), downsample=(), downsample_heads=0)
  kw.update(overrides)
  return SearchSpace(SpaceConfig(**kw))


def tiny_space() -> SearchSpace:
  """For real timing (each measured piece is one XLA compile, ~1 s on a loaded CPU): 4 unique blocks."""
  return small_space(stage_widths=((8,), (16,)), max_depths=(2, 2), expansions=(2.0,), se_ratios=(0.25,),
                     ops=(Op("x3d", (3, 3, 3)),))


def latency_cfg(**overrides):
  """config.latency as base_config() has it, with `overrides` (a missing key is an error, not a default)."""
  cfg = config_lib.base_config().latency
  cfg.update(overrides)
  return cfg


def quick_table(space, **overrides) -> L.LatencyTable:
  """`build_table` with config.latency's settings (and `overrides`), no progress bar."""
  c = latency_cfg(**overrides)
  return L.build_table(space, batch_size=c.batch_size, dtype=c.dtype, warmup=c.warmup, repeats=c.repeats,
                       min_time_s=c.min_time_s, statistic=c.statistic, progress=False)


def recorded_cost_table_queries(space):
  """What `CostTable.build` asks its hooks for: ({block_key: (spec, in_width, thw)}, {width: thw})."""
  blocks, heads = {}, {}

  def block_fn(spec, in_width, thw):
    blocks[L.block_key(spec, in_width, thw)] = (spec, int(in_width), tuple(int(v) for v in thw))
    return 0.0

  def head_fn(width, thw):
    heads[int(width)] = tuple(int(v) for v in thw)
    return 0.0

  CostTable.build(space, "latency", fns=(lambda: 0.0, block_fn, head_fn))
  return blocks, heads


@pytest.fixture
def fake_timer(monkeypatch):
  """Deterministic, distinct 'milliseconds' per measured module and input shape; counts calls
  (and records each call's backend in `.backends`)."""
  class Calls(list):
    backends: list

  calls = Calls()

  def fake_measure_modules(items, warmup, repeats, min_time_s=0.0, progress=False, desc="", memory=False,
                           seed=0, backend="jax"):
    out = {}
    backends.append(backend)
    for name, (module, input_shape, dtype) in items.items():
      spec = getattr(module, "spec", None)
      ms = 0.001 * float(np.prod(input_shape))
      if hasattr(spec, "inner"):
        ms += 0.1 * spec.inner + 0.05 * float(np.prod(spec.kernel)) + 3.0 * spec.se_ratio + 0.7 * spec.stride
        ms += 0.2 * (spec.type == "r2plus1d")
      if hasattr(spec, "stages"):  # a whole network
        ms += 1.5 * len(spec.blocks)
      calls.append((name, type(module).__name__, tuple(input_shape), dtype))
      out[name] = {"median_ms": ms, "mean_ms": ms, "min_ms": ms, "n": 1}
      if memory:
        out[name]["memory"] = measure._memory_stats(None)  # pylint: disable=protected-access
    return out

  # Patched where table.py and validate.py look them up (`measure.measure_modules`).
  monkeypatch.setattr(measure, "measure_modules", fake_measure_modules)
  monkeypatch.setattr(measure, "measure_overhead_ms", lambda repeats=200, backend="jax": 0.05)
  backends = calls.backends = []
  return calls


def point_costs_numpy(table: CostTable, points) -> np.ndarray:
  """Independent re-implementation of point costs: plain table look-ups, vectorised over points
  (`points`: label -> int array of choice indices)."""
  space, c = table.space, table.space.config
  total = np.full(len(next(iter(points.values()))), table.stem)
  for i in range(space.num_stages):
    b = points[f"s{i + 1}_width"]
    a = points[f"s{i}_width"] if i > 0 else np.zeros_like(b)
    depth = c.min_depths[i] + points[f"s{i + 1}_depth"]
    for j in range(c.max_depths[i]):
      p = labels.block(i, j)
      cell = table.blocks[p][a if j == 0 else 0 * a, b, points[f"{p}_expansion"], points[f"{p}_op"],
                             points[f"{p}_se"]]
      total = total + np.where(depth > j, cell, 0.0)
  return total + table.head[points[f"s{space.num_stages}_width"]]


# ------------------------------------------------------------------------------------- dedupe
def test_required_queries_dedupe_and_cover_the_cost_table():
  space = small_space()
  blocks, head_widths, head_thw = L.required_queries(space)
  cells = sum(t.size for t in CostTable.build(space, "flops").blocks.values())
  c = space.config
  # Per stage: first block (Wprev x W x E x O x S) + one shared set for blocks 2.. (W x E x O x S).
  per = len(c.expansions) * len(c.ops) * len(c.se_ratios)
  expected = (1 * 2 * per + 2 * per) + (2 * 2 * per + 2 * per)
  assert len(blocks) == expected == 120
  assert cells == (3 * 2 * per) + (2 * 2 * per + 2 * 2 * per) == 168  # positions 2.. of a stage share keys
  assert head_widths == [16, 24] and head_thw == (4, 4, 4)
  # Keys are self-describing and injective over (spec, in_width, thw).
  assert len(set(blocks.values())) == len(blocks)
  assert all(L.block_key(*v) == k for k, v in blocks.items())
  # Exactly the look-ups the search's CostTable makes: nothing missing, nothing timed in vain.
  for sp in (space, tiny_space(), small_space(min_depths=(2, 1), max_depths=(2, 4), stage_widths=((8,), (16, 24, 32)))):
    blocks, head_widths, head_thw = L.required_queries(sp)
    want_blocks, want_heads = recorded_cost_table_queries(sp)
    assert blocks == want_blocks
    assert head_widths == sorted(want_heads) and {head_thw} == set(want_heads.values())


# ------------------------------------------------------------------------- build, JSON, reuse
def test_build_roundtrip_reuse_and_rebuild(tmp_path, fake_timer):
  space = small_space()
  path = str(tmp_path / "lat.json")
  cfg = dict(batch_size=1, repeats=2, warmup=1, path=path)
  t1 = L.load_or_build(space, latency_cfg(**cfg), progress=False)
  blocks, heads, _ = L.required_queries(space)
  assert len(fake_timer) == len(blocks) + 1 + len(heads)  # one measurement per unique key
  assert t1.origin.startswith("rebuilt: no table at")
  assert os.path.exists(path) and len(t1) == len(blocks) + 1 + len(heads)
  d = json.load(open(path))
  assert set(d) >= {"meta", "entries", "stem_ms", "head_ms", "overhead_ms"}
  for k in ("backend", "device_kind", "dtype", "batch_size", "jax", "jaxlib", "flax", "space_fingerprint"):
    assert k in d["meta"]
  assert d["meta"]["batch_size"] == 1 and d["meta"]["dtype"] == "float32"

  back = L.LatencyTable.load(path)
  assert back == t1  # dataclass equality ignores `origin`
  assert L.LatencyTable.from_dict(json.loads(json.dumps(t1.to_dict()))) == t1

  n = len(fake_timer)
  t2 = L.load_or_build(space, latency_cfg(**cfg), progress=False)  # matching meta: reused, nothing measured
  assert len(fake_timer) == n and t2.origin == f"loaded from {path}" and t2 == t1

  # Mismatch: another batch size -> rebuilt (and saved over the old file), saying why.
  t3 = L.load_or_build(space, latency_cfg(**{**cfg, "batch_size": 2}), progress=False)
  assert len(fake_timer) == 2 * n
  assert "batch_size: stored 1 != current 2" in t3.origin
  assert L.LatencyTable.load(path).meta["batch_size"] == 2

  # Another space -> rebuilt; a corrupt file -> rebuilt.
  t4 = L.load_or_build(small_space(se_ratios=(0.0, 0.0625)), latency_cfg(**{**cfg, "batch_size": 2}),
                       progress=False)
  assert "space_fingerprint" in t4.origin
  with open(path, "w") as f:
    f.write("{not json")
  t5 = L.load_or_build(space, latency_cfg(**cfg), progress=False)
  assert "unreadable" in t5.origin and L.LatencyTable.load(path) == t5

  # Another latency backend -> rebuilt, timed there; a table written before backends existed is a jax one.
  t9 = L.load_or_build(space, latency_cfg(**{**cfg, "backend": "tflite"}), progress=False)
  assert "latency_backend: stored 'jax' != current 'tflite'" in t9.origin and fake_timer.backends[-1] == "tflite"
  assert t9.meta["tflite_threads"] == 1 and t9.meta["tensorflow"]
  t10 = L.load_or_build(space, latency_cfg(**cfg), progress=False)
  old = json.load(open(path))
  for key in ("latency_backend", "tensorflow", "tflite_threads"):
    del old["meta"][key]
  with open(path, "w") as f:
    json.dump(old, f)
  n = len(fake_timer)
  reused = L.load_or_build(space, latency_cfg(**cfg), progress=False)
  assert len(fake_timer) == n and reused.origin == f"loaded from {path}" and reused.entries == t10.entries

  # Another summary statistic -> rebuilt.
  t7 = L.load_or_build(space, latency_cfg(**{**cfg, "statistic": "mean"}), progress=False)
  assert "statistic: stored 'median' != current 'mean'" in t7.origin and t7.meta["statistic"] == "mean"
  # A keyword argument wins over the config.
  t8 = L.load_or_build(space, latency_cfg(**cfg), statistic="median", min_time_s=0.0, progress=False)
  assert t8.meta["statistic"] == "median" and t8.timing["min_time_s"] == 0.0

  # Without any path (config.latency.path = ''): built, not saved.
  t6 = L.load_or_build(space, latency_cfg(), progress=False)
  assert "no table path" in t6.origin
  # The config is read as attributes: a partial mapping is an error, not silently defaulted.
  with pytest.raises(AttributeError):
    L.load_or_build(space, {"batch_size": 1}, progress=False)


def test_table_lookup_of_unknown_block_names_the_problem(fake_timer):
  table = quick_table(small_space())
  with pytest.raises(KeyError, match="rebuild"):
    CostTable.from_latency(small_space(expansions=(1.5, 4.0)), table)


# ------------------------------------------------------------- expectation, gradient, overhead
def test_expected_latency_is_exact_and_differentiable(fake_timer):
  space = small_space()
  table = quick_table(space)
  ct = CostTable.from_latency(space, table)
  assert ct.metric == "latency"

  rng = np.random.default_rng(0)
  logits = {d.label: jnp.asarray(rng.normal(size=d.size), jnp.float32) for d in space.decisions}
  probs = {k: jax.nn.softmax(v) for k, v in logits.items()}
  # One compiled program for the value and its gradient (eager einsums + VJPs take ~15 s on CPU).
  value, grads = jax.jit(jax.value_and_grad(
      lambda lg: ct.expected({k: jax.nn.softmax(v) for k, v in lg.items()})))(logits)
  expected = float(value)

  # Independent look-up agrees with of_point; Monte-Carlo mean of point costs agrees with the expectation.
  n = 20000
  points = {}
  for label, p in probs.items():
    cdf = np.cumsum(np.asarray(p, np.float64))
    points[label] = np.minimum((rng.random(n)[:, None] > cdf[None, :]).sum(1), len(cdf) - 1)
  costs = point_costs_numpy(ct, points)
  for k in range(3):
    point = {label: int(v[k]) for label, v in points.items()}
    assert ct.of_point(point) == pytest.approx(costs[k], rel=1e-5)
  stderr = costs.std() / np.sqrt(n)
  assert stderr > 0 and abs(costs.mean() - expected) < 4 * stderr

  flat = np.concatenate([np.asarray(g) for g in grads.values()])
  assert np.all(np.isfinite(flat)) and np.abs(flat).max() > 0
  for kind in ("width", "depth", "op", "expansion", "se"):
    label = next(d.label for d in space.decisions if d.kind == kind)
    assert np.abs(np.asarray(grads[label])).max() > 0, label


def test_overhead_is_counted_once(fake_timer):
  space = small_space()
  table = quick_table(space)
  point = {d.label: 0 for d in space.decisions}
  raw = CostTable.from_latency(space, table, subtract_overhead=False).of_point(point)
  net = CostTable.from_latency(space, table).of_point(point)
  n_pieces = sum(space.config.min_depths) + 1  # blocks + head (the stem keeps its overhead)
  assert raw - net == pytest.approx(n_pieces * table.overhead_ms, rel=1e-4)


def test_predict_ms_is_the_cost_tables_point_cost(fake_timer):
  """validate_table predicts with `predict_ms` (no CostTable in cost/): bit for bit the search's figure."""
  space = small_space()
  table = quick_table(space)
  for subtract in (True, False):
    ct = CostTable.from_latency(space, table, subtract_overhead=subtract)
    for point in L.random_points(space, 25, seed=7) + [space.largest_point()]:
      assert L.predict_ms(space, table, space.to_arch(point), subtract) == ct.of_point(point)


def test_validate_plumbing_with_a_deterministic_timer(tmp_path, fake_timer):
  """Re-timed pieces equal the stored ones under a deterministic timer: drift is exactly 1 and the
  same-session prediction equals the stored one; no memory analysis -> None fields, plot still drawn."""
  space = small_space()
  table = quick_table(space)
  for retime in (False, True):
    res = L.validate_table(space, table, latency_cfg(), num_archs=5, seed=3, out_dir=str(tmp_path / str(retime)),
                           progress=False, num_probes=4, retime=retime)
    assert res["num_archs"] == 5 and res["load_drift"] == pytest.approx(1.0)
    assert res["peak_activation_mb"] == {"min": None, "max": None}
    assert os.path.exists(res["plot_path"]) and os.path.exists(res["json_path"])
    if retime:
      for a in res["archs"]:
        assert a["predicted_same_session_ms"] == pytest.approx(a["predicted_ms"], rel=1e-6)
      assert res["same_session"]["kendall_tau"] == pytest.approx(res["kendall_tau"])
      assert set(res["same_session_by_statistic"]) == {"median", "mean", "min"}
    else:
      assert len(res["pieces"]) == 4 and res["same_session"] is None
  # The mode=latency call: validate_table(space, table, cfg.latency, out_dir); keywords win over it.
  cfg = latency_cfg(batch_size=1, repeats=2, warmup=1, path="", num_archs=2)
  res2 = L.validate_table(space, table, cfg, str(tmp_path / "cfg"), progress=False)
  assert res2["num_archs"] == 2 and res2["settings"]["repeats"] == 2
  assert os.path.exists(os.path.join(str(tmp_path / "cfg"), "latency_validation.png"))
  assert L.validate_table(space, table, cfg, num_archs=3, progress=False)["num_archs"] == 3
  # Every piece of a network is a table entry, and their sum is the table's prediction.
  spec = space.to_arch(res["archs"][0]["point"])
  pieces = L.arch_pieces(space, spec)
  assert len(pieces) == len(spec.blocks) + 2
  total = table.stem_ms + sum(table.entries[k] - table.overhead_ms for k in pieces
                              if k in table.entries) + table.head_of(spec.stages[-1].width) - table.overhead_ms
  assert res["archs"][0]["predicted_ms"] == pytest.approx(total, rel=1e-5)


# --------------------------------------------------------------------------------- memory
def test_memory_stats_handle_missing_analysis():
  class NoAnalysis:
    def memory_analysis(self):
      return None

  class Raises:
    def memory_analysis(self):
      raise NotImplementedError

  for c in (NoAnalysis(), Raises()):
    m = measure._memory_stats(c)  # pylint: disable=protected-access
    assert m["peak_activation_bytes"] is None and m["temp_bytes"] is None


def test_plot_without_memory(tmp_path):
  archs = [{"predicted_ms": 1.0 + k, "measured_ms": 1.1 + k, "gflops": 0.1 * k,
            "memory": {"peak_activation_bytes": None}} for k in range(3)]
  result = {"archs": archs, "kendall_tau": 1.0, "mean_abs_rel_error": 0.05, "flops_kendall_tau": 1.0,
            "num_archs": 3, "meta": {"backend": "cpu", "device_kind": "cpu"},
            "settings": {"batch_size": 1, "dtype": "float32", "num_frames": 4, "crop_size": 32}}
  path = L.plot_validation(result, str(tmp_path / "p.png"))
  assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------- real timing, end to end
def test_real_table_and_validation(tmp_path):
  space = tiny_space()
  table = quick_table(space, batch_size=1, warmup=1, repeats=2, min_time_s=0.0)
  blocks, heads, _ = L.required_queries(space)
  assert len(table.entries) == len(blocks) == 4 and len(table.head_ms) == len(heads)
  assert all(v > 0 for v in table.entries.values()) and table.stem_ms > 0 and table.overhead_ms > 0
  assert table.meta["backend"] == jax.default_backend()

  res = L.validate_table(space, table, latency_cfg(), num_archs=3, seed=1, out_dir=str(tmp_path), progress=False,
                         repeats=2, warmup=1, min_time_s=0.0, num_probes=1)
  for key in ("kendall_tau", "kendall_p", "mean_abs_rel_error", "max_abs_rel_error", "flops_kendall_tau",
              "archs", "settings", "meta", "peak_activation_mb", "load_drift"):
    assert key in res
  assert res["num_archs"] == 3 and -1.0 <= res["kendall_tau"] <= 1.0 and res["mean_abs_rel_error"] >= 0
  for a in res["archs"]:
    assert a["predicted_ms"] > 0 and a["measured_ms"] > 0
    mem = a["memory"]
    if mem["temp_bytes"] is not None:  # CPU reports it; other backends may not
      assert mem["peak_activation_bytes"] >= mem["temp_bytes"] >= 0 and mem["argument_bytes"] > 0
  assert open(res["plot_path"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  stored = json.load(open(res["json_path"]))
  assert stored["num_archs"] == 3 and len(stored["archs"]) == 3
  assert res["load_drift"] > 0 and list(res["pieces"]) == [L.STEM_ITEM]

  mem = L.arch_memory(space.to_arch(res["archs"][0]["point"]))
  assert set(mem) >= {"peak_activation_bytes", "temp_bytes", "argument_bytes", "output_bytes"}


def test_a_real_table_times_the_attention_ops_by_their_window_and_heads(fake_timer):
  """A space with a token mixer: its blocks are table pieces keyed with their heads, and the
  table gives the cost table every look-up it makes."""
  space = small_space(stage_widths=((8,), (16,)), max_depths=(2, 2), expansions=(2.0,), se_ratios=(0.25,),
                      ops=(Op("x3d", (3, 3, 3)), Op("lsa", (2, 4, 4), 2), Op("lsa", (2, 4, 4), 4)))
  table = quick_table(space, batch_size=1, warmup=1, repeats=1, min_time_s=0.0)
  blocks, _, _ = L.required_queries(space)
  assert set(table.entries) == set(blocks)
  assert {k.split("|")[0] for k in table.entries} == {"x3d_333", "lsa_244_h2", "lsa_244_h4"}
  assert any(name.startswith("lsa_244_h4") for name, *_ in fake_timer)
  costs = CostTable.from_latency(space, table)
  assert costs.of_point(space.largest_point()) > 0


@pytest.mark.slow   # in CI's slow selection: converts every table piece to TFLite (about 20 s)
def test_tflite_backend_times_the_pieces_as_tflite_models(tmp_path):
  """latency.backend=tflite: every piece converted to a float32 TFLite model (which computes the
  flax module's output) and timed by the interpreter; the table validates like the JAX one."""
  from autox3d_jax.export import tensorflow as tf_export
  import tensorflow as tf
  space = tiny_space()
  # The converted piece is the piece: a block's TFLite model gives the module's output.
  spec, in_width, thw = next(iter(L.required_queries(space)[0].values()))
  module, shape, dtype = measure.block_item(spec, in_width, thw, 1, "float32")
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  variables = measure.synthetic_variables(module, jnp.asarray(x))
  model = tf_export.tflite_of_function(lambda inp: module.apply(variables, inp, train=False), shape)
  interpreter = tf.lite.Interpreter(model_content=model)
  interpreter.allocate_tensors()
  interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
  interpreter.invoke()
  got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
  want = np.asarray(module.apply(variables, jnp.asarray(x), train=False))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())

  table = L.build_table(space, batch_size=1, dtype="float32", warmup=1, repeats=2, min_time_s=0.0,
                        statistic="median", progress=False, backend="tflite")
  blocks, heads, _ = L.required_queries(space)
  assert len(table.entries) == len(blocks) and len(table.head_ms) == len(heads)
  assert all(v > 0 for v in table.entries.values()) and table.stem_ms > 0 and table.overhead_ms > 0
  assert table.meta["latency_backend"] == "tflite" and table.meta["tflite_threads"] == measure.TFLITE_THREADS
  res = L.validate_table(space, table, latency_cfg(), num_archs=3, seed=1, out_dir=str(tmp_path), progress=False,
                         repeats=2, warmup=1, min_time_s=0.0, num_probes=1)
  assert res["num_archs"] == 3 and -1.0 <= res["kendall_tau"] <= 1.0 and not res["settings"]["meta_mismatch"]
  assert all(a["measured_ms"] > 0 and a["memory"]["temp_bytes"] is None for a in res["archs"])
  with pytest.raises(ValueError, match="TFLite latency backend times float32"):
    L.current_meta(space, 1, "bfloat16", "median", "tflite")


# ------------------------------------------------------------------------- search wiring
def test_search_cost_table_uses_and_reuses_the_workdir_table(tmp_path, fake_timer):
  """config.search.cost_metric='latency': the search's CostTable is the measured table in ms, saved
  at workdir/latency_table.json (where mode=latency writes it) and reused by the next run."""
  from autox3d_jax import config as config_lib
  from autox3d_jax.train import setup
  cfg = config_lib.base_config()
  cfg.search.cost_metric = "latency"
  space = small_space()
  table = setup.build_cost_table(space, cfg, str(tmp_path))
  assert table.metric == "latency" and (tmp_path / "latency_table.json").exists()
  n = len(fake_timer)
  again = setup.build_cost_table(space, cfg, str(tmp_path))
  assert len(fake_timer) == n                      # reused: nothing re-timed
  stored = L.LatencyTable.load(str(tmp_path / "latency_table.json"))
  assert L.share_across_processes(stored) is stored  # one process: the table as is
  expected = CostTable.from_latency(space, stored)
  point = space.largest_point()
  assert again.of_point(point) == pytest.approx(expected.of_point(point))
  # An explicit config.latency.path wins over the workdir.
  cfg.latency.path = str(tmp_path / "elsewhere.json")
  setup.build_cost_table(space, cfg, str(tmp_path))
  assert (tmp_path / "elsewhere.json").exists() and len(fake_timer) > n


def test_fbnet_loss_uses_the_metric_unit():
  """FBNet's CE * alpha * log(cost)^beta: 0 = the metric's unit (MFLOPs, ms), so 50 ms and 50 MFLOPs
  give the same factor, and an explicit cost_unit overrides it."""
  from autox3d_jax.search.strategies.base import fbnet_factor
  cfg = config_lib.base_config().search.fbnet  # alpha 0.2, beta 0.6, cost_unit 0 (the metric's)
  cfg.update(alpha=0.2, beta=0.6, cost_unit=0.0)
  want = 0.2 * np.log(50.0) ** 0.6
  assert float(fbnet_factor(jnp.float32(50.0), cfg, "latency")) == pytest.approx(want, rel=1e-5)
  assert float(fbnet_factor(jnp.float32(50e6), cfg, "flops")) == pytest.approx(want, rel=1e-5)
  cfg.cost_unit = 1e-3                               # e.g. seconds -> ms
  assert float(fbnet_factor(jnp.float32(0.05), cfg, "latency")) == pytest.approx(want, rel=1e-5)
