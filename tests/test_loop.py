"""train/loop.py, the loop kit both loops run on, with a fake state, a fake step, a real
Checkpointer and a recording writer: when it saves and logs, the NaN stop, SIGTERM preemption and
resume, where runs write, and the progress / ETA arithmetic."""
import math
import os
import re
import signal
import time

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from autox3d_jax.train import loop
from autox3d_jax.train.checkpoint import Checkpointer, abstract_like


@flax.struct.dataclass
class FakeState:
  step: jax.Array
  total: jax.Array        # sum of the batches seen: shows which batches were consumed


class FakeStep:
  """step(state, batch) -> (state with step + 1, {'loss': ...}); records the steps it ran and can
  return a bad loss or deliver a SIGTERM to this process at a given step."""

  def __init__(self, bad_loss_at=None, bad_value=float("nan"), sigterm_at=None):
    self.bad_loss_at, self.bad_value, self.sigterm_at = bad_loss_at, bad_value, sigterm_at
    self.ran = []

  def __call__(self, state, batch):
    done = int(state.step) + 1
    self.ran.append(done)
    if self.sigterm_at == done:
      os.kill(os.getpid(), signal.SIGTERM)
    bad = self.bad_loss_at is not None and done >= self.bad_loss_at
    loss = self.bad_value if bad else 1.0 / done
    return state.replace(step=state.step + 1, total=state.total + batch), {"loss": np.float32(loss),
                                                                           "top1": np.float32(0.5)}


class Writer:
  """A clu-writer stand-in: records write_scalars calls and flushes."""

  def __init__(self):
    self.calls, self.flushes = [], 0

  def write_scalars(self, step, scalars):
    self.calls.append((int(step), dict(scalars)))

  def flush(self):
    self.flushes += 1

  def loss_steps(self):   # ReportProgress writes steps_per_sec / uptime too: only the loop's own scalars
    return [step for step, scalars in self.calls if "loss" in scalars]


def batches(start=0):
  """Batch n (0-based) is the number n + 1, so FakeState.total tells which batches were used."""
  n = start
  while True:
    n += 1
    yield (jnp.int32(n),)


def stalling(after):
  """batches(), until the wait for batch `after` (0-based) ends with Interrupted, as the pipeline's
  wait does on SIGTERM."""
  from autox3d_jax import preemption
  for n, b in enumerate(batches()):
    if n == after:
      raise preemption.Interrupted("SIGTERM while waiting for toy/train")
    yield b


def spec(total=7, log_every=3, checkpoint_every=5, **kwargs):
  logged = []
  defaults = dict(name="toy", total_steps=total, log_every=log_every, checkpoint_every=checkpoint_every,
                  loss_key="loss", optimizer_key="search.weight_opt",
                  describe=lambda v: f"loss {v['loss']:.3f}",
                  on_log=lambda step, values, state: logged.append((step, values, int(state.step))),
                  meta=lambda: {"logged": len(logged)})
  return loop.LoopSpec(**{**defaults, **kwargs}), logged


def start_state():
  return FakeState(step=jnp.int32(0), total=jnp.int32(0))


# ------------------------------------------------------------------------------- save and log
def test_checkpoints_at_every_checkpoint_step_and_the_last_and_logs_there_too(tmp_path):
  ckpt = Checkpointer(str(tmp_path / "ckpt"), keep=10)
  writer = Writer()
  loop_spec, logged = spec(total=12, log_every=3, checkpoint_every=5)
  step = FakeStep()
  final = loop.run_steps(loop_spec, start_state(), step, batches(), ckpt, writer)
  assert int(final.step) == 12 and int(final.total) == sum(range(1, 13))
  assert step.ran == list(range(1, 13))
  assert list(ckpt.manager.all_steps()) == [5, 10, 12]
  assert writer.loss_steps() == [3, 5, 6, 9, 10, 12]
  assert [s for s, _, _ in logged] == [3, 5, 6, 9, 10, 12]
  assert all(state_step == s for s, _, state_step in logged)        # on_log sees the state after the step
  recorded = {s: scalars for s, scalars in writer.calls if "loss" in scalars}
  assert recorded[6] == {"loss": pytest.approx(1 / 6), "top1": 0.5}
  assert logged[2][1] == recorded[6]
  assert writer.flushes >= 1
  # Each checkpoint holds that step's state and the metadata of that moment.
  like = abstract_like(start_state())
  for s, n_logged in ((5, 2), (10, 5), (12, 6)):
    state, meta = ckpt.restore(like, step=s)
    assert (int(state.step), int(state.total)) == (s, sum(range(1, s + 1)))
    assert meta == {"logged": n_logged}
  ckpt.close()


def test_loop_spec_from_config_takes_the_periods_from_the_config():
  cfg = ml_collections.ConfigDict({"log_every_steps": 4, "checkpoint": {"every_steps": 9},
                                   "data": {"max_skipped_fraction": 0.3}})
  made = loop.LoopSpec.from_config(cfg, name="n", total_steps=20, loss_key="loss", optimizer_key="train.optimizer",
                                   describe=str)
  assert (made.log_every, made.checkpoint_every, made.total_steps, made.max_skipped_fraction) == (4, 9, 20, 0.3)


# ----------------------------------------------------------------------------------------- NaN
@pytest.mark.parametrize("bad_at, bad_value, last_good", [
    (6, float("nan"), 4),        # a logged step between checkpoints
    (8, float("inf"), 4),        # a checkpoint step: not saved
    (3, float("nan"), None),     # before the first checkpoint
])
def test_a_non_finite_loss_stops_naming_the_step_the_checkpoint_and_the_key(tmp_path, bad_at, bad_value, last_good):
  directory = str(tmp_path / "ckpt")
  ckpt = Checkpointer(directory, keep=10)
  writer = Writer()
  loop_spec, logged = spec(total=12, log_every=1, checkpoint_every=4)
  step = FakeStep(bad_loss_at=bad_at, bad_value=bad_value)
  with pytest.raises(loop.NonFiniteLossError) as err:
    loop.run_steps(loop_spec, start_state(), step, batches(), ckpt, writer)
  message = str(err.value)
  assert f"toy loss became {bad_value} at step {bad_at};" in message
  assert "config.search.weight_opt.lr" in message and "config.search.weight_opt.grad_clip" in message
  if last_good is None:
    assert "no checkpoint had been written yet" in message
  else:
    assert f"the last good checkpoint (step {last_good}) in {ckpt.directory} is intact" in message
  assert step.ran[-1] == bad_at
  assert ckpt.latest_step() == last_good                     # nothing saved at the bad step
  assert writer.loss_steps() == list(range(1, bad_at))       # the bad values are not recorded
  assert [s for s, _, _ in logged] == list(range(1, bad_at))
  ckpt.close()


# ------------------------------------------------------------------------------------- SIGTERM
def test_sigterm_saves_that_step_raises_preempted_and_resume_continues(tmp_path):
  directory = str(tmp_path / "ckpt")
  original = signal.getsignal(signal.SIGTERM)
  outside = []
  signal.signal(signal.SIGTERM, lambda signum, frame: outside.append(signum))   # never kill pytest
  try:
    sentinel = signal.getsignal(signal.SIGTERM)
    writer = Writer()
    loop_spec, _ = spec(total=10, log_every=100, checkpoint_every=100)
    step = FakeStep(sigterm_at=3)
    with pytest.raises(loop.Preempted, match=re.escape(f"SIGTERM: saved step 3 to {directory}; restart to resume")):
      loop.run_steps(loop_spec, start_state(), step, batches(), Checkpointer(directory), writer)
    assert step.ran == [1, 2, 3]                                 # the step in flight finished, no more
    assert outside == [] and signal.getsignal(signal.SIGTERM) is sentinel   # the loop's handler, then ours again
    assert writer.loss_steps() == [3] and writer.flushes >= 1   # logged on SIGTERM

    # A restarted process resumes from step 3 (reading the data from batch 3 on) to the end.
    ckpt = Checkpointer(directory)
    assert ckpt.latest_step() == 3
    state, _ = ckpt.restore(abstract_like(start_state()))
    assert (int(state.step), int(state.total)) == (3, 1 + 2 + 3)
    resumed = FakeStep()
    final = loop.run_steps(loop_spec, state, resumed, batches(start=int(state.step)), ckpt, Writer())
    assert resumed.ran == list(range(4, 11))
    assert (int(final.step), int(final.total)) == (10, sum(range(1, 11)))
    assert list(ckpt.manager.all_steps()) == [3, 10]
    ckpt.close()
    assert signal.getsignal(signal.SIGTERM) is sentinel
  finally:
    signal.signal(signal.SIGTERM, original)


def test_sigterm_after_the_save_decision_still_saves_the_step_it_names(tmp_path):
  """A SIGTERM landing while a step logs (after the loop decided not to save that step) must not
  make the loop exit without a checkpoint: it saves the next step and names that one. (The flag
  was read twice: the exit saw it, the save had not, and the run exited naming an unsaved step.)"""
  directory = str(tmp_path / "ckpt")
  original = signal.getsignal(signal.SIGTERM)
  signal.signal(signal.SIGTERM, lambda signum, frame: None)

  class SignallingWriter(Writer):
    def write_scalars(self, step, scalars):
      super().write_scalars(step, scalars)
      if int(step) == 2 and "loss" in scalars:
        os.kill(os.getpid(), signal.SIGTERM)

  try:
    loop_spec, _ = spec(total=10, log_every=1, checkpoint_every=100)
    with pytest.raises(loop.Preempted, match=r"saved step (\d+)") as err:
      loop.run_steps(loop_spec, start_state(), FakeStep(), batches(), Checkpointer(directory), SignallingWriter())
    named = int(re.search(r"saved step (\d+)", str(err.value)).group(1))
    ckpt = Checkpointer(directory)
    assert ckpt.latest_step() == named == 3
    ckpt.close()
  finally:
    signal.signal(signal.SIGTERM, original)


def test_sigterm_at_the_last_step_saves_once_and_returns(tmp_path):
  original = signal.getsignal(signal.SIGTERM)
  signal.signal(signal.SIGTERM, lambda signum, frame: None)
  try:
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    loop_spec, _ = spec(total=4, log_every=100, checkpoint_every=100)
    final = loop.run_steps(loop_spec, start_state(), FakeStep(sigterm_at=4), batches(), ckpt, Writer())
    assert int(final.step) == 4 and list(ckpt.manager.all_steps()) == [4]
    ckpt.close()
  finally:
    signal.signal(signal.SIGTERM, original)


def test_sigterm_while_waiting_for_data_saves_the_steps_done_and_resume_continues(tmp_path):
  """The wait for step 4's batch ends with Interrupted (the pipeline's reaction to SIGTERM): the
  state after 3 steps is saved, Preempted names it, and a restart resumes from it."""
  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  loop_spec, _ = spec(total=7, log_every=100, checkpoint_every=100)
  with pytest.raises(loop.Preempted, match=re.escape(f"SIGTERM while waiting for data: saved step 3 to {ckpt.directory}")):
    loop.run_steps(loop_spec, start_state(), FakeStep(), stalling(3), ckpt, Writer())
  again = Checkpointer(str(tmp_path / "ckpt"))
  state, _ = again.restore(abstract_like(start_state()))
  assert (int(state.step), int(state.total)) == (3, 1 + 2 + 3)
  final = loop.run_steps(loop_spec, state, FakeStep(), batches(start=3), again, Writer())
  assert (int(final.step), int(final.total)) == (7, sum(range(1, 8)))
  again.close()
  # Before the first step there is nothing to save: the message says so.
  empty = Checkpointer(str(tmp_path / "empty"))
  with pytest.raises(loop.Preempted, match="before the first step; nothing to save"):
    loop.run_steps(loop_spec, start_state(), FakeStep(), stalling(0), empty, Writer())
  assert empty.latest_step() is None


# ------------------------------------------------------------------- several processes: the vote
class FakeVote:
  """A stand-in for preemption.ProcessVote: records each ballot (the local flag and the step's
  outputs) and answers True from the ballot `agreed_from` on (another process got SIGTERM)."""
  processes = 2

  def __init__(self, agreed_from=None):
    self.agreed_from, self.ballots = agreed_from, []

  def __call__(self, local, step_outputs):
    self.ballots.append((bool(local), step_outputs))
    return bool(local) or (self.agreed_from is not None and len(self.ballots) >= self.agreed_from)


def test_every_step_casts_one_ballot_with_its_outputs(tmp_path):
  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  vote = FakeVote()
  loop_spec, _ = spec(total=6, log_every=100, checkpoint_every=100)
  final = loop.run_steps(loop_spec, start_state(), FakeStep(), batches(), ckpt, Writer(), agreement=vote)
  assert int(final.step) == 6 and len(vote.ballots) == 6
  assert [local for local, _ in vote.ballots] == [False] * 6
  assert [float(out["loss"]) for _, out in vote.ballots] == pytest.approx([1 / n for n in range(1, 7)])
  assert list(ckpt.manager.all_steps()) == [6]
  ckpt.close()


def test_a_sigterm_on_another_process_saves_the_agreed_step_here_and_resume_continues(tmp_path):
  """This process never got SIGTERM; the vote after step 4 says another one did: this one saves
  step 4 too (orbax's save barrier needs every process), names it, and a restart resumes from it."""
  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  vote = FakeVote(agreed_from=4)
  step = FakeStep()
  loop_spec, _ = spec(total=10, log_every=100, checkpoint_every=100)
  with pytest.raises(loop.Preempted, match=re.escape(
      f"SIGTERM (on another process): saved step 4 to {ckpt.directory}; restart to resume")):
    loop.run_steps(loop_spec, start_state(), step, batches(), ckpt, Writer(), agreement=vote)
  assert step.ran == [1, 2, 3, 4] and len(vote.ballots) == 4
  again = Checkpointer(str(tmp_path / "ckpt"))
  assert again.latest_step() == 4
  state, _ = again.restore(abstract_like(start_state()))
  final = loop.run_steps(loop_spec, state, FakeStep(), batches(start=4), again, Writer(), agreement=FakeVote())
  assert (int(final.step), int(final.total)) == (10, sum(range(1, 11)))
  again.close()


def test_with_several_processes_a_sigterm_while_waiting_for_data_exits_without_saving(tmp_path, monkeypatch):
  """The wait for step 6's batch gave up (Interrupted, after its grace): the other processes may be
  inside step 6, so this one must not enter orbax's save barrier. It exits 143 at once
  (preemption.exit_now, stubbed here), naming the step and the intact checkpoint of step 4."""
  from autox3d_jax import preemption
  exits = []

  def exit_now(message):
    exits.append(message)
    raise SystemExit(preemption.EXIT_CODE)

  monkeypatch.setattr(preemption, "exit_now", exit_now)

  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  writer = Writer()
  loop_spec, _ = spec(total=10, log_every=100, checkpoint_every=4)
  with pytest.raises(SystemExit) as stop:
    loop.run_steps(loop_spec, start_state(), FakeStep(), stalling(5), ckpt, writer, agreement=FakeVote())
  assert stop.value.code == 143 and writer.flushes >= 1
  assert len(exits) == 1 and "at step 6 of toy, one of 2 processes: not saved" in exits[0]
  assert f"the last checkpoint (step 4) in {ckpt.directory} is intact" in exits[0]
  assert Checkpointer(str(tmp_path / "ckpt")).latest_step() == 4     # step 5 was not saved


def test_one_process_votes_locally_without_a_collective():
  from autox3d_jax import preemption
  vote = preemption.agreement()
  assert isinstance(vote, preemption.LocalAgreement) and vote.processes == 1
  assert vote(True, None) is True and vote(False, {"loss": 1.0}) is False


def test_the_process_vote_on_one_process_returns_the_local_flag_and_counts_ballots():
  """ProcessVote's collective (a max over one int32 per process) with a single process: the
  reduction of one ballot is the ballot. Two processes: tests/test_multihost_preemption.py."""
  from autox3d_jax import preemption
  vote = preemption.ProcessVote()
  assert vote.processes == 1
  outputs = {"loss": jnp.float32(1.0)}
  assert [vote(flag, outputs) for flag in (False, True, False)] == [False, True, False]
  assert vote.ballots == 3


@pytest.mark.parametrize("raw, processes, expected", [
    (None, 2, 60.0), ("", 2, 60.0), ("5", 2, 5.0), ("0", 2, 0.0), ("5", 1, 0.0), (None, 1, 0.0)])
def test_the_data_wait_grace_after_sigterm(monkeypatch, raw, processes, expected):
  from autox3d_jax import preemption
  monkeypatch.setattr(preemption, "_process_count", lambda: processes)
  if raw is None:
    monkeypatch.delenv(preemption.DATA_GRACE_ENV_VAR, raising=False)
  else:
    monkeypatch.setenv(preemption.DATA_GRACE_ENV_VAR, raw)
  assert preemption.data_wait_grace_s() == expected


@pytest.mark.parametrize("raw", ["-1", "soon", "nan"])
def test_a_bad_data_wait_grace_is_rejected_naming_the_variable(monkeypatch, raw):
  from autox3d_jax import preemption
  monkeypatch.setenv(preemption.DATA_GRACE_ENV_VAR, raw)
  for processes in (1, 2):   # rejected with one process too: never silently ignored
    monkeypatch.setattr(preemption, "_process_count", lambda: processes)
    with pytest.raises(ValueError, match=f"AUTOX3D_PREEMPTION_DATA_GRACE_S={raw!r}: pass a number of seconds >= 0"):
      preemption.data_wait_grace_s()


# ------------------------------------------------------------------------------------ run dirs
def test_run_dirs():
  search = loop.run_dirs("/w", "search")
  assert (search.checkpoints, search.tensorboard) == ("/w/checkpoints/search", "/w/tensorboard")
  train = loop.run_dirs("/w", "train", "X3D-S")
  assert (train.checkpoints, train.tensorboard) == ("/w/checkpoints/train_X3D-S", "/w/train_X3D-S/tensorboard")
  odd = loop.run_dirs("/w", "train", "searched 1/2.v3")
  assert odd.checkpoints == "/w/checkpoints/train_searched_1_2_v3"
  assert odd.tensorboard == "/w/train_searched_1_2_v3/tensorboard"
  assert loop.safe_name("a-b_c d/e.f") == "a-b_c_d_e_f"
  with pytest.raises(ValueError, match="a standalone run needs the network's name"):
    loop.run_dirs("/w", "train")
  with pytest.raises(ValueError, match="kind must be 'search' or 'train', got 'eval'"):
    loop.run_dirs("/w", "eval", "x")


# ------------------------------------------------------------------------------ progress, ETA
@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (59.4, "59s"), (59.6, "1m00s"), (60, "1m00s"), (125, "2m05s"), (3599, "59m59s"),
    (3600, "1h00m"), (3725, "1h02m"), (90061, "25h01m"),
])
def test_format_eta(seconds, text):
  assert loop.format_eta(seconds) == text


def test_progress_rates_and_eta_on_a_fake_clock(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(time, "perf_counter", lambda: now[0])
  progress = loop.Progress(start_step=10, total_steps=110)
  assert progress.started == 100.0
  now[0] = 105.0
  rate, eta = progress.update(20)              # 10 steps in 5 s
  assert rate == pytest.approx(2.0) and eta == pytest.approx(45.0)
  now[0] = 106.0
  rate, eta = progress.update(30)              # the rate is over the last window only
  assert rate == pytest.approx(10.0) and eta == pytest.approx(8.0)
  rate, eta = progress.update(30)              # no time, no steps: finite
  assert rate == 0.0 and math.isfinite(eta)
  now[0] = 116.0
  rate, eta = progress.update(110)
  assert rate == pytest.approx(8.0) and eta == 0.0


def test_checkpointer_keeps_config_checkpoint_keep(tmp_path):
  from autox3d_jax import config as config_lib
  cfg = config_lib.base_config()
  cfg.checkpoint.keep = 2
  ckpt = loop.checkpointer(cfg, str(tmp_path / "ckpt"))
  try:
    for s in range(1, 5):
      ckpt.save(s, start_state(), {})
    assert ckpt.directory == str(tmp_path / "ckpt") and list(ckpt.manager.all_steps()) == [3, 4]
  finally:
    ckpt.close()
