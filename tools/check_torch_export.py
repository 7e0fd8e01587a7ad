"""Check the 'torch' export against pytorchvideo itself: for X3D-XS, X3D-L and X3D-XL (at a 64-pixel crop and
4 frames, 7 classes, to keep it quick), a `create_x3d` model with random weights and BN statistics is
converted into ours (`params_from_pytorchvideo`), exported back (`pytorchvideo_state_dict`), loaded
into a fresh `create_x3d(**create_x3d_kwargs(spec))` with `strict=True`, and both PyTorch models
and ours are run on one random clip.

Run by hand (needs torch and pytorchvideo; the test suite checks the same layout against the
committed fixture without them):

    pip install --target /tmp/pvdeps --no-deps pytorchvideo fvcore iopath
    PYTHONPATH=/tmp/pvdeps .venv/bin/python tools/check_torch_export.py
"""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tools")]


def main():
  import torch  # pylint: disable=import-outside-toplevel
  from make_torch_fixture import import_create_x3d, randomise_  # pylint: disable=import-outside-toplevel

  from autox3d_jax.models import builder, convert_torch, zoo  # pylint: disable=import-outside-toplevel
  create_x3d = import_create_x3d()
  for variant, crop in (("XS", 64), ("L", 64), ("XL", 64)):
    spec = zoo.x3d(variant, num_classes=7, num_frames=4, crop_size=crop)
    kwargs = convert_torch.create_x3d_kwargs(spec)
    source = create_x3d(**kwargs)
    randomise_(source, torch.Generator().manual_seed(0))
    source.eval()
    ours = convert_torch.params_from_pytorchvideo({k: t.numpy() for k, t in source.state_dict().items()}, spec)
    reloaded = create_x3d(**kwargs)
    reloaded.eval()
    status = reloaded.load_state_dict({k: torch.from_numpy(np.asarray(a)) for k, a in
                                       convert_torch.pytorchvideo_state_dict(ours, spec).items()}, strict=True)
    x = np.random.default_rng(0).standard_normal((2, 4, crop, crop, 3)).astype(np.float32)
    with torch.no_grad():
      ref = source(torch.from_numpy(x.transpose(0, 4, 1, 2, 3))).numpy()
      back = reloaded(torch.from_numpy(x.transpose(0, 4, 1, 2, 3))).numpy()
    got = np.asarray(builder.build(spec).apply(ours, x, train=False))
    print(f"X3D-{variant}: load_state_dict {status}; reloaded == source: {np.array_equal(ref, back)}; "
          f"max |ours - pytorchvideo| / max |pytorchvideo| = {np.max(np.abs(got - ref)) / np.max(np.abs(ref)):.2e}")


if __name__ == "__main__":
  main()
