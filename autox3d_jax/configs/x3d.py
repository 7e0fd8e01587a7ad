"""Train and evaluate an X3D baseline (X3D paper recipe, scaled to the given data).

  python -m autox3d_jax.main --config=configs/x3d.py:variant=S --workdir=/tmp/x3d_s \
      --config.data.name=kinetics400 --config.data.data_dir=/data
  python -m autox3d_jax.main --config=configs/x3d.py:variant=XS,runlocal --workdir=/tmp/x3d_local

Arguments (comma separated): variant=XS|S|M|L|XL; runlocal (small steps/batch on the embedded dataset).
"""
from autox3d_jax.config import base_config, parse_config_arg
from autox3d_jax.models import zoo


def get_config(arg: str = "variant=S"):
  args = parse_config_arg(arg, "configs/x3d.py", options={"variant": tuple(zoo.X3D_VARIANTS)},
                          flags=("runlocal",))
  variant = args["variant"] or "S"
  row = zoo.X3D_VARIANTS[variant]
  c = base_config()
  c.mode = "train"
  c.train.arch = f"x3d_{variant.lower()}"
  c.data.name = "moving_digits/motion"
  c.data.num_frames = row["frames"]
  c.data.sampling_stride = row["sampling_stride"]
  c.data.crop_size = row["crop"]
  c.data.scale_jitter = (round(row["crop"] * 1.14), round(row["crop"] * 1.43))   # X3D: 182-228 for 160
  c.data.num_temporal_views = 10
  c.data.num_spatial_crops = 3
  c.data.batch_size = 128
  c.train.steps = 300 * 1000
  c.train.optimizer.lr = 0.1 if variant not in ("L", "XL") else 0.05
  c.train.optimizer.warmup_steps = 35 * 1000
  c.train.optimizer.weight_decay = 5e-5
  c.train.dtype = "bfloat16"
  if args["runlocal"]:
    c.data.num_frames = 8
    c.data.sampling_stride = 1
    c.data.crop_size = 48
    c.data.scale_jitter = (48, 56)
    c.data.num_temporal_views = 2
    c.data.num_spatial_crops = 3
    c.data.batch_size = 8
    c.data.eval_batch_size = 8
    c.train.steps = 50
    c.train.optimizer.warmup_steps = 5
    c.train.dtype = "float32"
  return c
