"""Depthwise 3D conv: the fast CPU paths must match the lax grouped conv (forward and both grads).

The lax reference is slow on CPU, so shapes are tiny; everything is jitted so that each case
compiles once. Errors are max-abs error / max-abs reference (float32 on both sides: both are
~1e-7 from the exact value, far below the 1e-5 bound).
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autox3d_jax.cpu import depthwise as CD
from autox3d_jax.ops import depthwise as D

TOL = 1e-5
C = 8


def _rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _random(shape, seed, dtype=np.float32):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


@contextlib.contextmanager
def _callback_transport(transport):
  """Force the host-callback transport ('buffer' | 'pure' | None = default) while tracing."""
  old = os.environ.pop(D.CALLBACK_ENV_VAR, None)
  if transport:
    os.environ[D.CALLBACK_ENV_VAR] = transport
  try:
    yield
  finally:
    os.environ.pop(D.CALLBACK_ENV_VAR, None)
    if old is not None:
      os.environ[D.CALLBACK_ENV_VAR] = old


@functools.lru_cache(maxsize=None)
def _fwd_and_vjp(impl: str, stride: int, transport: str | None = None):
  """jit(x, k, g) -> (y, dL/dx, dL/dk) for cotangent g, through `impl` (traced under `transport`)."""
  def run(x, k, g):
    with _callback_transport(transport):
      y, vjp = jax.vjp(lambda x, k: D.depthwise_conv3d(x, k, stride, impl), x, k)
      return (y, *vjp(g))
  return jax.jit(run)


def _case(x_shape, kernel, stride, seed=0):
  x = _random(x_shape, seed)
  k = _random(tuple(kernel) + (x_shape[-1],), seed + 1)
  g = _random(D.output_shape(x_shape, k.shape, stride), seed + 2)
  return x, k, g


def _assert_matches_lax(impl, x, k, g, stride, transports=(None,)):
  ref = _fwd_and_vjp("lax", stride)(x, k, g)
  for transport in transports:
    got = _fwd_and_vjp(impl, stride, transport)(x, k, g)
    for name, a, b in zip(("forward", "dx", "dkernel"), got, ref):
      assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape, a.dtype, b.dtype)
      err = _rel_err(a, b)
      assert err < TOL, (f"{impl}/{transport} {name}: rel err {err:.2e} "
                         f"(kernel {k.shape[:3]}, stride {stride})")


# 'buffer' runs forward, dx and dkernel in numba; 'pure' runs forward and dx in XLA, dkernel in
# numba (see D.execution_plan). Both are checked: which one a run gets depends on the device count.
BOTH = ("buffer", "pure")


def test_transport_plans():
  with _callback_transport("buffer"):
    assert D.execution_plan("numba") == ("numba", "numba", "numba")
  with _callback_transport("pure"):
    assert D.execution_plan("numba") == ("xla", "xla", "numba")
  assert D.execution_plan("shift") == ("xla", "xla", "xla")


# Every kernel of the search space (kt x k x k, incl. kt x 1 x 1 and 1 x k x k) at both strides.
# H=9 is odd (stride 2 -> ceil(9/2)=5); W=10 is even, so both parities are covered in one case.
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kt,k", list(itertools.product([1, 3, 5], [1, 3, 5])))
def test_numba_matches_lax(kt, k, stride):
  x, kern, g = _case((2, 5, 9, 10, C), (kt, k, k), stride)
  _assert_matches_lax("numba", x, kern, g, stride, BOTH)


@pytest.mark.parametrize("x_shape,kernel", [
    ((1, 3, 7, 7, C), (3, 3, 3)), ((2, 4, 11, 6, C), (5, 5, 5)), ((1, 2, 3, 5, C), (5, 5, 5)),
    ((1, 2, 5, 3, C), (1, 3, 3)), ((1, 1, 2, 1, C), (3, 3, 3)), ((1, 3, 1, 1, C), (5, 1, 1))])
def test_numba_odd_sizes_stride2(x_shape, kernel):
  """Odd H/W at stride 2, including inputs smaller than the kernel."""
  x, k, g = _case(x_shape, kernel, 2, seed=3)
  _assert_matches_lax("numba", x, k, g, 2, BOTH)


@pytest.mark.parametrize("kernel,stride", [((3, 3, 3), 2), ((5, 1, 1), 1), ((1, 5, 5), 1)])
def test_shift_matches_lax(kernel, stride):
  """The all-XLA fallback (used when numba is missing)."""
  x, k, g = _case((2, 5, 9, 9, C), kernel, stride, seed=4)
  _assert_matches_lax("shift", x, k, g, stride)


@pytest.mark.parametrize("kernel,stride", [((3, 3, 3), 2), ((5, 1, 1), 1), ((1, 5, 5), 1), ((3, 3, 3), 1)])
def test_frames_matches_lax(kernel, stride):
  """The exporters' form (2-D depthwise convs per temporal tap), odd sizes included, with grads."""
  x, k, g = _case((2, 5, 9, 9, C), kernel, stride, seed=6)
  _assert_matches_lax("frames", x, k, g, stride)


def test_forced_impl_wins_over_the_environment_and_nests(monkeypatch):
  monkeypatch.setenv(D.ENV_VAR, "shift")
  assert D.resolved_impl() == "shift"
  with D.forced_impl("frames"):
    assert D.resolved_impl() == "frames"
    with D.forced_impl("lax"):
      assert D.resolved_impl() == "lax"
    assert D.resolved_impl() == "frames"
    assert D.resolved_impl("shift") == "shift"     # an explicit impl is not overridden
  assert D.resolved_impl() == "shift"
  with pytest.raises(ValueError, match="unknown depthwise impl 'conv'"):
    with D.forced_impl("conv"):
      pass


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize("stride", [1, 2])
def test_vmap_over_x_and_kernel(monkeypatch, transport, stride):
  """Supernet groups: vmap over both x and kernel (one kernel per group), forward and grads."""
  monkeypatch.setenv(D.CALLBACK_ENV_VAR, transport)
  groups, x_shape, kernel = 3, (2, 4, 9, 8, C), (3, 3, 3)
  xs = _random((groups,) + x_shape, 10)
  ks = _random((groups,) + kernel + (C,), 11)
  gs = _random((groups,) + D.output_shape(x_shape, kernel + (C,), stride), 12)

  def fwd_vjp(impl):
    def one(x, k, g):
      y, vjp = jax.vjp(lambda x, k: D.depthwise_conv3d(x, k, stride, impl), x, k)
      return (y, *vjp(g))
    return jax.jit(jax.vmap(one))

  got, ref = fwd_vjp("numba")(xs, ks, gs), fwd_vjp("lax")(xs, ks, gs)
  for a, b in zip(got, ref):
    assert a.shape == b.shape
    assert _rel_err(a, b) < TOL
  # The per-group gradient really is per group (not summed over the vmapped axis).
  per_group = [_fwd_and_vjp("lax", stride)(xs[i], ks[i], gs[i])[2] for i in range(groups)]
  assert _rel_err(got[2], jnp.stack(per_group)) < TOL


@pytest.mark.parametrize("transport", BOTH)
def test_vmap_over_kernel_only_and_nested(monkeypatch, transport):
  """An unbatched operand arrives with a size-1 axis; nested vmaps give several leading axes."""
  monkeypatch.setenv(D.CALLBACK_ENV_VAR, transport)
  x, k, _ = _case((1, 3, 6, 6, C), (3, 3, 3), 1, seed=20)
  ks = jnp.stack([k, 2 * k, -k])
  loss = lambda impl: (lambda x, k: jnp.sum(jnp.sin(D.depthwise_conv3d(x, k, 1, impl))))
  grads = lambda impl: jax.jit(jax.vmap(jax.grad(loss(impl), argnums=(0, 1)), in_axes=(None, 0)))
  for a, b in zip(grads("numba")(x, ks), grads("lax")(x, ks)):
    assert _rel_err(a, b) < TOL
  xs = jnp.stack([x, x + 1])
  nested = lambda impl: jax.jit(jax.vmap(jax.vmap(lambda x, k: D.depthwise_conv3d(x, k, 2, impl),
                                                  in_axes=(None, 0)), in_axes=(0, None)))
  assert _rel_err(nested("numba")(xs, ks), nested("lax")(xs, ks)) < TOL


def test_eager_and_grad_of_scalar_loss():
  """Works outside jit too, and under jax.grad of a scalar loss."""
  x, k, _ = _case((2, 3, 7, 7, C), (3, 3, 3), 2, seed=30)
  y = D.depthwise_conv3d(x, k, 2)
  assert y.shape == (2, 3, 4, 4, C)
  loss = lambda impl: (lambda x, k: jnp.mean(D.depthwise_conv3d(x, k, 2, impl) ** 2))
  ref = jax.jit(jax.grad(loss("lax"), argnums=(0, 1)))(x, k)
  for transport in BOTH:
    with _callback_transport(transport):
      got = jax.grad(loss("numba"), argnums=(0, 1))(x, k)
    for a, b in zip(got, ref):
      assert _rel_err(a, b) < TOL


def test_bfloat16_runs_and_is_close():
  x, k, g = _case((2, 4, 9, 9, C), (3, 3, 3), 2, seed=40)
  xb, kb, gb = (a.astype(jnp.bfloat16) for a in (x, k, g))
  ref = _fwd_and_vjp("lax", 2)(*(a.astype(jnp.float32) for a in (xb, kb, gb)))
  for transport in BOTH:
    for a, b in zip(_fwd_and_vjp("numba", 2, transport)(xb, kb, gb), ref):
      assert a.dtype == jnp.bfloat16
      assert _rel_err(a, b) < 1e-2  # bf16 rounding of the result only (computed in float32)


def test_auto_selects_fast_path_on_cpu(monkeypatch):
  monkeypatch.delenv(D.ENV_VAR, raising=False)
  assert jax.default_backend() == "cpu"
  # The test session simulates 8 devices: 'auto' stays in XLA there (no host callbacks).
  assert jax.device_count() == 8 and D.resolved_impl("auto") == "shift"
  monkeypatch.setattr(D.jax, "device_count", lambda *a: 1)
  assert D.resolved_impl("auto") == "numba"
  assert D.resolved_impl() == "numba"
  assert D.execution_plan("auto")[2] == "numba"
  assert D.resolved_impl("lax") == "lax"


def test_env_override(monkeypatch):
  for name in ("lax", "shift", "numba"):
    monkeypatch.setenv(D.ENV_VAR, name)
    assert D.resolved_impl("auto") == name
  monkeypatch.setenv(D.ENV_VAR, "shift")
  assert D.resolved_impl("lax") == "lax"  # an explicit impl wins over the override
  monkeypatch.setenv(D.ENV_VAR, "bogus")
  with pytest.raises(ValueError):
    D.resolved_impl("auto")


def test_without_numba_falls_back_with_warning(monkeypatch, caplog):
  monkeypatch.setattr(CD, "_numba_kernels", lambda: None)
  D._warn_once.cache_clear()
  with caplog.at_level(logging.WARNING, logger=D.__name__):
    assert D.resolved_impl("numba") == "shift"
    assert D.resolved_impl("auto") == "shift"
  assert sum("numba unavailable" in r.getMessage() for r in caplog.records) == 1  # once
  D._warn_once.cache_clear()


def test_public_names_and_lazy_numba():
  """The op's module keeps its public names (the CPU ones re-exported from cpu.depthwise), and
  importing it -- as a TPU host does -- imports neither numba nor anything that needs it."""
  for name in ("depthwise_conv3d", "depthwise_conv3d_lax", "output_shape", "execution_plan",
               "resolved_impl", "IMPLS", "ENV_VAR", "CALLBACK_ENV_VAR", "host_transport",
               "numba_available"):
    assert hasattr(D, name), name
  assert D.host_transport is CD.host_transport and D.CALLBACK_ENV_VAR == CD.CALLBACK_ENV_VAR
  script = ("import sys; import autox3d_jax.ops.depthwise, autox3d_jax.cpu.depthwise; "
            "assert 'numba' not in sys.modules, 'numba imported eagerly'; print('LAZY_OK')")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                        timeout=120, check=False)
  assert "LAZY_OK" in proc.stdout, proc.stderr[-2000:]


def test_bad_arguments():
  x, k, _ = _case((1, 2, 4, 4, C), (3, 3, 3), 1)
  with pytest.raises(ValueError):
    D.depthwise_conv3d(x, k, stride=3)
  with pytest.raises(ValueError):
    D.depthwise_conv3d(x, k[..., :4])
  with pytest.raises(ValueError):
    D.depthwise_conv3d(x, k, impl="nope")


_SHARDED_SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from autox3d_jax.ops import depthwise as D
    assert jax.device_count() == 8 and D.host_transport() == "pure", D.host_transport()
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.standard_normal((8, 3, 9, 9, 8)).astype(np.float32),
                       NamedSharding(mesh, P("data")))
    k = jnp.asarray(rng.standard_normal((3, 3, 3, 8)).astype(np.float32))
    for stride in (1, 2):
      def loss(impl):
        return lambda x, k: jnp.sum(jnp.tanh(D.depthwise_conv3d(x, k, stride, impl)))
      vg = lambda impl: jax.jit(jax.value_and_grad(loss(impl), argnums=(0, 1)))(x, k)
      (l1, (dx1, dk1)), (l0, (dx0, dk0)) = vg("numba"), vg("lax")
      rel = lambda a, b: float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
      assert abs(float(l1 - l0)) <= 1e-5 * abs(float(l0)) + 1e-5, (l1, l0)
      assert rel(dx1, dx0) < 1e-5 and rel(dk1, dk0) < 1e-5, (rel(dx1, dx0), rel(dk1, dk0))
    print("SHARDED_OK")
""")


def test_sharded_over_8_cpu_devices():
  """Under jit with inputs sharded over 8 simulated CPU devices (pure_callback gathers)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT], env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert "SHARDED_OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
