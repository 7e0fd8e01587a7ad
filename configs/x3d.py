"""Train and evaluate an X3D baseline (X3D paper recipe, scaled to the given data).

  python -m autox3d_jax.main --config=configs/x3d.py:variant=S --workdir=/tmp/x3d_s \
      --config.data.name=kinetics400 --config.data.data_dir=/data
  python -m autox3d_jax.main --config=configs/x3d.py:variant=XS,runlocal --workdir=/tmp/x3d_local

Arguments (comma separated): variant=XS|S|M|L; runlocal (small steps/batch on the embedded dataset).
"""
from autox3d_jax.config import base_config
from autox3d_jax.models import zoo


def parse(arg: str) -> dict:
  out = {}
  for part in filter(None, arg.split(",")):
    key, _, value = part.partition("=")
    out[key] = value if value else True
  return out


def get_config(arg: str = "variant=S"):
  args = parse(arg)
  unknown = set(args) - {"variant", "runlocal"}
  if unknown:
    raise ValueError(f"configs/x3d.py: unknown arguments {sorted(unknown)}; use variant=..,runlocal")
  variant = str(args.get("variant", "S")).upper()
  row = zoo.X3D_VARIANTS[variant]
  c = base_config()
  c.mode = "train"
  c.train.arch = f"x3d_{variant.lower()}"
  c.data.name = "moving_digits/motion"
  c.data.num_frames = row["frames"]
  c.data.crop_size = row["crop"]
  c.data.scale_jitter = (round(row["crop"] * 1.14), round(row["crop"] * 1.43))   # X3D: 182-228 for 160
  c.data.num_temporal_views = 10
  c.data.num_spatial_crops = 3
  c.data.batch_size = 128
  c.train.steps = 300 * 1000
  c.train.lr = 0.1 if variant != "L" else 0.05
  c.train.warmup_steps = 35 * 1000
  c.train.weight_decay = 5e-5
  c.train.dtype = "bfloat16"
  if args.get("runlocal"):
    c.data.num_frames = 8
    c.data.crop_size = 48
    c.data.scale_jitter = (48, 56)
    c.data.num_temporal_views = 2
    c.data.num_spatial_crops = 3
    c.data.batch_size = 8
    c.data.eval_batch_size = 8
    c.train.steps = 50
    c.train.warmup_steps = 5
    c.train.dtype = "float32"
  return c
