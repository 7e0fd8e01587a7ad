"""The 'stablehlo' export: `jax.export` of the inference function, serialised.

Lowered for CPU, CUDA and TPU at once (one artifact, any of the three), with the depthwise convs on
the `lax` path (one grouped conv each, what accelerators run; the CPU kernels of
`autox3d_jax.cpu` are host callbacks, which a serialised artifact cannot carry). The weights are
constants inside the module. Load with

    exported = jax.export.deserialize(open("model.stablehlo", "rb").read())
    logits = exported.call(clips)
"""
from __future__ import annotations

import jax
import numpy as np

PLATFORMS = ("cpu", "cuda", "tpu")
FILE = "model.stablehlo"


def export(spec, variables, sig, platforms=PLATFORMS) -> jax.export.Exported:
  """The jax.export.Exported of `inference_fn(spec, variables, sig)` at the signature's shape."""
  from autox3d_jax.export import inference_fn
  from autox3d_jax.ops import depthwise
  with depthwise.forced_impl("lax"):
    return jax.export.export(jax.jit(inference_fn(spec, variables, sig)), platforms=platforms)(
        jax.ShapeDtypeStruct(sig.input_shape, sig.input_dtype))


def write(spec, variables, sig, out_dir: str, clips: np.ndarray, expected: np.ndarray) -> dict:
  """Write out_dir/model.stablehlo, load it back, run it on `clips` here and compare with
  `expected`; returns its manifest entry (files, bytes, platforms, max_abs_diff)."""
  from autox3d_jax import paths
  data = bytes(export(spec, variables, sig).serialize())
  path = paths.join(out_dir, FILE)
  paths.write_bytes(path, data)
  loaded = jax.export.deserialize(bytearray(paths.read_bytes(path)))
  got = np.asarray(loaded.call(clips))
  return {"files": [FILE], "bytes": len(data), "platforms": list(PLATFORMS),
          "load": "jax.export.deserialize(bytes).call(clips)",
          "max_abs_diff": float(np.max(np.abs(got - expected)))}
