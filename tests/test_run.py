"""The run modes in-process (what Colab calls): the tiny demo end to end, and the pieces `run` builds."""
import json
import os

import pytest

from autox3d_jax import config as config_lib
from autox3d_jax import run
from autox3d_jax.data import testing
from autox3d_jax.models import zoo
from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.space import SearchSpace, x3d_space_config
from autox3d_jax.train import setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir=None, **overrides):
  import importlib.util
  spec = importlib.util.spec_from_file_location("demo_cfg", os.path.join(ROOT, "configs", "demo.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = module.get_config("tiny")
  cfg.data.data_dir = str(data_dir) if data_dir else testing.tiny_data_dir()
  for key, value in overrides.items():
    section, name = key.split(".")
    cfg[section][name] = value
  cfg.lock()
  return config_lib.validate(cfg)


def test_modes_are_the_configs_modes():
  assert tuple(run.MODES) == config_lib.MODES


@pytest.mark.slow   # out of CI too: the CLI tiny demo and the quickstart notebook run the same run.demo
def test_tiny_demo_in_process(tmp_path):
  """run.demo: build the missing dataset -> search -> derive -> retrain both networks -> evaluate
  -> report, in this process, from an empty data directory (as the README's demo starts)."""
  cfg = tiny_config(data_dir=tmp_path / "fresh_data")
  tmp_path = tmp_path / "work"
  models = run.demo(cfg, str(tmp_path))
  assert [m["kind"] for m in models] == ["searched", "baseline"]
  for m in models:
    assert 0.0 <= m["top1"] <= 1.0 and m["gflops"] > 0 and m["params"] > 0
  results = json.loads((tmp_path / "report" / "results.json").read_text())
  assert [m["name"] for m in results["models"]] == ["AutoX3D (searched)", "X3D-like baseline"]
  assert results["search"]["steps"] == cfg.search.steps
  assert results["decision_history"]["steps"][-1] == cfg.search.steps
  assert sorted(os.listdir(tmp_path / "checkpoints")) == [
      "search", "train_AutoX3D__searched_", "train_X3D-like_baseline"]
  point = json.loads((tmp_path / "search" / "point.json").read_text())
  assert json.loads((tmp_path / "search" / "result.json").read_text())["steps"] == cfg.search.steps
  # The searched network is the space's point the search wrote.
  space = setup.build_space(cfg)
  assert space.to_arch(point).to_dict() | {"name": None} == models[0]["arch"].to_dict() | {"name": None}


@pytest.mark.parametrize("variant", ["XS", "S", "M", "L"])
def test_each_x3d_target_is_that_variants_flops(variant):
  """search.target_arch = 'X3D-<v>' targets X3D-<v>'s own FLOPs in the default space at its input
  (it used to take X3D-S's depths for every variant: target=L gave half of X3D-L's FLOPs)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("s", os.path.join(ROOT, "configs", "search_autox3d.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = module.get_config(f"target={variant}")
  space = SearchSpace(x3d_space_config(variant))
  table = CostTable.build(space, "flops")
  target = setup.resolve_cost_target(space, table, cfg)
  from autox3d_jax.cost.analytic import arch_cost
  assert target == pytest.approx(arch_cost(zoo.x3d(variant)).flops, rel=1e-6)


def test_unknown_target_arch_is_rejected_naming_the_key():
  space = SearchSpace(x3d_space_config("S"))
  cfg = config_lib.base_config()
  cfg.search.target_arch = "ResNet-50"
  with pytest.raises(config_lib.ConfigError, match="config.search.target_arch = 'ResNet-50'"):
    setup.resolve_cost_target(space, CostTable.build(space, "flops"), cfg)


def test_missing_dataset_is_built_only_by_a_plugin(tmp_path):
  """ensure_dataset builds a missing embedded dataset, and re-raises the registry's error for
  anything else (it used to catch every exception and build moving_digits)."""
  from autox3d_jax.data import registry
  cfg = config_lib.base_config()
  cfg.data.data_dir = str(tmp_path)
  cfg.data.name = "ucf101"
  with pytest.raises(registry.DatasetError, match="ucf101"):
    setup.ensure_dataset(cfg)
  cfg.data.name = "moving_digits/motion_tiny"
  cfg.data.build_if_missing = False
  with pytest.raises(registry.DatasetError):
    setup.ensure_dataset(cfg)
  assert not os.listdir(tmp_path)
  cfg.data.build_if_missing = True
  setup.ensure_dataset(cfg)
  assert registry.get_source("moving_digits/motion_tiny", "train", str(tmp_path)).num_examples > 0


def test_ensure_dataset_lets_other_errors_through(monkeypatch, tmp_path):
  """A fault that is not 'dataset missing' (here: a permission error) must surface, not trigger a build."""
  from autox3d_jax.data import registry
  built = []
  monkeypatch.setattr(registry, "get_source", lambda *a: (_ for _ in ()).throw(PermissionError("denied")))
  monkeypatch.setattr(registry, "builder_for", lambda name: lambda data_dir: built.append(name))
  cfg = config_lib.base_config()
  cfg.data.data_dir = str(tmp_path)
  with pytest.raises(PermissionError):
    setup.ensure_dataset(cfg)
  assert not built
