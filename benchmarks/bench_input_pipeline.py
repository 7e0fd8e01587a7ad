"""Train-pipeline throughput (clips/s) of autox3d_jax.data on this machine.

    python benchmarks/bench_input_pipeline.py                    # demo + x3d_s settings
    python benchmarks/bench_input_pipeline.py --settings demo --batches 40
    python benchmarks/bench_input_pipeline.py --data_dir ~/tensorflow_datasets   # use a built moving_digits/motion

Settings:
  demo   16 frames x stride 1 from 64x64 moving_digits/motion clips, short side jittered to [64, 80], crop 56,
         batch 16. Reads the real tfds build from --data_dir if moving_digits/motion is there, else builds a
         1,024-clip variant of the same config into a temp dir first (build time reported, not timed).
  x3d_s  13 frames x stride 6 (X3D-S), short side jittered to [182, 228], crop 160, batch 8, from clip records of
         Kinetics-like videos: 90 frames at 256x340 (short side 256, as Kinetics is usually stored), JPEG q90 of
         noisy moving-digit scenes (bytes/frame reported; natural video decodes at a similar cost per byte).
  Each also reports 30-view eval (10 temporal x 3 spatial) videos/s for reference.

Timing: the full train pipeline as the trainer consumes it (`as_numpy_iterator`, normalised float32 batches),
`--warmup` batches untimed (tf.data autotuning and the shuffle buffer fill), then `--batches` timed. Reported
clips/s = timed clips / wall seconds; clips_per_cpu_s divides by the process's CPU seconds instead (robust to
other jobs on a shared machine). The consumer figure to compare with is the JAX training throughput recorded
by benchmarks/bench_x3d_train.py in benchmarks/results/x3d_train.jsonl (size b, 8x64x64, for the demo; size a,
13x160x160, for X3D-S) or --consumer_clips_per_s. Target: >= 3x the consumer. The machine's load average is
recorded: on a shared 2-core box other jobs skew the figures (and a trainer shares the cores with its input).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


RESULTS_X3D = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "x3d_train.jsonl")


def _load():
  return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _consumer(size: str) -> float | None:
  """Latest recorded JAX training clips/s for bench_x3d_train size `size`."""
  if not os.path.exists(RESULTS_X3D):
    return None
  best = None
  with open(RESULTS_X3D) as f:
    for line in f:
      try:
        r = json.loads(line)
      except ValueError:
        continue
      if r.get("framework") == "jax" and r.get("size") == size and r.get("clips_per_s"):
        best = float(r["clips_per_s"])
  return best


def _time_iter(it, warmup: int, batches: int, batch_size: int) -> dict:
  t0 = time.perf_counter()
  for _ in range(warmup):
    next(it)
  first = time.perf_counter() - t0
  cpu0 = _cpu_s()
  t0 = time.perf_counter()
  for _ in range(batches):
    b = next(it)
  dt = time.perf_counter() - t0
  cpu = _cpu_s() - cpu0
  clips = batches * batch_size
  return {"warmup_s": round(first, 2), "timed_batches": batches, "timed_s": round(dt, 2),
          "clips_per_s": round(clips / dt, 1), "cpu_s": round(cpu, 2),
          # Contention-free view: clips per CPU-second of this process (all tf.data threads), and what
          # that gives on all cores of an otherwise idle machine (an upper bound).
          "clips_per_cpu_s": round(clips / cpu, 1) if cpu > 0 else None,
          "idle_machine_clips_per_s_bound": round(clips / cpu * (os.cpu_count() or 1), 1) if cpu > 0 else None,
          "video_shape": list(b["video"].shape)}


def _cpu_s() -> float:
  import resource

  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def _demo_source(data_dir: str | None, tmp: str) -> tuple[str, str, float | None]:
  from autox3d_jax.data import registry
  from autox3d_jax.projects.moving_digits.builder import build_moving_digits

  if data_dir:
    try:
      registry.get_source("moving_digits/motion", "train", data_dir)
      return "moving_digits/motion", data_dir, None
    except registry.DatasetError:
      pass
  t0 = time.perf_counter()
  path = build_moving_digits("motion", tmp, num_train=1024, num_validation=64)
  config = os.path.basename(os.path.dirname(path))
  return f"moving_digits/{config}", tmp, time.perf_counter() - t0


def _x3d_source(tmp: str, videos: int, frames: int) -> tuple[str, float, float]:
  from autox3d_jax.data import records
  from autox3d_jax.projects.moving_digits import digits

  t0 = time.perf_counter()
  spec = digits.ClipSpec(task="motion", num_frames=frames, height=256, width=340, max_noise=0.1)
  out = os.path.join(tmp, "kinetics_like")
  meta = records.DatasetMeta(name="kinetics_like", class_names=list(digits.MOTION_CLASSES), flip_invariant=True,
                             image_format="jpeg", fps=30.0, short_side=256)
  nbytes = nframes = 0
  with records.ShardedWriter(out, "train", 4, videos) as w:
    for index, label, jpegs in digits.iter_encoded(spec, "train", videos, seed=0, quality=90, chunk=2):
      nbytes += sum(len(j) for j in jpegs)
      nframes += len(jpegs)
      w.write(records.encode_clip(jpegs, label=label, video_id=f"v{index}", fps=30.0, dataset="kinetics_like",
                                  num_classes=12, height=256, width=340), index)
  meta.splits["train"] = records.SplitMeta(files=w.filenames, shard_lengths=w.lengths)
  meta.splits["validation"] = meta.splits["train"]
  meta.save(out)
  return "kinetics_like", time.perf_counter() - t0, nbytes / max(nframes, 1)


def run(setting: str, args, tmp: str) -> dict:
  from autox3d_jax.data import pipeline

  rec = {"bench": "input_pipeline", "setting": setting, "cpus": os.cpu_count(), "load_before": _load()}
  if setting == "demo":
    name, data_dir, build_s = _demo_source(args.data_dir, tmp)
    rec.update(dataset=name, build_s=None if build_s is None else round(build_s, 1))
    train_kw = dict(num_frames=16, sampling_stride=1, crop_size=56, scale_jitter=(64, 80), batch_size=16)
    eval_kw = dict(num_frames=16, sampling_stride=1, crop_size=56, short_side=64, batch_size=4)
    consumer = args.consumer_clips_per_s or _consumer("b")
  else:
    name, gen_s, bpf = _x3d_source(tmp, args.x3d_videos, 90)
    data_dir = tmp
    rec.update(dataset=f"{name} ({args.x3d_videos} videos x 90 frames 256x340)", build_s=round(gen_s, 1),
               jpeg_bytes_per_frame=int(bpf))
    train_kw = dict(num_frames=13, sampling_stride=6, crop_size=160, scale_jitter=(182, 228), batch_size=8)
    eval_kw = dict(num_frames=13, sampling_stride=6, crop_size=182, short_side=182, batch_size=1)
    consumer = args.consumer_clips_per_s or _consumer("a")
  common = dict(data_dir=data_dir, process_index=0, process_count=1)
  p = pipeline.make_train_pipeline(name, shuffle_buffer=256, seed=0, deterministic=not args.nondeterministic,
                                   **train_kw, **common)
  rec.update(train=dict(**{k: v for k, v in train_kw.items()}, **_time_iter(
      p.as_numpy_iterator(), args.warmup, args.batches, train_kw["batch_size"])))
  rec["train"]["skipped"] = p.stats.as_dict()["skipped_records"]
  if not args.no_eval:
    e = pipeline.make_eval_pipeline(name, split="validation", num_temporal_views=10, num_spatial_crops=3,
                                    **eval_kw, **common)
    n = min(args.eval_batches, e.num_batches - 1)
    timing = _time_iter(e.as_numpy_iterator(), 1, n, eval_kw["batch_size"])
    rec["eval_30view"] = {**eval_kw, "videos_per_s": timing["clips_per_s"], "timed_batches": n,
                          "video_shape": timing["video_shape"]}
  rec["consumer_clips_per_s"] = consumer
  if consumer:
    rec["ratio_to_consumer"] = round(rec["train"]["clips_per_s"] / consumer, 1)
    rec["meets_3x"] = rec["ratio_to_consumer"] >= 3.0
  rec["load_after"] = _load()
  return rec


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--settings", nargs="+", default=["demo", "x3d_s"], choices=["demo", "x3d_s"])
  p.add_argument("--batches", type=int, default=30, help="timed train batches")
  p.add_argument("--warmup", type=int, default=5)
  p.add_argument("--eval_batches", type=int, default=8)
  p.add_argument("--no_eval", action="store_true")
  p.add_argument("--x3d_videos", type=int, default=24)
  p.add_argument("--data_dir", default=None, help="tfds data_dir with a built moving_digits/motion (optional)")
  p.add_argument("--consumer_clips_per_s", type=float, default=None)
  p.add_argument("--nondeterministic", action="store_true", help="tf.data deterministic=False")
  p.add_argument("--results", default=None, help="also append the JSON lines to this file")
  args = p.parse_args(argv)
  tmp = tempfile.mkdtemp(prefix="bench_input_")
  try:
    for setting in args.settings:
      rec = run(setting, args, tmp)
      line = json.dumps(rec)
      print(line, flush=True)
      if args.results:
        with open(args.results, "a") as f:
          f.write(line + "\n")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
