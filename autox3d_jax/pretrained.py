"""mode=import: a PyTorch X3D checkpoint -> a weights checkpoint (`train.weights`) that
config.train.init_from (fine-tuning), config.eval.checkpoint and config.export.checkpoint read.

config.pretrained says what: `source` (a pytorchvideo state_dict `.pt`/`.pyth`, or a SlowFast
checkpoint whose 'model_state' holds the network; a local path or gs://), `variant` (a zoo name
such as 'x3d_s', or an ArchSpec JSON of an X3D-type network), `layout` ('auto' detects pytorchvideo
or SlowFast from the keys), `trust_pickle` (see `convert_torch.load_torch_checkpoint`) and `dir`
('' = <workdir>/pretrained/<network name>). The class count comes from the checkpoint's classifier.
The network keeps the variant's own clip (X3D-S: 13 x 160); the weights do not depend on it.

Everything is checked before anything is written: a file that is not a readable checkpoint, a
checkpoint of another variant (the first tensor that does not fit, with both shapes), or keys left
over, each end the run with one line and write nothing.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import re

import ml_collections
import numpy as np

from autox3d_jax import paths
from autox3d_jax.config import ConfigError
from autox3d_jax.models import convert_torch
from autox3d_jax.models.spec import ArchSpec

log = logging.getLogger(__name__)


def check(cfg: ml_collections.ConfigDict) -> None:
  """ConfigError naming the key when config.pretrained cannot describe an import."""
  p = cfg.pretrained
  if not p.source:
    raise ConfigError("mode=import needs config.pretrained.source: the PyTorch checkpoint (.pyth / .pt) to import")
  if not p.variant:
    raise ConfigError(f"mode=import needs config.pretrained.variant: the network the checkpoint holds, a zoo name "
                      f"(x3d_xs, x3d_s, x3d_m, x3d_l) or an ArchSpec JSON file")
  if not paths.exists(p.source):
    raise ConfigError(f"config.pretrained.source = {p.source!r} does not exist")
  from autox3d_jax.train import setup
  try:
    setup.load_arch(p.variant)
  except ConfigError:
    raise ConfigError(f"config.pretrained.variant = {p.variant!r} is neither a zoo name nor an ArchSpec JSON "
                      f"file") from None


def output_dir(cfg: ml_collections.ConfigDict, workdir: str, spec: ArchSpec) -> str:
  if cfg.pretrained.dir:
    return cfg.pretrained.dir
  return paths.join(workdir, "pretrained", re.sub(r"[^A-Za-z0-9._-]+", "_", spec.name).strip("_") or "network")


@dataclasses.dataclass(frozen=True)
class Plan:
  """What mode=import will do, from the config alone: read `source` (with the full unpickler when
  `trust_pickle`) as `layout` ('auto': detected), convert it for `variant`, write to `out_dir`."""
  source: str
  variant: str
  layout: str
  trust_pickle: bool
  out_dir: str


def plan(cfg: ml_collections.ConfigDict, workdir: str) -> Plan:
  from autox3d_jax.train import setup
  p = cfg.pretrained
  out_dir = output_dir(cfg, workdir, setup.load_arch(p.variant)) if p.variant else p.dir
  return Plan(p.source, p.variant, p.layout, bool(p.trust_pickle), out_dir)


def _read_state_dict(source: str, trust_pickle: bool) -> dict[str, np.ndarray]:
  if not paths.is_remote(source):
    return convert_torch.load_torch_checkpoint(source, trust_pickle)
  return convert_torch.load_torch_checkpoint(io.BytesIO(paths.read_bytes(source)), trust_pickle, name=source)


def classes_of(state_dict: dict[str, np.ndarray], layout: str) -> int:
  """The class count of an X3D state_dict in `layout`: its classifier bias's length."""
  if layout == "slowfast":
    keys = [k for k in state_dict if k == "head.projection.bias"]
  else:
    keys = [k for k in state_dict if k.startswith("blocks.") and k.endswith(".proj.bias")]
  if not keys:
    raise convert_torch.CheckpointError(f"the {layout} state_dict has no classifier bias "
                                        f"({'head.projection.bias' if layout == 'slowfast' else 'blocks.N.proj.bias'})")
  return int(np.shape(state_dict[keys[0]])[0])


def _existing_import(todo: Plan) -> dict | None:
  """The meta of an import of the same source and variant already in `todo.out_dir` (a rerun does
  nothing), None when the directory holds no checkpoint; ConfigError naming config.pretrained.dir
  when it holds other weights (they are not overwritten)."""
  from autox3d_jax.train import weights
  try:
    meta = weights.meta_of(todo.out_dir, "pretrained.dir")
  except convert_torch.CheckpointError:   # no checkpoint there
    return None
  if meta.get("source") == todo.source and meta.get("variant") == todo.variant:
    return {**meta, "arch_name": ArchSpec.from_json(meta["arch"]).name}
  raise ConfigError(f"{todo.out_dir} already holds other weights ({meta.get('source', 'a training run')}); they are "
                    f"not overwritten: set config.pretrained.dir to another directory, or delete that one")


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  """Import config.pretrained.source; prints and returns what was written."""
  from autox3d_jax.cost.analytic import arch_cost
  from autox3d_jax.train import setup, weights
  check(cfg)
  todo = plan(cfg, workdir)
  existing = _existing_import(todo)
  if existing is not None:
    log.info("%s already holds %s imported from %s: nothing to do", todo.out_dir, existing["arch_name"], todo.source)
    summary = {"network": existing["arch_name"], "layout": existing.get("layout"), "dir": todo.out_dir,
               "already_imported": True}
    print(json.dumps(summary, indent=1))
    return summary
  state_dict = _read_state_dict(todo.source, todo.trust_pickle)
  layout = convert_torch.detect_layout(state_dict) if todo.layout == "auto" else todo.layout
  spec = setup.load_arch(todo.variant, classes_of(state_dict, layout))
  variables = convert_torch.params_from_state_dict(state_dict, spec, layout)
  out = todo.out_dir
  weights.save(out, spec, variables, {"source": todo.source, "layout": layout, "variant": todo.variant})
  cost = arch_cost(spec)
  summary = {"network": spec.name, "layout": layout, "classes": spec.head.num_classes, "params": cost.params,
             "clip": f"{spec.num_frames}x{spec.crop_size}x{spec.crop_size}", "dir": out, "already_imported": False}
  log.info("imported %s (%s layout, %d classes) from %s into %s", spec.name, layout, spec.head.num_classes,
           todo.source, out)
  print(json.dumps(summary, indent=1))
  return summary
