"""Device mesh and shardings: the batch on 'data', parameters and their optimizer state split by
one rule (FSDP over 'data', tensor-parallel over 'model'), everything small replicated.

The same code runs on 1 CPU device, 8 simulated devices, several processes and a TPU slice: only
the mesh shape changes. `pmap` is not used anywhere (legacy); everything is jit + NamedSharding,
and XLA's SPMD partitioner inserts the all-gathers and reduce-scatters the rule implies.

The rule (`param_shardings`), for each parameter array of at least `min_size` elements:
  1. tensor-parallel: when the mesh's 'model' axis is > 1 and the array has >= 2 dimensions whose
     last one (a kernel's output features / channels) divides by it, that axis goes on 'model'
     (Megatron-style column split);
  2. FSDP (ZeRO-3 style): when `fsdp` and the 'data' axis is > 1, the largest remaining dimension
     that divides by the 'data' axis goes on 'data';
  3. anything else, and every array below `min_size`, is replicated.
Optimizer moments follow their parameters (`optimizer_shardings`); batch statistics, architecture
logits, their optimizer and scalars are replicated by the state builders (they are small).
`describe` reports which arrays the rule split and the bytes each device holds.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DEFAULT_MIN_SIZE = 2 ** 14   # elements; the default of config.mesh.shard_min_size


class MeshRuleError(ValueError):
  """The mesh and the parameters do not fit (e.g. a 'model' axis that divides no parameter)."""


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


@dataclasses.dataclass(frozen=True)
class ShardingRule:
  """The parameter rule's settings (see the module docstring): `fsdp` splits over 'data', arrays
  below `min_size` elements stay replicated. `from_config(cfg)` reads config.mesh."""
  fsdp: bool = True
  min_size: int = DEFAULT_MIN_SIZE

  @classmethod
  def from_config(cls, cfg) -> "ShardingRule":
    return cls(fsdp=bool(cfg.mesh.fsdp), min_size=int(cfg.mesh.shard_min_size))

  def spec(self, shape: tuple[int, ...], mesh: Mesh) -> P:
    """The PartitionSpec of an array of `shape` on `mesh`."""
    size = int(np.prod(shape)) if shape else 1
    axes: list = [None] * len(shape)
    if size < self.min_size:
      return P()
    model, data = mesh.shape["model"], mesh.shape["data"]
    if model > 1 and len(shape) >= 2 and shape[-1] % model == 0:
      axes[-1] = "model"
    if self.fsdp and data > 1:
      free = [a for a in range(len(shape)) if axes[a] is None and shape[a] % data == 0]
      if free:
        axes[max(free, key=lambda a: (shape[a], -a))] = "data"   # ties: the first
    return P(*axes) if any(axes) else P()


def param_shardings(params, mesh: Mesh, rule: ShardingRule | None = None, min_size: int | None = None):
  """NamedShardings of `params` (arrays or ShapeDtypeStructs) by `rule` (default: FSDP on, the
  default min size; `min_size=` overrides the rule's)."""
  rule = rule or ShardingRule()
  if min_size is not None:
    rule = dataclasses.replace(rule, min_size=min_size)
  return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, rule.spec(tuple(np.shape(x)), mesh)), params)


def check_model_axis(params, mesh: Mesh, rule: ShardingRule, key: str = "config.mesh.model") -> None:
  """Raise MeshRuleError when the mesh has a 'model' axis > 1 but the rule splits no parameter on
  it: the model devices would only duplicate work. Names `key` and what would fit."""
  model = mesh.shape["model"]
  if model <= 1:
    return
  specs = [rule.spec(tuple(np.shape(x)), mesh) for x in jax.tree_util.tree_leaves(params)]
  if any("model" in tuple(s) for s in specs):
    return
  lasts = sorted({int(np.shape(x)[-1]) for x in jax.tree_util.tree_leaves(params)
                  if np.ndim(x) >= 2 and np.size(x) >= rule.min_size})
  raise MeshRuleError(
      f"{key} = {model} divides no parameter: no kernel of >= {rule.min_size} elements (config.mesh.shard_min_size) "
      f"has an output dimension divisible by {model} (their output dimensions: {lasts[:12] or 'none'}); use "
      f"{key}=1 (data parallel + FSDP) or a model axis that divides the widths")


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


def bytes_per_device(tree, shardings) -> int:
  """Bytes one device holds of `tree` (arrays or ShapeDtypeStructs) placed with `shardings`."""
  total = 0
  for x, s in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(shardings)):
    shard = s.shard_shape(tuple(np.shape(x)))
    total += int(np.prod(shard)) * np.dtype(x.dtype).itemsize
  return total


def describe(params, shardings, opt_state=None, opt_shardings=None, limit: int = 20) -> str:
  """A start-up report of the rule's outcome: each split array (path, shape, spec, bytes per
  device; the largest `limit`), and the totals of params (+ optimizer state) per device against
  a replicated layout."""
  rows = []
  for (path, x), s in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(shardings)):
    if any(s.spec):
      nbytes = int(np.prod(s.shard_shape(tuple(np.shape(x))))) * np.dtype(x.dtype).itemsize
      rows.append((nbytes, jax.tree_util.keystr(path), tuple(np.shape(x)), s.spec))
  rows.sort(key=lambda r: -r[0])
  full = sum(int(np.size(x)) * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(params))
  per_device = bytes_per_device(params, shardings)
  lines = [f"parameters: {len(rows)} of {len(jax.tree_util.tree_leaves(params))} arrays split, "
           f"{per_device / 2**20:.2f} MiB per device of {full / 2**20:.2f} MiB"]
  if opt_state is not None:
    opt_full = sum(int(np.size(x)) * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(opt_state))
    lines.append(f"optimizer state: {bytes_per_device(opt_state, opt_shardings) / 2**20:.2f} MiB per device "
                 f"of {opt_full / 2**20:.2f} MiB")
  for nbytes, path, shape, spec in rows[:limit]:
    lines.append(f"  {path} {shape} -> {spec} ({nbytes / 1024:.1f} KiB per device)")
  if len(rows) > limit:
    lines.append(f"  ... and {len(rows) - limit} more split arrays")
  return "\n".join(lines)


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Per-host numpy batch -> global jax.Arrays sharded on 'data' (multi-host safe)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def to_host(tree):
  """`tree`'s arrays as numpy on this host, whole: arrays split across processes are gathered
  (`multihost_utils.process_allgather`, a collective every process must call in the same order)."""
  from jax.experimental import multihost_utils

  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree_util.tree_map(fetch, tree)
