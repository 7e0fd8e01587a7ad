"""Device mesh and shardings: batch on 'data', parameters replicated or split on 'model'.

The same code runs on 1 CPU device, 8 simulated devices, several processes and a TPU slice: only
the mesh shape changes. `pmap` is not used anywhere (legacy); everything is jit + NamedSharding.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(data: int | None = None, model: int = 1, devices=None) -> Mesh:
  """Mesh(('data', 'model')) over all devices, or the first data x model of `devices`."""
  if devices is not None:
    devices = list(devices)
    data = data or len(devices) // model
    if data < 1 or model < 1 or data * model > len(devices):
      raise ValueError(f"mesh data={data} x model={model} needs {data * model} devices, {len(devices)} given")
    return Mesh(np.asarray(devices[:data * model]).reshape(data, model), ("data", "model"))
  n = jax.device_count()
  data = data or n // model
  if data * model != n:
    raise ValueError(f"mesh data={data} x model={model} does not cover the {n} devices")
  try:
    from jax.sharding import AxisType
    return jax.make_mesh((data, model), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
  except (ImportError, TypeError, AttributeError):   # older jax: no axis types / make_mesh
    devices = np.asarray(jax.devices()).reshape(data, model)
    return Mesh(devices, ("data", "model"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def param_shardings(params, mesh: Mesh, min_size: int = 2 ** 18):
  """Logical rule: a large kernel whose output-channel (last) axis divides the 'model' axis is split
  along it (Megatron-style); everything else, and everything when 'model' is 1, is replicated."""
  model = mesh.shape["model"]

  def rule(x):
    if model > 1 and x.ndim >= 2 and x.size >= min_size and x.shape[-1] % model == 0:
      return NamedSharding(mesh, P(*([None] * (x.ndim - 1)), "model"))
    return replicated(mesh)

  return jax.tree_util.tree_map(rule, params)


def optimizer_shardings(opt_state, params, params_shardings, mesh: Mesh):
  """Shardings of an optax state: every subtree shaped like `params` (momenta, Adam moments)
  follows `params_shardings`; everything else (step counts, empty states) is replicated."""
  structure = jax.tree_util.tree_structure(params)
  shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(params)]
  rep = replicated(mesh)

  def like_params(node) -> bool:
    return (jax.tree_util.tree_structure(node) == structure
            and [np.shape(x) for x in jax.tree_util.tree_leaves(node)] == shapes)

  return jax.tree_util.tree_map(lambda node: params_shardings if like_params(node) else rep, opt_state,
                                is_leaf=like_params)


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Per-host numpy batch -> global jax.Arrays sharded on 'data' (multi-host safe)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
