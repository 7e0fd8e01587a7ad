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
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and the report.")
flags.mark_flags_as_required(["config", "workdir"])


PREEMPTED_EXIT_CODE = 143


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  _init_distributed()
  from autox3d_jax.cpu import hostmem
  hostmem.keep_freed_memory_on_cpu()
  from autox3d_jax import config as config_lib
  from autox3d_jax import run
  cfg = _CONFIG.value
  try:
    config_lib.validate(cfg)
  except config_lib.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  _quiet_libraries()
  from autox3d_jax.train.loop import Preempted
  try:
    run.MODES[cfg.mode](cfg, _WORKDIR.value)
  except config_lib.ConfigError as e:   # a value only checkable once the space is built
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except Preempted as e:
    # A preempted VM: the state is saved; exit 143 (128 + SIGTERM) so a supervisor knows to rerun.
    print(f"preempted: {e}", file=sys.stderr)
    sys.exit(PREEMPTED_EXIT_CODE)


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


if __name__ == "__main__":
  app.run(main)
