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
