"""train/train_loop.py's step in mixed precision: train.dtype=bfloat16 computes in bf16 and keeps
parameters, BN statistics, the optimizer state and the loss in float32."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autox3d_jax import config as config_lib
from autox3d_jax.models import zoo
from autox3d_jax.train import train_loop

import toys


def _steps(dtype: str, n: int = 4):
  cfg = toys.set_keys(config_lib.base_config(), {"train.dtype": dtype, "train.optimizer.lr": 0.05,
                                                 "train.optimizer.warmup_steps": 0})
  spec = zoo.x3d("XS", num_classes=3, num_frames=4, crop_size=16, depths=(1, 1), widths=(8, 16))
  model, tx, step = train_loop.build_train_step(cfg, spec)
  state = train_loop.init_state(cfg, spec, tx)
  jitted = jax.jit(step)
  losses = []
  for batch in toys.batches(n, batch=8, classes=3, shape=(4, 16, 16, 3)):
    state, metrics = jitted(state, batch)
    losses.append(jax.device_get(metrics["loss"]))
  batch = next(toys.batches(1, batch=8, classes=3, shape=(4, 16, 16, 3)))
  return jax.device_get(state), np.array(losses), str(jax.make_jaxpr(step)(state, batch))


@pytest.mark.slow   # in CI's slow selection: bfloat16 is emulated on this CPU (about 15 s)
def test_bf16_train_step_stays_close_to_float32_and_keeps_float32_state():
  """Four steps from the same init: losses within 5% of float32's (bf16 keeps 8 mantissa bits);
  every floating leaf of the state float32; the program's matmuls take bf16 operands."""
  state32, losses32, program32 = _steps("float32")
  state16, losses16, program16 = _steps("bfloat16")
  assert "bf16[" not in program32 and "bf16[" in program16
  assert losses16.dtype == np.float32 and np.all(np.isfinite(losses16))
  np.testing.assert_allclose(losses16, losses32, rtol=0.05)
  assert not np.allclose(losses16, losses32, rtol=0, atol=0), "bf16 changed nothing: not computing in bf16"
  floats = {x.dtype for x in jax.tree_util.tree_leaves(state16) if jnp.issubdtype(x.dtype, jnp.floating)}
  assert floats == {np.dtype(np.float32)}
