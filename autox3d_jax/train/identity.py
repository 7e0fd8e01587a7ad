"""A run's identity: the settings that define its result, stored with every checkpoint.

A workdir rerun with another seed, step count, strategy or space must not pick up the old run's
checkpoint and report its result under the new labels. Each loop saves its identity (the config
keys that define what it computes, plus the code version) in the checkpoint metadata; before a
resume, `check` compares it with the current one and, if keys differ, stops with one line naming
them and the two ways on: a new workdir, or `--config.resume=<keys>` to resume anyway with those
keys changed (e.g. more `search.steps`). The next checkpoint then records the new values.

What is *not* identity: where things are (data_dir, checkpoint.*, mesh.* -- a checkpoint restores
into another mesh), how often the run reports (log_every_steps), what happens after the loop
(evaluation settings, how the search derives its architecture), and for a search the standalone
training settings (and vice versa).
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import ml_collections

from autox3d_jax.config import ConfigError

log = logging.getLogger(__name__)

CODE_VERSION_KEY = "code_version"

# Keys that never define a result (prefixes end with '.').
_NEVER = ("mode", "resume", "compilation_cache", "log_every_steps", "checkpoint.", "mesh.", "data.data_dir", "data.build_if_missing",
          "data.eval_split", "data.eval_batch_size", "data.num_temporal_views", "data.num_spatial_crops",
          "data.max_skipped_fraction")
_SEARCH = ("seed", "data.", "space.", "search.", "tasks.", "train.dtype")
_SEARCH_AFTER_LOOP = ("search.derive", "search.derive_within_target", "search.evolution.")
_TRAIN = ("seed", "data.", "train.")
_TRAIN_NOT = ("train.seeds", "train.arch", "data.arch_val_fraction")   # the spec stands for train.arch


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
  return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


def flatten(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """{'data.batch_size': 16, ...}: every leaf of the config, tuples as lists (JSON's form)."""
  out: dict[str, Any] = {}

  def walk(prefix: str, node):
    for k, v in node.items():
      key = f"{prefix}{k}"
      if isinstance(v, (dict, ml_collections.ConfigDict)):
        walk(f"{key}.", v)
      else:
        out[key] = json.loads(json.dumps(v))
  walk("", cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else cfg)
  return out


def _code_version() -> str:
  import autox3d_jax
  return autox3d_jax.__version__


def of_search(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """The search loop's identity: seed, data, space and search settings (the latency table's
  settings too when the search optimises latency), and the code version."""
  keep = _SEARCH + (("latency.",) if cfg.search.cost_metric == "latency" else ())
  keys = {k: v for k, v in flatten(cfg).items()
          if _matches(k, keep) and not _matches(k, _NEVER + _SEARCH_AFTER_LOOP)}
  return {**keys, CODE_VERSION_KEY: _code_version()}


def of_train(cfg: ml_collections.ConfigDict, spec_json: str) -> dict[str, Any]:
  """A standalone training's identity: seed, data and train settings, the network trained (a hash
  of its ArchSpec JSON, as key 'train.arch'), and the code version."""
  keys = {k: v for k, v in flatten(cfg).items()
          if _matches(k, _TRAIN) and not _matches(k, _NEVER + _TRAIN_NOT)}
  keys["train.arch"] = "sha256:" + hashlib.sha256(spec_json.encode()).hexdigest()[:16]
  return {**keys, CODE_VERSION_KEY: _code_version()}


def allowed_changes(cfg: ml_collections.ConfigDict) -> set[str]:
  """config.resume: the comma-separated keys allowed to differ from the checkpoint's."""
  return {k.strip() for k in cfg.resume.split(",") if k.strip()}


def check(saved: dict[str, Any] | None, current: dict[str, Any], allowed: set[str], *, what: str,
          directory: str) -> None:
  """Raise ConfigError when `saved` (the identity in the checkpoint about to be resumed) and
  `current` differ in a key not in `allowed`. A checkpoint written before identities were
  recorded (`saved` None) is resumed with a warning."""
  if saved is None:
    log.warning("%s: the checkpoint in %s records no run identity (written by an older version); resuming "
                "it without checking that its settings match", what, directory)
    return
  missing = object()
  differ = sorted(k for k in set(saved) | set(current)
                  if saved.get(k, missing) != current.get(k, missing) and k not in allowed)
  if not differ:
    return
  shown = "; ".join(f"{_name(k)}: {_show(saved.get(k, missing), missing)} -> {_show(current.get(k, missing), missing)}"
                    for k in differ[:6])
  more = f" (and {len(differ) - 6} more)" if len(differ) > 6 else ""
  raise ConfigError(
      f"{directory} holds a {what} run with other settings ({shown}{more}); resuming it would mix two runs. "
      f"Use a new --workdir, or resume anyway with --config.resume={','.join(differ)}")


def _name(key: str) -> str:
  return key if key == CODE_VERSION_KEY else f"config.{key}"


def _show(value, missing) -> str:
  return "(none)" if value is missing else json.dumps(value)

