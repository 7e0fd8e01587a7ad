"""ArchSpec, block registry, builder and the X3D zoo."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autox3d_jax.cost.analytic import MIDDLE_COSTS, arch_cost, count_params
from autox3d_jax.models import builder, registry, zoo
from autox3d_jax.models.blocks import MIDDLES, ResidualBlock
from autox3d_jax.models.spec import ArchSpec, BlockSpec, SpecError, StageSpec


def tiny_spec(block_type="x3d", kernel=(3, 3, 3), num_classes=7, frames=4, crop=32, heads=0):
  spec = zoo.x3d("XS", num_classes=num_classes, num_frames=frames, crop_size=crop, depths=(1, 2),
                 widths=(8, 16), block_type=block_type, kernel=kernel)
  if not heads:
    return spec
  return spec.replace(stages=tuple(StageSpec(tuple(dataclasses.replace(b, heads=heads) for b in s.blocks))
                                   for s in spec.stages))


def example_op(block_type):
  """(kernel, heads) that block_type accepts: 1 x 3 x 3 for 2D-only types, a 2 x 4 x 4 window (axis
  spans for 'axial') with 2 heads for the attention types, 3 x 3 x 3 otherwise."""
  if registry.get(block_type).spatial_only:
    return (1, 3, 3), 0
  if registry.get(block_type).attention:
    return (2, 4, 4), 2
  return (3, 3, 3), 0


# --------------------------------------------------------------------------------------- ArchSpec
def test_archspec_json_round_trip_all_variants(tmp_path):
  for name in zoo.names():
    spec = zoo.get(name)
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec
    assert hash(again) == hash(spec)
    spec.save(tmp_path / "a.json")
    assert ArchSpec.load(tmp_path / "a.json") == spec
    json.loads(spec.to_json())  # plain JSON, no custom objects


@pytest.mark.parametrize("change, message", [
    (dict(width=0), "width must be a positive integer"),
    (dict(inner=-3), "inner must be a positive integer"),
    (dict(stride=3), "stride must be 1 or 2"),
    (dict(kernel=(2, 3, 3)), "must be odd"),
    (dict(kernel=(3, 3)), "kernel must be (t, h, w)"),
    (dict(type="conv9000"), "unknown block type 'conv9000'"),
    (dict(type="x2d"), "2D-only"),
    (dict(se_ratio=1.5), "se_ratio"),
])
def test_invalid_block_is_rejected_with_named_field(change, message):
  spec = zoo.x3d("S")
  stage0 = spec.stages[0]
  bad_block = BlockSpec(**{**stage0.blocks[1].__dict__, **change})
  bad = spec.replace(stages=(StageSpec((stage0.blocks[0], bad_block) + stage0.blocks[2:]),) + spec.stages[1:])
  with pytest.raises(SpecError) as err:
    registry.check_arch(bad)             # structure (ArchSpec.validate) and the block types' rules
  assert message in str(err.value)
  assert "stages[0].blocks[1]" in str(err.value) or "unknown block type" in str(err.value)


def test_invalid_top_level_fields():
  spec = zoo.x3d("S")
  with pytest.raises(SpecError, match="num_frames"):
    spec.replace(num_frames=0).validate()
  with pytest.raises(SpecError, match="stages must not be empty"):
    spec.replace(stages=()).validate()
  with pytest.raises(SpecError, match="not a valid ArchSpec"):
    ArchSpec.from_dict({"name": "x"})


def test_wrong_input_shape_is_a_clear_error():
  spec = tiny_spec()
  model = builder.build(spec)
  with pytest.raises(SpecError, match=r"expects clips shaped \(N, T, H, W, 3\)"):
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 32, 32, 1)))


# ---------------------------------------------------------------------------------------- registry
def test_every_registered_block_type_has_a_middle_and_a_cost():
  """The registry, the layers (`blocks.MIDDLES`) and the analytic costs name the same block types."""
  assert registry.names() == sorted(MIDDLES) == sorted(MIDDLE_COSTS)


def test_unregistered_block_type_is_rejected_naming_the_registered_ones():
  spec = tiny_spec()
  bad = spec.replace(stages=(StageSpec((dataclasses.replace(spec.stages[0].blocks[0], type="nope"),)),)
                     + spec.stages[1:])
  bad.validate()                         # structurally fine: the type is the registry's business
  with pytest.raises(SpecError, match="unknown block type 'nope'; registered"):
    registry.check_arch(bad)
  with pytest.raises(SpecError, match="unknown block type 'nope'"):
    builder.build(bad)


@pytest.mark.parametrize("block_type", registry.names())
def test_every_registered_block_builds_runs_and_matches_its_cost(block_type):
  kernel, heads = example_op(block_type)
  spec = tiny_spec(block_type, kernel, heads=heads)
  model = builder.build(spec)
  x = jax.random.normal(jax.random.PRNGKey(1), (2,) + spec.input_shape)
  variables = model.init(jax.random.PRNGKey(0), x)
  assert count_params(variables["params"]) == arch_cost(spec).params
  logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                rngs={"dropout": jax.random.PRNGKey(2)})
  assert logits.shape == (2, 7) and bool(jnp.all(jnp.isfinite(logits)))
  # Train mode updated running statistics.
  before = jax.tree_util.tree_leaves(variables["batch_stats"])
  after = jax.tree_util.tree_leaves(updates["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))
  eval_logits = model.apply(variables, x, train=False)
  assert eval_logits.shape == (2, 7)


# XLA's cost analysis counts 2 flops per multiply-add plus every elementwise op (BN, activations, SE
# gates, frame differences, softmax); the analytic count is multiply-adds only (the papers' FLOPs,
# attention's QK and AV products included). At the tensor below the elementwise share puts XLA's
# half-count 1-12% above ours for every type but TEA (19% at stride 1, 32% at stride 2: its motion
# excitation, frame differences and temporal convs run at the input's resolution, its last
# fragment's average pool is not counted, and its strided convs are small beside them). A missing
# or doubled pointwise conv, dense or attention product would move the ratio out of the band. The
# 2 x 4 x 4 window does not divide the stride-2 map (14 x 14): the padded windows are computed and
# counted.
XLA_OVER_ANALYTIC = (1.0, 1.25)
XLA_OVER_ANALYTIC_HIGH = {"tea": 1.35}


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("block_type", registry.names())
def test_analytic_flops_of_every_block_type_agree_with_xlas_count(block_type, stride):
  """Each registered block's analytic multiply-adds against XLA's count of the compiled block on
  the lax path (what TPU/GPU run), at an X3D-S-like stage-3 tensor."""
  from autox3d_jax.cost.analytic import block_cost
  from autox3d_jax.ops.depthwise import forced_impl
  kernel, heads = example_op(block_type)
  in_width = 48 if stride == 1 else 24
  spec = BlockSpec(block_type, kernel, width=48, inner=108, se_ratio=1 / 16, stride=stride, heads=heads)
  x = jnp.zeros((1, 8, 28, 28, in_width))
  block = ResidualBlock(spec)
  variables = block.init(jax.random.PRNGKey(0), x)
  with forced_impl("lax"):
    compiled = jax.jit(lambda v, x: block.apply(v, x)).lower(variables, x).compile()
  analysis = compiled.cost_analysis()
  xla_flops = (analysis[0] if isinstance(analysis, list) else analysis)["flops"]
  ours, _ = block_cost(spec, in_width, x.shape[1:4])
  assert count_params(variables["params"]) == ours.params
  low, high = XLA_OVER_ANALYTIC[0], XLA_OVER_ANALYTIC_HIGH.get(block_type, XLA_OVER_ANALYTIC[1])
  assert low <= xla_flops / 2 / ours.flops <= high, (xla_flops / 2, ours.flops)


def test_tea_and_stm_temporal_convs_start_as_the_papers_identity_and_shifts():
  """TEA: fragments 0-2's temporal convs pass frame t ('fixed'), the last fragment's reads t+1 on half
  its channels and t-1 on the other half ('shift'); STM's CSTM reads t-1 / t / t+1 on a quarter / half
  / quarter of the channels. Checked on the convs' outputs for a clip whose frame t holds the value t."""
  from autox3d_jax.models.layers import DepthwiseConv3D, depthwise_init
  clip = jnp.broadcast_to(jnp.arange(5.0)[None, :, None, None, None], (1, 5, 2, 2, 8))

  def frames_read(init):
    conv = DepthwiseConv3D((3, 1, 1), init_name=init)
    out = conv.apply(conv.init(jax.random.PRNGKey(0), clip), clip)
    return np.asarray(out[0, 2, 0, 0])               # frame 2's output per channel: the frame it read
  np.testing.assert_array_equal(frames_read("identity"), [2] * 8)
  np.testing.assert_array_equal(frames_read("shift"), [3] * 4 + [1] * 4)
  np.testing.assert_array_equal(frames_read("stm_shift"), [1] * 2 + [2] * 4 + [3] * 2)
  spec = BlockSpec("tea", (3, 3, 3), width=8, inner=16)
  params = ResidualBlock(spec).init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 8, 8, 8)))["params"]
  np.testing.assert_array_equal(params["mta_t0"]["kernel"][:, 0, 0, 0], [0, 1, 0])
  np.testing.assert_array_equal(params["mta_t3"]["kernel"][:, 0, 0, :], [[0] * 2 + [1] * 2, [0] * 4, [1] * 2 + [0] * 2])
  params = ResidualBlock(dataclasses.replace(spec, type="stm")).init(jax.random.PRNGKey(0),
                                                                     jnp.zeros((1, 4, 8, 8, 8)))["params"]
  assert params["cmm_reduce"]["kernel"].shape == (16, 1)      # 16 inner channels reduced 16x
  np.testing.assert_array_equal(params["cstm_t"]["kernel"][:, 0, 0, :], [[1] * 4 + [0] * 12, [0] * 4 + [1] * 8 + [0] * 4,
                                                                      [0] * 12 + [1] * 4])
  with pytest.raises(ValueError, match="depthwise init must be"):
    depthwise_init("zeros")


def test_temporal_blocks_see_time_and_2d_block_does_not_mix_frames():
  """Permuting frames changes a 3D block's output per frame; a 2D block's output just permutes."""
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 8, 8, 8))
  perm = jnp.array([2, 0, 3, 1])
  for block_type, kernel, mixes in [("x2d", (1, 3, 3), False), ("x3d", (3, 3, 3), True),
                                    ("r2plus1d", (3, 3, 3), True), ("stm", (3, 3, 3), True)]:
    spec = BlockSpec(block_type, kernel, width=8, inner=16, se_ratio=0.0)
    block = ResidualBlock(spec)
    v = block.init(jax.random.PRNGKey(1), x)
    y = block.apply(v, x)
    y_perm = block.apply(v, x[:, perm])
    same = np.allclose(y[:, perm], y_perm, atol=1e-5)
    assert same != mixes, block_type


# ------------------------------------------------------------------------------------------- X3D
# Reference figures: parameter counts of pytorchvideo 0.1.5 `create_x3d` (counted with torch 2.13),
# and per-view multiply-adds of the published model zoo / paper (shared/REFERENCES.md).
X3D_PARAMS = {"XS": 3_794_274, "S": 3_794_274, "M": 3_794_274, "L": 6_153_384}
X3D_TRAIN_GFLOPS = {"XS": 0.605, "S": 1.963, "M": 4.732, "L": 18.368}
X3D_TEST_GFLOPS = {"S": 2.72, "M": 6.18, "L": 24.76}


@pytest.mark.parametrize("variant", sorted(X3D_PARAMS))
def test_x3d_params_and_flops_match_reference(variant):
  spec = zoo.x3d(variant)
  cost = arch_cost(spec)
  assert cost.params == X3D_PARAMS[variant]
  assert round(cost.gflops, 3) == X3D_TRAIN_GFLOPS[variant]
  if variant in X3D_TEST_GFLOPS:
    assert round(arch_cost(spec, crop_size=zoo.test_crop(variant)).gflops, 2) == X3D_TEST_GFLOPS[variant]
  # The flax module really has that many parameters.
  shapes = jax.eval_shape(lambda: builder.build(spec).init(
      jax.random.PRNGKey(0), jnp.zeros((1,) + spec.input_shape), train=False))
  assert count_params(shapes["params"]) == X3D_PARAMS[variant]


def test_x3d_xl_is_x3d_l_widened_and_matches_the_published_figures():
  """X3D-XL (in no public config; zoo.py says how it is defined): X3D-L with gamma_w 2.9. Its
  parameters equal pytorchvideo 0.1.5's create_x3d(width_factor=2.9, depth_factor=5.0) counted with
  torch (11,095,840), 0.9% above the paper's 11.0M; its FLOPs are the paper's 35.84 G (312 px) and
  48.4 G (356 px test crop) to their printed digits."""
  xl, large = zoo.x3d("XL"), zoo.x3d("L")
  assert xl.depths == large.depths and (xl.num_frames, xl.crop_size) == (large.num_frames, large.crop_size)
  assert [s.width for s in xl.stages] == [32, 72, 136, 280] and xl.stem.width == 32
  assert [s.blocks[0].inner for s in xl.stages] == [72, 162, 306, 630] and xl.head.conv5_width == 630
  cost = arch_cost(xl)
  assert cost.params == 11_095_840
  assert abs(cost.params / 11.0e6 - 1) < 0.01
  assert round(cost.gflops, 2) == 35.84
  assert round(arch_cost(xl, crop_size=zoo.test_crop("XL")).gflops, 1) == 48.4
  # Every width factor that rounds to the same channels gives the same network.
  for w in (2.875, 2.9, 2.916):
    assert zoo.from_factors(dataclasses.replace(zoo.X3D_VARIANTS["XL"]["factors"], width=w)).stages == xl.stages


def test_x2d_is_every_factor_one_and_matches_the_papers_cost():
  """X2D, the expansion's start: 1 frame at 112 px, widths 24..192, inner = width, depths 1/2/5/3;
  1.63M params and 20.66 MFLOPs (the paper's Table 1 caption: 20.67 MFLOPs, 1.63M params)."""
  spec = zoo.from_factors(zoo.X2D)
  assert spec.depths == [1, 2, 5, 3] and (spec.num_frames, spec.crop_size) == (1, 112)
  assert [s.width for s in spec.stages] == [24, 48, 96, 192]
  assert [s.blocks[0].inner for s in spec.stages] == [24, 48, 96, 192]
  cost = arch_cost(spec)
  assert round(cost.params / 1e6, 2) == 1.63
  assert abs(cost.flops / 20.67e6 - 1) < 0.001


def test_x3d_variants_are_their_factors():
  """Each zoo row is its SlowFast config's factors; depths follow ceil(depth factor x 1/2/5/3)."""
  rows = {v: (r["factors"].frames, r["factors"].sampling_stride, r["factors"].width, r["factors"].depth)
          for v, r in zoo.X3D_VARIANTS.items()}
  assert rows == {"XS": (4, 12, 2.0, 2.2), "S": (13, 6, 2.0, 2.2), "M": (16, 5, 2.0, 2.2),
                  "L": (16, 5, 2.0, 5.0), "XL": (16, 5, 2.9, 5.0)}
  assert zoo.depths_of(zoo.X3DSkeleton(), 2.2) == (3, 5, 11, 7)
  assert zoo.STANDARD_WIDTH_VARIANTS == ("XS", "S", "M", "L")


def test_x3d_layout_is_the_papers():
  spec = zoo.x3d("S")
  assert spec.depths == [3, 5, 11, 7]
  assert [s.width for s in spec.stages] == [24, 48, 96, 192]
  assert [s.blocks[0].inner for s in spec.stages] == [54, 108, 216, 432]
  assert [b.se_ratio > 0 for b in spec.stages[0].blocks] == [True, False, True]
  assert [b.stride for b in spec.stages[1].blocks] == [2, 1, 1, 1, 1]
  assert (spec.num_frames, spec.crop_size) == (13, 160)
  assert zoo.x3d("L").depths == [5, 10, 25, 15]
  assert (spec.head.conv5_width, spec.head.head_width, spec.head.dropout) == (432, 2048, 0.5)


def test_analytic_flops_agree_with_xla_cost_analysis(monkeypatch):
  """XLA counts a multiply-add as 2 flops and also counts elementwise ops (BN, activations)."""
  monkeypatch.setenv("AUTOX3D_DEPTHWISE_IMPL", "lax")  # a callback would hide its flops from XLA
  spec = zoo.x3d("XS", num_classes=10, num_frames=4, crop_size=64, depths=(1, 2, 2, 1))
  model = builder.build(spec)
  x = jnp.zeros((1,) + spec.input_shape)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
  analysis = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x).cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  xla_macs = analysis["flops"] / 2
  analytic = arch_cost(spec).flops
  assert analytic <= xla_macs <= 1.05 * analytic, (analytic, xla_macs)


@pytest.mark.parametrize("size, kernel, stride, cin, features", [
    ((40, 40), 3, 2, 3, 8), ((13, 11), 3, 2, 3, 5), ((12, 12), 5, 1, 4, 6), ((9, 9), 3, 1, 3, 4)])
def test_spatial_conv_patches_matches_flax_conv_with_gradients(size, kernel, stride, cin, features):
  """The stem's patches conv == nn.Conv (same init from the same key, outputs and both gradients)."""
  import flax.linen as nn
  from autox3d_jax.models.layers import SpatialConv
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3) + size + (cin,)), jnp.float32)
  pad = kernel // 2
  ref = nn.Conv(features, (1, kernel, kernel), strides=(1, stride, stride),
                padding=[(0, 0), (pad, pad), (pad, pad)], use_bias=False)
  ref_vars = ref.init(jax.random.PRNGKey(3), x)
  for impl in ("patches", "lax"):
    mod = SpatialConv(features, kernel, stride, impl=impl)
    got_vars = mod.init(jax.random.PRNGKey(3), x)
    np.testing.assert_array_equal(got_vars["params"]["kernel"], ref_vars["params"]["kernel"])

    def loss(m):
      return lambda v, x: jnp.sum(jnp.sin(m.apply(v, x)))
    np.testing.assert_allclose(mod.apply(ref_vars, x), ref.apply(ref_vars, x), atol=2e-6)
    g_got = jax.grad(loss(mod), argnums=(0, 1))(ref_vars, x)
    g_ref = jax.grad(loss(ref), argnums=(0, 1))(ref_vars, x)
    # The kernel gradient sums ~2,400 terms of magnitude up to ~100: both float32 paths are ~4e-5
    # off a float64 reference (measured), so compare at that scale.
    np.testing.assert_allclose(g_got[0]["params"]["kernel"], g_ref[0]["params"]["kernel"], rtol=1e-5, atol=2e-4)
    np.testing.assert_allclose(g_got[1], g_ref[1], atol=2e-6)


def test_spatial_conv_rejects_unknown_impl():
  from autox3d_jax.models.layers import SpatialConv
  with pytest.raises(ValueError, match="impl"):
    SpatialConv(4, impl="fft").init(jax.random.PRNGKey(0), jnp.zeros((1, 1, 5, 5, 3)))


def test_temporal_extent_counts_the_blocks_that_look_across_frames():
  from autox3d_jax.cost.analytic import temporal_extent
  spec = zoo.x3d("S", 5, num_frames=4, crop_size=32, depths=(1, 2), widths=(8, 16))
  t = temporal_extent(spec)
  assert (t.blocks, t.mean_kt, t.temporal_flops_share) == (3, 3.0, 1.0)      # every X3D block is 3x3x3
  # One block made 2D (k_t = 1): the mean drops by 2/3 and its FLOPs leave the temporal share.
  stages = list(spec.stages)
  stages[1] = StageSpec((stages[1].blocks[0], dataclasses.replace(stages[1].blocks[1], type="x2d", kernel=(1, 3, 3))))
  mixed = spec.replace(stages=tuple(stages))
  t = temporal_extent(mixed)
  report = arch_cost(mixed)
  flops = [report.layers[name].flops for name in ("s1_b1", "s2_b1", "s2_b2")]
  assert t.mean_kt == pytest.approx(7 / 3)
  assert t.temporal_flops_share == pytest.approx((flops[0] + flops[1]) / sum(flops))
