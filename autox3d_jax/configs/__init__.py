"""The shipped configs, importable from the installed package (Colab, notebooks, scripts):

  from autox3d_jax import configs
  cfg = configs.get("demo", "tiny")            # what --config=configs/demo.py:tiny gives main

Each module's docstring carries its run commands; `configs/*.py` in a checkout forward here, so the
command line takes them by path as before.
"""
from __future__ import annotations

import importlib

import ml_collections

NAMES = ("demo", "search_autox3d", "search_hybrid", "search_x3d_expansion", "x3d")


def get(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """Config `name` with argument `arg` (None: the config's own default), locked as main locks it
  (unknown keys raise; values can still be changed)."""
  if name not in NAMES:
    raise ValueError(f"no shipped config {name!r}; choose one of {list(NAMES)}")
  module = importlib.import_module(f"autox3d_jax.configs.{name}")
  cfg = module.get_config() if arg is None else module.get_config(arg)
  cfg.lock()
  return cfg
