"""The run modes as importable functions: mode(cfg, workdir). `main.py` parses flags and calls one.

Each mode is build -> loop -> result: it builds what the config describes once (the search space,
the networks), hands it to a loop (`train.search_loop.run_search`, `train.train_loop.run_train`),
and turns the loop's result into a report. `MODES` maps `config.MODES` to these functions.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time

import jax
import jax.numpy as jnp
import ml_collections

from autox3d_jax import config as config_lib
from autox3d_jax import paths as paths_lib
from autox3d_jax import report
from autox3d_jax.cost import latency as latency_lib
from autox3d_jax.cost.analytic import arch_cost, temporal_extent
from autox3d_jax.data import pipeline as data_pipeline
from autox3d_jax.models import builder, zoo
from autox3d_jax.models.spec import ArchSpec
from autox3d_jax.search import derive as derive_lib
from autox3d_jax.search.space import SearchSpace
from autox3d_jax.train import loop, setup, train_loop, weights
from autox3d_jax.train.setup import load_arch  # noqa: F401  (run.load_arch: public name)
from autox3d_jax.train.search_loop import feature_teacher, pretrained_network, restore_supernet_variables, run_search
from autox3d_jax.train.train_loop import run_train

log = logging.getLogger(__name__)


def _model_entry(result, kind):
  return {"name": result.name, "kind": kind, "top1": result.top1, "top5": result.top5, "gflops": result.gflops,
          "params": result.params, "arch": result.spec}


def retrain_seeds(cfg: ml_collections.ConfigDict, workdir: str, spec: ArchSpec, name: str,
                  seeds: list[int]) -> list:
  """`spec` trained and evaluated once per seed, each with its own checkpoints, so a restarted demo
  resumes every seed where it stopped."""
  results = []
  for seed in seeds:
    seed_cfg = cfg.copy_and_resolve_references()
    seed_cfg.seed = seed
    run_name = name if len(seeds) == 1 else f"{name} seed {seed}"
    results.append(dataclasses.replace(run_train(seed_cfg, workdir, spec, run_name), name=name))
  return results


def retraining_seeds(cfg: ml_collections.ConfigDict) -> list[int]:
  """The seeds the demo retrains each network with: config.seed .. config.seed + train.seeds - 1."""
  return list(range(cfg.seed, cfg.seed + cfg.train.seeds))


def seeds_entry(results: list, kind: str, seeds: list[int]) -> dict:
  """One report row for a network retrained with several seeds: mean top-1 / top-5, and each seed's."""
  if not results or len(results) != len(seeds):
    raise ValueError(f"{len(results)} training results for {len(seeds)} seeds")
  entry = _model_entry(results[0], kind)
  entry["top1"] = sum(r.top1 for r in results) / len(results)
  entry["top5"] = sum(r.top5 for r in results) / len(results)
  entry["seeds"] = list(seeds)
  entry["top1_per_seed"] = [r.top1 for r in results]
  return entry


def _x3d_family(cfg, classes):
  out = []
  for v in zoo.X3D_VARIANTS:
    spec = zoo.x3d(v, classes, num_frames=cfg.data.num_frames, crop_size=cfg.data.crop_size)
    out.append({"name": f"X3D-{v} @ {cfg.data.num_frames}x{cfg.data.crop_size}", "gflops": arch_cost(spec).gflops,
                "top1": None})
  return out


# ------------------------------------------------------------------------------------------- modes
def measured_latency_ms(cfg: ml_collections.ConfigDict, spec: ArchSpec) -> float:
  """End-to-end inference latency of `spec` on this backend, timed as config.latency says (batch
  size, dtype, warm-up, repeats, minimum time), summarised by config.latency.statistic."""
  lat = cfg.latency
  stats = latency_lib.time_module(builder.build(spec, latency_lib.measure.module_dtype(lat.dtype)),
                                  (lat.batch_size,) + spec.input_shape, lat.dtype, lat.warmup, lat.repeats,
                                  lat.min_time_s, backend=lat.backend)
  return float(stats[f"{lat.statistic}_ms"])


def search(cfg: ml_collections.ConfigDict, workdir: str):
  if cfg.search.strategy == "x3d_expansion":
    return x3d_expansion(cfg, workdir)
  if config_lib.task_names(cfg):
    return multitask_search(cfg, workdir)
  pretrained = pretrained_network(cfg)   # config.search.init_from, checked before the dataset is built
  teacher = feature_teacher(cfg)         # config.search.feature_distill, likewise
  setup.ensure_dataset(cfg)          # the space's classes come from the dataset
  space = setup.build_space(cfg)
  result = run_search(cfg, workdir, space, pretrained, teacher)
  cost = arch_cost(result.spec)
  entry = {"name": result.spec.name, "kind": "searched", "top1": None, "gflops": cost.gflops,
           "params": cost.params, "arch": result.spec}
  notes = input_axes_notes(space, result) + temporal_notes([(entry["name"], result.spec)])
  if cfg.search.cost_metric == "latency":
    entry["latency_ms"] = measured_latency_ms(cfg, result.spec)
    notes.append(f"Latency-constrained search: table-predicted {result.cost:.3f} ms (target "
                 f"{result.cost_target:.3f} ms), measured end to end {entry['latency_ms']:.3f} ms at batch "
                 f"{cfg.latency.batch_size} on {jax.default_backend()}.")
    log.info(notes[-1])
  log.info("derived %s: %.4f GFLOPs, %.3fM params, %s %.4g (target %.4g) in %.0f s", result.spec.name,
           cost.gflops, cost.params / 1e6, cfg.search.cost_metric, result.cost, result.cost_target,
           result.seconds)
  _write_report(cfg, workdir, space, [entry], result, notes, {"search": result.input})
  return result


def x3d_expansion(cfg: ml_collections.ConfigDict, workdir: str):
  """search.strategy = 'x3d_expansion': X3D's stepwise expansion (`train.expansion_loop`), its final
  network in the report with the whole path (expansion.png and a table)."""
  from autox3d_jax.train import expansion_loop
  run_ = expansion_loop.run_expansion(cfg, workdir)
  final = next(r for r in run_.records if r["final"])
  spec = ArchSpec.from_dict(final["arch"]).replace(name="X3D-expanded")
  f = final["factors"]
  steps = expansion_loop.candidate_steps(cfg)
  path = " -> ".join((r["axis"] or "base") + (" (contracted)" if r["kind"] == "contract" else "")
                     for r in run_.records if r["chosen"])
  if cfg.search.x3d_expansion.scorer == "inherited":
    how = (f"the base trained {steps} steps from scratch, every other candidate "
           f"{expansion_loop.candidate_steps(cfg, inherited=True)} steps from the trained weights of the network it "
           "was made from (models/morph.py: it starts computing that network's function), a cheaper proxy than "
           "training each from scratch; each was")
  else:
    how = f"each trained {steps} steps from scratch and"
  notes = [f"X3D expansion: {len(run_.records)} candidates ({run_.trained} trained by this run, the rest read from "
           f"{expansion_loop.record_path(workdir)}) in {run_.seconds:.0f} s; {how} evaluated on {cfg.data.name} "
           f"{cfg.data.eval_split}, so the top-1 is the short recipe's.",
           f"Chosen path: {path}; the final network's {cfg.search.cost_metric} {run_.result.final.cost:.6g} against the "
           f"target {run_.plan.target:.6g}.",
           f"X3D-expanded's clip: {f['frames']} frames every {f['sampling_stride']} at {f['crop']} px; retrain it with "
           f"--config.mode=train --config.train.arch=<report>/X3D-expanded.json --config.data.num_frames={f['frames']} "
           f"--config.data.sampling_stride={f['sampling_stride']} --config.data.crop_size={f['crop']}."]
  log.info("\n".join(notes))
  entry = {"name": spec.name, "kind": "searched", "top1": final["top1"], "top5": final["top5"],
           "gflops": final["gflops"], "params": final["params"], "arch": spec}
  extra = {"expansion": {"metric": cfg.search.cost_metric, "seconds": round(run_.seconds, 1),
                         "trained": run_.trained, "candidates": run_.records}}
  _write_report(cfg, workdir, None, [entry], None, notes, {}, extra)
  return run_


def multitask_search(cfg: ml_collections.ConfigDict, workdir: str):
  """config.search.tasks: one multi-task search (`train.multitask_search`), each task's network in
  the report, side by side, with how they differ."""
  from autox3d_jax.train.multitask_search import run_multitask_search
  run_ = run_multitask_search(cfg, workdir)
  models, notes = [], []
  for p in run_.programs:
    r = run_.tasks[p.task.name]
    cost = arch_cost(r.spec)
    models.append({"name": r.spec.name, "kind": "searched", "top1": None, "gflops": cost.gflops,
                   "params": cost.params, "arch": r.spec})
    notes.append(f"Task {p.task.name} ({p.task.dataset}, {p.space.config.head.num_classes} classes): "
                 f"{p.table.metric} {r.cost:.4g} against its target {r.cost_target:.4g}.")
  notes.append(f"One multi-task search of {cfg.search.steps} steps in {run_.seconds:.0f} s: each task trained "
               f"{cfg.search.num_groups // len(run_.programs)} of the {cfg.search.num_groups} architecture groups and "
               f"read {cfg.data.batch_size // len(run_.programs)} of the {cfg.data.batch_size} clips per step.")
  notes += point_differences([(p.task.name, p.space, run_.tasks[p.task.name].point) for p in run_.programs])
  notes += temporal_notes([(m["name"], m["arch"]) for m in models])
  extra = {"tasks": {"names": [p.task.name for p in run_.programs], "models": [m["name"] for m in models]}}
  _write_report(cfg, workdir, None, models, None, notes, {"search": run_.input}, extra)
  return run_


def point_differences(tasks) -> list[str]:
  """One report line per pair of (task name, space, derived point): how many of the decisions
  active in either network differ, by kind (op, expansion, se, width, depth)."""
  lines = []
  for a in range(len(tasks)):
    for b in range(a + 1, len(tasks)):
      (name_a, space, pa), (name_b, _, pb) = tasks[a], tasks[b]
      active = [d for d in space.decisions if space.active(pa, d.label) or space.active(pb, d.label)]
      differ = [d for d in active if pa[d.label] != pb[d.label]]
      kinds = {}
      for d in differ:
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
      by_kind = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"
      lines.append(f"{name_a} vs {name_b}: {len(differ)} of the {len(active)} decisions active in either network "
                   f"differ ({by_kind}).")
  return lines


def check_arch_name(cfg: ml_collections.ConfigDict) -> None:
  """config.train.arch is an ArchSpec file or a zoo name (ConfigError otherwise), checked before
  the dataset is read or built."""
  name = cfg.train.arch or "x3d_s"
  if not paths_lib.exists(name):
    load_arch(name)


def initial_weights(cfg: ml_collections.ConfigDict) -> str | None:
  """Where mode=train's starting weights come from: 'supernet' (the workdir's search,
  config.train.init_from_supernet), a checkpoint directory (config.train.init_from), or None (a
  fresh initialisation from config.seed)."""
  if cfg.train.init_from_supernet:
    return "supernet"
  return cfg.train.init_from or None


def evaluated_weights(cfg: ml_collections.ConfigDict, workdir: str, spec: ArchSpec) -> str:
  """The checkpoint directory mode=eval reads: config.eval.checkpoint, else the workdir's
  training run of `spec`."""
  return cfg.eval.checkpoint or loop.run_dirs(workdir, "train", spec.name).checkpoints


def train(cfg: ml_collections.ConfigDict, workdir: str):
  """Train config.train.arch (or, with config.train.init_from and no train.arch, the imported
  checkpoint's network) on config.data, from scratch, from config.train.init_from's weights (a
  classifier of another class count is re-initialised) or from the workdir's supernet."""
  check_arch_name(cfg)
  source = initial_weights(cfg)
  imported = start = None
  if source not in (None, "supernet"):   # checked against the network before the dataset is built
    imported = weights.arch_of(source, "train.init_from")
    start = weights.read(source, "train.init_from")
    weights.fit(start, setup.network_spec(cfg, imported, weights.classes_in(start)), "train.init_from")
  setup.ensure_dataset(cfg)          # the network's classes come from the dataset
  spec = setup.network_spec(cfg, imported, setup.num_classes(cfg))
  init = None
  if source == "supernet":
    space = setup.build_space(cfg)
    init = derive_lib.inherit_variables(space, space.point_of(spec), restore_supernet_variables(workdir), spec)
  elif start is not None:
    init = weights.fit(start, spec, "train.init_from", new_classes=True, seed=cfg.seed)
  result = run_train(cfg, workdir, spec, spec.name, init)
  log.info("%s: top-1 %.2f%% top-5 %.2f%% (%d videos), %.4f GFLOPs", result.name, 100 * result.top1,
           100 * result.top5, result.eval_examples, result.gflops)
  _write_report(cfg, workdir, None, [_model_entry(result, "trained")], None, [], {result.name: result.input})
  return result


def evaluate(cfg: ml_collections.ConfigDict, workdir: str):
  """Evaluate config.eval.checkpoint's weights, else the latest training checkpoint of
  config.train.arch in the workdir, with the multi-view protocol."""
  check_arch_name(cfg)
  imported = weights.arch_of(cfg.eval.checkpoint, "eval.checkpoint") if cfg.eval.checkpoint else None
  spec = setup.network_spec(cfg, imported, setup.num_classes(cfg))
  directory = evaluated_weights(cfg, workdir, spec)
  if cfg.eval.checkpoint:
    variables = weights.load(directory, spec, "eval.checkpoint")
  else:
    variables = train_loop.restore_trained_from(cfg, directory, spec)
  top1, top5, n = train_loop.evaluate(cfg, spec, variables)
  log.info("%s: top-1 %.2f%% top-5 %.2f%% over %d videos (%dx%d views)", spec.name, 100 * top1, 100 * top5, n,
           cfg.data.num_temporal_views, cfg.data.num_spatial_crops)
  print(json.dumps({"name": spec.name, "top1": top1, "top5": top5, "videos": n}))
  return top1, top5


def report_mode(cfg: ml_collections.ConfigDict, workdir: str):
  """Re-renders workdir's report from its results.json, adding the ranking record
  (workdir/ranking/ranking.json, written by benchmarks/bench_ranking.py) when there is one."""
  results = report.read_results(paths_lib.join(workdir, "report"), as_specs=True)
  results.update(ranking_extra(workdir))
  paths = report.write_report(paths_lib.join(workdir, "report"), results)
  print(json.dumps(paths, indent=1))


def demo(cfg: ml_collections.ConfigDict, workdir: str):
  """Search -> derive -> retrain the searched net and the X3D-like baseline (the search's FLOPs
  target, so matched) the same way -> evaluate both -> report."""
  start = time.time()
  pretrained = pretrained_network(cfg)   # config.search.init_from, checked before the dataset is built
  teacher = feature_teacher(cfg)         # config.search.feature_distill, likewise
  setup.ensure_dataset(cfg)          # the space's classes come from the dataset
  space = setup.build_space(cfg)
  result = run_search(cfg, workdir, space, pretrained, teacher)
  baseline_spec = space.to_arch(setup.x3d_like_point(space), name="X3D-like baseline")
  seeds = retraining_seeds(cfg)
  searched_cfg = setup.clip_config(cfg, result.clip) if space.input_labels else cfg   # its own input
  searched = retrain_seeds(searched_cfg, workdir, result.spec, "AutoX3D (searched)", seeds)
  baseline = retrain_seeds(cfg, workdir, baseline_spec, "X3D-like baseline", seeds)
  models = [seeds_entry(searched, "searched", seeds), seeds_entry(baseline, "baseline", seeds)]
  if cfg.search.cost_metric == "latency":
    for m in models:
      m["latency_ms"] = measured_latency_ms(cfg, m["arch"])
  retrain_s = [sum(r.seconds for r in rs) for rs in (searched, baseline)]
  seeds_note = (f"top-1 is the mean over seeds {seeds}; each seed's is in the per-seed column" if len(seeds) > 1 else
                f"one retraining seed ({cfg.seed}): a single seed's top-1 is a lottery at this budget, set "
                f"config.train.seeds to compare means")
  notes = input_axes_notes(space, result) + [f"Total demo time {time.time() - start:.0f} s on {jax.device_count()} {jax.default_backend()} "
           f"device(s); search {result.seconds:.0f} s, retraining {retrain_s[0]:.0f} s + {retrain_s[1]:.0f} s.",
           f"Both networks trained with the same recipe ({cfg.train.steps} steps) and evaluated on "
           f"{cfg.data.name} {cfg.data.eval_split} ({searched[0].eval_examples} videos); {seeds_note}."]
  notes += temporal_notes([(m["name"], m["arch"]) for m in models])
  inputs = {"search": result.input, **{f"{r.name} seed {seed}": r.input
                                       for rs in (searched, baseline) for r, seed in zip(rs, seeds)}}
  paths = _write_report(cfg, workdir, space, models, result, notes, inputs)
  summary = {m["name"]: {"top1": round(m["top1"], 4), "gflops": round(m["gflops"], 5), "params": m["params"]}
             for m in models}
  if len(seeds) > 1:
    for m in models:
      summary[m["name"]]["top1_per_seed"] = [round(t, 4) for t in m["top1_per_seed"]]
  print(json.dumps(summary, indent=1))
  print(f"report: {paths.get('report')}")
  return models


def latency(cfg: ml_collections.ConfigDict, workdir: str):
  space = setup.build_space(cfg)
  path = setup.latency_table_path(cfg, workdir)
  table = latency_lib.load_or_build(space, cfg.latency, path)
  out = latency_lib.validate_table(space, table, cfg.latency, paths_lib.join(workdir, "report"))
  print(json.dumps({k: v for k, v in out.items() if not isinstance(v, (list, dict))}, indent=1, default=str))
  return out


def summary(cfg: ml_collections.ConfigDict, workdir: str):
  """Build a network, print its parameter count, FLOPs and a forward-pass timing (no data needed)."""
  spec = load_arch(cfg.train.arch or "x3d_s")
  cost = arch_cost(spec)
  model = builder.build(spec)
  x = jnp.zeros((1,) + spec.input_shape, jnp.float32)
  variables = builder.init_variables(spec, jax.random.PRNGKey(0))
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  t0 = time.time()
  forward(variables, x).block_until_ready()
  compile_s = time.time() - t0
  times = []
  for _ in range(3):
    t0 = time.time()
    forward(variables, x).block_until_ready()
    times.append(time.time() - t0)
  info = {"arch": spec.name, "input": f"{spec.num_frames}x{spec.crop_size}x{spec.crop_size}",
          "params": cost.params, "gflops": round(cost.gflops, 4), "first_call_s": round(compile_s, 2),
          "forward_s_median": round(sorted(times)[1], 4), "backend": jax.default_backend()}
  print(json.dumps(info, indent=1))
  return info


def export(cfg: ml_collections.ConfigDict, workdir: str):
  """config.train.arch with its trained weights as deployable artifacts (`autox3d_jax.export.mode`)."""
  from autox3d_jax.export import mode as export_mode
  return export_mode.run(cfg, workdir)


def import_mode(cfg: ml_collections.ConfigDict, workdir: str):
  """config.pretrained.source (a pytorchvideo / SlowFast checkpoint) as a weights checkpoint
  (`autox3d_jax.pretrained`)."""
  from autox3d_jax import pretrained
  return pretrained.run(cfg, workdir)


MODES = {"search": search, "train": train, "eval": evaluate, "report": report_mode, "demo": demo,
         "latency": latency, "summary": summary, "export": export, "import": import_mode}
assert tuple(MODES) == config_lib.MODES, "run.MODES and config.MODES name the same modes, in order"


# ----------------------------------------------------------------------------------------- helpers
def input_axes_notes(space: SearchSpace, result) -> list[str]:
  """A report line on the searched clip when the space searches input axes ([] otherwise)."""
  if not space.input_labels:
    return []
  clip, ref = result.clip, space.config.reference_input
  return [f"Input axes searched ({', '.join(f'{k} {v}' for k, v in space.config.input_axes.items())}; one setting "
          f"per step): the searched network reads {clip.frames} frames at stride {clip.stride}, {clip.crop} px "
          f"(the reference clip, where the X3D-like baseline runs: {ref.frames} x {ref.stride}, {ref.crop} px), and "
          f"is retrained and evaluated at its own clip."]


def temporal_notes(networks) -> list[str]:
  """One report line per (report name, ArchSpec) on the network's temporal extent
  (`analytic.temporal_extent`): what a motion task and an appearance task should pull in opposite
  directions."""
  lines = []
  for name, spec in networks:
    t = temporal_extent(spec)
    lines.append(f"Temporal extent of {name}: mean temporal kernel k_t {t.mean_kt:.2f} over its {t.blocks} "
                 f"blocks; blocks with k_t > 1 carry {100 * t.temporal_flops_share:.0f}% of the blocks' FLOPs.")
  return lines


def input_notes(inputs: dict[str, dict]) -> list[str]:
  """Report lines on the input records skipped, one per run that skipped any ({run: skip report}),
  or one saying none was."""
  lines = []
  for run_name, r in inputs.items():
    if r and r["skipped_records"]:
      lines.append(f"Input of {run_name}: {r['skipped_records']} of {r['records_seen'] + r['truncated_records']} "
                   f"records skipped ({100 * r['skipped_fraction']:.2g}%): {data_pipeline.skip_causes(r)}.")
  if not lines and any(inputs.values()):
    lines.append(f"Input: no record skipped ({sum(r['records_seen'] for r in inputs.values() if r)} read).")
  return lines


def ranking_extra(workdir: str) -> dict:
  """{'ranking': record} when workdir/ranking/ranking.json exists (checked: ValueError naming the
  file and the key when it is not a ranking record), else {}."""
  from autox3d_jax.search import ranking
  path = paths_lib.join(workdir, "ranking", "ranking.json")
  if not paths_lib.exists(path):
    return {}
  record = paths_lib.read_json(path)
  ranking.check_record(record, path)
  return {"ranking": record}


def _write_report(cfg, workdir, space: SearchSpace | None, models, search_result, notes, inputs: dict[str, dict],
                  extra: dict | None = None):
  names = config_lib.task_names(cfg)
  what = f"tasks {', '.join(cfg.tasks[n].dataset for n in names)}" if names else cfg.data.name
  results = {"title": f"autox3d_jax {cfg.mode}: {what}", "models": models,
             "baseline_family": _x3d_family(cfg, models[0]["arch"].head.num_classes) if models else [],
             "notes": notes + input_notes(inputs), "input": inputs,
             "search": {"strategy": cfg.search.strategy, "steps": cfg.search.steps,
                        "cost_metric": cfg.search.cost_metric}}
  if search_result is not None:
    h = search_result.history
    if h.get("steps"):
      choices = {d.label: [getattr(c, "label", str(c)) for c in d.choices] for d in space.decisions}
      results["decision_history"] = {"steps": h["steps"], "probs": h["probs"], "choices": choices}
    results["search"].update({"seconds": round(search_result.seconds, 1), "cost_target": search_result.cost_target,
                              "derived_cost": search_result.cost, "point": search_result.point})
  results.update(extra or {})
  results.update(ranking_extra(workdir))
  if jax.process_index() != 0:
    return {}
  return report.write_report(paths_lib.join(workdir, "report"), results)
