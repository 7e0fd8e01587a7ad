"""Run identity (train/identity.py): which settings define a run, the one-line error when a
workdir holds a run with other settings, config.resume, and the loop kit storing it."""
import os
import subprocess

import pytest

from autox3d_jax import config as config_lib
from autox3d_jax.train import identity, loop

import toys
from test_main import env_for, main_cmd


def _cfg(**keys):
  return toys.set_keys(config_lib.base_config(), keys)


def test_search_identity_holds_what_defines_the_result_and_nothing_else():
  base = identity.of_search(_cfg())
  assert base[identity.CODE_VERSION_KEY]
  for key, value in (("seed", 3), ("search.steps", 7), ("search.strategy", "dnas"), ("space.stem_width", 16),
                     ("data.name", "x"), ("data.batch_size", 8), ("search.weight_opt.lr", 0.5)):
    assert identity.of_search(_cfg(**{key: value})) != base, key
  for key, value in (("mode", "search"), ("log_every_steps", 3), ("checkpoint.every_steps", 5), ("mesh.model", 2),
                     ("data.data_dir", "/elsewhere"), ("data.eval_batch_size", 4), ("train.steps", 9),
                     ("search.derive", "evolution"), ("search.evolution.population", 8), ("resume", "seed"),
                     ("latency.repeats", 9), ("data.max_skipped_fraction", 0.5)):
    assert identity.of_search(_cfg(**{key: value})) == base, key
  # The latency table's settings define a latency-constrained search.
  lat = identity.of_search(_cfg(**{"search.cost_metric": "latency"}))
  assert identity.of_search(_cfg(**{"search.cost_metric": "latency", "latency.repeats": 9})) != lat


def test_train_identity_follows_the_network_and_the_recipe():
  base = identity.of_train(_cfg(), '{"a": 1}')
  assert identity.of_train(_cfg(), '{"a": 2}')["train.arch"] != base["train.arch"]
  assert identity.of_train(_cfg(**{"train.steps": 9}), '{"a": 1}') != base
  assert identity.of_train(_cfg(**{"train.seeds": 3, "search.steps": 5}), '{"a": 1}') == base


def test_check_names_the_keys_that_differ_and_the_two_ways_on():
  saved = identity.of_search(_cfg())
  now = identity.of_search(_cfg(**{"seed": 1, "search.steps": 30}))
  identity.check(saved, saved, set(), what="search", directory="/w/ckpt")
  with pytest.raises(config_lib.ConfigError) as err:
    identity.check(saved, now, set(), what="search", directory="/w/ckpt")
  message = str(err.value)
  assert "\n" not in message
  assert message.startswith("/w/ckpt holds a search run with other settings (config.search.steps: 600 -> 30; "
                            "config.seed: 0 -> 1)")
  assert message.endswith("Use a new --workdir, or resume anyway with --config.resume=search.steps,seed")
  identity.check(saved, now, {"seed", "search.steps"}, what="search", directory="/w/ckpt")
  with pytest.raises(config_lib.ConfigError, match=r"\(config.seed: 0 -> 1\)"):
    identity.check(saved, now, {"search.steps"}, what="search", directory="/w/ckpt")
  newer = {**saved, identity.CODE_VERSION_KEY: "9.9"}
  with pytest.raises(config_lib.ConfigError, match=r"code_version: \"[^\"]+\" -> \"9.9\".*--config.resume=code_version"):
    identity.check(saved, newer, set(), what="search", directory="/w/ckpt")


def test_a_checkpoint_without_identity_resumes_with_a_warning(caplog):
  identity.check(None, identity.of_search(_cfg()), set(), what="search", directory="/w/ckpt")
  assert "records no run identity" in caplog.text


def test_the_loop_kit_refuses_a_checkpoint_of_another_run(tmp_path):
  from test_loop import FakeStep, Writer, batches, spec, start_state
  cfg = _cfg(**{"checkpoint.every_steps": 2})
  run_id = identity.of_search(cfg)
  directory = str(tmp_path / "ckpt")
  ckpt = loop.checkpointer(cfg, directory, run_id, what="search")
  loop_spec, _ = spec(total=2, checkpoint_every=2, meta=lambda: {"identity": run_id})
  loop.run_steps(loop_spec, start_state(), FakeStep(), batches(), ckpt, Writer())
  ckpt.close()
  loop.checkpointer(cfg, directory, run_id, what="search").close()           # same run: resumes
  other = identity.of_search(_cfg(**{"checkpoint.every_steps": 2, "seed": 5}))
  with pytest.raises(config_lib.ConfigError, match="holds a search run with other settings"):
    loop.checkpointer(cfg, directory, other, what="search")
  loop.checkpointer(_cfg(**{"checkpoint.every_steps": 2, "resume": "seed"}), directory, other, what="search").close()


def test_resume_must_name_config_keys():
  config_lib.validate(_cfg(**{"resume": "search.steps, train.steps,code_version", "search.target_arch": "X3D"}))
  with pytest.raises(config_lib.ConfigError, match="config.resume names 'steps'"):
    config_lib.validate(_cfg(**{"resume": "steps", "search.target_arch": "X3D"}))


@pytest.mark.slow
def test_a_workdir_rerun_with_another_seed_fails_in_one_line_and_keeps_the_checkpoint(tmp_path):
  """Before: the rerun returned the old run's result under the new labels."""
  env = env_for(tmp_path / "data")
  first = subprocess.run(main_cmd(tmp_path / "w", "--config.mode=search"), capture_output=True, text=True,
                         env={**env, loop.FAULT_KILL_ENV_VAR: "2"}, timeout=900)
  assert first.returncode == -9, first.stderr[-3000:]    # killed right after saving step 2
  ckpt_dir = tmp_path / "w" / "checkpoints" / "search"
  before = sorted(os.listdir(ckpt_dir))
  again = subprocess.run(main_cmd(tmp_path / "w", "--config.mode=search", "--config.seed=1"), capture_output=True,
                         text=True, env=env, timeout=900)
  assert again.returncode == 2, again.stderr[-3000:]
  last = again.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: {ckpt_dir} holds a search run with other settings (config.seed: 0 -> 1)"), last
  assert last.endswith("--config.resume=seed") and "Traceback" not in again.stderr
  assert sorted(os.listdir(ckpt_dir)) == before and not (tmp_path / "w" / "search" / "result.json").exists()
  from autox3d_jax.train.checkpoint import Checkpointer
  kept = Checkpointer(str(ckpt_dir))
  assert kept.latest_step() == 2 and kept.read_meta()["identity"]["seed"] == 0
  kept.close()
