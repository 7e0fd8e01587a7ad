"""search/derive.py: a point -> its ArchSpec and the standalone network's variables cut out of the
supernet. (That the derived network then computes the one-hot supernet's logits is the supernet's
invariant: tests/test_supernet.py.)"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toys

from autox3d_jax.models import builder
from autox3d_jax.search import derive as derive_lib
from autox3d_jax.search import supernet as sn


@pytest.fixture(scope="module")
def supernet():
  """toys.space() (ops x3d, x2d: one family with a mixed kernel; r2plus1d: another) and its
  supernet variables filled with distinct random values, so a wrong cut cannot match by chance."""
  space = toys.space()
  variables = sn.init_supernet(space, jax.random.PRNGKey(0))
  rng = np.random.default_rng(1)
  return space, jax.tree_util.tree_map(lambda x: rng.normal(size=x.shape).astype(x.dtype), variables)


def points(space, n, seed):
  rng = np.random.default_rng(seed)
  return ([toys.random_point(space, rng) for _ in range(n)] + [space.largest_point()]
          + [{d.label: 0 for d in space.decisions}])


def standalone_shapes(spec):
  x = jnp.zeros((1,) + spec.input_shape, jnp.float32)
  return jax.eval_shape(lambda: builder.build(spec).init(jax.random.PRNGKey(0), x, train=False))


def test_inherited_variables_have_the_standalone_networks_structure_shapes_and_dtypes(supernet):
  space, variables = supernet
  for point in points(space, 8, seed=0):
    spec, child = derive_lib.derive(space, point, variables, name="child")
    assert spec == space.to_arch(point, "child")
    expected = standalone_shapes(spec)
    assert jax.tree_util.tree_structure(child) == jax.tree_util.tree_structure(expected)
    for got, want in zip(jax.tree_util.tree_leaves(child), jax.tree_util.tree_leaves(expected)):
      assert (got.shape, got.dtype) == (want.shape, want.dtype)
    assert set(child) == {"params", "batch_stats"}


def test_every_inherited_array_is_a_leading_block_of_a_supernet_array_of_its_position(supernet):
  space, variables = supernet
  for point in points(space, 4, seed=1):
    _, child = derive_lib.derive(space, point, variables)
    for collection, tree in child.items():
      for name, sub in tree.items():
        sources = jax.tree_util.tree_leaves(variables[collection][name])
        for path, leaf in jax.tree_util.tree_leaves_with_path(sub):
          cut = tuple(slice(0, s) for s in leaf.shape)
          matches = [s for s in sources if s.ndim == leaf.ndim and all(a >= b for a, b in zip(s.shape, leaf.shape))
                     and np.array_equal(np.asarray(s)[cut], leaf)]
          assert len(matches) == 1, (collection, name, jax.tree_util.keystr(path))


def test_blocks_inherit_from_the_chosen_family_and_kernel(supernet):
  space, variables = supernet
  params, stats = variables["params"], variables["batch_stats"]
  base = {d.label: 0 for d in space.decisions}
  base.update(s1_width=1, s1_b1_expansion=2, s1_b1_se=1)    # width 12, inner int(3.0 * 12) = 36
  inner = 36
  for op_index, family, kernel_label, conv_b_shape in [(0, "x3d", "x3d_333", (3, 3, 3)),
                                                        (1, "x3d", "x2d_133", (1, 3, 3)),
                                                        (2, "r2plus1d", "r2plus1d_333", (3, 1, 1))]:
    _, child = derive_lib.derive(space, {**base, "s1_b1_op": op_index}, variables)
    block, block_stats = child["params"]["s1_b1"], child["batch_stats"]["s1_b1"]
    source = params["s1_b1"][family]
    assert block["conv_b"]["kernel"].shape == conv_b_shape + (inner,)
    np.testing.assert_array_equal(block["conv_b"]["kernel"], source["conv_b"][kernel_label][..., :inner])
    np.testing.assert_array_equal(block["bn_b"]["scale"], source["bn_b"]["scale"][:inner])
    np.testing.assert_array_equal(block_stats["bn_b"]["mean"], stats["s1_b1"][family]["bn_b"]["mean"][:inner])
    np.testing.assert_array_equal(block["se"]["reduce"]["kernel"],
                                  source["se"]["reduce"]["kernel"][:inner, :block["se"]["reduce"]["kernel"].shape[1]])
    # The skeleton (shared by every family): input width 8 (the stem), output width 12.
    np.testing.assert_array_equal(block["conv_a"]["conv"]["kernel"], params["s1_b1"]["conv_a"]["conv"]["kernel"][:8, :inner])
    np.testing.assert_array_equal(block["conv_c"]["conv"]["kernel"], params["s1_b1"]["conv_c"]["conv"]["kernel"][:inner, :12])
    np.testing.assert_array_equal(block["shortcut"]["conv"]["kernel"], params["s1_b1"]["shortcut"]["conv"]["kernel"][:8, :12])
    if family == "r2plus1d":
      np.testing.assert_array_equal(block["conv_b_spatial"]["kernel"],
                                    source["conv_b_spatial"][kernel_label][..., :inner])
  # The stem and the head are the supernet's (the head's input is cut to the last stage's width).
  np.testing.assert_array_equal(child["params"]["stem"]["conv_xy"]["kernel"], params["stem"]["conv_xy"]["kernel"])
  np.testing.assert_array_equal(child["params"]["head"]["conv5"]["kernel"],
                                params["head"]["conv5"]["kernel"][:space.config.stage_widths[1][0]])


def test_skipped_blocks_are_not_inherited(supernet):
  space, variables = supernet
  point = {d.label: 0 for d in space.decisions}       # depth index 0: one block per stage
  _, child = derive_lib.derive(space, point, variables)
  assert {"s1_b1", "s2_b1"} <= set(child["params"]) and not {"s1_b2", "s2_b2"} & set(child["params"])


def test_a_supernet_too_small_for_the_point_is_a_clear_error(supernet):
  space, variables = supernet
  shrunk = jax.tree_util.tree_map(lambda x: x, variables)
  shrunk["params"]["stem"]["conv_xy"]["kernel"] = variables["params"]["stem"]["conv_xy"]["kernel"][..., :4]
  with pytest.raises(ValueError, match=r"cannot cut \(1, 3, 3, 3, 8\) out of supernet array \(1, 3, 3, 3, 4\)"):
    derive_lib.derive(space, space.largest_point(), shrunk)
