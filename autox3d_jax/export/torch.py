"""The 'torch' export: a PyTorch state_dict that pytorchvideo's `create_x3d` loads.

Only for networks `create_x3d` can build (`convert_torch.create_x3d_kwargs`: X3D points, one width,
depth and bottleneck factor, one kernel per stage); `check` rejects the rest before any work. Writes
`model_pytorchvideo.pt` (tensors only: `torch.load(..., weights_only=True)` reads it) and
`create_x3d_kwargs.json`; load with

    from pytorchvideo.models.x3d import create_x3d
    model = create_x3d(**json.load(open("create_x3d_kwargs.json")))   # head_activation None: logits
    model.load_state_dict(torch.load("model_pytorchvideo.pt", weights_only=True))

The module takes normalised float clips in PyTorch's (N, C, T, H, W) order (the signature's
mean / std, applied outside), like the flax module. Checked here without pytorchvideo: the file read
back with `torch.load(weights_only=True)` converts into exactly the exported variables; that the
layout and `create_x3d`'s arguments give the same logits is tested against pytorchvideo's own
state_dict and logits (tests/test_torch_equivalence.py).
"""
from __future__ import annotations

import io
import json

import numpy as np

FILE = "model_pytorchvideo.pt"
KWARGS_FILE = "create_x3d_kwargs.json"


def check(spec) -> None:
  """CheckpointError when `create_x3d` cannot build `spec`; ImportError (naming the extra) without torch."""
  from autox3d_jax.models import convert_torch
  convert_torch.create_x3d_kwargs(spec)
  try:
    import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    raise ImportError("the 'torch' export needs PyTorch: pip install -e '.[convert]'") from None


def write(spec, variables, out_dir: str) -> dict:
  """Write the state_dict and create_x3d's arguments to `out_dir`, read the file back and check it
  converts into `variables` exactly; returns the manifest entry."""
  import torch  # pylint: disable=import-outside-toplevel

  from autox3d_jax import paths
  from autox3d_jax.models import convert_torch
  kwargs = convert_torch.create_x3d_kwargs(spec)
  state_dict = convert_torch.pytorchvideo_state_dict(variables, spec)
  buffer = io.BytesIO()
  torch.save({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, buffer)
  data = buffer.getvalue()
  paths.write_bytes(paths.join(out_dir, FILE), data)
  paths.write_json(paths.join(out_dir, KWARGS_FILE), kwargs)
  loaded = convert_torch.load_torch_checkpoint(io.BytesIO(paths.read_bytes(paths.join(out_dir, FILE))),
                                               name=FILE)
  back = convert_torch.params_from_pytorchvideo(loaded, spec)
  diffs = [float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) if np.size(a) else 0.0
           for a, b in zip(_leaves(back), _leaves(variables))]
  return {"files": [FILE, KWARGS_FILE], "bytes": len(data), "create_x3d_kwargs": json.loads(json.dumps(kwargs)),
          "input": "float32 (N, C, T, H, W), normalised outside: (frames / 255 - mean) / std",
          "load": "create_x3d(**kwargs).load_state_dict(torch.load(file, weights_only=True))",
          "max_abs_weight_diff_after_reload": max(diffs)}


def _leaves(variables) -> list:
  import jax  # pylint: disable=import-outside-toplevel
  return jax.tree_util.tree_leaves({"params": variables["params"], "batch_stats": variables["batch_stats"]})
