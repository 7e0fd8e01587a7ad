"""A SIGTERM that reaches one host of a two-host slice: both processes of the real command
(`python -m autox3d_jax.main`, joined through AUTOX3D_COORDINATOR / AUTOX3D_NUM_PROCESSES /
AUTOX3D_PROCESS_ID, gloo collectives, 2 CPU devices each, the search state split across them) save
the same step and exit 143; the same command on both resumes from it and derives what an
uninterrupted two-process search derives.

Each process has its own TFDS_DATA_DIR and compilation cache (a host's local disk) and both share
the workdir (a bucket on a real slice)."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from test_main import env_for, main_cmd
from test_multiprocess import free_port

STEPS = 30
COMMON = ["--config.mode=search", f"--config.search.steps={STEPS}", "--config.checkpoint.every_steps=100000",
          "--config.log_every_steps=1"]


def start(tmp_path, workdir, tag, *overrides):
  """Two processes of main on one workdir; returns [(Popen, log path)] for process 0 and 1."""
  port = free_port()
  procs = []
  for index in range(2):
    env = env_for(tmp_path / f"data{index}")
    env.update(AUTOX3D_COORDINATOR=f"127.0.0.1:{port}", AUTOX3D_NUM_PROCESSES="2", AUTOX3D_PROCESS_ID=str(index),
               XLA_FLAGS="--xla_force_host_platform_device_count=2", AUTOX3D_DEPTHWISE_IMPL="shift",
               XDG_CACHE_HOME=str(tmp_path / f"cache{index}"))
    log_path = tmp_path / f"{tag}{index}.log"
    with open(log_path, "w") as log:
      procs.append((subprocess.Popen(main_cmd(workdir, *COMMON, *overrides), stdout=log, stderr=subprocess.STDOUT,
                                     env=env), log_path))
  return procs


def finish(procs, timeout=900):
  """Exit codes and logs of both processes (both killed if one hangs past the timeout)."""
  deadline = time.time() + timeout
  codes = []
  for proc, _ in procs:
    try:
      codes.append(proc.wait(timeout=max(1, deadline - time.time())))
    except subprocess.TimeoutExpired:
      for other, _ in procs:
        other.kill()
      codes.append("hung")
  return codes, [log.read_text() for _, log in procs]


@pytest.mark.slow
def test_sigterm_on_one_host_stops_both_at_the_same_step_and_the_restart_resumes_exactly(tmp_path):
  procs = start(tmp_path, tmp_path / "w", "first")
  deadline = time.time() + 900
  while not all("search step 3/" in log.read_text() for _, log in procs) and time.time() < deadline:
    assert all(p.poll() is None for p, _ in procs), [log.read_text()[-3000:] for _, log in procs]
    time.sleep(0.5)
  procs[1][0].send_signal(signal.SIGTERM)           # only host 1 is told
  codes, logs = finish(procs)
  assert codes == [143, 143], [text[-3000:] for text in logs]
  here = re.search(r"preempted: SIGTERM: saved step (\d+)", logs[1])
  other = re.search(r"preempted: SIGTERM \(on another process\): saved step (\d+)", logs[0])
  assert here and other, [text[-3000:] for text in logs]
  saved = int(here.group(1))
  assert int(other.group(1)) == saved and 3 <= saved < STEPS
  assert "another process got SIGTERM" in logs[0]
  assert not (tmp_path / "w" / "search" / "point.json").exists()

  codes, logs = finish(start(tmp_path, tmp_path / "w", "resumed", "--config.resume=search.steps"))
  assert codes == [0, 0], [text[-3000:] for text in logs]
  assert all(f"resumed search from step {saved}" in text for text in logs)

  codes, logs = finish(start(tmp_path, tmp_path / "straight", "straight"))
  assert codes == [0, 0], [text[-3000:] for text in logs]
  resumed, straight = (json.loads((tmp_path / w / "search" / "point.json").read_text()) for w in ("w", "straight"))
  assert resumed == straight
  la, lb = (json.loads((tmp_path / w / "search" / "logits.json").read_text()) for w in ("w", "straight"))
  assert la.keys() == lb.keys()
  for k in la:
    assert la[k] == pytest.approx(lb[k], abs=1e-5), k
