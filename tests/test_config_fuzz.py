"""Config fuzz: every key of base_config() given a value of the wrong type, out of range, and (for
strings) unknown. Each is rejected when set (ml_collections' typed fields) or by the checks main
runs before anything is built (`config.validate`, `setup.check_devices`, `setup.check_space`,
`setup.check_sharding`, `setup.check_dtype`),
naming the key -- with no dataset read or built and nothing compiled -- or it is a value that
works, listed in WORKS with the reason."""
import math

import jax
import pytest

from autox3d_jax import config as config_lib
from autox3d_jax.data import registry

import toys
from test_config import KEYS, probe_config

HUGE = 10 ** 12

# (key, mutation) accepted because the value is a valid setting, and why.
WORKS = {
    **{(k, "zero"): "0 is a valid count / seed / step" for k in (
        "seed", "latency.seed", "latency.warmup", "data.shuffle_buffer", "search.arch_warmup_steps",
        "search.largest_warmup_steps", "search.spos.cost_bins", "search.evolution.iterations",
        "search.evolution.mutants", "search.evolution.crossovers", "search.weight_opt.warmup_steps",
        "train.optimizer.warmup_steps")},
    **{(k, "negative"): "-1 means 'from the data'" for k in ("space.num_frames", "space.crop_size",
                                                                "space.num_classes")},
    ("search.probabilistic.entropy_weight", "negative"): "a negative weight rewards low entropy",
    ("search.sandwich_ops", "empty"): "() is the default: every op of the space",
    ("space.downsample", "empty"): "() is the default: no downsampling modules (X3D's strided first blocks)",
    **{(f"space.{k}", "empty"): "() is the default: the input axis is not searched" for k in (
        "input_frames", "input_strides", "input_crops")},
    **{(f"search.x3d_expansion.{k}", "zero"): "0 = no limit on the axis (0 train_steps: train.steps)" for k in (
        "max_span", "max_crop", "train_steps", "inherited_steps")},
    **{(k, "empty"): "'' is the default (none / derived)" for k in (
        "data.data_dir", "latency.path", "resume", "train.arch", "compilation_cache", "export.checkpoint",
        "export.dir", "train.init_from", "eval.checkpoint", "pretrained.dir", "search.init_from")},
    ("search.init_from", "unknown"): "a checkpoint directory, read by search_loop.pretrained_network before the "
                                     "dataset (test_adapt: 'holds no checkpoint')",
    ("search.feature_distill.teacher", "empty"): "'' is the default: no feature distillation",
    ("search.feature_distill.stages", "negative"): "(-1,) is the default: the last stage",
    ("search.feature_distill.teacher", "unknown"): "a checkpoint directory, read by search_loop.feature_teacher before "
                                                   "the dataset (test_feature_distill: 'holds no checkpoint')",
    **{(k, "empty"): "'' is the default; mode=import requires it when the run starts (test_pretrained: an "
       "incomplete import fails naming it)" for k in ("pretrained.source", "pretrained.variant")},
    ("export.checkpoint", "unknown"): "checked by export.mode.check before the dataset (test_export: no checkpoint)",
    ("export.dir", "unknown"): "a directory name: the export creates it",
    ("data.data_dir", "unknown"): "a directory name: created by the build or named by the dataset error",
    ("latency.path", "unknown"): "a file name: the table is written there",
    ("compilation_cache", "unknown"): "a directory name: JAX creates it",
    # Names resolved when the run starts, before any build: one-line errors tested in test_main_errors.
    ("data.name", "unknown"): "checked by setup.ensure_dataset (test_an_unknown_dataset_fails_in_one_line_naming_the_choices)",
    ("data.train_split", "unknown"): "checked by setup.ensure_dataset",
    ("data.eval_split", "unknown"): "checked by setup.ensure_dataset in the modes that evaluate (test_a_missing_eval_split_fails_before_training)",
    ("train.arch", "unknown"): "checked by run.check_arch_name before the dataset",
}


def mutations(default):
  if isinstance(default, bool):
    return [("wrong type", "yes")]
  if isinstance(default, int):
    return [("wrong type", "abc"), ("negative", -1), ("zero", 0), ("huge", HUGE)]
  if isinstance(default, float):
    return [("wrong type", "abc"), ("negative", -1.0), ("nan", math.nan), ("inf", math.inf), ("huge", float(HUGE))]
  if isinstance(default, str):
    return [("wrong type", 7), ("empty", ""), ("unknown", "nosuch")]
  if isinstance(default, tuple):
    n = max(len(default), 1)           # an empty default still gets a one-element bad value
    return [("wrong type", 5), ("empty", ()), ("negative", (-1,) * n), ("strings", ("a",) * n)]
  raise AssertionError(f"no mutations for {default!r}")


def _get(cfg, key):
  for part in key.split("."):
    cfg = cfg[part]
  return cfg


CASES = [(key, kind, bad) for key in sorted(KEYS) for kind, bad in mutations(_get(probe_config(KEYS[key][2]), key))]


_COMPILES: list = []
_WATCHING = [False]


def _on_event(event, duration, **kwargs):
  if _WATCHING[0] and "compile" in event:
    _COMPILES.append(event)


jax.monitoring.register_event_duration_secs_listener(_on_event)


@pytest.fixture
def nothing_built(monkeypatch):
  """Reading or building a dataset fails the test; XLA compilations (jax's monitoring events)
  are counted and must stay at zero."""
  from autox3d_jax.train import setup  # noqa: F401  (imported first: its modules jit at import)

  def forbidden(what):
    def fail(*args, **kwargs):
      raise AssertionError(f"{what} called before the config was checked")
    return fail
  monkeypatch.setattr(registry, "get_source", forbidden("registry.get_source"))
  monkeypatch.setattr(registry, "builder_for", forbidden("registry.builder_for"))
  _COMPILES.clear()
  _WATCHING[0] = True
  yield
  _WATCHING[0] = False
  assert not _COMPILES, f"compiled before the config was checked: {_COMPILES}"


def early_checks(cfg):
  """What main runs on a config before the run starts."""
  from autox3d_jax.train import setup
  config_lib.validate(cfg)
  setup.check_devices(cfg)
  setup.check_space(cfg)
  setup.check_sharding(cfg)
  setup.check_dtype(cfg)


@pytest.mark.parametrize("key, kind, bad", CASES, ids=[f"{k}-{m}" for k, m, _ in CASES])
def test_a_bad_value_is_rejected_early_naming_the_key_or_works(key, kind, bad, nothing_built):
  cfg = probe_config(KEYS[key][2])
  cfg.mode = "search" if key != "mode" else cfg.mode
  leaf = key.split(".")[-1]
  try:
    toys.set_keys(cfg, {key: bad})
  except (TypeError, ValueError) as e:       # ml_collections' typed fields: rejected when set
    assert leaf in str(e), str(e)
    return
  try:
    early_checks(cfg)
  except config_lib.ConfigError as e:
    assert f"config.{key}" in str(e) or (key.startswith("space.") and "config.space" in str(e)), str(e)
    return
  assert kind == "huge" or (key, kind) in WORKS, f"config.{key} = {bad!r} ({kind}) was accepted"


def test_works_lists_only_accepted_values(nothing_built):
  """Every WORKS entry is a real case that the checks accept (no stale entries)."""
  cases = {(k, m): b for k, m, b in CASES}
  for (key, kind) in WORKS:
    cfg = probe_config(KEYS[key][2])
    cfg.mode = "search"
    early_checks(toys.set_keys(cfg, {key: cases[(key, kind)]}))
