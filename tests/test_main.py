"""The product loop: config validation, the tiny demo end to end, exact resume after SIGKILL, NaN stop."""
import json
import os
import subprocess
import sys

import pytest

from autox3d_jax import config as config_lib
from autox3d_jax.train import setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(path="configs/demo.py", arg="tiny"):
  import importlib.util
  spec = importlib.util.spec_from_file_location("cfg_module", os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = module.get_config(arg)
  cfg.lock()
  return cfg


def main_cmd(workdir, *overrides, config="configs/demo.py:tiny"):
  return [sys.executable, "-m", "autox3d_jax.main", f"--config={os.path.join(ROOT, config)}",
          f"--workdir={workdir}", *overrides]


def env_for(data_dir):
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["TFDS_DATA_DIR"] = str(data_dir)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
  env["XDG_CACHE_HOME"] = str(os.path.join(str(data_dir), "..", "cache"))   # the compilation cache stays in tmp
  return env


@pytest.mark.parametrize("key, value, message", [
    ("search.strategy", "darts", "config.search.strategy = 'darts' is not allowed"),
    ("search.num_groups", 3, "must be divisible by config.search.num_groups"),
    ("data.arch_val_fraction", 1.5, "arch_val_fraction"),
    ("mode", "fly", "config.mode"),
])
def test_bad_config_values_are_rejected_naming_the_key(key, value, message):
  cfg = load_config()
  section, name = key.split(".") if "." in key else (None, key)
  if section:
    cfg[section][name] = value
  else:
    cfg[name] = value
  with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    config_lib.validate(cfg)


def test_unknown_config_key_fails_on_the_command_line(tmp_path):
  out = subprocess.run(main_cmd(tmp_path, "--config.search.stepz=3"), capture_output=True, text=True,
                       env=env_for(tmp_path / "data"), timeout=300)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1] == ("error: --config.search.stepz: no such config key 'stepz'; "
                                                 'Did you mean "steps" instead of "stepz"?')
  assert "Traceback" not in out.stderr


@pytest.mark.parametrize("flag, line", [
    ("--config.search.steps=abc", "error: flag --config.search.steps=abc: invalid literal for int() with base 10: 'abc'"),
    (f"--config={os.path.join(ROOT, 'configs/demo.py')}:moton", "cannot parse 'moton' in 'moton'; it accepts one of "
                                                                 "['speed', 'motion', 'tiny', 'inputs', 'multitask', 'hybrid']"),
])
def test_bad_flags_fail_in_one_line(tmp_path, flag, line):
  cmd = [a for a in main_cmd(tmp_path) if not (flag.startswith("--config=") and a.startswith("--config="))] + [flag]
  out = subprocess.run(cmd, capture_output=True, text=True, env=env_for(tmp_path / "data"), timeout=300)
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and last.endswith(line), last


def test_all_shipped_configs_are_valid():
  for path, args in [("configs/demo.py", ["", "tiny", "speed", "motion", "inputs", "hybrid"]),
                     ("configs/x3d.py", ["variant=S", "variant=XS,runlocal"]),
                     ("configs/search_autox3d.py", ["target=S", "target=M,runlocal"]),
                     ("configs/search_hybrid.py", ["target=S", "target=L", "target=M,runlocal",
                                                   "target=S,downsample", "target=XS,runlocal,downsample"])]:
    for arg in args:
      cfg = config_lib.validate(load_config(path, arg))
      if cfg.mode in ("search", "demo"):
        setup.check_space(cfg)     # the ops, heads, windows and modules fit the space


def test_demo_default_is_the_speed_task_and_motion_stays_a_variant():
  default, speed, motion = (load_config("configs/demo.py", a) for a in ("", "speed", "motion"))
  assert default.to_dict() == speed.to_dict()
  assert default.data.name == "moving_digits/speed_small" and default.train.steps == 1200
  assert motion.data.name == "moving_digits/motion_small" and motion.train.steps == 600
  assert default.space.to_dict() == motion.space.to_dict()   # one search space, two tasks
  with pytest.raises(ValueError, match="'motion'"):
    load_config("configs/demo.py", "moton")
  inputs = load_config("configs/demo.py", "inputs")     # the speed demo with its clip searched too
  assert inputs.space.input_frames == (4, 8) and inputs.space.input_strides == (1, 2)
  inputs.space.input_frames, inputs.space.input_strides = (), ()
  assert inputs.to_dict() == speed.to_dict()
  multitask = load_config("configs/demo.py", "multitask")   # the three tasks in one search, the speed recipe
  assert multitask.mode == "search" and multitask.search.tasks == "motion,appearance,speed"
  assert [multitask.tasks[t].dataset for t in ("motion", "appearance", "speed")] == [
      "moving_digits/motion_small", "moving_digits/appearance_small", "moving_digits/speed_small"]
  assert multitask.space.to_dict() == speed.space.to_dict()
  assert multitask.search.weight_opt.to_dict() == speed.search.weight_opt.to_dict()
  hybrid = load_config("configs/demo.py", "hybrid")        # the speed demo over a conv + attention space
  assert {"csn", "stm", "tea", "lsa", "axial", "mlp"} <= {op.split(":")[0] for op in hybrid.space.ops}
  assert hybrid.search.sandwich_ops == speed.space.ops     # the warm-up child is the default space's largest
  hybrid.space.ops, hybrid.search.sandwich_ops = speed.space.ops, ()
  assert hybrid.to_dict() == speed.to_dict()


def test_seeds_entry_reports_the_mean_and_every_seed():
  from autox3d_jax.run import seeds_entry
  from autox3d_jax.models import zoo
  from autox3d_jax.train.train_loop import TrainResult
  spec = zoo.get("x3d_xs", 10)
  runs = [TrainResult("net", spec, top1, top5, 0.5, 1234, 1.0, 800)
          for top1, top5 in [(0.68, 1.0), (0.6275, 0.99), (0.61, 0.98)]]
  entry = seeds_entry(runs, "searched", [3, 4, 5])
  assert entry["top1"] == pytest.approx((0.68 + 0.6275 + 0.61) / 3)
  assert entry["top5"] == pytest.approx((1.0 + 0.99 + 0.98) / 3)
  assert entry["top1_per_seed"] == [0.68, 0.6275, 0.61] and entry["seeds"] == [3, 4, 5]
  assert entry["name"] == "net" and entry["kind"] == "searched" and entry["arch"] == spec
  with pytest.raises(ValueError, match="2 training results for 3 seeds"):
    seeds_entry(runs[:2], "searched", [3, 4, 5])


def test_train_seeds_must_be_positive():
  cfg = load_config()
  cfg.train.seeds = 0
  with pytest.raises(config_lib.ConfigError, match="config.train.seeds must be >= 1"):
    config_lib.validate(cfg)


@pytest.mark.slow
def test_tiny_demo_end_to_end(tmp_path):
  # Two retraining seeds: the report's top-1 is their mean, and each seed trains in its own run.
  out = subprocess.run(main_cmd(tmp_path / "work", "--config.train.seeds=2"), capture_output=True, text=True,
                       env=env_for(tmp_path / "data"), timeout=1200)
  assert out.returncode == 0, out.stderr[-3000:]
  report_dir = tmp_path / "work" / "report"
  results = json.loads((report_dir / "results.json").read_text())
  kinds = {m["kind"] for m in results["models"]}
  assert kinds == {"searched", "baseline"}
  for m in results["models"]:
    assert 0.0 <= m["top1"] <= 1.0 and m["gflops"] > 0
    assert m["seeds"] == [0, 1] and len(m["top1_per_seed"]) == 2
    assert m["top1"] == pytest.approx(sum(m["top1_per_seed"]) / 2)
  checkpoints = sorted(os.listdir(tmp_path / "work" / "checkpoints"))
  assert checkpoints == ["search", "train_AutoX3D__searched__seed_0", "train_AutoX3D__searched__seed_1",
                         "train_X3D-like_baseline_seed_0", "train_X3D-like_baseline_seed_1"], checkpoints
  md = (report_dir / "report.md").read_text()
  assert "top-1 % per seed" in md
  for m in results["models"]:      # the temporal-extent line of each network (#24's task-adaptation measure)
    from autox3d_jax.cost.analytic import temporal_extent
    from autox3d_jax.models.spec import ArchSpec
    t = temporal_extent(ArchSpec.from_dict(m["arch"]))
    assert f"Temporal extent of {m['name']}: mean temporal kernel k_t {t.mean_kt:.2f}" in md
  for name in ("report.md", "pareto.png", "decisions.png"):
    assert (report_dir / name).stat().st_size > 0
  assert (tmp_path / "work" / "search" / "arch.json").exists()


@pytest.mark.slow
def test_search_killed_and_restarted_derives_the_same_architecture(tmp_path):
  env = env_for(tmp_path / "data")
  overrides = ["--config.mode=search", "--config.search.steps=8", "--config.checkpoint.every_steps=2"]
  straight = subprocess.run(main_cmd(tmp_path / "a", *overrides), capture_output=True, text=True, env=env,
                            timeout=1200)
  assert straight.returncode == 0, straight.stderr[-3000:]
  killed_env = {**env, "AUTOX3D_FAULT_KILL_AFTER_SAVE": "4"}
  killed = subprocess.run(main_cmd(tmp_path / "b", *overrides), capture_output=True, text=True, env=killed_env,
                          timeout=1200)
  assert killed.returncode == -9, killed.stderr[-3000:]    # SIGKILL right after saving step 4
  assert not (tmp_path / "b" / "search" / "point.json").exists()
  resumed = subprocess.run(main_cmd(tmp_path / "b", *overrides), capture_output=True, text=True, env=env,
                           timeout=1200)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed search from step 4" in resumed.stderr
  a = json.loads((tmp_path / "a" / "search" / "point.json").read_text())
  b = json.loads((tmp_path / "b" / "search" / "point.json").read_text())
  assert a == b
  la = json.loads((tmp_path / "a" / "search" / "logits.json").read_text())
  lb = json.loads((tmp_path / "b" / "search" / "logits.json").read_text())
  for k in la:
    assert la[k] == pytest.approx(lb[k], abs=1e-5)


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
  env = env_for(tmp_path / "data")
  out = subprocess.run(main_cmd(tmp_path / "w", "--config.mode=search", "--config.search.steps=6",
                                "--config.checkpoint.every_steps=2", "--config.search.weight_opt.lr=1e30"),
                       capture_output=True, text=True, env=env, timeout=1200)
  assert out.returncode != 0
  assert "loss became nan" in out.stderr.lower() or "loss became inf" in out.stderr.lower()
  assert "is intact" in out.stderr or "no checkpoint had been written yet" in out.stderr
  assert not (tmp_path / "w" / "search" / "point.json").exists()


@pytest.mark.slow
def test_latency_constrained_search_end_to_end(tmp_path):
  """cost_metric=latency: the search measures the block table on this backend, saves it in the
  workdir, optimises table-predicted milliseconds (target: the X3D-like point's latency), reports
  the derived net's measured latency; a second search reuses the saved table instead of re-timing."""
  from autox3d_jax.cost import latency
  from autox3d_jax.search.cost_table import CostTable
  from autox3d_jax.train import setup
  env = env_for(tmp_path / "data")
  overrides = ["--config.mode=search", "--config.search.steps=4", "--config.search.cost_metric=latency",
               "--config.latency.repeats=3", "--config.latency.warmup=1"]
  first = subprocess.run(main_cmd(tmp_path / "a", *overrides), capture_output=True, text=True, env=env,
                         timeout=1800)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "measuring a new one" in first.stderr
  table_path = tmp_path / "a" / "latency_table.json"
  table = latency.LatencyTable.load(str(table_path))
  result = json.loads((tmp_path / "a" / "search" / "result.json").read_text())
  point = json.loads((tmp_path / "a" / "search" / "point.json").read_text())
  assert result["cost_metric"] == "latency"

  cfg = load_config()
  space = setup.build_space(cfg, classes=table_classes(tmp_path / "a"))
  ms = CostTable.build(space, "latency", fns=latency.latency_fns(table))
  assert result["cost"] == pytest.approx(ms.of_point(point), rel=1e-5)
  assert result["cost_target"] == pytest.approx(ms.of_point(setup.x3d_like_point(space)), rel=1e-5)
  searched = json.loads((tmp_path / "a" / "report" / "results.json").read_text())["models"][0]
  assert searched["latency_ms"] > 0

  second = subprocess.run(main_cmd(tmp_path / "b", *overrides, f"--config.latency.path={table_path}"),
                          capture_output=True, text=True, env=env, timeout=1800)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "reusing" in second.stderr and "measuring a new one" not in second.stderr


def table_classes(workdir):
  """The derived ArchSpec's class count (the tiny dataset's)."""
  return json.loads((workdir / "search" / "arch.json").read_text())["head"]["num_classes"]


@pytest.mark.slow
def test_sigterm_saves_and_exits_then_the_restart_resumes(tmp_path):
  """A preempted TPU VM gets SIGTERM: the search finishes its step, saves, exits with 143 naming the
  saved step; the same command then resumes from that step and completes."""
  import re
  import signal
  import time
  env = env_for(tmp_path / "data")
  overrides = ["--config.mode=search", "--config.search.steps=100000", "--config.checkpoint.every_steps=100000",
               "--config.log_every_steps=1"]
  log_path = tmp_path / "first.log"
  with open(log_path, "w") as log:
    proc = subprocess.Popen(main_cmd(tmp_path / "w", *overrides), stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 1200
    while "search step 3/" not in log_path.read_text() and proc.poll() is None and time.time() < deadline:
      time.sleep(0.5)
    assert proc.poll() is None, log_path.read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=600)
  text = log_path.read_text()
  assert code == 143, text[-3000:]
  saved = int(re.search(r"SIGTERM: saved step (\d+)", text).group(1))
  assert saved >= 3
  assert not (tmp_path / "w" / "search" / "point.json").exists()
  resumed = subprocess.run(main_cmd(tmp_path / "w", "--config.mode=search", f"--config.search.steps={saved + 2}",
                                    "--config.checkpoint.every_steps=100000", "--config.resume=search.steps"),
                           capture_output=True, text=True, env=env, timeout=1200)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resumed search from step {saved}" in resumed.stderr
  assert (tmp_path / "w" / "search" / "point.json").exists()
