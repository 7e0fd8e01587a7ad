"""Make `tests/fixtures/x3d_tiny_slowfast.npz`: a tiny X3D built by SlowFast's own code, its input and
its output, so the import of SlowFast `.pyth` checkpoints is tested against the real layout.

Run once by hand. It needs torch, a SlowFast checkout and SlowFast's pure-Python dependencies (the
test that reads the fixture needs none of them):

    git clone https://github.com/facebookresearch/SlowFast /tmp/SlowFast
    pip install --target /tmp/pvdeps --no-deps pytorchvideo fvcore iopath yacs portalocker \
        parameterized termcolor tabulate simplejson
    SLOWFAST=/tmp/SlowFast PYTHONPATH=/tmp/pvdeps .venv/bin/python tools/make_slowfast_fixture.py

Made with facebookresearch/SlowFast@287ec00. Only `slowfast/models/video_model_builder.py` (class X3D)
and the helpers it uses are imported; the package `__init__`s (which import detectron2, fairscale
and pytorchvideo modules newer than the PyPI release) are bypassed with stub modules. None of the
stubbed names is used by X3D.

The model is SlowFast's X3D with
    X3D.WIDTH_FACTOR 0.5, DEPTH_FACTOR 1.0, BOTTLENECK_FACTOR 2.25, DIM_C1 12, DIM_C5 64,
    DATA.NUM_FRAMES 4, TRAIN_CROP_SIZE 40, MODEL.NUM_CLASSES 5, DROPOUT_RATE 0
which is, in our terms,
    zoo.x3d('XS', num_classes=5, num_frames=4, crop_size=40, depths=(1, 2, 5, 3),
            widths=(6, 12, 24, 48))  with  head.head_width = 64
(SlowFast's round_width(w, 0.5), divisor 1: stem 6, stage widths 6/12/24/48, inner int(2.25 w) =
13/27/54/108; SE widths 8).
Stage res2 keeps the stem's width, so its first block's shortcut is a strided 1x1x1 conv -- and
SlowFast puts a BatchNorm (`branch1_bn`) after it where pytorchvideo has none: the case the importer
folds. Every parameter and BN statistic is re-drawn from a seeded generator (`randomise_`, shared with
make_torch_fixture.py).

SlowFast's head in eval mode returns softmax probabilities averaged over the pooled positions (one
position here, since the final 2x2 map equals its AvgPool window), not logits; the fixture stores
them as `probs`, and the test compares our log-softmax with log(probs).

Saved arrays (float32): sd.<torch key> (num_batches_tracked dropped), input_ncthw, probs, spec_json.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "x3d_tiny_slowfast.npz")
BATCH = 2
SEED = 1


def import_slowfast_x3d(checkout: str):
  """SlowFast's X3D class, imported with stubs for what its package __init__s pull in."""
  for name in ("detectron2", "detectron2.layers", "fairscale", "fairscale.nn", "fairscale.nn.checkpoint"):
    sys.modules.setdefault(name, types.ModuleType(name))
  sys.modules["detectron2.layers"].ROIAlign = object
  sys.modules["fairscale.nn.checkpoint"].checkpoint_wrapper = None
  import pytorchvideo.layers.distributed as pld  # pylint: disable=import-outside-toplevel
  for name in ("cat_all_gather", "get_local_process_group", "get_local_rank", "get_local_size",
               "get_world_size", "init_distributed_training"):
    if not hasattr(pld, name):
      setattr(pld, name, None)
  sys.path.insert(0, checkout)
  import slowfast  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  models = types.ModuleType("slowfast.models")
  models.__path__ = [os.path.join(checkout, "slowfast", "models")]
  sys.modules["slowfast.models"] = models
  from slowfast.config.defaults import get_cfg  # pylint: disable=import-outside-toplevel
  from slowfast.models.video_model_builder import X3D  # pylint: disable=import-outside-toplevel
  return X3D, get_cfg


def slowfast_cfg(get_cfg):
  cfg = get_cfg()
  cfg.MODEL.ARCH, cfg.MODEL.MODEL_NAME, cfg.MODEL.NUM_CLASSES, cfg.MODEL.DROPOUT_RATE = "x3d", "X3D", 5, 0.0
  cfg.X3D.WIDTH_FACTOR, cfg.X3D.DEPTH_FACTOR, cfg.X3D.BOTTLENECK_FACTOR = 0.5, 1.0, 2.25
  cfg.X3D.DIM_C1, cfg.X3D.DIM_C5 = 12, 64
  cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.INPUT_CHANNEL_NUM = 4, 40, [3]
  cfg.RESNET.DEPTH, cfg.RESNET.TRANS_FUNC, cfg.RESNET.STRIDE_1X1 = 50, "x3d_transform", False
  return cfg


def matching_spec():
  sys.path.insert(0, ROOT)
  from autox3d_jax.models import zoo  # pylint: disable=import-outside-toplevel
  spec = zoo.x3d("XS", num_classes=5, num_frames=4, crop_size=40, depths=(1, 2, 5, 3), widths=(6, 12, 24, 48))
  return spec.replace(head=dataclasses.replace(spec.head, head_width=64)).validate()


def main():
  import torch  # pylint: disable=import-outside-toplevel
  checkout = os.environ.get("SLOWFAST")
  if not checkout:
    raise SystemExit("set SLOWFAST to a facebookresearch/SlowFast checkout")
  sys.path.insert(0, os.path.join(ROOT, "tools"))
  from make_torch_fixture import randomise_  # pylint: disable=import-outside-toplevel
  x3d_cls, get_cfg = import_slowfast_x3d(checkout)
  torch.manual_seed(SEED)
  gen = torch.Generator().manual_seed(SEED)
  model = x3d_cls(slowfast_cfg(get_cfg))
  randomise_(model, gen)
  spec = matching_spec()
  from autox3d_jax.cost.analytic import arch_cost  # pylint: disable=import-outside-toplevel
  n_torch, n_ours = sum(p.numel() for p in model.parameters()), arch_cost(spec).params
  bn_extra = sum(m.weight.numel() * 2 for name, m in model.named_modules() if name == "s2.pathway0_res0.branch1_bn")
  print(f"params: SlowFast {n_torch:,}  ours {n_ours:,} (+ {bn_extra} in the BN the import folds)")
  if n_torch != n_ours + bn_extra:
    raise SystemExit("parameter counts differ: the spec does not match the SlowFast config")
  x = torch.randn(BATCH, 3, 4, 40, 40, generator=gen)
  model.eval()
  with torch.no_grad():
    probs = model([x])
  sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")}
  arrays = {f"sd.{k}": v for k, v in sd.items()}
  arrays["input_ncthw"] = x.numpy().astype(np.float32)
  arrays["probs"] = probs.numpy().astype(np.float32)
  arrays["spec_json"] = np.array(spec.to_json(indent=None))
  np.savez_compressed(OUT, **arrays)
  print(f"probs (eval):\n{arrays['probs']}\nwrote {OUT} ({os.path.getsize(OUT) / 1e3:.0f} kB, {len(sd)} tensors)")


if __name__ == "__main__":
  main()
