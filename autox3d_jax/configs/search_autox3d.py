"""AutoX3D search at the size of an X3D variant: the fine-grained space of the paper around the X3D
skeleton at that variant's input, a FLOPs target equal to the X3D network's (AutoX3D-S/M/L).

  python -m autox3d_jax.main --config=configs/search_autox3d.py:target=S --workdir=/tmp/autox3d_s \
      --config.data.name=kinetics400 --config.data.data_dir=/data
  python -m autox3d_jax.main --config=configs/search_autox3d.py:target=S,runlocal --workdir=/tmp/a

Arguments: target=XS|S|M|L; strategy=probabilistic|dnas|gdas|spos|msg; runlocal.
Paper hyper-parameters (AutoX3D supplement): weights SGD cosine lr 1.6 (batch 192), architecture Adam
lr 0.025, 600 epochs with the first 200 as warm-up (architecture frozen). The search computes in
bfloat16 (config.train.dtype; parameters, BN statistics and the loss stay float32); `runlocal`,
meant for a CPU, in float32.
"""
from autox3d_jax.config import STRATEGIES, base_config, parse_config_arg
from autox3d_jax.models import zoo


def get_config(arg: str = "target=S"):
  args = parse_config_arg(arg, "configs/search_autox3d.py",
                          options={"target": zoo.STANDARD_WIDTH_VARIANTS, "strategy": STRATEGIES},
                          flags=("runlocal",))
  target = args["target"] or "S"
  row = zoo.X3D_VARIANTS[target]
  c = base_config()
  c.mode = "search"
  c.data.num_frames = row["frames"]
  c.data.sampling_stride = row["sampling_stride"]
  c.data.crop_size = row["crop"]
  c.data.scale_jitter = (round(row["crop"] * 1.14), round(row["crop"] * 1.43))
  c.data.batch_size = 192
  c.search.strategy = args["strategy"] or "probabilistic"
  c.search.steps = 600 * 1000
  c.search.arch_warmup_steps = 200 * 1000
  c.search.num_groups = 8
  c.search.target_arch = f"X3D-{target}"   # X3D-<target>'s own FLOPs: it is a point of the space
  c.search.penalty = "hinge"
  c.search.penalty_weight = 1.0
  c.search.weight_opt.lr = 1.6
  c.search.arch_opt.lr = 0.025
  c.train.dtype = "bfloat16"
  if args["runlocal"]:
    c.train.dtype = "float32"
    c.data.name = "moving_digits/motion"
    c.data.num_frames = 8
    c.data.sampling_stride = 1
    c.data.crop_size = 48
    c.data.scale_jitter = (48, 56)
    c.data.batch_size = 8
    c.space.stage_widths = ((8, 12, 16), (16, 24, 32), (24, 32, 48), (32, 48, 64))
    c.space.min_depths = (1, 1, 1, 1)
    c.space.max_depths = (2, 2, 3, 2)
    c.space.conv5_width = 96
    c.space.head_width = 128
    c.search.steps = 20
    c.search.arch_warmup_steps = 5
    c.search.num_groups = 4
    c.search.weight_opt.lr = 0.1
  return c
