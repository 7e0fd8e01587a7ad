"""A conv + attention search around X3D's skeleton (TrioNet / UniNet style): AutoX3D's search at an X3D
variant's input, with every block choosing among X3D's and the video papers' convolutions (X3D, 2D,
R(2+1)D, ir-CSN, ip-CSN, STM, TEA) and the token mixers (windowed and axial self-attention, the
windowed MLP), each at the block's searched width, expansion and SE.

  python -m autox3d_jax.main --config=configs/search_hybrid.py:target=S --workdir=/tmp/hybrid_s \
      --config.data.name=kinetics400 --config.data.data_dir=/data
  python -m autox3d_jax.main --config=configs/search_hybrid.py:target=S,runlocal --workdir=/tmp/h

Arguments as `search_autox3d.py` (target=XS|S|M|L; strategy; runlocal), whose recipe this keeps, and
`downsample`: UniNet's downsampling modules before each stage (the stage's first block then keeps
its resolution), the local-global one a choice in the last two stages. X3D-<target> has none, so
with it the FLOPs target is the X3D-like point's with local modules.
The stage widths are multiples of 8 and the expansions AutoX3D's, so every inner width is a multiple
of 6 and the ops' 3 heads divide it (a space whose heads do not divide an inner width is rejected,
naming the op). X3D's own widths (24, 48, 96, 192) are in the space, so the X3D-<target> point and
its FLOPs target are too. Windows: t x 5 x 5 tiles the maps of a 160 crop (40, 20, 10, 5); the
axial op attends along t, h and w with relative positions clipped at +-1 (t) and +-3 (h, w).
With strategy=spos the paths are sampled hierarchically (TrioNet: each block's op type uniformly,
then one of its variants). `configs/demo.py:hybrid` is the same kind of space at the demo's scale.
"""
from autox3d_jax.config import STRATEGIES, parse_config_arg
from autox3d_jax.configs import search_autox3d
from autox3d_jax.models import zoo

CONV_OPS = ("x3d:3x3x3", "x3d:5x3x3", "x2d:1x3x3", "r2plus1d:3x3x3", "csn:3x3x3", "ip_csn:3x3x3", "stm:3x3x3",
            "tea:3x3x3")
TOKEN_MIXERS = ("lsa:1x5x5:h3", "lsa:3x5x5:h3", "axial:3x7x7:h3", "mlp:1x5x5:h3")


def get_config(arg: str = "target=S"):
  args = parse_config_arg(arg, "configs/search_hybrid.py",
                          options={"target": zoo.STANDARD_WIDTH_VARIANTS, "strategy": STRATEGIES},
                          flags=("runlocal", "downsample"))
  c = search_autox3d.get_config(",".join(part for part in arg.split(",") if part.strip() != "downsample"))
  c.space.ops = CONV_OPS + TOKEN_MIXERS
  if c.search.strategy == "spos":
    c.search.spos.hierarchical = True      # TrioNet: an op type uniformly, then one of its variants
  if args["runlocal"]:
    # The 48 crop's maps (12, 6, 3, 2) clip the 5 x 5 windows in the later stages.
    c.space.stage_widths = ((8, 16), (16, 24, 32), (24, 32, 48), (32, 48, 64))
  else:
    c.space.stage_widths = ((16, 24, 32), (32, 48, 64), (64, 96, 128), (128, 192, 256))
  if args["downsample"]:
    # UniNet's downsampling modules, its default placement searched: local modules before the first
    # two stages, the choice of the local-global one (4 heads, UniNet's head_dim 32 at 128 channels)
    # before the last two.
    c.space.downsample = (("local",), ("local",), ("local", "local_global"), ("local", "local_global"))
    c.space.downsample_heads = 4
  return c
