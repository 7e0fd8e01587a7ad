"""hostmem.keep_freed_memory: a freed large block stays in the process (no munmap, no re-fault).

Each case runs in a fresh interpreter, so the pytest process keeps glibc's defaults.
"""
import json
import os
import subprocess
import sys

import pytest

_PROBE = r"""
import json, os, sys
import numpy as np
from autox3d_jax.cpu import hostmem

def rss_mib():
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

applied = hostmem.keep_freed_memory() if sys.argv[1] == "keep" else False
again = hostmem.keep_freed_memory() if sys.argv[1] == "keep" else False
before = rss_mib()
block = np.ones(64 * 2**20, np.float32)          # 256 MiB, touched
touched = rss_mib()
del block
after = rss_mib()
print(json.dumps(dict(applied=applied, again=again, grew=touched - before, kept=after - before)))
"""


def _probe(mode: str, **env) -> dict:
  out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120,
                       env={**os.environ, **env}, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.exists("/proc/self/statm"),
                                reason="glibc malloc tuning and /proc RSS are Linux-only")


def test_default_malloc_returns_a_freed_large_block_to_the_os():
  r = _probe("default")
  assert r["grew"] > 200
  assert r["kept"] < 50, r          # munmap'd: the reference behaviour the setting changes


def test_keep_freed_memory_keeps_the_block_and_is_idempotent():
  r = _probe("keep")
  assert r["applied"] is True and r["again"] is True
  assert r["grew"] > 200
  assert r["kept"] > 200, r         # still resident: the next step reuses it without page faults


def test_opt_out_by_environment():
  r = _probe("keep", AUTOX3D_KEEP_HOST_MEMORY="0")
  assert r["applied"] is False
  assert r["kept"] < 50, r
