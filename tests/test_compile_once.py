"""run_once compiles initialisers at XLA's fastest level on the CPU: the same values, up to float32
round-off in the initialisers' float transforms (the random bits are integer arithmetic)."""
import jax
import jax.numpy as jnp
import numpy as np

from autox3d_jax.cpu.compile_once import run_once
from autox3d_jax.models import builder, zoo


def test_fast_compiled_init_matches_the_default_compiled_init():
  spec = zoo.x3d("XS", num_classes=7, num_frames=4, crop_size=32, depths=(1, 2), widths=(8, 16))
  model = builder.build(spec)
  x = jnp.zeros((1, 4, 32, 32, 3), jnp.float32)
  init = lambda r: model.init(r, x, train=False)
  key = jax.random.PRNGKey(3)
  fast = run_once(init, key)
  default = jax.jit(init)(key)
  leaves_fast, tree_fast = jax.tree_util.tree_flatten(fast)
  leaves_default, tree_default = jax.tree_util.tree_flatten(default)
  assert tree_fast == tree_default and len(leaves_fast) > 20
  for a, b in zip(leaves_fast, leaves_default):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  # builder.init_variables is run_once of the same init.
  via_builder = builder.init_variables(spec, key, num_frames=4, crop_size=32)
  for a, b in zip(jax.tree_util.tree_leaves(via_builder), leaves_fast):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
