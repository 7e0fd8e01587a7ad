"""X3D's own search: stepwise expansion from X2D, one axis per step, then backward contraction
(`search/expansion.py`; strategy 'x3d_expansion', mode search).

  python -m autox3d_jax.main --config=configs/search_x3d_expansion.py:demo --workdir=/tmp/x3d_expansion
  python -m autox3d_jax.main --config=configs/search_x3d_expansion.py:kinetics,target=S --workdir=gs://b/x3d \
      --config.data.name=kinetics400 --config.data.data_dir=gs://b/data

Variants: `demo` (the default): the README demo's task (moving_digits/speed_small), recipe and FLOPs
target (the demo's X3D-like baseline), from a small X2D (1 frame at stride 4, 32 px, widths 12..48, one
block per stage); every candidate trains 300 steps. `kinetics`: X3D's setting, X2D at 112 px to
X3D-`target`'s FLOPs (target=XS|S|M|L, default S) at its clip, each candidate trained with X3D's
recipe for train_steps (set it for your budget; the paper trained 30 tiny models for its low-compute
networks). `tiny`: seconds-long, for the tests.

`--config.search.x3d_expansion.scorer=inherited --config.search.x3d_expansion.inherited_steps=N`: a
cheaper proxy: every candidate but the base starts from the trained weights of the network it
expands (models/morph.py; it computes that network's function at the start) and trains N steps.

Run it again with the same --workdir to resume: trained candidates are read from
workdir/expansion/candidates.json, a candidate killed mid-training resumes from its checkpoint.
"""
from autox3d_jax.config import base_config, parse_config_arg
from autox3d_jax.configs import demo as demo_config
from autox3d_jax.models import zoo


def get_config(arg: str = "demo"):
  args = parse_config_arg(arg, "configs/search_x3d_expansion.py", variants=("demo", "kinetics", "tiny"),
                          options={"target": zoo.STANDARD_WIDTH_VARIANTS})
  variant = args["variant"]
  if variant == "kinetics":
    return _kinetics(args["target"] or "S")
  if args["target"]:
    raise ValueError(f"configs/search_x3d_expansion.py: target= applies to the kinetics variant, not {variant!r}")
  c = demo_config.get_config("tiny" if variant == "tiny" else "speed")
  c.mode = "search"
  # Supernet settings the demo changed; the expansion trains stand-alone networks instead.
  defaults = base_config().search
  for key in ("strategy", "steps", "arch_warmup_steps", "num_groups", "sandwich", "largest_warmup_steps",
              "penalty", "penalty_weight", "weight_opt", "arch_opt"):
    c.search[key] = defaults[key]
  c.search.strategy = "x3d_expansion"
  e = c.search.x3d_expansion
  # The demo's widths at gamma_w = 2 (12/24/32/48, stem 8), one block per stage at gamma_d = 1.
  e.skeleton.stem_base = 4
  e.skeleton.stage_bases = (6, 12, 16, 24)
  e.skeleton.stage_repeats = (1, 1, 1, 1)
  e.skeleton.head_width = c.space.head_width
  e.skeleton.dropout = c.space.dropout
  e.skeleton.width_divisor = 4
  e.base.sampling_stride = 4     # X-Fast reaches 8 frames at stride 1 within the 12-frame videos
  e.base.crop = 32
  e.crop_divisor = 4
  e.max_span = 12         # speed_small's videos are 12 frames
  e.max_crop = 48         # and 48 pixels
  e.train_steps = 300
  if variant == "tiny":
    e.skeleton.stage_bases = (4, 8)
    e.skeleton.stage_repeats = (1, 1)
    e.skeleton.head_width = 16
    e.base.crop = 16
    e.max_crop = 32
    e.axes = ("temporal", "fast", "spatial", "width")
    e.train_steps = 2
  return c


def _kinetics(target: str):
  row = zoo.X3D_VARIANTS[target]
  c = base_config()
  c.mode = "search"
  c.search.strategy = "x3d_expansion"
  c.search.target_arch = f"X3D-{target}"   # X3D-<target>'s FLOPs at its clip (the default space holds it)
  c.data.name = "kinetics400"
  c.data.num_frames = row["frames"]
  c.data.sampling_stride = row["sampling_stride"]
  c.data.crop_size = row["crop"]
  c.data.scale_jitter = (round(row["crop"] * 1.14), round(row["crop"] * 1.43))
  c.data.batch_size = 128
  c.train.optimizer.lr = 0.1
  c.train.optimizer.warmup_steps = 35 * 1000
  c.train.steps = 300 * 1000
  c.train.dtype = "bfloat16"
  e = c.search.x3d_expansion
  e.train_steps = 30 * 1000
  e.max_span = 300        # 10 s at 30 fps: Kinetics clips
  return c
