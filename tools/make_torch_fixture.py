"""Make `tests/fixtures/x3d_tiny_pytorchvideo.npz`: a tiny pytorchvideo X3D, its input and its logits.

Run once by hand (needs torch + pytorchvideo; the test that reads the fixture does not):

    . .venv/bin/activate && python tools/make_torch_fixture.py

The model is pytorchvideo's `create_x3d` with
    input_clip_length=4, input_crop_size=40, width_factor=0.5, depth_factor=1.0,
    head_dim_out=64, model_num_class=5, head_activation=None (pre-softmax logits)
which is, in our terms,
    zoo.x3d('XS', num_classes=5, num_frames=4, crop_size=40, depths=(1, 2, 5, 3),
            widths=(8, 16, 24, 48))  with  head.head_width = 64
(pytorchvideo: stem round_width(12, 0.5) = 8, stage widths round_width(12/24/48/96, 0.5) =
8/16/24/48, inner int(2.25 w) = 18/36/54/108, depths ceil(1.0 x (1, 2, 5, 3)), SE round_width(inner,
1/16) = 8 on blocks 0, 2, 4; head conv5 108). head_dim_out is 64 instead of 2048 only to keep the
file small (108 x 2048 floats alone would be 0.9 MB). Crop 40 gives odd feature maps (40 -> 20, 10,
5, 3, 2) so padding / stride bugs on odd sizes show; the final map (2 x 2) equals pytorchvideo's
AvgPool window (ceil(40/32) = 2), so its head is a global mean like ours. Stage 1 keeps the stem's
width (8), so its first block has the BN-less strided projection; the other stages' first blocks
have the projection + BN.

Every parameter AND every BatchNorm running statistic is re-drawn from a seeded generator (so the
comparison is not trivially passing with identity BNs), the model is put in eval mode, and a random
clip is pushed through it.

Saved arrays (all float32):
  sd.<torch key>     the state_dict (num_batches_tracked dropped)
  input_ncthw        the clip, PyTorch layout (N, C, T, H, W); transpose (0, 2, 3, 4, 1) for ours
  logits             eval-mode output (N, 5), pre-softmax
  train_logits       train-mode output on the same clip (BN with batch statistics; dropout set to 0
                     for this pass so it is deterministic)
  train_state.<key>  BN running_mean / running_var after that one train-mode pass (PyTorch momentum
                     0.1; PyTorch feeds the *unbiased* batch variance into running_var)
  spec_json          (a 0-d unicode array) the matching ArchSpec as JSON
"""
from __future__ import annotations

import dataclasses
import os
import sys
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "x3d_tiny_pytorchvideo.npz")

CONFIG = dict(input_clip_length=4, input_crop_size=40, width_factor=0.5, depth_factor=1.0,
              head_dim_out=64, model_num_class=5, head_activation=None)
BATCH = 2
SEED = 0


def import_create_x3d():
  """pytorchvideo imports torchvision.ops.RoIAlign at module level; a stub is enough for X3D."""
  if "torchvision" not in sys.modules:
    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.RoIAlign = object
    tv.ops = ops
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.ops"] = ops
  from pytorchvideo.models.x3d import create_x3d  # pylint: disable=import-outside-toplevel
  return create_x3d


def matching_spec():
  sys.path.insert(0, ROOT)
  from autox3d_jax.models import zoo  # pylint: disable=import-outside-toplevel
  spec = zoo.x3d("XS", num_classes=5, num_frames=4, crop_size=40, depths=(1, 2, 5, 3),
                 widths=(8, 16, 24, 48))
  return spec.replace(head=dataclasses.replace(spec.head, head_width=CONFIG["head_dim_out"])).validate()


def randomise_(model, gen):
  """Seeded re-draw of every parameter and BN buffer, scaled so activations stay O(1)."""
  import torch  # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        c = module.num_features
        module.weight.copy_(0.5 + torch.rand(c, generator=gen))           # U(0.5, 1.5)
        module.bias.copy_(0.2 * torch.randn(c, generator=gen))
        module.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
        module.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))  # U(0.5, 2)
      elif isinstance(module, (torch.nn.Conv3d, torch.nn.Linear)):
        w = module.weight
        fan_in = w[0].numel()
        w.copy_(torch.randn(w.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        if module.bias is not None:
          module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))


def main():
  import torch  # pylint: disable=import-outside-toplevel
  create_x3d = import_create_x3d()
  torch.manual_seed(SEED)
  gen = torch.Generator().manual_seed(SEED)
  model = create_x3d(**CONFIG)
  print(model if "-v" in sys.argv else "", end="")
  randomise_(model, gen)
  spec = matching_spec()

  n_torch = sum(p.numel() for p in model.parameters())
  from autox3d_jax.cost.analytic import arch_cost  # pylint: disable=import-outside-toplevel
  n_ours = arch_cost(spec).params
  print(f"params: pytorchvideo {n_torch:,}  ours {n_ours:,}")
  if n_torch != n_ours:
    raise SystemExit("parameter counts differ: the spec does not match the pytorchvideo config")

  x = torch.randn(BATCH, 3, CONFIG["input_clip_length"], CONFIG["input_crop_size"],
                  CONFIG["input_crop_size"], generator=gen)
  model.eval()
  with torch.no_grad():
    logits = model(x)
  # Train-mode pass (batch statistics); dropout off so it is deterministic. Running stats change
  # in this pass but the saved state_dict was taken before it.
  sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")}
  model.train()
  for m in model.modules():
    if isinstance(m, torch.nn.Dropout):
      m.p = 0.0
  with torch.no_grad():
    train_logits = model(x)
  after = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()
           if k.endswith(("running_mean", "running_var"))}

  arrays = {f"sd.{k}": v for k, v in sd.items()}
  arrays.update({f"train_state.{k}": v for k, v in after.items()})
  arrays["input_ncthw"] = x.numpy().astype(np.float32)
  arrays["logits"] = logits.numpy().astype(np.float32)
  arrays["train_logits"] = train_logits.numpy().astype(np.float32)
  arrays["spec_json"] = np.array(spec.to_json(indent=None))
  os.makedirs(os.path.dirname(OUT), exist_ok=True)
  np.savez_compressed(OUT, **arrays)
  print(f"logits (eval):\n{arrays['logits']}\nlogits (train-mode BN):\n{arrays['train_logits']}")
  print(f"wrote {OUT} ({os.path.getsize(OUT) / 1e3:.0f} kB, {len(sd)} state_dict tensors)")


if __name__ == "__main__":
  main()
