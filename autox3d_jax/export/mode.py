"""mode=export: config.train.arch (a zoo name or an ArchSpec file, e.g. a search's arch.json) with
its trained weights (the workdir's training run of it, or config.export.checkpoint: one of the
demo's retrainings, or what mode=import wrote, whose architecture is used when config.train.arch is
''), written in config.export.formats to config.export.dir.

Checked before any dataset build or conversion: the weights exist (a training checkpoint of that
network in the workdir, or export.weights='random'), and a TFLite export's network keeps feature
maps larger than 1x1 (the TFLite converter mis-folds a pointwise conv on a 1 x 1 map into a rank-5
batch matmul it then rejects). With export.int8, the int8 TFLite model is calibrated on training
clips and the float and int8 TFLite models' top-1 are measured on evaluation clips.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import re

import jax
import ml_collections
import numpy as np

from autox3d_jax import export as export_lib
from autox3d_jax import paths
from autox3d_jax.config import ConfigError
from autox3d_jax.models.spec import ArchSpec

log = logging.getLogger(__name__)


def formats(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  return export_lib.check_formats([f for f in cfg.export.formats.split(",") if f.strip()])


def final_map_size(spec: ArchSpec) -> int:
  """Height (= width) of the last stage's feature maps at the spec's crop."""
  size = math.ceil(spec.crop_size / spec.stem.spatial_stride)
  for stage in spec.stages:
    size = math.ceil(size / stage.stride)
  return size


def output_dir(cfg: ml_collections.ConfigDict, workdir: str, spec: ArchSpec) -> str:
  if cfg.export.dir:
    return cfg.export.dir
  return paths.join(workdir, "export", re.sub(r"[^A-Za-z0-9._-]+", "_", spec.name).strip("_") or "network")


def checkpoint_dir(cfg: ml_collections.ConfigDict, workdir: str, spec: ArchSpec) -> str:
  """Where the trained weights are: config.export.checkpoint, or the workdir's training run of
  `spec` (what mode=train with this config.train.arch writes)."""
  from autox3d_jax.train import loop
  return cfg.export.checkpoint or loop.run_dirs(workdir, "train", spec.name).checkpoints


def check(cfg: ml_collections.ConfigDict, workdir: str, spec: ArchSpec) -> None:
  """ConfigError naming the key and the fix when the export cannot work (see the module doc)."""
  from autox3d_jax.train.checkpoint import Checkpointer
  if cfg.export.weights == "trained":
    directory = checkpoint_dir(cfg, workdir, spec)
    if not paths.exists(directory):
      latest = None
    else:
      ckpt = Checkpointer(directory)
      try:
        latest = ckpt.latest_step()
      finally:
        ckpt.close()
    if latest is None:
      source = "config.export.checkpoint" if cfg.export.checkpoint else f"the training run of {spec.name} in --workdir"
      raise ConfigError(f"config.export.weights = 'trained' but {directory} ({source}) holds no training checkpoint "
                        f"of {spec.name}: run mode=train with this config.train.arch and --workdir first, point "
                        f"config.export.checkpoint at a training run's checkpoint directory, or set "
                        f"config.export.weights=random (untrained weights: size and latency only)")
  if "torch" in formats(cfg):
    from autox3d_jax.export import torch as torch_export
    from autox3d_jax.models.convert_torch import CheckpointError
    try:
      torch_export.check(spec)
    except (CheckpointError, ImportError) as e:
      raise ConfigError(f"config.export.formats has 'torch': {e}") from None
  if "tflite" in formats(cfg) and final_map_size(spec) < 2:
    raise ConfigError(f"the 'tflite' export needs feature maps larger than 1x1, but {spec.name} at "
                      f"config.data.crop_size={spec.crop_size} ends at 1x1 (the TFLite converter rejects a "
                      f"pointwise conv there): raise config.data.crop_size, or drop 'tflite' from "
                      f"config.export.formats")


def _frames(sig, video: np.ndarray) -> np.ndarray:
  """Pipeline clips (normalised float) in the signature's input form: uint8 frames recovered by
  undoing the normalisation (rounded), or the clips themselves."""
  if sig.input_kind != "uint8":
    return video.astype(np.float32)
  frames = video * (np.asarray(sig.std, np.float32) * 255.0) + np.asarray(sig.mean, np.float32) * 255.0
  return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def _clips(cfg, sig, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
  """Up to `limit` clips (the first view of each video) of `split` and their labels, in the
  signature's input form, from the evaluation pipeline (centre crops, no augmentation)."""
  from autox3d_jax.train import setup
  clips, labels, n = [], [], 0
  for batch in setup.eval_pipeline(cfg, split):
    keep = np.asarray(batch["mask"], bool)
    clips.append(_frames(sig, np.asarray(batch["video"])[keep, 0]))
    labels.append(np.asarray(batch["label"])[keep])
    n += int(keep.sum())
    if n >= limit:
      break
  return np.concatenate(clips)[:limit], np.concatenate(labels)[:limit]


@dataclasses.dataclass(frozen=True)
class Plan:
  """What mode=export will do for one network, from the config alone: the formats, the artifacts'
  signature, where they go, where the weights come from (None: random), and with int8 how many
  training clips calibrate it and how many validation clips measure it (None without int8)."""
  formats: tuple[str, ...]
  signature: export_lib.Signature
  out_dir: str
  checkpoint: str | None
  int8: bool
  calibration_clips: int | None
  eval_clips: int | None


def plan(cfg: ml_collections.ConfigDict, workdir: str, spec: ArchSpec) -> Plan:
  int8 = bool(cfg.export.int8)
  return Plan(formats=formats(cfg),
              signature=export_lib.signature(spec, cfg.export.batch_size, cfg.export.input),
              out_dir=output_dir(cfg, workdir, spec),
              checkpoint=checkpoint_dir(cfg, workdir, spec) if cfg.export.weights == "trained" else None,
              int8=int8,
              calibration_clips=cfg.export.calibration_batches * cfg.data.eval_batch_size if int8 else None,
              eval_clips=cfg.export.eval_clips if int8 else None)


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  """Export as config.export says; prints and returns the manifest (also out_dir/export.json)."""
  from autox3d_jax.models import builder
  from autox3d_jax.train import setup, weights
  imported = weights.arch_of(cfg.export.checkpoint, "export.checkpoint") if cfg.export.checkpoint else None
  named = setup.network_spec(cfg, imported)
  check(cfg, workdir, named)
  if imported is None or cfg.train.arch or cfg.export.int8:
    setup.ensure_dataset(cfg)   # the head's classes come from the dataset (int8: calibration and accuracy clips)
  spec = setup.network_spec(cfg, imported, setup.num_classes(cfg) if imported is None or cfg.train.arch else None)
  todo = plan(cfg, workdir, spec)
  if todo.checkpoint is not None:
    variables = weights.load(todo.checkpoint, spec, "export.checkpoint")
  else:
    variables = builder.init_variables(spec, jax.random.PRNGKey(cfg.seed))
  sig = todo.signature
  calibration = None
  if todo.int8:
    calib, _ = _clips(cfg, sig, cfg.data.train_split, todo.calibration_clips)
    calibration = [calib]
  manifest = export_lib.export_network(spec, variables, todo.out_dir, todo.formats, sig=sig, calibration=calibration)
  manifest["weights"] = cfg.export.weights if todo.checkpoint is None else f"trained: {todo.checkpoint}"
  if todo.int8:
    manifest["tflite_accuracy"] = _tflite_accuracy(cfg, spec, variables, sig, todo.out_dir, todo.eval_clips)
  paths.write_json(paths.join(todo.out_dir, "export.json"), manifest)
  log.info("exported %s to %s: %s", spec.name, todo.out_dir, ", ".join(manifest["artifacts"]))
  print(json.dumps({k: manifest[k] for k in ("network", "artifacts", "weights")
                    + (("tflite_accuracy",) if "tflite_accuracy" in manifest else ())}, indent=1))
  return manifest


def _tflite_accuracy(cfg, spec, variables, sig, out_dir: str, limit: int) -> dict:
  """Top-1 of the flax module ('jax_top1') and of the float and int8 TFLite models on the same
  clips: up to `limit` of the evaluation split (first view of each video)."""
  from autox3d_jax.export import tensorflow
  clips, labels = _clips(cfg, sig, cfg.data.eval_split, limit)
  usable = len(clips) - len(clips) % sig.batch_size
  clips, labels = clips[:usable], labels[:usable]
  out = {"split": cfg.data.eval_split, "clips": int(usable)}
  reference = export_lib.reference_logits(spec, variables, sig, clips)
  out["jax_top1"] = float(np.mean(np.argmax(reference, -1) == labels))
  for key, file in (("float32_top1", tensorflow.TFLITE_FILE), ("int8_top1", tensorflow.TFLITE_INT8_FILE)):
    logits = tensorflow.run_tflite(paths.read_bytes(paths.join(out_dir, file)), clips)
    out[key] = float(np.mean(np.argmax(logits, -1) == labels))
  out["int8_top1_drop"] = out["float32_top1"] - out["int8_top1"]
  log.info("TFLite top-1 on %d %s clips: float32 %.4f, int8 %.4f", usable, cfg.data.eval_split,
           out["float32_top1"], out["int8_top1"])
  return out
