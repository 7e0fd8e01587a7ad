"""The loop kit both loops (search and standalone training) run on.

One `run_steps` owns what every long run needs around its jitted step:
  * periodic actions: progress (steps/s and ETA in the log, `clu.periodic_actions.ReportProgress`
    writing steps_per_sec to TensorBoard), metrics to the clu writer, checkpoints;
  * a NaN / Inf stop that names the last good checkpoint and the key to change;
  * preemption (`autox3d_jax.preemption`): SIGTERM sets a flag, the loop finishes the step (or
    stops waiting for data), saves, and raises `Preempted` (main exits 143 so a supervisor reruns
    the same command, which resumes); a second SIGTERM exits at once, even mid-compile;
  * where a run's checkpoints and logs live (`run_dirs`), so no caller rebuilds a path.
The loops themselves only build their state, step and data, and say what to record.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np

from autox3d_jax.data.pipeline import skip_causes
from autox3d_jax.preemption import Interrupted, SigtermFlag  # noqa: F401  (SigtermFlag: loop's public name)
from autox3d_jax.train import identity
from autox3d_jax.train.checkpoint import Checkpointer

log = logging.getLogger(__name__)

# Test hook: AUTOX3D_FAULT_KILL_AFTER_SAVE=N kills the process (SIGKILL, no cleanup) right after the
# checkpoint of step N is written -- how the resume tests simulate a lost machine.
FAULT_KILL_ENV_VAR = "AUTOX3D_FAULT_KILL_AFTER_SAVE"


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or Inf; the message names the last good checkpoint and what to change."""


class Preempted(RuntimeError):
  """Raised after a SIGTERM-triggered save: the process should exit and be restarted."""


def safe_name(name: str) -> str:
  """`name` with everything but letters, digits, '-' and '_' replaced by '_' (a directory name)."""
  return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


@dataclasses.dataclass(frozen=True)
class RunDirs:
  """Where one run writes: its checkpoints and its TensorBoard logs."""
  checkpoints: str
  tensorboard: str


def run_dirs(workdir: str, kind: str, name: str = "") -> RunDirs:
  """'search': workdir/checkpoints/search and workdir/tensorboard. 'train' (a standalone network
  called `name`): workdir/checkpoints/train_<name> and workdir/train_<name>/tensorboard. A gs://
  workdir gives gs:// directories (joined by `paths`, which os.path would mangle)."""
  from autox3d_jax import paths
  if kind == "search":
    return RunDirs(paths.join(workdir, "checkpoints", "search"), paths.join(workdir, "tensorboard"))
  if kind == "train":
    if not name:
      raise ValueError("run_dirs('train', name): a standalone run needs the network's name")
    tag = f"train_{safe_name(name)}"
    return RunDirs(paths.join(workdir, "checkpoints", tag), paths.join(workdir, tag, "tensorboard"))
  raise ValueError(f"run_dirs: kind must be 'search' or 'train', got {kind!r}")


def checkpointer(cfg: ml_collections.ConfigDict, directory: str, run_identity: dict | None = None,
                 what: str = "") -> Checkpointer:
  """A Checkpointer in `directory` keeping the last config.checkpoint.keep checkpoints. With
  `run_identity` (`train.identity`), a checkpoint already there must have been written by a run
  of the same identity (up to config.resume's keys): else ConfigError naming the keys that differ."""
  ckpt = Checkpointer(directory, keep=cfg.checkpoint.keep)
  if run_identity is not None and ckpt.latest_step() is not None:
    identity.check(ckpt.read_meta().get("identity"), run_identity, identity.allowed_changes(cfg),
                   what=what, directory=ckpt.directory)
  return ckpt


def metrics_writer(logdir: str):
  """clu's default writer (TensorBoard + log) on process 0; logging only on the other processes."""
  from clu import metric_writers
  return metric_writers.create_default_writer(logdir, just_logging=jax.process_index() > 0)


def fault_injection(saved_step: int) -> None:
  if os.environ.get(FAULT_KILL_ENV_VAR) == str(saved_step):
    os.kill(os.getpid(), signal.SIGKILL)


class Progress:
  """Steps/s over the last logging window and the ETA of the whole run."""

  def __init__(self, start_step: int, total_steps: int):
    self.total = total_steps
    self._step, self._time = start_step, time.perf_counter()
    self.started = self._time

  def restart(self, step: int) -> None:
    """Start the next window at `step`, now (e.g. after the first step, which includes the compile)."""
    self._step, self._time = step, time.perf_counter()

  def update(self, step: int) -> tuple[float, float]:
    """(steps per second since the previous call, seconds left at that rate)."""
    now = time.perf_counter()
    rate = (step - self._step) / max(now - self._time, 1e-9)
    self._step, self._time = step, now
    return rate, (self.total - step) / max(rate, 1e-9)


def format_eta(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
  if seconds >= 60:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds}s"


@dataclasses.dataclass
class LoopSpec:
  """What `run_steps` needs to know of a loop.

  name: used in log lines and errors ('search', or the network's name).
  total_steps / log_every / checkpoint_every: from the config.
  loss_key: the metric checked for NaN / Inf.
  optimizer_key: the config section to name in the NaN error ('search.weight_opt').
  describe: values -> the loop's own part of the log line (loss, top-1, ...).
  on_log: (step, values, state) -> None, called at every logged step (e.g. the search's history).
  meta: () -> the JSON metadata saved with each checkpoint.
  input_report: () -> the input's skip counts (`data.pipeline.skip_report`), logged and written as
    `data/...` metrics at every logged step; a warning names config.data.max_skipped_fraction
    when the share of skipped records exceeds `max_skipped_fraction`.
  """
  name: str
  total_steps: int
  log_every: int
  checkpoint_every: int
  loss_key: str
  optimizer_key: str
  describe: Callable[[dict], str]
  on_log: Callable[[int, dict, Any], None] = lambda step, values, state: None
  meta: Callable[[], dict] = dict
  input_report: Callable[[], dict] | None = None
  max_skipped_fraction: float = 1.0

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict, **kwargs) -> "LoopSpec":
    return cls(log_every=cfg.log_every_steps, checkpoint_every=cfg.checkpoint.every_steps,
               max_skipped_fraction=cfg.data.max_skipped_fraction, **kwargs)


INPUT_METRICS = ("skipped_records", "invalid_records", "lost_records", "truncated_records", "decode_failures",
                 "skipped_fraction")


class _InputWatch:
  """The input part of a logged step: `data/...` scalars, a log suffix, a one-time warning."""

  def __init__(self, loop: LoopSpec):
    self.loop, self.warned = loop, False

  def __call__(self) -> tuple[dict[str, float], str]:
    if self.loop.input_report is None:
      return {}, ""
    counts = self.loop.input_report()
    scalars = {f"data/{k}": float(counts[k]) for k in INPUT_METRICS}
    skipped, fraction = counts["skipped_records"], counts["skipped_fraction"]
    if fraction > self.loop.max_skipped_fraction and not self.warned:
      self.warned = True
      log.warning("%s: %.1f%% of the input records were skipped (%d of %d: %s), above "
                  "config.data.max_skipped_fraction = %g: check the dataset", self.loop.name, 100 * fraction,
                  skipped, counts["records_seen"] + counts["truncated_records"], skip_causes(counts),
                  self.loop.max_skipped_fraction)
    return scalars, (f"; input: {skipped} records skipped ({100 * fraction:.2g}%)" if skipped else "")


def _leave_without_saving(loop: LoopSpec, step: int, ckpt: Checkpointer, writer, processes: int) -> None:
  """SIGTERM ended this process's wait for input before step `step + 1` in a run of `processes` > 1
  processes: flush the writer, log, and exit 143 at once without saving (`preemption.exit_now`).
  Why not save: the other processes may be inside step `step + 1`'s collectives, waiting for this
  one, so orbax's save barrier (and jax.distributed's shutdown barrier at a normal exit) would wait
  for them forever. The last checkpoint is intact; a restart resumes from it. Never returns."""
  from autox3d_jax import preemption
  writer.flush()
  saved = ckpt.latest_step()
  kept = f"the last checkpoint (step {saved}) in {ckpt.directory} is intact" if saved is not None else \
      "no checkpoint had been written yet"
  message = (f"SIGTERM while waiting for data at step {step + 1} of {loop.name}, one of {processes} processes: "
             f"not saved (the others may be inside that step, waiting for this process); {kept}; restart to resume")
  log.warning("%s", message)
  preemption.exit_now(message)


def run_steps(loop: LoopSpec, state: Any, step_fn: Callable, batches: Iterator[tuple], ckpt: Checkpointer,
              writer, agreement: Callable[[bool, Any], bool] | None = None) -> Any:
  """Run `state, metrics = step_fn(state, *next(batches))` from state.step to loop.total_steps.

  Logs (and records) at every log_every-th step, every checkpoint step, the last step and on
  SIGTERM; saves at every checkpoint_every-th step, the last step and on SIGTERM (then raises
  Preempted); stops with NonFiniteLossError, before saving, when the loss is not finite.
  Returns the final state.

  agreement: `agreed = agreement(local_flag, metrics)`, called once per step on every process
    after the step is dispatched; default `preemption.agreement()`: the local flag with one
    process (no collective, no wait), a vote all-reduced over the processes with several
    (`preemption.ProcessVote`, which waits for the step first), so that every process saves the
    same step after a SIGTERM that reached only some of them. Its `.processes` (default 1) says
    whether other processes take part. Tests pass fakes.
  SIGTERM while waiting for input (`Interrupted`): with one process, the steps done are saved and
  Preempted raised; with several, the wait has already given the batch a grace period
  (`preemption.data_wait_grace_s`) and the process exits 143 at once without saving
  (`_leave_without_saving`).
  """
  from clu import periodic_actions
  from autox3d_jax import preemption
  start = int(state.step)
  report = periodic_actions.ReportProgress(num_train_steps=loop.total_steps, writer=writer, every_secs=None,
                                           every_steps=loop.log_every)
  progress = Progress(start, loop.total_steps)
  last_saved = start
  input_watch = _InputWatch(loop)
  with SigtermFlag() as sigterm:
    agree = agreement if agreement is not None else preemption.agreement()
    processes = getattr(agree, "processes", 1)
    for step in range(start, loop.total_steps):
      try:
        batch = next(batches)
      except Interrupted:   # SIGTERM while waiting for input: nothing of this step has run
        if processes > 1:
          _leave_without_saving(loop, step, ckpt, writer, processes)
        writer.flush()
        if step > start and ckpt.latest_step() != step:
          ckpt.save(step, state, loop.meta())
        saved = ckpt.latest_step()
        ckpt.close()
        raise Preempted(f"SIGTERM while waiting for data: saved step {saved} to {ckpt.directory}; restart to resume"
                        if saved is not None else "SIGTERM while waiting for data before the first step; "
                        "nothing to save; restart to run") from None
      state, metrics = step_fn(state, *batch)
      done = step + 1
      if step == start:   # the first call compiles: keep it out of the steps/s and the ETA
        jax.block_until_ready(metrics)
        log.info("%s: first step (compile included) took %.1f s", loop.name, time.perf_counter() - progress.started)
        progress.restart(done)
      report(done)
      is_last = done == loop.total_steps
      # Read the flag once, and vote once, every step on every process: a SIGTERM landing between
      # the save and the exit below must not make the loop exit without having saved the step its
      # message names (it waits for the next step), and every process must cast the same ballots.
      if processes > 1:   # wait for the step (the vote does anyway): a SIGTERM during it counts now
        jax.block_until_ready(metrics)
      local = sigterm.raised
      preempted = agree(local, metrics)
      if preempted and not local:
        log.warning("%s: another process got SIGTERM: saving step %d and exiting with the others", loop.name, done)
      save = done % loop.checkpoint_every == 0 or is_last or preempted
      if done % loop.log_every == 0 or save:
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not np.isfinite(values[loop.loss_key]):
          kept = (f"the last good checkpoint (step {last_saved}) in {ckpt.directory} is intact"
                  if ckpt.latest_step() is not None else "no checkpoint had been written yet")
          raise NonFiniteLossError(
              f"{loop.name} loss became {values[loop.loss_key]} at step {done}; {kept}. Lower "
              f"config.{loop.optimizer_key}.lr or set config.{loop.optimizer_key}.grad_clip.")
        input_scalars, input_note = input_watch()
        writer.write_scalars(done, {**values, **input_scalars})
        loop.on_log(done, values, state)
        rate, eta = progress.update(done)
        log.info("%s step %d/%d: %s (%.2f steps/s, ETA %s)%s", loop.name, done, loop.total_steps,
                 loop.describe(values), rate, format_eta(eta), input_note)
      if save:
        ckpt.save(done, state, loop.meta())
        last_saved = done
        fault_injection(done)
      if preempted and not is_last:
        writer.flush()
        ckpt.close()
        where = "" if local else " (on another process)"
        raise Preempted(f"SIGTERM{where}: saved step {done} to {ckpt.directory}; restart to resume")
  writer.flush()
  return state
