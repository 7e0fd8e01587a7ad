"""Entry point: python -m autox3d_jax.main --config=configs/<file>.py[:arg] --workdir=DIR [--config.k=v ...]

The only file with flags. Every mode is an importable function in `autox3d_jax.run` (Colab calls
the same ones):
  search   supernet + strategy -> derived ArchSpec (workdir/search/arch.json) + report
  train    train config.train.arch (ArchSpec JSON or zoo name), then evaluate
  eval     evaluate a trained checkpoint of config.train.arch
  report   re-render workdir/report from workdir/report/results.json
  demo     search -> derive -> retrain the searched net and the X3D-like baseline at matched FLOPs
           -> evaluate both -> report (the README's main command)
  latency  measure the latency lookup table of the space on this backend and validate it
  summary  build X3D-S (or config.train.arch), print params, FLOPs and a forward-pass timing
"""
from __future__ import annotations

import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and the report: a local "
                                "path or gs://bucket/path.")
flags.mark_flags_as_required(["config", "workdir"])


PREEMPTED_EXIT_CODE = 143    # 128 + SIGTERM: the state is saved, rerun the same command to resume
BAD_INPUT_EXIT_CODE = 2      # a config, dataset, arch spec, checkpoint or workdir that cannot work
RUN_FAILED_EXIT_CODE = 1     # the run itself failed (a non-finite loss)
TRACEBACK_ENV_VAR = "AUTOX3D_TRACEBACK"   # =1: let errors through with their traceback


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  _init_distributed()
  from autox3d_jax import config as config_lib
  cfg = _CONFIG.value
  with _one_line_errors():
    config_lib.validate(cfg)
    from autox3d_jax.train import setup
    setup.check_devices(cfg)
    setup.check_space(cfg)
    setup.check_sharding(cfg)
    setup.check_dtype(cfg)
    _check_preemption_env()
    workdir = check_workdir(_WORKDIR.value)
  setup.enable_compilation_cache(cfg)
  from autox3d_jax.cpu import hostmem
  hostmem.keep_freed_memory_on_cpu()
  from autox3d_jax import run
  _quiet_libraries()
  with _one_line_errors():
    run.MODES[cfg.mode](cfg, workdir)


class _one_line_errors:
  """Errors of bad input (and a stopped or failed run) end the process with one line naming the
  cause and an exit code a supervisor can act on, instead of a long traceback."""

  def __enter__(self):
    return self

  def __exit__(self, kind, error, tb):
    if error is None or os.environ.get(TRACEBACK_ENV_VAR) == "1":
      return False
    from autox3d_jax.config import ConfigError
    from autox3d_jax.data.registry import DatasetError
    from autox3d_jax.models.convert_torch import CheckpointError
    from autox3d_jax.models.spec import SpecError
    from autox3d_jax.train.loop import NonFiniteLossError, Preempted
    if isinstance(error, Preempted):
      print(f"preempted: {error}", file=sys.stderr)
      sys.exit(PREEMPTED_EXIT_CODE)
    if isinstance(error, (ConfigError, DatasetError, SpecError, CheckpointError)):
      print(f"error: {error}", file=sys.stderr)
      sys.exit(BAD_INPUT_EXIT_CODE)
    if isinstance(error, OSError) and error.filename is not None:
      print(f"error: {error} (set {TRACEBACK_ENV_VAR}=1 for the traceback)", file=sys.stderr)
      sys.exit(BAD_INPUT_EXIT_CODE)
    if isinstance(error, NonFiniteLossError):
      print(f"error: {error}", file=sys.stderr)
      sys.exit(RUN_FAILED_EXIT_CODE)
    return False


def check_workdir(workdir: str) -> str:
  """The workdir, checked before anything is built: not empty, on a supported scheme (a local
  path or gs:// with a valid bucket name), and creatable and writable from here. A local one is
  created and a file written in it and deleted; a gs:// one is probed within a bound
  (`_check_remote_workdir`). Returns `workdir`; raises ConfigError naming --workdir and the cause."""
  from autox3d_jax import paths
  from autox3d_jax.config import ConfigError
  if not workdir or not workdir.strip():
    raise ConfigError("--workdir is empty: pass the directory for checkpoints, logs and the report "
                      "(it is created if missing)")
  try:
    remote = paths.check_scheme(workdir)
  except ValueError as e:
    raise ConfigError(f"--workdir={workdir}: {e}") from None
  if remote:
    _check_remote_workdir(workdir)
    return workdir
  if paths.exists(workdir) and not paths.isdir(workdir):
    raise ConfigError(f"--workdir={workdir} is a file, not a directory: pass a directory")
  try:
    paths.makedirs(workdir)
    marker = paths.join(workdir, f".write_check_{os.getpid()}")
    paths.write_bytes(marker, b"")
    paths.remove(marker)
  except OSError as e:
    raise ConfigError(f"--workdir={workdir} cannot be created or written: {e.strerror or e}; pass a "
                      f"directory this user can write") from None
  return workdir


# How long start-up waits for a gs:// workdir to answer (its bucket looked up, a small object
# written and deleted). Clients retry an unreachable endpoint for minutes; this bounds the wait.
WORKDIR_CHECK_TIMEOUT_ENV_VAR = "AUTOX3D_WORKDIR_CHECK_TIMEOUT_S"
WORKDIR_CHECK_TIMEOUT_S = 60.0


def _check_remote_workdir(workdir: str) -> None:
  """A gs:// workdir's bucket exists and this process can write and delete an object under the
  workdir, found within $AUTOX3D_WORKDIR_CHECK_TIMEOUT_S seconds (default WORKDIR_CHECK_TIMEOUT_S):
  else ConfigError with the cause (a missing bucket, the client's error, or no answer in time), so
  a wrong bucket or a machine without access fails at start-up, not at the first checkpoint."""
  import socket
  import threading
  from autox3d_jax import paths
  from autox3d_jax.config import ConfigError
  raw = os.environ.get(WORKDIR_CHECK_TIMEOUT_ENV_VAR, "")
  try:
    timeout = float(raw) if raw else WORKDIR_CHECK_TIMEOUT_S
    if not timeout > 0:
      raise ValueError
  except ValueError:
    raise ConfigError(f"{WORKDIR_CHECK_TIMEOUT_ENV_VAR}={raw!r}: pass a number of seconds > 0") from None
  scheme, rest = workdir.split("://", 1)
  bucket = f"{scheme}://{rest.split('/', 1)[0]}"
  outcome: dict[str, str] = {}

  def probe():
    try:
      if not paths.exists(bucket):
        outcome["error"] = f"bucket {bucket} does not exist or this machine's credentials cannot see it"
        return
      marker = paths.join(workdir, f".write_check_{socket.gethostname()}_{os.getpid()}")
      paths.write_bytes(marker, b"ok")
      paths.remove(marker)
    except Exception as e:  # pylint: disable=broad-except  (any client's error is the cause to report)
      outcome["error"] = _one_line(e)

  # A daemon thread: a client stuck retrying cannot keep the process from exiting.
  thread = threading.Thread(target=probe, name="workdir-check", daemon=True)
  thread.start()
  thread.join(timeout)
  if thread.is_alive():
    raise ConfigError(f"--workdir={workdir}: {bucket} did not answer within {timeout:g} s (looking up the "
                      f"bucket, writing a small object): check the network and the bucket name "
                      f"({WORKDIR_CHECK_TIMEOUT_ENV_VAR} sets the wait)")
  if "error" in outcome:
    raise ConfigError(f"--workdir={workdir} cannot be used: {outcome['error']}; pass a gs://bucket/path "
                      f"this machine can write (its credentials: the VM's service account or "
                      f"`gcloud auth application-default login`)")


def _one_line(error: BaseException, limit: int = 300) -> str:
  """'Type: message' of `error` on one line (clients put URLs and JSON bodies on several), at most
  `limit` characters."""
  text = " ".join(f"{type(error).__name__}: {error}".split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_preemption_env() -> None:
  """AUTOX3D_PREEMPTION_DATA_GRACE_S (read by the data feed with several processes), checked at
  start-up: ConfigError naming it when it is not a number of seconds >= 0."""
  from autox3d_jax import preemption
  from autox3d_jax.config import ConfigError
  try:
    preemption.data_wait_grace_s()
  except ValueError as e:
    raise ConfigError(str(e)) from None


def distributed_env(environ=os.environ) -> tuple[str, int, int] | None:
  """(coordinator "host:port", number of processes, this process's id) from AUTOX3D_COORDINATOR,
  AUTOX3D_NUM_PROCESSES and AUTOX3D_PROCESS_ID (local CPU processes, e.g. tests), or None when
  AUTOX3D_COORDINATOR is unset. Raises ConfigError naming the variable and the fix when one is
  missing, not an integer, or out of range."""
  from autox3d_jax.config import ConfigError
  coordinator = environ.get("AUTOX3D_COORDINATOR")
  if not coordinator:
    return None
  host, _, port = coordinator.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ConfigError(f"AUTOX3D_COORDINATOR={coordinator!r}: pass host:port of process 0, e.g. 127.0.0.1:12355")
  numbers = {}
  for name, least in (("AUTOX3D_NUM_PROCESSES", 1), ("AUTOX3D_PROCESS_ID", 0)):
    raw = environ.get(name)
    if raw is None:
      raise ConfigError(f"AUTOX3D_COORDINATOR is set but {name} is not: set AUTOX3D_NUM_PROCESSES (the number "
                        f"of processes) and AUTOX3D_PROCESS_ID (this one's index, 0 to AUTOX3D_NUM_PROCESSES - 1)")
    try:
      value = int(raw)
    except ValueError:
      value = least - 1   # not an integer: reported like one out of range
    if value < least:
      raise ConfigError(f"{name}={raw!r}: pass an integer >= {least}")
    numbers[name] = value
  count, index = numbers["AUTOX3D_NUM_PROCESSES"], numbers["AUTOX3D_PROCESS_ID"]
  if index >= count:
    raise ConfigError(f"AUTOX3D_PROCESS_ID={index} is not below AUTOX3D_NUM_PROCESSES={count}: pass 0 to {count - 1}")
  return coordinator, count, index


def _init_distributed():
  """Multi-host: `distributed_env()` for local CPU processes (gloo collectives), or the TPU VM
  environment (TPU_WORKER_HOSTNAMES lists several hosts), which jax.distributed discovers by
  itself. Single host: nothing to do. A missing or bad variable ends the process with one
  `error:` line naming it (exit 2), before anything connects.

  JAX's preemption service is turned off: its C++ SIGTERM handler would swallow a SIGTERM outside
  the step loop (the process would go on), and inside the loop `preemption.SigtermFlag` replaces
  it anyway; the processes agree on the step to save with `preemption.ProcessVote` instead."""
  import jax
  with _one_line_errors():
    local = distributed_env()
  multi_tpu = len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
  if local is None and not multi_tpu:
    return
  jax.config.update("jax_enable_preemption_service", False)
  if local is None:
    jax.distributed.initialize()
    return
  coordinator, count, index = local
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=count, process_id=index)


def _quiet_libraries():
  """Our progress at INFO on stderr; orbax/clu/tf chatter (absl logging) only from WARNING up."""
  import logging as pylogging
  logging.set_verbosity(logging.WARNING)
  ours = pylogging.getLogger("autox3d_jax")
  ours.setLevel(pylogging.INFO)
  if not ours.handlers:
    handler = pylogging.StreamHandler()
    handler.setFormatter(pylogging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    ours.addHandler(handler)
    ours.propagate = False


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with its errors as one line and exit 2: config_flags reports a config
  file that raises as a traceback inside the message, and an unknown --config.key as a raw
  AttributeError with a suggestion ('Did you mean "steps"?')."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    lines = [line.strip() for line in str(e).replace("\\n", "\n").splitlines() if line.strip()]
    if isinstance(e, (AttributeError, KeyError)):   # an unknown key: its name, then the suggestion
      given = [a for a in argv[1:] if a.startswith("--config.")]
      found = re.search(r"\w+", lines[0]) if lines else None
      key = found.group(0) if found else "?"
      named = [a.split("=")[0] for a in given if a.split("=")[0].split(".")[-1] == key] or given
      message = f"{', '.join(named)}: no such config key {key!r}" + (f"; {lines[-1].rstrip(chr(39))}" if len(lines) > 1 else "")
    else:
      message = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"
    print(f"error: {message}", file=sys.stderr)
    sys.exit(BAD_INPUT_EXIT_CODE)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
