"""models/morph.py: a trained network's weights carried into a grown network of the same skeleton
compute the parent's logits exactly; new channels are trainable; narrower children keep the corner."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from autox3d_jax import labels
from autox3d_jax.models import builder, morph, zoo
from autox3d_jax.models.spec import SpecError
from autox3d_jax.models.zoo import X3DFactors, X3DSkeleton

SKELETON = X3DSkeleton(stem_base=4, stage_bases=(4, 8, 16), stage_repeats=(1, 2, 1), head_width=32, width_divisor=4)
PARENT = X3DFactors(frames=4, sampling_stride=2, crop=32, width=2.0, bottleneck=1.5, depth=1.0)


def spec_of(factors, classes=5):
  return zoo.from_factors(factors, classes, SKELETON)


def trained_like(spec, seed=0):
  """Variables with nothing at its initial value: random params and BN statistics (as if trained)."""
  variables = builder.init_variables(spec, jax.random.PRNGKey(seed))
  leaves, tree = jax.tree_util.tree_flatten(variables)
  rng = np.random.default_rng(seed + 100)     # numpy: one jax.random call per leaf shape is one compile each
  noisy = [np.asarray(l) + 0.3 * rng.standard_normal(l.shape, np.float32) for l in leaves]
  out = jax.tree_util.tree_unflatten(tree, noisy)
  out["batch_stats"] = jax.tree_util.tree_map(np.abs, out["batch_stats"])   # variances stay positive
  return out


def logits(spec, variables, clip):
  """Eval-mode logits, jitted: one compile instead of one per op shape."""
  return np.asarray(jax.jit(lambda v, x: builder.build(spec).apply(v, x, train=False))(variables, clip))


@pytest.mark.parametrize("change", [
    # One axis at a time with -m slow (CI): the three together cover each in the default run.
    pytest.param(dict(width=2.83), marks=pytest.mark.slow), pytest.param(dict(bottleneck=3.4), marks=pytest.mark.slow),
    pytest.param(dict(depth=2.2), marks=pytest.mark.slow), dict(width=2.83, bottleneck=3.4, depth=2.2),
    dict(frames=8, crop=44)])
def test_a_grown_child_computes_the_parents_logits(change):
  parent = spec_of(PARENT)
  child_factors = dataclasses.replace(PARENT, **change)
  child = spec_of(child_factors)
  variables = trained_like(parent)
  grown = morph.grow(parent, variables, child, jax.random.PRNGKey(7))
  # The child's clip: the weights do not depend on it, so the parent run at that clip must agree.
  clip = jax.random.normal(jax.random.PRNGKey(1), (2, child.num_frames, child.crop_size, child.crop_size, 3))
  np.testing.assert_allclose(logits(child, grown, clip), logits(parent.replace(num_frames=child.num_frames,
                                                                               crop_size=child.crop_size),
                                                                variables, clip), rtol=1e-4, atol=1e-5)
  # Something grew (except for the clip-only change), and the parent's tensors sit in the corner.
  old, new = flatten_dict(variables), flatten_dict(grown)
  if "width" in change or "bottleneck" in change or "depth" in change:
    assert len(new) > len(old) or any(new[p].shape != old[p].shape for p in old)
  for path, value in old.items():
    corner = tuple(slice(0, s) for s in value.shape)
    np.testing.assert_array_equal(new[path][corner], value, err_msg="/".join(path))


def test_new_channels_are_trainable_and_new_blocks_are_identities():
  parent = spec_of(PARENT)
  child = spec_of(dataclasses.replace(PARENT, width=2.83, depth=2.2))
  grown = morph.grow(parent, trained_like(parent), child, jax.random.PRNGKey(7))
  p = flatten_dict(grown["params"])
  # A new output channel of conv_a reads every input with random (not zero) weights.
  kernel = p[(labels.block(1, 0), "conv_a", "conv", "kernel")]
  old_out = parent.stages[1].blocks[0].inner
  assert np.abs(kernel[:, old_out:]).min() >= 0 and np.abs(kernel[:, old_out:]).max() > 0.01
  # ...while new inputs feed old outputs with zeros.
  old_in = parent.stages[0].width
  assert not np.any(kernel[old_in:, :old_out])
  # The zeroed cross-weights (new inputs -> old outputs) get a gradient, so the first step connects the
  # new channels (whose own weights are random) to the output: nothing stays dead.
  clip = jax.random.normal(jax.random.PRNGKey(1), (2,) + child.input_shape)
  model = builder.build(child)

  def loss(params):
    out = model.apply({"params": params, "batch_stats": grown["batch_stats"]}, clip, train=False)
    return jnp.sum(out ** 2)
  grads = flatten_dict(jax.jit(jax.grad(loss))(grown["params"]))
  fc1 = np.asarray(grads[("head", "fc1", "kernel")])
  old_conv5 = parent.head.conv5_width
  assert child.head.conv5_width > old_conv5 and np.abs(fc1[old_conv5:]).max() > 0
  assert not np.any(p[("head", "fc1", "kernel")][old_conv5:])
  # Blocks deeper than the parent's stage: the residual branch's last BN is zero.
  deep = [j for j in range(len(child.stages[1].blocks)) if j >= len(parent.stages[1].blocks)]
  assert deep
  for j in deep:
    assert not np.any(p[(labels.block(1, j), "bn_c", "scale")]) and not np.any(p[(labels.block(1, j), "bn_c", "bias")])


def test_a_narrower_child_keeps_the_leading_corner():
  parent = spec_of(dataclasses.replace(PARENT, width=2.83, depth=2.2))
  child = spec_of(PARENT)
  variables = trained_like(parent)
  shrunk = morph.grow(parent, variables, child, jax.random.PRNGKey(7))
  old, new = flatten_dict(variables), flatten_dict(shrunk)
  for path, value in new.items():
    np.testing.assert_array_equal(value, old[path][tuple(slice(0, s) for s in value.shape)], err_msg="/".join(path))
  logits(child, shrunk, jnp.zeros((1,) + child.input_shape))   # the shapes fit


def test_another_skeleton_is_refused_naming_the_block():
  parent = spec_of(PARENT)
  other = zoo.from_factors(PARENT, 5, dataclasses.replace(SKELETON, kernel=(1, 3, 3)))
  with pytest.raises(SpecError, match=r"block s1_b1 is x3d \(1, 3, 3\)"):
    morph.grow(parent, trained_like(parent), other, jax.random.PRNGKey(0))
  fewer = zoo.from_factors(PARENT, 5, dataclasses.replace(SKELETON, stage_bases=(4, 8), stage_repeats=(1, 2)))
  with pytest.raises(SpecError, match="2 stages"):
    morph.grow(parent, trained_like(parent), fewer, jax.random.PRNGKey(0))
