"""Helpers shared by the benchmark scripts (run as `python benchmarks/<script>.py`, so this folder is
on sys.path)."""
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
