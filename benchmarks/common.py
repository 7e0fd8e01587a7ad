"""Helpers shared by the benchmark scripts (run as `python benchmarks/<script>.py`, so this folder is
on sys.path)."""
import statistics
import subprocess


def load_avg() -> str:
  """`uptime`'s load average part (falls back to /proc/loadavg): every figure records the load it
  was measured under, since the CPU is shared."""
  try:
    out = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    return out.split("load average:")[-1].strip() if "load average" in out else out
  except Exception:  # pragma: no cover
    with open("/proc/loadavg") as f:
      return " ".join(f.read().split()[:3])


def append_line(path: str, bench: str, line: dict) -> dict:
  """`line` with the bench's name and the load average first, printed as one JSON line and
  appended to the JSON-lines file `path` (its folder created). Returns the line written."""
  import json
  import os
  line = {"bench": bench, "load": load_avg(), **line}
  print(json.dumps(line), flush=True)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a") as f:
    f.write(json.dumps(line) + "\n")
  return line


def mean_se(values) -> tuple[float, float]:
  """(mean, standard error of the mean) of `values`; the SE is nan for a single value."""
  values = list(values)
  se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
  return statistics.mean(values), se


def compile_with_peak(fn, *args):
  """jit(fn) lowered and compiled for `args`: (compiled, compile seconds, peak bytes of XLA's memory
  analysis, temp + arguments + outputs, or None where the backend gives none)."""
  import time
  import jax
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  memory = compiled.memory_analysis()
  peak = None if memory is None else int(memory.temp_size_in_bytes + memory.argument_size_in_bytes
                                          + memory.output_size_in_bytes)
  return compiled, compile_s, peak


# ------------------------------------------------------------------- stand-alone trainings, cached
# Spec fields added after the first stand-alone trainings were cached, at the values that leave a
# network unchanged: the cache key leaves them out, so adding such a field retrains nothing.
LATER_SPEC_DEFAULTS = {"block": {"heads": 0}, "stage": {"downsample": "", "downsample_heads": 0}}


def canonical_json(spec) -> str:
  """`spec`'s JSON without the fields of LATER_SPEC_DEFAULTS that hold their neutral values."""
  import json
  d = spec.to_dict()
  drop = lambda node, kind: {k: v for k, v in node.items()   # noqa: E731
                             if not (k in LATER_SPEC_DEFAULTS[kind] and v == LATER_SPEC_DEFAULTS[kind][k])}
  d["stages"] = [{**drop(st, "stage"), "blocks": [drop(b, "block") for b in st["blocks"]]} for st in d["stages"]]
  return json.dumps(d, indent=2)


def training_key(cfg, spec) -> str:
  """The cache key of one stand-alone training: a hash of its run identity (seed, data, recipe,
  network, code version; `train.identity.of_train`) over the canonical spec JSON."""
  import hashlib
  import json
  from autox3d_jax.train import identity
  ident = identity.of_train(cfg, canonical_json(spec))
  return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


class StandaloneCache:
  """Top-1 of stand-alone trainings recorded in a JSON-lines file (benchmarks/results/
  ranking_standalone.jsonl), keyed by `training_key`: a benchmark trains only what is missing."""

  def __init__(self, path: str):
    import json
    import os
    self.path = path
    self.top1 = {}
    if os.path.exists(path):
      with open(path) as f:
        for line in f:
          if line.strip():
            rec = json.loads(line)
            self.top1[rec["identity"]] = rec["top1"]

  def train(self, cfg, spec, workdir: str, extra: dict | None = None) -> float:
    """`spec`'s top-1 under `cfg` (mode train, its seed): recorded, or trained in `workdir` and
    recorded with `extra` fields."""
    import os
    import time
    from autox3d_jax.train.train_loop import run_train
    key = training_key(cfg, spec)
    if key not in self.top1:
      t0 = time.time()
      r = run_train(cfg, os.path.join(workdir, f"{spec.name}_seed{cfg.seed}"), spec, spec.name)
      self.top1[key] = round(r.top1, 4)
      append_line(self.path, "ranking_standalone",
                  {"identity": key, "name": spec.name, **(extra or {}), "seed": cfg.seed, "steps": cfg.train.steps,
                   "gflops": round(r.gflops, 6), "top1": self.top1[key], "seconds": round(time.time() - t0, 1)})
    return self.top1[key]
