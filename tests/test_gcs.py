"""gs:// workdirs: start-up checks of a gs:// --workdir, and a search run end to end against a real
GCS protocol server on 127.0.0.1.

The end-to-end test (slow) follows /work/shared/REFERENCES-round2.md §15, measured on this
project's versions: gcp-storage-emulator serves the bucket in memory; orbax reaches it through
STORAGE_EMULATOR_HOST (its google.cloud.storage client) and TENSORSTORE_GCS_HTTP_URL (the array
data); etils.epath (autox3d_jax.paths, and orbax's own file operations) through gcsfs
(EPATH_USE_TF=false, FSSPEC_GCS_TOKEN=anon, GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false) in the
killed run and through its default with TF installed, tf.io.gfile, in the resumed run; and
TensorFlow's own GCS client -- tf.io.gfile, which also writes the TensorBoard event files for
clu's writer, and reads no emulator variable -- through a loopback HTTPS CONNECT proxy with a CA
made for the test (HTTPS_PROXY, NO_PROXY, CURL_CA_BUNDLE, NO_GCE_CHECK,
GOOGLE_AUTH_TOKEN_FOR_TESTING). The emulator (patched for the two gaps in
tests/helpers/gcs_emulator.py) and the proxy run in one subprocess that stops with the test;
every variable is set in the environment of the `python -m autox3d_jax.main` subprocesses, before
TF or tensorstore are imported. What comes back is read from the emulator over plain HTTP,
through none of those libraries.

Not covered here: real GCS authentication (the clients get a test token or anonymous access),
TLS to Google's real certificates, tensorstore's conditional writes (the emulator ignores
ifGenerationMatch, so two writers of one checkpoint would not be caught), and a real bucket's
latency.
"""
import json
import os
import subprocess
import sys
import time
import urllib.error

import pytest

from autox3d_jax import config as config_lib
from autox3d_jax import main as main_lib
from autox3d_jax import paths

from test_main import env_for, main_cmd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers"))
import gcs_emulator  # noqa: E402  (tests/helpers is no package)

BUCKET = "autox3d-test"
SUPPORTED = "(supported: a local directory or gs://bucket/path)"


def _last_line(out: subprocess.CompletedProcess) -> str:
  return out.stderr.strip().splitlines()[-1]


# ------------------------------------------------------------------------- start-up checks (fast)
def test_a_workdir_on_an_unknown_scheme_fails_in_one_line_before_anything_is_built(tmp_path):
  out = subprocess.run(main_cmd("s3://bucket/run"), capture_output=True, text=True, env=env_for(tmp_path / "data"),
                       timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  assert _last_line(out) == f"error: --workdir=s3://bucket/run: s3:// is not supported {SUPPORTED}"
  assert "Traceback" not in out.stderr and not (tmp_path / "data").exists()


def test_an_unreachable_gs_workdir_fails_in_one_line_within_the_bound(tmp_path):
  """STORAGE_EMULATOR_HOST points gcsfs at a closed local port: it retries (about a minute), the
  start-up check stops waiting after $AUTOX3D_WORKDIR_CHECK_TIMEOUT_S and names the bucket."""
  env = {**env_for(tmp_path / "data"), "EPATH_USE_TF": "false", "FSSPEC_GCS_TOKEN": "anon",
         "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "NO_PROXY": "127.0.0.1,localhost",
         "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{gcs_emulator.free_port()}",
         main_lib.WORKDIR_CHECK_TIMEOUT_ENV_VAR: "3"}
  began = time.monotonic()
  out = subprocess.run(main_cmd("gs://bucket/run"), capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  assert _last_line(out) == (
      "error: --workdir=gs://bucket/run: gs://bucket did not answer within 3 s (looking up the bucket, "
      f"writing a small object): check the network and the bucket name ({main_lib.WORKDIR_CHECK_TIMEOUT_ENV_VAR} "
      "sets the wait)")
  assert "Traceback" not in out.stderr and not (tmp_path / "data").exists()
  assert time.monotonic() - began < 60


def test_the_remote_check_reports_a_bad_name_a_missing_bucket_a_client_error_and_a_bad_bound(monkeypatch):
  """The gs:// start-up check with the storage calls replaced: each way it fails is one line."""
  monkeypatch.setattr(paths, "exists", lambda p: pytest.fail("a bucket name GCS cannot have is never looked up"))
  with pytest.raises(config_lib.ConfigError, match=r"^--workdir=gs://b/run: 'b' is not a valid GCS bucket name"):
    main_lib.check_workdir("gs://b/run")
  monkeypatch.setattr(paths, "exists", lambda p: False)
  with pytest.raises(config_lib.ConfigError, match=r"^--workdir=gs://my-bucket/run cannot be used: bucket "
                                                   r"gs://my-bucket does not exist or this machine's credentials "
                                                   r"cannot see it; pass a gs://"):
    main_lib.check_workdir("gs://my-bucket/run")
  written = []
  monkeypatch.setattr(paths, "exists", lambda p: True)
  monkeypatch.setattr(paths, "write_bytes", lambda p, data: written.append(p))

  def forbidden(p):
    raise OSError("Forbidden: https://storage.googleapis.com/my-bucket/run\n  caller lacks storage.objects.delete")
  monkeypatch.setattr(paths, "remove", forbidden)
  with pytest.raises(config_lib.ConfigError) as e:
    main_lib.check_workdir("gs://my-bucket/run")
  assert str(e.value).startswith("--workdir=gs://my-bucket/run cannot be used: OSError: Forbidden: "
                                 "https://storage.googleapis.com/my-bucket/run caller lacks storage.objects.delete; ")
  assert "\n" not in str(e.value) and written[0].startswith("gs://my-bucket/run/.write_check_")
  monkeypatch.setattr(paths, "remove", lambda p: None)
  assert main_lib.check_workdir("gs://my-bucket/run") == "gs://my-bucket/run"
  monkeypatch.setenv(main_lib.WORKDIR_CHECK_TIMEOUT_ENV_VAR, "soon")
  with pytest.raises(config_lib.ConfigError, match="AUTOX3D_WORKDIR_CHECK_TIMEOUT_S='soon': pass a number"):
    main_lib.check_workdir("gs://my-bucket/run")


def test_every_path_a_run_derives_from_a_gs_workdir_stays_on_gs(monkeypatch):
  """os.path would turn gs://bkt/run into cwd/gs:/bkt/run; the loop kit, the latency table and
  the report join through autox3d_jax.paths instead."""
  from autox3d_jax.report import write as report_write
  from autox3d_jax.train import loop, setup
  dirs = loop.run_dirs("gs://bkt/run", "search")
  assert (dirs.checkpoints, dirs.tensorboard) == ("gs://bkt/run/checkpoints/search", "gs://bkt/run/tensorboard")
  dirs = loop.run_dirs("gs://bkt/run", "train", "X3D-S")
  assert (dirs.checkpoints, dirs.tensorboard) == ("gs://bkt/run/checkpoints/train_X3D-S",
                                                  "gs://bkt/run/train_X3D-S/tensorboard")
  assert setup.latency_table_path(config_lib.base_config(), "gs://bkt/run") == "gs://bkt/run/latency_table.json"
  written = {}

  def write_bytes(path, data):
    written[path] = data
    return path
  monkeypatch.setattr(paths, "write_bytes", write_bytes)
  monkeypatch.setattr(paths, "makedirs", lambda p: p)
  out = report_write.write_report("gs://bkt/run/report", {
      "title": "t", "models": [{"name": "m", "kind": "searched", "gflops": 0.1, "params": 10, "top1": 0.5}],
      "decision_history": {"steps": [1, 2], "probs": {"s1_width": [[0.5, 0.5], [0.4, 0.6]]},
                           "choices": {"s1_width": ["8", "12"]}}})
  assert sorted(written) == sorted(v for k, v in out.items() if not k.endswith("_skipped"))
  assert all(p.startswith("gs://bkt/run/report/") for p in written), written
  assert written["gs://bkt/run/report/pareto.png"].startswith(b"\x89PNG")


# ------------------------------------------------------------------------ end to end on the emulator
def _events(data: bytes) -> list:
  """The Event protos of a TensorBoard event file's bytes; AssertionError unless the TFRecord
  framing covers the bytes exactly (an upload stored with chunked-transfer framing would not)."""
  from tensorboard.compat.proto import event_pb2
  events, i = [], 0
  while i < len(data):
    assert i + 12 <= len(data), "truncated record header"
    n = int.from_bytes(data[i:i + 8], "little")
    assert i + 12 + n + 4 <= len(data), "truncated record"
    events.append(event_pb2.Event.FromString(data[i + 12:i + 12 + n]))
    i += 12 + n + 4
  return events


@pytest.mark.slow
def test_a_search_on_gs_killed_and_resumed_derives_the_architecture_of_a_local_run(tmp_path):
  env = env_for(tmp_path / "data")   # one dataset for all runs, built by the first (local) one
  overrides = ["--config.mode=search", "--config.search.steps=6", "--config.checkpoint.every_steps=2"]
  with gcs_emulator.GcsEmulator(str(tmp_path / "gcs"), bucket=BUCKET) as gcs:
    gs_env = {**env, **gcs.env()}
    missing = subprocess.run(main_cmd("gs://no-such-bucket/run", *overrides), capture_output=True, text=True,
                             env=gs_env, timeout=300)
    assert missing.returncode == 2, missing.stderr[-3000:]
    assert _last_line(missing).startswith("error: --workdir=gs://no-such-bucket/run cannot be used: bucket "
                                          "gs://no-such-bucket does not exist"), missing.stderr[-3000:]
    assert not (tmp_path / "data").exists()   # failed before the dataset was built

    local = subprocess.run(main_cmd(tmp_path / "local", *overrides), capture_output=True, text=True, env=env,
                           timeout=900)
    assert local.returncode == 0, local.stderr[-3000:]
    workdir = f"gs://{BUCKET}/run"
    killed = subprocess.run(main_cmd(workdir, *overrides), capture_output=True, text=True,
                            env={**gs_env, "AUTOX3D_FAULT_KILL_AFTER_SAVE": "4"}, timeout=900)
    assert killed.returncode == -9, killed.stderr[-3000:]    # SIGKILL right after saving step 4
    stored = gcs.objects("run/")
    assert "run/checkpoints/search/4/commit_success.txt" in stored, stored
    assert "run/search/point.json" not in stored
    # The resumed run leaves etils.epath its default gs:// backend with TF installed, tf.io.gfile
    # (what a TPU VM runs), so both backends read and write the same workdir.
    tf_env = {k: v for k, v in gs_env.items() if k != "EPATH_USE_TF"}
    resumed = subprocess.run(main_cmd(workdir, *overrides), capture_output=True, text=True, env=tf_env,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed search from step 4" in resumed.stderr

    # The same architecture and logits as the uninterrupted local run, read back from the bucket.
    local_dir = tmp_path / "local" / "search"
    assert json.loads(gcs.read("run/search/point.json")) == json.loads((local_dir / "point.json").read_text())
    remote_logits = json.loads(gcs.read("run/search/logits.json"))
    local_logits = json.loads((local_dir / "logits.json").read_text())
    assert remote_logits.keys() == local_logits.keys()
    for k in local_logits:
      assert remote_logits[k] == pytest.approx(local_logits[k], abs=1e-5), k
    result = json.loads(gcs.read("run/search/result.json"))
    local_result = json.loads((local_dir / "result.json").read_text())
    # The input counts differ by design: the resumed process read the data from step 4 on.
    assert {k: v for k, v in result.items() if k != "input"} == {k: v for k, v in local_result.items() if k != "input"}
    assert result["steps"] == 6
    assert json.loads(gcs.read("run/search/arch.json"))["name"] == result["arch"]

    stored = gcs.objects("run/")
    assert "run/checkpoints/search/6/commit_success.txt" in stored, stored
    # tf.io.gfile's makedirs leaves a directory object (gcsfs's leaves none): the resumed run's
    # search outputs went through TF's GCS client.
    assert "run/search/" in stored, stored
    assert not [n for n in stored if ".write_check_" in n], stored   # the start-up check cleans up
    # The report, its figures included, went through the path layer too.
    assert json.loads(gcs.read("run/report/results.json"))["models"][0]["arch"]["name"] == result["arch"]
    for name in ("pareto.png", "decisions.png"):
      assert gcs.read(f"run/report/{name}").startswith(b"\x89PNG\r\n\x1a\n")
    assert gcs.read("run/report/report.md").startswith(b"#")

    # TensorBoard: clu's writer through tf.io.gfile and the proxy, one event file per process.
    event_files = [n for n in stored if n.startswith("run/tensorboard/") and "events.out.tfevents" in n]
    assert event_files, stored
    logged = {(e.step, v.tag) for f in event_files for e in _events(gcs.read(f)) for v in e.summary.value}
    assert {(6, "train_loss"), (6, "steps_per_sec")} <= logged, sorted(logged)
    with pytest.raises(urllib.error.HTTPError):
      gcs.read("run/search/no-such-object.json")
