"""The 'saved_model' and 'tflite' exports, through jax2tf.

SavedModel: `jax2tf.convert` of the inference function (lowered for CPU, CUDA and TPU, depthwise
convs as grouped convs: the same StableHLO as the 'stablehlo' export, inside one XlaCallModule op),
in a tf.Module whose `serving_default` signature takes `clips` and returns `logits`.

TFLite: the TFLite converter turns a SavedModel's StableHLO into TFLite builtin ops. TFLite has no
grouped 3D conv (XLA's depthwise form becomes a TF Conv3D that only the Flex delegate runs), so the
model converted is traced on the `shift` depthwise path instead (pads, strided slices and
per-channel multiply-adds, all builtins). Float32 by default; with calibration clips, int8 post-
training quantisation (weights and activations int8, float32 input and output, builtin int8 ops
only) is written next to it, converted from the network with its batch norms folded into the
convolutions before them (`export.fold`, which says why).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
TFLITE_INT8_FILE = "model_int8.tflite"
PLATFORMS = ("cpu", "cuda", "tpu")


def _serving_module(fn, shape, dtype, impl: str, platforms, names=("clips", "logits")):
  """A tf.Module whose `serve` tf.function maps one input tensor (`shape`, numpy `dtype`, named
  names[0]) to {names[1]: fn(x)}: the JAX function `fn` through jax2tf, traced on depthwise `impl`."""
  import tensorflow as tf
  from jax.experimental import jax2tf
  from autox3d_jax.ops import depthwise
  converted = jax2tf.convert(fn, with_gradient=False, native_serialization_platforms=platforms)
  module = tf.Module()
  inp, out = names

  @tf.function(autograph=False, input_signature=[tf.TensorSpec(tuple(shape), tf.as_dtype(dtype), name=inp)])
  def serve(x):
    return {out: converted(x)}

  with depthwise.forced_impl(impl):
    serve.get_concrete_function()   # trace now, inside the impl's scope
  module.serve = serve
  return module


def _module(spec, variables, sig, impl: str, platforms):
  """The network's serving module (clips -> logits) traced on depthwise `impl`."""
  from autox3d_jax.export import inference_fn
  return _serving_module(inference_fn(spec, variables, sig), sig.input_shape, sig.input_dtype, impl, platforms)


def _to_tflite(module, configure=None) -> bytes:
  """The TFLite flatbuffer of a serving module (through a temporary SavedModel, whose StableHLO the
  converter reads); `configure(converter)` sets options such as quantisation first."""
  import tensorflow as tf
  with tempfile.TemporaryDirectory(prefix="autox3d_tflite_") as tmp:
    _save(module, tmp)
    converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
    if configure is not None:
      configure(converter)
    return converter.convert()


def _save(module, directory: str) -> None:
  import tensorflow as tf
  tf.saved_model.save(module, directory, signatures={"serving_default": module.serve})


def _dir_bytes(directory: str) -> int:
  import tensorflow as tf
  total = 0
  for root, _, files in tf.io.gfile.walk(directory):
    total += sum(tf.io.gfile.stat(os.path.join(root, f)).length for f in files)
  return total


def write_saved_model(spec, variables, sig, out_dir: str, clips: np.ndarray, expected: np.ndarray) -> dict:
  """Write out_dir/saved_model, load it back with TF, run its serving signature on `clips` and
  compare with `expected`; returns its manifest entry."""
  import tensorflow as tf
  from autox3d_jax import paths
  directory = paths.join(out_dir, SAVED_MODEL_DIR)
  _save(_module(spec, variables, sig, "lax", PLATFORMS), directory)
  loaded = tf.saved_model.load(directory)
  got = loaded.signatures["serving_default"](clips=tf.constant(clips))["logits"].numpy()
  return {"files": [SAVED_MODEL_DIR + "/"], "bytes": _dir_bytes(directory), "platforms": list(PLATFORMS),
          "load": "tf.saved_model.load(dir).signatures['serving_default'](clips=...)['logits']",
          "max_abs_diff": float(np.max(np.abs(got - expected)))}


def tflite_of_function(fn, shape: tuple[int, ...], dtype=np.float32) -> bytes:
  """The float32 TFLite flatbuffer of a JAX function of one array (`fn(x)`, its constants closed
  over), traced on the 'frames' depthwise path as the network export is: what the latency table's
  TFLite backend times for each piece."""
  return _to_tflite(_serving_module(fn, shape, dtype, "frames", ("cpu",), names=("x", "y")))


def make_interpreter(model: bytes, threads: int | None = None):
  """TF's TFLite interpreter for `model`. TF (2.21 here) warns at every construction that the interpreter
  moves to the ai_edge_litert package, which this project does not depend on; that one warning is
  silenced here (a table build constructs one per piece)."""
  import warnings
  import tensorflow as tf
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated", category=UserWarning)
    return tf.lite.Interpreter(model_content=model, num_threads=threads)


def tflite_invoker(model: bytes, x: np.ndarray, threads: int = 1):
  """A no-argument callable that runs the TFLite interpreter of `model` once on the input `x` (set
  once, as a timing loop needs it): `threads` interpreter threads."""
  interpreter = make_interpreter(model, threads)
  interpreter.allocate_tensors()
  inp = interpreter.get_input_details()[0]
  interpreter.set_tensor(inp["index"], np.asarray(x, inp["dtype"]))
  return interpreter.invoke


def run_tflite(model: bytes, clips: np.ndarray) -> np.ndarray:
  """Logits of a TFLite flatbuffer on `clips`, one batch of the model's input shape at a time."""
  interpreter = make_interpreter(model)
  interpreter.allocate_tensors()
  inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
  batch = int(inp["shape"][0])
  outputs = []
  for start in range(0, len(clips), batch):
    interpreter.set_tensor(inp["index"], clips[start:start + batch].astype(inp["dtype"]))
    interpreter.invoke()
    outputs.append(interpreter.get_tensor(out["index"]).copy())
  return np.concatenate(outputs)


def convert_tflite(spec, variables, sig, calibration=None, fold_bn: bool = True) -> bytes:
  """The TFLite flatbuffer of the network (shift depthwise path): float32, or int8 post-training
  quantised when `calibration` (an iterable of clip batches of the signature) is given, from the
  network with its batch norms folded (`fold_bn`; False only to measure what folding gives)."""
  import tensorflow as tf
  from autox3d_jax.export.fold import fold_batch_norm
  module = lambda v: _module(spec, v, sig, "frames", ("cpu",))  # noqa: E731
  if calibration is None:
    return _to_tflite(module(variables))
  batches = list(calibration)

  def representative():
    for batch in batches:
      for clip in batch:   # one clip at a time: the calibration sees every clip
        yield [np.asarray(clip[None], sig.input_dtype).repeat(sig.batch_size, axis=0)]

  def int8(converter):
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8 if sig.input_kind == "uint8" else tf.float32
    converter.inference_output_type = tf.float32
  return _to_tflite(module(fold_batch_norm(spec, variables) if fold_bn else variables), int8)


def write_tflite(spec, variables, sig, out_dir: str, clips: np.ndarray, expected: np.ndarray,
                 calibration=None) -> dict:
  """Write out_dir/model.tflite (and model_int8.tflite with `calibration`), run each with the
  TFLite interpreter on `clips` and compare with `expected`; returns their manifest entries
  ('tflite', 'tflite_int8'). The int8 entry's figure is the top-1 agreement with the float model
  on `clips` and the largest logit difference, not an accuracy (mode=export measures that)."""
  from autox3d_jax import paths
  entries = {}
  model = convert_tflite(spec, variables, sig)
  paths.write_bytes(paths.join(out_dir, TFLITE_FILE), model)
  got = run_tflite(model, clips)
  entries["tflite"] = {"files": [TFLITE_FILE], "bytes": len(model), "dtype": "float32",
                       "load": "tf.lite.Interpreter(model_path=...)",
                       "max_abs_diff": float(np.max(np.abs(got - expected)))}
  if calibration is not None:
    quantised = convert_tflite(spec, variables, sig, calibration)
    paths.write_bytes(paths.join(out_dir, TFLITE_INT8_FILE), quantised)
    got = run_tflite(quantised, clips)
    entries["tflite_int8"] = {
        "files": [TFLITE_INT8_FILE], "bytes": len(quantised), "dtype": "int8 (float32 output)",
        "load": "tf.lite.Interpreter(model_path=...)",
        "max_abs_diff": float(np.max(np.abs(got - expected))),
        "top1_agreement": float(np.mean(np.argmax(got, -1) == np.argmax(expected, -1)))}
  return entries
