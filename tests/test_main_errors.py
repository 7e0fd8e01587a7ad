"""How `main` ends on bad input and signals: one line naming the cause, an exit code a supervisor
can act on, nothing built first; a second SIGTERM ends even a blocked process."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from autox3d_jax import config as config_lib
from autox3d_jax import main as main_lib

from test_main import env_for, main_cmd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_check_workdir_rejects_empty_a_file_and_uncreatable(tmp_path):
  with pytest.raises(config_lib.ConfigError, match="--workdir is empty"):
    main_lib.check_workdir("")
  with pytest.raises(config_lib.ConfigError, match="--workdir is empty"):
    main_lib.check_workdir("  ")
  a_file = tmp_path / "notes.txt"
  a_file.write_text("x")
  with pytest.raises(config_lib.ConfigError, match=f"--workdir={a_file} is a file"):
    main_lib.check_workdir(str(a_file))
  with pytest.raises(config_lib.ConfigError, match=f"--workdir={a_file}/run cannot be created or written: Not a directory"):
    main_lib.check_workdir(str(a_file / "run"))
  assert main_lib.check_workdir(str(tmp_path / "new" / "run")) == str(tmp_path / "new" / "run")
  assert os.path.isdir(tmp_path / "new" / "run") and os.listdir(tmp_path / "new" / "run") == []
  for url in ("s3://bucket/run", "foo://x"):   # a gs:// workdir is probed: tests/test_gcs.py
    with pytest.raises(config_lib.ConfigError, match=f"--workdir={url}: .* is not supported"):
      main_lib.check_workdir(url)


def test_a_workdir_that_is_a_file_fails_in_one_line_before_the_dataset_is_built(tmp_path):
  a_file = tmp_path / "w"
  a_file.write_text("keep me")
  out = subprocess.run(main_cmd(a_file), capture_output=True, text=True, env=env_for(tmp_path / "data"), timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  assert out.stderr.strip().splitlines()[-1] == f"error: --workdir={a_file} is a file, not a directory: pass a directory"
  assert "Traceback" not in out.stderr
  assert not (tmp_path / "data").exists() and a_file.read_text() == "keep me"


def test_training_data_without_one_valid_record_fails_in_one_line(tmp_path):
  """Before: the run looped forever in next(), silent, and ignored SIGTERM."""
  from autox3d_jax.data import testing
  data = tmp_path / "records"
  testing.write_records_dataset(str(data / "void"), name="void", num_videos=10, num_frames=8, num_shards=2,
                                corrupt={i: b"not an image" * 8 for i in range(10)})
  began = time.monotonic()
  out = subprocess.run(main_cmd(tmp_path / "w", "--config.mode=search", "--config.data.name=void",
                                f"--config.data.data_dir={data}"),
                       capture_output=True, text=True, env=env_for(tmp_path / "tfds"), timeout=600)
  assert out.returncode == 2, out.stderr[-3000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: void/train[:") and "no valid clip in a whole pass" in last, out.stderr[-3000:]
  assert "Traceback" not in out.stderr
  assert time.monotonic() - began < 300


def test_a_second_sigterm_ends_a_process_blocked_in_a_call(tmp_path):
  """The first SIGTERM only asks for a save after the current step; the second exits at once with
  143, even though the main thread never returns from the call it is blocked in."""
  script = textwrap.dedent("""
      import os, sys, time
      from autox3d_jax import preemption
      with preemption.SigtermFlag() as flag:
        print("ready", flush=True)
        r, w = os.pipe()
        os.read(r, 1)          # blocks for good: nothing writes
      print("left the block", flush=True)
  """)
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env)
  assert proc.stdout.readline().strip() == "ready"
  proc.send_signal(signal.SIGTERM)
  time.sleep(1.0)
  assert proc.poll() is None                       # the first one does not end it
  proc.send_signal(signal.SIGTERM)
  code = proc.wait(timeout=20)
  err = proc.stderr.read()
  assert code == 143, err
  assert "send SIGTERM again to exit at once" in err and "exiting now without saving" in err


def _scalar_tags(logdir):
  import glob
  import tensorflow as tf
  tags = {}
  for path in glob.glob(os.path.join(str(logdir), "**", "events.out.tfevents.*"), recursive=True):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag.startswith("data/"):
          tags.setdefault(value.tag, []).append(float(tf.make_ndarray(value.tensor)))
  return tags


@pytest.mark.slow
def test_a_search_on_corrupt_records_reports_what_it_skipped(tmp_path):
  """Before: PipelineStats was read nowhere; the run ended rc 0 with no count anywhere. Now the
  counts are in the periodic log (with a warning above config.data.max_skipped_fraction), the
  TensorBoard metrics, result.json and the report."""
  import json
  from autox3d_jax.data import testing
  data = tmp_path / "records"
  testing.write_records_dataset(str(data / "bad"), name="bad", num_videos=40, num_frames=8, num_shards=2,
                                corrupt={i: b"not an image" * 8 for i in (3, 11, 17, 29)})
  out = subprocess.run(main_cmd(tmp_path / "w", "--config.mode=search", "--config.data.name=bad",
                                f"--config.data.data_dir={data}", "--config.data.max_skipped_fraction=0.02"),
                       capture_output=True, text=True, env=env_for(tmp_path / "tfds"), timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "records skipped (" in out.stderr and "above config.data.max_skipped_fraction = 0.02" in out.stderr
  result = json.loads((tmp_path / "w" / "search" / "result.json").read_text())
  counts = result["input"]
  assert counts["invalid_records"] >= 1 and counts["skipped_records"] == counts["invalid_records"]
  assert counts["lost_records"] == counts["decode_failures"] == 0
  assert set(counts["splits"]) == {"train[:80%]", "train[80%:]"}
  assert 0 < counts["skipped_fraction"] < 0.5
  report = json.loads((tmp_path / "w" / "report" / "results.json").read_text())
  assert report["input"]["search"]["invalid_records"] == counts["invalid_records"]
  assert any(n.startswith("Input of search: ") and " invalid" in n for n in report["notes"])
  tags = _scalar_tags(tmp_path / "w" / "tensorboard")
  assert max(tags["data/invalid_records"]) >= 1 and "data/skipped_fraction" in tags


@pytest.mark.parametrize("overrides, message", [
    ({"mesh.model": 3}, "config.mesh.model = 3 does not divide the 8 devices"),
    ({"data.batch_size": 12, "search.num_groups": 2}, r"config.data.batch_size = 12 is not divisible by the "
                                                      r"mesh's data axis \(8 devices / config.mesh.model 1 = 8\)"),
    ({"data.batch_size": 8, "mesh.model": 2, "data.eval_batch_size": 6, "mode": "train"},
     "config.data.eval_batch_size = 6 is not divisible by the mesh's data axis"),
])
def test_batches_that_do_not_fit_the_slice_are_rejected_naming_the_key(overrides, message):
  import jax
  import toys
  from autox3d_jax.train import setup
  assert jax.device_count() == 8     # conftest's simulated slice
  cfg = toys.set_keys(config_lib.base_config(), overrides)
  with pytest.raises(config_lib.ConfigError, match=message):
    setup.check_devices(cfg)
  setup.check_devices(toys.set_keys(config_lib.base_config(), {"data.batch_size": 16, "mesh.model": 2}))
  # The eval batch only counts where something is evaluated.
  setup.check_devices(toys.set_keys(config_lib.base_config(), {"data.eval_batch_size": 6, "mode": "search"}))


def test_a_model_axis_that_divides_no_parameter_is_rejected_before_anything_is_built():
  """mesh.model = 2 over a space whose every width is odd splits no parameter: ConfigError naming
  config.mesh.model (from abstract shapes: nothing compiled); the default space splits fine, and
  bfloat16 is accepted on the CPU backend."""
  import jax
  import toys
  from autox3d_jax.train import setup
  compiles = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, duration, **kw: compiles.append(event) if "backend_compile" in event else None)
  odd = {"mode": "search", "mesh.model": 2, "search.target_arch": "X3D", "space.num_classes": 5, "space.stem_width": 9,
         "space.stage_widths": ((9, 15), (15, 27)), "space.min_depths": (1, 1), "space.max_depths": (1, 1),
         "space.expansions": (1.0,), "space.se_ratios": (0.0,), "space.conv5_width": 45, "space.head_width": 81,
         "data.num_frames": 4, "data.crop_size": 16, "data.scale_jitter": (16, 16)}
  cfg = toys.set_keys(config_lib.base_config(), odd)
  config_lib.validate(cfg)
  with pytest.raises(config_lib.ConfigError, match=r"config.mesh.model = 2 divides no parameter"):
    setup.check_sharding(cfg)
  assert not compiles, compiles
  setup.check_sharding(toys.set_keys(config_lib.base_config(), {"mode": "search", "mesh.model": 2,
                                                                "space.num_classes": 5}))
  setup.check_dtype(toys.set_keys(config_lib.base_config(), {"train.dtype": "bfloat16"}))


def test_an_unknown_dataset_fails_in_one_line_naming_the_choices(tmp_path):
  out = subprocess.run(main_cmd(tmp_path / "w", "--config.data.name=moving_digits/nosuch"), capture_output=True,
                       text=True, env=env_for(tmp_path / "data"), timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "'nosuch' is not a predefined moving_digits config: choose one of [" in last
  assert "'moving_digits/motion_tiny'" in last and "--config nosuch" not in last and "Traceback" not in out.stderr


def test_a_missing_eval_split_fails_before_training():
  """Before: the run trained for its whole budget, then failed looking for the eval split."""
  import toys
  from autox3d_jax.data import registry, testing
  from autox3d_jax.train import setup
  cfg = toys.set_keys(config_lib.base_config(), {"mode": "train", "data.name": "moving_digits/motion_tiny",
                                                 "data.data_dir": testing.tiny_data_dir(),
                                                 "data.eval_split": "tset"})
  with pytest.raises(registry.DatasetError, match="tset"):
    setup.ensure_dataset(cfg)
  setup.ensure_dataset(toys.set_keys(cfg, {"mode": "search"}))     # a search does not evaluate


@pytest.mark.parametrize("make, code, line", [
    (lambda: config_lib.ConfigError("config.seed must be >= 0, got -1"), 2, "error: config.seed must be >= 0, got -1"),
    (lambda: __import__("autox3d_jax.data.registry", fromlist=["x"]).DatasetError("no such split"), 2,
     "error: no such split"),
    (lambda: __import__("autox3d_jax.models.spec", fromlist=["x"]).SpecError("not a valid ArchSpec dict: 'stem'"),
     2, "error: not a valid ArchSpec dict: 'stem'"),
    (lambda: PermissionError(13, "Permission denied", "/w/report/results.json"), 2,
     "error: [Errno 13] Permission denied: '/w/report/results.json' (set AUTOX3D_TRACEBACK=1 for the traceback)"),
    (lambda: __import__("autox3d_jax.train.loop", fromlist=["x"]).Preempted("SIGTERM: saved step 3 to /w"), 143,
     "preempted: SIGTERM: saved step 3 to /w"),
    (lambda: __import__("autox3d_jax.train.loop", fromlist=["x"]).NonFiniteLossError("search loss became nan"), 1,
     "error: search loss became nan"),
])
def test_errors_end_main_with_one_line_and_their_exit_code(make, code, line, capsys, monkeypatch):
  monkeypatch.delenv(main_lib.TRACEBACK_ENV_VAR, raising=False)
  with pytest.raises(SystemExit) as exit_:
    with main_lib._one_line_errors():
      raise make()
  assert exit_.value.code == code
  assert capsys.readouterr().err.strip().splitlines() == [line]


def test_other_errors_and_the_traceback_switch_let_the_error_through(monkeypatch):
  with pytest.raises(ZeroDivisionError):          # a bug: its traceback is what a report needs
    with main_lib._one_line_errors():
      raise ZeroDivisionError("division by zero")
  with pytest.raises(OSError):                    # no file named: not the user's input
    with main_lib._one_line_errors():
      raise OSError("socket closed")
  monkeypatch.setenv(main_lib.TRACEBACK_ENV_VAR, "1")
  with pytest.raises(config_lib.ConfigError):
    with main_lib._one_line_errors():
      raise config_lib.ConfigError("config.seed must be >= 0")


# --------------------------------------------------------------------------- several processes
@pytest.mark.parametrize("env, message", [
    ({"AUTOX3D_COORDINATOR": "localhost"}, "AUTOX3D_COORDINATOR='localhost': pass host:port of process 0"),
    ({"AUTOX3D_COORDINATOR": "h:99999"}, "AUTOX3D_COORDINATOR='h:99999': pass host:port"),
    ({"AUTOX3D_COORDINATOR": "h:1234"}, "AUTOX3D_COORDINATOR is set but AUTOX3D_NUM_PROCESSES is not"),
    ({"AUTOX3D_COORDINATOR": "h:1234", "AUTOX3D_NUM_PROCESSES": "2"},
     "AUTOX3D_COORDINATOR is set but AUTOX3D_PROCESS_ID is not"),
    ({"AUTOX3D_COORDINATOR": "h:1234", "AUTOX3D_NUM_PROCESSES": "two", "AUTOX3D_PROCESS_ID": "0"},
     "AUTOX3D_NUM_PROCESSES='two': pass an integer >= 1"),
    ({"AUTOX3D_COORDINATOR": "h:1234", "AUTOX3D_NUM_PROCESSES": "2", "AUTOX3D_PROCESS_ID": "-1"},
     "AUTOX3D_PROCESS_ID='-1': pass an integer >= 0"),
    ({"AUTOX3D_COORDINATOR": "h:1234", "AUTOX3D_NUM_PROCESSES": "2", "AUTOX3D_PROCESS_ID": "2"},
     "AUTOX3D_PROCESS_ID=2 is not below AUTOX3D_NUM_PROCESSES=2: pass 0 to 1"),
])
def test_bad_multi_process_variables_are_rejected_naming_the_variable(env, message):
  with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    main_lib.distributed_env(env)


def test_multi_process_variables_are_read():
  assert main_lib.distributed_env({}) is None
  env = {"AUTOX3D_COORDINATOR": "10.0.0.2:8476", "AUTOX3D_NUM_PROCESSES": "4", "AUTOX3D_PROCESS_ID": "3"}
  assert main_lib.distributed_env(env) == ("10.0.0.2:8476", 4, 3)


@pytest.mark.parametrize("variables, line", [
    ({"AUTOX3D_COORDINATOR": "127.0.0.1:1", "AUTOX3D_NUM_PROCESSES": "2", "AUTOX3D_PROCESS_ID": "5"},
     "error: AUTOX3D_PROCESS_ID=5 is not below AUTOX3D_NUM_PROCESSES=2: pass 0 to 1"),
    ({"AUTOX3D_PREEMPTION_DATA_GRACE_S": "-3"},
     "error: AUTOX3D_PREEMPTION_DATA_GRACE_S='-3': pass a number of seconds >= 0"),
])
def test_bad_process_variables_end_main_in_one_line_before_anything_is_built(tmp_path, variables, line):
  env = {**env_for(tmp_path / "data"), **variables}
  out = subprocess.run(main_cmd(tmp_path / "w"), capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  assert out.stderr.strip().splitlines()[-1] == line
  assert not (tmp_path / "data").exists() and not (tmp_path / "w").exists()
