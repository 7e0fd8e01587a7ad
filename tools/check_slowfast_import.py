"""Check the SlowFast import at the real X3D-XS/S/M/L layouts: SlowFast's own X3D (WIDTH_FACTOR 2.0,
DEPTH_FACTOR 2.2 or 5.0, as configs/Kinetics/X3D_*.yaml) with random weights and BN statistics, at
4 frames and a 64-pixel crop to keep it quick, converted into the zoo's x3d_xs..x3d_l
(`params_from_state_dict`, layout detected) and run on one random clip next to SlowFast's model.
SlowFast's eval head applies a softmax; it is replaced by the identity here so logits are compared.

Run by hand, with the SlowFast checkout and dependencies of tools/make_slowfast_fixture.py:

    SLOWFAST=/tmp/SlowFast PYTHONPATH=/tmp/pvdeps .venv/bin/python tools/check_slowfast_import.py
"""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tools")]


def main():
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from make_slowfast_fixture import import_slowfast_x3d  # pylint: disable=import-outside-toplevel
  from make_torch_fixture import randomise_  # pylint: disable=import-outside-toplevel

  from autox3d_jax.models import builder, convert_torch, zoo  # pylint: disable=import-outside-toplevel
  x3d_cls, get_cfg = import_slowfast_x3d(os.environ["SLOWFAST"])
  for variant, depth in (("XS", 2.2), ("S", 2.2), ("M", 2.2), ("L", 5.0)):
    cfg = get_cfg()
    cfg.MODEL.ARCH, cfg.MODEL.MODEL_NAME, cfg.MODEL.NUM_CLASSES, cfg.MODEL.DROPOUT_RATE = "x3d", "X3D", 400, 0.0
    cfg.X3D.WIDTH_FACTOR, cfg.X3D.DEPTH_FACTOR, cfg.X3D.BOTTLENECK_FACTOR = 2.0, depth, 2.25
    cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.INPUT_CHANNEL_NUM = 4, 64, [3]
    cfg.RESNET.DEPTH, cfg.RESNET.TRANS_FUNC, cfg.RESNET.STRIDE_1X1 = 50, "x3d_transform", False
    model = x3d_cls(cfg)
    randomise_(model, torch.Generator().manual_seed(0))
    model.eval()
    model.head.act = torch.nn.Identity()
    spec = zoo.get(f"x3d_{variant.lower()}").replace(num_frames=4, crop_size=64)
    state_dict = {k: t.numpy() for k, t in model.state_dict().items()}
    variables = convert_torch.params_from_state_dict(state_dict, spec)
    x = np.random.default_rng(0).standard_normal((2, 4, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
      ref = model([torch.from_numpy(x.transpose(0, 4, 1, 2, 3))]).numpy()
    ours = np.asarray(jax.jit(lambda v, x: builder.build(spec).apply(v, x, train=False))(variables, x))
    print(f"SlowFast X3D-{variant}: {len(state_dict)} tensors ({convert_torch.detect_layout(state_dict)}), "
          f"max |ours - SlowFast| / max |SlowFast| = {np.abs(ours - ref).max() / np.abs(ref).max():.2e}, "
          f"same argmax: {np.array_equal(ours.argmax(-1), ref.argmax(-1))}")


if __name__ == "__main__":
  main()
