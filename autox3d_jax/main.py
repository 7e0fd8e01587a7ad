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
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and the report.")
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
  """The workdir, checked before anything is built: not empty, not a file, creatable and writable
  here. A remote path (gs://...) is passed through: its first write reports a problem."""
  from autox3d_jax.config import ConfigError
  if not workdir or not workdir.strip():
    raise ConfigError("--workdir is empty: pass the directory for checkpoints, logs and the report "
                      "(it is created if missing)")
  if "://" in workdir:
    return workdir
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir={workdir} is a file, not a directory: pass a directory")
  try:
    os.makedirs(workdir, exist_ok=True)
    import tempfile
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_check_"):
      pass
  except OSError as e:
    raise ConfigError(f"--workdir={workdir} cannot be created or written: {e.strerror or e}; pass a "
                      f"directory this user can write") from None
  return workdir


def _init_distributed():
  """Multi-host: AUTOX3D_COORDINATOR/NUM_PROCESSES/PROCESS_ID for local CPU processes (gloo), or the
  TPU VM environment, which jax.distributed discovers by itself. Single host: nothing to do."""
  import jax
  coordinator = os.environ.get("AUTOX3D_COORDINATOR")
  if coordinator:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator,
                               num_processes=int(os.environ["AUTOX3D_NUM_PROCESSES"]),
                               process_id=int(os.environ["AUTOX3D_PROCESS_ID"]))
  elif len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1:
    jax.distributed.initialize()


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
