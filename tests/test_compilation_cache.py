"""config.compilation_cache: the directory rule, and a second process loading what the first compiled."""
import os
import subprocess
import sys
import textwrap

from autox3d_jax import config as config_lib
from autox3d_jax.train import setup

import toys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cache_directory_rule(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  cfg = config_lib.base_config()
  assert setup.compilation_cache_dir(cfg) == str(tmp_path / "xdg" / "autox3d_jax" / "jax")
  assert setup.compilation_cache_dir(toys.set_keys(cfg, {"compilation_cache": "off"})) is None
  assert setup.compilation_cache_dir(toys.set_keys(cfg, {"compilation_cache": "gs://b/cache"})) == "gs://b/cache"


def test_a_second_process_loads_the_compiled_program_from_the_cache(tmp_path):
  script = textwrap.dedent(f"""
      import jax, jax.numpy as jnp
      from autox3d_jax import config as config_lib
      from autox3d_jax.train import setup
      hits = []
      jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event) if "cache_hits" in event else None)
      cfg = config_lib.base_config()
      cfg.compilation_cache = {str(tmp_path / "cache")!r}
      setup.enable_compilation_cache(cfg)
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)   # this toy compiles in ms
      f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + 1.0)
      f(jnp.ones((64, 64))).block_until_ready()
      print("hits", len(hits))
  """)
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
          for _ in range(2)]
  for r in runs:
    assert r.returncode == 0, r.stderr[-2000:]
  assert runs[0].stdout.split()[-1] == "0" and int(runs[1].stdout.split()[-1]) >= 1
  assert os.listdir(tmp_path / "cache")
