"""A network (an ArchSpec and its trained variables) out of JAX, for deployment.

Formats (`FORMATS`), each written by its own module:
  'stablehlo'    `jax.export` serialisation (stablehlo.py): runs from JAX on CPU, CUDA and TPU
                 without this project's code; depthwise convs as XLA grouped convs.
  'saved_model'  a TF SavedModel through jax2tf (tensorflow.py): TF Serving, TF.js converters,
                 the TFLite converter; the same StableHLO inside one XlaCallModule op.
  'tflite'       a TFLite flatbuffer (tensorflow.py), float32 or int8 post-training quantised:
                 depthwise convs as shifted multiply-adds (TFLite has no grouped 3D conv).
  'torch'        a PyTorch state_dict for pytorchvideo's create_x3d (torch.py), X3D points only.

Every artifact but 'torch' computes `inference_fn`: eval mode (BN statistics folded in by XLA, dropout off),
input clips (N, T, H, W, 3) at the spec's frames and crop, output logits (N, classes) float32.
With `input_kind='uint8'` (the default) the input is RGB frames as decoded (0..255) and the
artifact applies the pipeline's normalisation itself, so a device needs only to sample and crop
frames; with 'float32' it takes clips already normalised, as the flax module does.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from autox3d_jax import config
from autox3d_jax.models import builder
from autox3d_jax.models.spec import ArchSpec

FORMATS = config.EXPORT_FORMATS
ANY_NETWORK_FORMATS = ("stablehlo", "saved_model", "tflite")   # 'torch' holds X3D points only
INPUT_KINDS = config.EXPORT_INPUTS


@dataclasses.dataclass(frozen=True)
class Signature:
  """What an exported network takes and gives: clips (batch, frames, crop, crop, 3) of
  `input_kind`; logits (batch, classes). `mean` / `std` are the per-channel normalisation on
  0..1 values that a uint8 input gets inside the artifact (and a float32 input must have had)."""
  batch_size: int
  num_frames: int
  crop_size: int
  num_classes: int
  input_kind: str
  mean: tuple[float, ...]
  std: tuple[float, ...]

  @property
  def input_shape(self) -> tuple[int, ...]:
    return (self.batch_size, self.num_frames, self.crop_size, self.crop_size, 3)

  @property
  def input_dtype(self):
    return np.uint8 if self.input_kind == "uint8" else np.float32

  def to_json(self) -> dict:
    return {"input_shape": list(self.input_shape), "input_dtype": np.dtype(self.input_dtype).name,
            "input_layout": "NTHWC, RGB", "output_shape": [self.batch_size, self.num_classes],
            "output": "logits (float32)",
            "normalisation": (f"inside: (frames / 255 - mean) / std" if self.input_kind == "uint8"
                              else "none inside: pass (frames / 255 - mean) / std"),
            "mean": list(self.mean), "std": list(self.std)}


def signature(spec: ArchSpec, batch_size: int = 1, input_kind: str = "uint8",
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Signature:
  """The Signature of exporting `spec` (its frames, crop and classes) at `batch_size`; mean/std
  default to the pipeline's (Kinetics). ValueError naming the argument when one is out of range."""
  from autox3d_jax.data.pipeline import KINETICS_MEAN, KINETICS_STD
  if input_kind not in INPUT_KINDS:
    raise ValueError(f"input_kind={input_kind!r}: choose one of {list(INPUT_KINDS)}")
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size={batch_size!r}: pass an integer >= 1")
  if spec.in_channels != 3:
    raise ValueError(f"{spec.name} takes {spec.in_channels} input channels; an export takes RGB clips (3)")
  return Signature(batch_size, spec.num_frames, spec.crop_size, spec.head.num_classes, input_kind,
                   tuple(float(v) for v in (mean or KINETICS_MEAN)), tuple(float(v) for v in (std or KINETICS_STD)))


def inference_fn(spec: ArchSpec, variables: dict, sig: Signature) -> Callable[[jax.Array], jax.Array]:
  """clips -> logits of `spec` with `variables` ({'params', 'batch_stats'}) closed over as
  constants, in eval mode and float32; a uint8 `sig` normalises inside. The variables are copied
  to host numpy first, so the function holds no device buffers."""
  model = builder.build(spec)
  host = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), jax.device_get(dict(variables)))
  scale = np.asarray(sig.std, np.float32) * 255.0
  shift = np.asarray(sig.mean, np.float32) * 255.0

  def fn(clips):
    x = clips.astype(jnp.float32)
    if sig.input_kind == "uint8":
      x = (x - shift) / scale
    return model.apply(host, x, train=False)
  return fn


def reference_logits(spec: ArchSpec, variables: dict, sig: Signature, clips: np.ndarray,
                     chunk: int = 32) -> np.ndarray:
  """What every artifact must reproduce: the flax module's logits for `clips` (normalised here
  exactly as the pipeline does for a uint8 signature), on the lax depthwise path, one jit applied
  `chunk` clips at a time (at most two compiles: the full chunk and the last one)."""
  from autox3d_jax.ops import depthwise
  with depthwise.forced_impl("lax"):
    forward = jax.jit(inference_fn(spec, variables, sig))
    return np.concatenate([np.asarray(forward(clips[i:i + chunk])) for i in range(0, len(clips), chunk)])


def example_clips(sig: Signature, seed: int = 0) -> np.ndarray:
  """Random clips of the signature's shape and dtype (uint8 frames, or normalised floats)."""
  rng = np.random.default_rng(seed)
  if sig.input_kind == "uint8":
    return rng.integers(0, 256, sig.input_shape, dtype=np.uint8)
  return rng.standard_normal(sig.input_shape).astype(np.float32)


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
  """The formats, deduplicated in order; ValueError naming an unknown one and the choices."""
  out = []
  for f in formats:
    f = f.strip()
    if f not in FORMATS:
      raise ValueError(f"unknown export format {f!r}; choose from {list(FORMATS)}")
    if f not in out:
      out.append(f)
  if not out:
    raise ValueError(f"no export format given; choose from {list(FORMATS)}")
  return tuple(out)


def export_network(spec: ArchSpec, variables: dict, out_dir: str, formats: Sequence[str] = ANY_NETWORK_FORMATS, *,
                   sig: Signature | None = None, calibration: Any = None) -> dict:
  """Write `spec` with `variables` to `out_dir` in each of `formats`, check each artifact's logits
  against the flax module's on example clips, and write `out_dir/export.json` describing them.

  calibration: for an int8 TFLite model, an iterable of clip batches (numpy, the signature's
    shape and dtype) that post-training quantisation calibrates on; None writes float32 only.
  Returns the manifest (also in export.json): the network, the signature, and per format its
  files, bytes and the largest absolute logit difference from the flax module measured here.
  """
  from autox3d_jax import paths
  formats = check_formats(formats)
  sig = sig or signature(spec)
  paths.makedirs(out_dir)
  clips = example_clips(sig)
  expected = reference_logits(spec, variables, sig, clips)
  artifacts = {}
  if "stablehlo" in formats:
    from autox3d_jax.export import stablehlo
    artifacts["stablehlo"] = stablehlo.write(spec, variables, sig, out_dir, clips, expected)
  if "saved_model" in formats:
    from autox3d_jax.export import tensorflow
    artifacts["saved_model"] = tensorflow.write_saved_model(spec, variables, sig, out_dir, clips, expected)
  if "tflite" in formats:
    from autox3d_jax.export import tensorflow
    artifacts.update(tensorflow.write_tflite(spec, variables, sig, out_dir, clips, expected, calibration))
  if "torch" in formats:
    from autox3d_jax.export import torch as torch_export
    artifacts["torch"] = torch_export.write(spec, variables, out_dir)
  manifest = {"network": spec.name, "arch": spec.to_dict(), "signature": sig.to_json(), "artifacts": artifacts,
              "checked_on": f"{len(clips)} random clips, against the flax module's logits"}
  paths.write_json(paths.join(out_dir, "export.json"), manifest)
  return manifest
