"""search/space.py: decisions, point <-> ArchSpec, size, canonical points, and the SpaceConfig that
defines a space (from the config section, from JSON, and its validation)."""
import dataclasses
import itertools
import json
import math

import numpy as np
import pytest

import toys

from autox3d_jax import config as config_lib
from autox3d_jax.models import zoo
from autox3d_jax.models.spec import HeadSpec, SpecError, StemSpec
from autox3d_jax.search.space import (Op, SearchSpace, inner_width, ops_from_strings, space_config,
                                      space_config_from_dict, space_config_from_section, x3d_space_config)


def all_points(space):
  """Every point of a (tiny) space, inactive decisions included."""
  names = space.labels
  for combo in itertools.product(*[range(d.size) for d in space.decisions]):
    yield dict(zip(names, combo))


# --------------------------------------------------------------------------------- X3D and labels
def test_x3d_family_are_points_of_the_default_space():
  for variant in ("XS", "S", "M", "L"):
    space = SearchSpace(x3d_space_config(variant))
    spec = zoo.x3d(variant)
    point = space.point_of(spec)
    assert space.to_arch(point, name=spec.name) == spec


def test_space_size_and_labels():
  space = toys.all_ops_space()
  per_block = len(toys.ALL_OPS) * 3 * 3
  expected = (3 * sum(per_block ** d for d in (1, 2))) * (3 * sum(per_block ** d for d in (1, 2, 3)))
  assert space.size() == expected
  assert "s1_width" in space.labels and "s2_b3_op" in space.labels and "s2_depth" in space.labels
  assert len(set(space.labels)) == len(space.labels)
  default = SearchSpace(x3d_space_config("S"))
  assert default.log10_size() > 100  # the fine-grained space is astronomically large
  assert math.isfinite(default.log10_size())


# ------------------------------------------------------------------------------ point <-> ArchSpec
@pytest.mark.parametrize("make", [toys.space, toys.all_ops_space])
def test_point_of_inverts_to_arch_on_random_points(make):
  space = make()
  rng = np.random.default_rng(0)
  for _ in range(50):
    point = toys.random_point(space, rng)
    spec = space.to_arch(point)
    assert space.point_of(spec) == space.canonical(point)
    assert space.to_arch(space.canonical(point)) == spec      # inactive decisions change nothing


def test_point_round_trip_and_hierarchy():
  space = toys.all_ops_space()
  rng = np.random.default_rng(0)
  for _ in range(20):
    point = space.canonical(toys.random_point(space, rng))
    spec = space.to_arch(point)
    assert space.canonical(space.point_of(spec)) == point
  point = toys.random_point(space, rng)
  point["s2_depth"] = 0  # depth 1: blocks 2 and 3 do not matter
  assert not space.active(point, "s2_b2_op") and space.active(point, "s2_b1_op")


def test_to_arch_builds_the_skeleton_and_the_chosen_blocks():
  space = toys.space()
  point = toys.random_point(space, np.random.default_rng(4))
  point.update({"s1_width": 2, "s1_depth": 1, "s1_b2_op": 1, "s1_b2_expansion": 2, "s1_b2_se": 1})
  spec = space.to_arch(point, name="mine")
  c = space.config
  assert spec.name == "mine" and (spec.num_frames, spec.crop_size) == (c.num_frames, c.crop_size)
  assert spec.stem == c.stem and spec.head == c.head
  stage = spec.stages[0]
  assert len(stage.blocks) == 2 and stage.width == 16
  assert [b.stride for b in stage.blocks] == [2, 1]
  b = stage.blocks[1]
  assert (b.type, b.kernel, b.inner, b.se_ratio) == ("x2d", (1, 3, 3), inner_width(16, 3.0), 0.25)


def test_largest_point_is_the_widest_deepest_costliest_op():
  space = toys.space(ops=(toys.X2D, toys.R2P1D, toys.X3D))
  spec = space.to_arch(space.largest_point())
  for i, stage in enumerate(spec.stages):
    assert stage.width == max(space.config.stage_widths[i])
    assert len(stage.blocks) == space.config.max_depths[i]
    for b in stage.blocks:   # x3d's 3x3x3 depthwise costs more than r2plus1d's 1x3x3 + 3x1x1
      assert (b.type, b.inner, b.se_ratio) == ("x3d", inner_width(b.width, 3.0), 0.25)


# --------------------------------------------------------------------------- size and canonical
@pytest.mark.parametrize("make", [
    toys.tiny_space,
    lambda: toys.tiny_space(min_depths=(1, 2), max_depths=(1, 3), expansions=(1.5,), se_ratios=(0.0,)),
    lambda: toys.tiny_space(ops=(toys.X3D,), max_depths=(2, 2), stage_widths=((8,), (16, 24, 32))),
])
def test_size_counts_distinct_architectures_by_enumeration(make):
  """size() == the number of distinct ArchSpecs over every point, and canonical points are in
  one-to-one correspondence with them (equal architectures <-> equal canonical points)."""
  space = make()
  canonical_of_arch = {}
  n_points = 0
  for point in all_points(space):
    n_points += 1
    spec = space.to_arch(point)
    canon = space.canonical(point)
    assert space.canonical(canon) == canon                              # idempotent
    assert canonical_of_arch.setdefault(spec, canon) == canon          # equal archs -> equal points
  assert n_points == math.prod(d.size for d in space.decisions)
  assert space.size() == len(canonical_of_arch) < n_points
  assert len({tuple(sorted(c.items())) for c in canonical_of_arch.values()}) == len(canonical_of_arch)


def test_canonical_zeroes_exactly_the_inactive_decisions():
  space = toys.space()
  rng = np.random.default_rng(2)
  for _ in range(20):
    point = {d.label: int(rng.integers(1, d.size)) if d.size > 1 else 0 for d in space.decisions}
    canon = space.canonical(point)
    for label, value in canon.items():
      assert value == (point[label] if space.active(point, label) else 0), label
    depth = space.by_label["s1_depth"].choices[point["s1_depth"]]
    assert [space.active(point, f"s1_b{j + 1}_op") for j in range(2)] == [j < depth for j in range(2)]
    assert all(space.active(point, l) for l in ("s1_width", "s1_depth", "s2_width", "s2_depth", "s1_b1_se"))


# ------------------------------------------------------------------------------------ bad points
def test_bad_points_and_configs_are_rejected():
  space = toys.all_ops_space()
  point = toys.random_point(space, np.random.default_rng(0))
  with pytest.raises(SpecError, match="out of range"):
    space.to_arch({**point, "s1_width": 7})
  with pytest.raises(SpecError, match="unknown decision"):
    space.to_arch({**point, "s9_width": 0})
  with pytest.raises(SpecError, match="unknown block type"):
    SearchSpace(space_config(ops=(Op("nope", (3, 3, 3)),)))
  with pytest.raises(SpecError, match="min_depth"):
    SearchSpace(space_config(min_depths=(3, 2, 5, 3), max_depths=(2, 10, 25, 15)))


@pytest.mark.parametrize("change, message", [
    (lambda p: p.pop("s2_b1_se"), r"missing decisions \['s2_b1_se'\]"),
    (lambda p: p.update(s3_width=0), r"unknown decision 's3_width'"),
    (lambda p: p.update(s1_width=3), r"point\['s1_width'\] = 3 is out of range \[0, 3\)"),
    (lambda p: p.update(s2_b2_op=-1), r"point\['s2_b2_op'\] = -1 is out of range \[0, 3\)"),
    (lambda p: p.update(s1_depth=2), r"point\['s1_depth'\] = 2 is out of range \[0, 2\)"),
])
def test_check_point_names_the_bad_decision(change, message):
  space = toys.space()
  point = toys.random_point(space, np.random.default_rng(1))
  space.check_point(point)
  change(point)
  with pytest.raises(SpecError, match=message):
    space.check_point(point)
  with pytest.raises(SpecError, match=message):
    space.to_arch(point)


def test_point_of_names_what_the_space_cannot_represent():
  space = toys.space()
  spec = space.to_arch(toys.random_point(space, np.random.default_rng(3)), name="net")
  stage0 = spec.stages[0]

  def with_block0(**change):
    blocks = (dataclasses.replace(stage0.blocks[0], **change),) + stage0.blocks[1:]
    return spec.replace(stages=(dataclasses.replace(stage0, blocks=blocks),) + spec.stages[1:])

  cases = [
      (spec.replace(num_frames=8), r"net: input 8x32 differs from the space's 4x32"),
      (spec.replace(stem=StemSpec(width=16)), "stem/head differ"),
      (spec.replace(head=dataclasses.replace(spec.head, num_classes=6)), "stem/head differ"),
      (spec.replace(stages=spec.stages[:1]), "1 stages, the space has 2"),
      (with_block0(width=20), r"s1_width = 20 is not among the choices \(8, 12, 16\)"),
      (with_block0(inner=stage0.blocks[0].inner + 1), "s1_b1 inner width .* is no expansion"),
      (with_block0(stride=1), "s1_b1 width/stride is outside the skeleton"),
      (with_block0(type="csn"), r"s1_b1_op = Op\(type='csn'"),
      (with_block0(se_ratio=0.5), "s1_b1_se = 0.5 is not among the choices"),
  ]
  for bad, message in cases:
    with pytest.raises(SpecError, match=message):
      space.point_of(bad)


# ---------------------------------------------------------------------------------- SpaceConfig
def _section(**changes):
  section = config_lib.base_config().space
  section.num_frames, section.crop_size, section.num_classes = 8, 64, 10
  for k, v in changes.items():
    section[k] = v
  return section


def _head(cfg, **change):
  return dataclasses.replace(cfg, head=dataclasses.replace(cfg.head, **change))


# section key -> (new value, how the SpaceConfig built from the baseline section must change)
SECTION_FIELDS = {
    "num_frames": (6, lambda c: dataclasses.replace(c, num_frames=6)),
    "crop_size": (48, lambda c: dataclasses.replace(c, crop_size=48)),
    "stem_width": (16, lambda c: dataclasses.replace(c, stem=StemSpec(width=16))),
    "stage_widths": (((8, 16), (16,), (32,), (64, 96)),
                     lambda c: dataclasses.replace(c, stage_widths=((8, 16), (16,), (32,), (64, 96)))),
    "min_depths": ((1, 1, 1, 1), lambda c: dataclasses.replace(c, min_depths=(1, 1, 1, 1))),
    "max_depths": ((6, 11, 26, 16), lambda c: dataclasses.replace(c, max_depths=(6, 11, 26, 16))),
    "expansions": ((2.0, 4.0), lambda c: dataclasses.replace(c, expansions=(2.0, 4.0))),
    "se_ratios": ((0.0, 0.5), lambda c: dataclasses.replace(c, se_ratios=(0.0, 0.5))),
    "ops": (("csn:3x3x3", "x3d:5x3x3"),
            lambda c: dataclasses.replace(c, ops=(Op("csn", (3, 3, 3)), Op("x3d", (5, 3, 3))))),
    "conv5_width": (100, lambda c: _head(c, conv5_width=100)),
    "head_width": (200, lambda c: _head(c, head_width=200)),
    "dropout": (0.25, lambda c: _head(c, dropout=0.25)),
    "num_classes": (7, lambda c: _head(c, num_classes=7)),
    "input_frames": ((4, 8), lambda c: dataclasses.replace(c, input_frames=(4, 8))),
    "input_strides": ((1, 2), lambda c: dataclasses.replace(c, input_strides=(1, 2))),
    "input_crops": ((48, 64), lambda c: dataclasses.replace(c, input_crops=(48, 64))),
    "downsample": ((("local",),) * 4, lambda c: dataclasses.replace(c, downsample=(("local",),) * 4)),
    # Heads only with a stage that can choose 'local_global' (set on both sides of the comparison).
    "downsample_heads": (12, lambda c: dataclasses.replace(c, downsample_heads=12),
                         {"downsample": (("local",),) * 3 + (("local", "local_global"),), "downsample_heads": 6}),
}


def test_space_config_from_section_honours_every_field():
  section = _section()
  assert set(section.keys()) == set(SECTION_FIELDS), "a config.space field this test does not check"
  base = space_config_from_section(section)
  assert (base.num_frames, base.crop_size, base.head.num_classes) == (8, 64, 10)
  assert base.ops == ops_from_strings(section.ops) and base.stem == StemSpec(width=section.stem_width)
  for key, (value, expected, *extra) in SECTION_FIELDS.items():
    extra = extra[0] if extra else {}
    start = space_config_from_section(_section(**extra)) if extra else base
    changed = space_config_from_section(_section(**{**extra, key: value}))
    assert changed != start, key
    assert changed == expected(start), key
    SearchSpace(changed)  # still a valid space


def test_space_config_from_section_arguments_replace_the_sections_values():
  cfg = space_config_from_section(_section(), num_frames=4, crop_size=32, num_classes=3)
  assert (cfg.num_frames, cfg.crop_size, cfg.head.num_classes) == (4, 32, 3)


@pytest.mark.parametrize("key", ["num_frames", "crop_size", "num_classes"])
def test_space_config_from_section_rejects_minus_one_without_a_value(key):
  section = _section(**{key: -1})
  given = {k: 5 for k in ("num_frames", "crop_size", "num_classes") if k != key}
  with pytest.raises(SpecError, match=rf"config\.space\.{key} = -1 needs a value from the data \(pass {key}=\.\.\.\)"):
    space_config_from_section(section, **given)
  cfg = space_config_from_section(section, **given, **{key: 9})
  assert (cfg.head.num_classes if key == "num_classes" else getattr(cfg, key)) == 9
  # The base config's section has all three at -1: each must be given.
  with pytest.raises(SpecError, match=key):
    space_config_from_section(config_lib.base_config().space, **given)


def test_space_config_defaults_and_overrides():
  default = space_config()
  assert (default.num_frames, default.crop_size, default.head.num_classes) == (13, 160, 400)
  assert space_config(num_frames=4).num_frames == 4 and space_config(num_frames=4).crop_size == 160
  m = x3d_space_config("M")
  assert (m.num_frames, m.crop_size) == (zoo.X3D_VARIANTS["M"]["frames"], zoo.X3D_VARIANTS["M"]["crop"])


def test_space_config_json_round_trip():
  cfg = toys.all_ops_space().config
  again = space_config_from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
  assert again == cfg
  assert SearchSpace(again).labels == SearchSpace(cfg).labels
  with_axes = toys.space(sampling_stride=2, input_crops=(24, 32)).config
  assert space_config_from_dict(json.loads(json.dumps(dataclasses.asdict(with_axes)))) == with_axes
  older = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(cfg))).items()
           if k not in ("sampling_stride", "input_frames", "input_strides", "input_crops")}
  assert space_config_from_dict(older) == cfg          # written before the input axes existed


def test_ops_from_strings_parses_and_rejects():
  assert ops_from_strings(["x3d:3x5x5", "x2d:1X3X3"]) == (Op("x3d", (3, 5, 5)), Op("x2d", (1, 3, 3)))
  with pytest.raises(SpecError, match="op 'x3d-3x3x3' must look like 'x3d:3x3x3'"):
    ops_from_strings(["x3d-3x3x3"])
  with pytest.raises(SpecError, match="op 'x3d:3xtx3' must look like"):
    ops_from_strings(["x3d:3xtx3"])
  with pytest.raises(SpecError, match="unknown block type 'conv'"):
    ops_from_strings(["conv:3x3x3"])


@pytest.mark.parametrize("overrides, message", [
    (dict(min_depths=(1,)), "need one entry per stage, got 2, 1, 2"),
    (dict(stage_widths=(), min_depths=(), max_depths=()), "need one entry per stage, got 0"),
    (dict(min_depths=(2, 1), max_depths=(1, 2)), r"stage 0: need 1 <= min_depth <= max_depth, got 2, 1"),
    (dict(min_depths=(1, 0)), r"stage 1: need 1 <= min_depth <= max_depth, got 0, 2"),
    (dict(stage_widths=((8, 12), (16, 16))), r"stage_widths\[1\] must be distinct positive widths"),
    (dict(stage_widths=((0, 12), (16, 24))), r"stage_widths\[0\] must be distinct positive widths"),
    (dict(stage_widths=((), (16, 24))), r"stage_widths\[0\] must be distinct positive widths"),
    (dict(expansions=()), "expansions must be a non-empty list of distinct values"),
    (dict(expansions=(1.5, 1.5)), "expansions must be a non-empty list of distinct values"),
    (dict(expansions=(-1.0, 2.0)), "expansions must be positive"),
    (dict(se_ratios=(0.0, 0.0)), "se_ratios must be a non-empty list of distinct values"),
    (dict(se_ratios=(0.0, 1.5)), "se_ratio"),
    (dict(se_ratios=(-0.25, 0.0)), "se_ratio"),
    (dict(ops=(toys.X3D, toys.X3D)), "ops must be a non-empty list of distinct values"),
    (dict(ops=()), "ops must be a non-empty list of distinct values"),
    (dict(ops=(Op("nope", (3, 3, 3)),)), "unknown block type 'nope'"),
    (dict(ops=(Op("x3d", (2, 3, 3)),)), r"ops\[x3d_233\]\.kernel\[t\] must be odd"),
    (dict(ops=(Op("x2d", (3, 3, 3)),)), r"ops\[x2d_333\]: block type 'x2d' is 2D-only"),
    (dict(stem=StemSpec(width=0)), "stem.width must be a positive integer"),
    (dict(head=HeadSpec(num_classes=0)), "head.num_classes must be a positive integer"),
    (dict(num_frames=0), "num_frames"),
    (dict(crop_size=0), "crop_size"),
    (dict(in_channels=0), "in_channels"),
], ids=["depths_per_stage", "no_stage", "min_above_max", "min_depth_0", "duplicate_width", "zero_width",
        "no_width", "no_expansion", "duplicate_expansion", "negative_expansion", "duplicate_se", "se_above_1",
        "negative_se", "duplicate_op", "no_op", "unknown_op", "even_kernel", "x2d_temporal_kernel", "bad_stem",
        "bad_head", "num_frames_0", "crop_size_0", "in_channels_0"])
def test_bad_space_configs_are_rejected_naming_the_field(overrides, message):
  """At construction, not hours later when a derived point first uses the bad value."""
  with pytest.raises(SpecError, match=message):
    toys.space(**overrides)
