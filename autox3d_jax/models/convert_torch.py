"""Import a pytorchvideo X3D checkpoint into the variables of `builder.build(spec)`.

`params_from_pytorchvideo(state_dict, spec)` works on a plain dict of numpy arrays (no torch needed);
`load_torch_checkpoint(path)` imports torch lazily to turn a `.pyth` / `.pt` file into such a dict.

pytorchvideo `create_x3d` key layout (N = number of stages; i = 1..N; head = blocks.{N+1}):

  blocks.0.conv.conv_t.weight          (C, 3, 1, k, k)   spatial conv  -> stem/conv_xy/kernel
  blocks.0.conv.conv_xy.weight         (C, 1, kt, 1, 1)  temporal dw   -> stem/conv_t/kernel
      (pytorchvideo's Conv2plus1d stem passes the spatial conv as `conv_t` and the temporal one as
      `conv_xy`: the names are swapped, the order -- spatial then temporal -- is ours.)
  blocks.0.norm.*                                                        -> stem/bn
  blocks.i.res_blocks.j.branch1_conv.weight  (O, I, 1, 1, 1)             -> s{i}_b{j+1}/shortcut/conv
  blocks.i.res_blocks.j.branch1_norm.*                                   -> .../shortcut_bn
  blocks.i.res_blocks.j.branch2.conv_a.weight, norm_a.*                  -> .../conv_a/conv, bn_a
  blocks.i.res_blocks.j.branch2.conv_b.weight (C, 1, kt, kh, kw)         -> .../conv_b/kernel
  blocks.i.res_blocks.j.branch2.norm_b.0.*                               -> .../bn_b
  blocks.i.res_blocks.j.branch2.norm_b.1.block.{0,2}.{weight,bias}       -> .../se/{reduce,expand}
  blocks.i.res_blocks.j.branch2.conv_c.weight, norm_c.*                  -> .../conv_c/conv, bn_c
  blocks.{N+1}.pool.pre_conv.weight, pre_norm.*                          -> head/conv5, conv5_bn
  blocks.{N+1}.pool.post_conv.weight                                     -> head/fc1
  blocks.{N+1}.proj.{weight,bias}                                        -> head/classifier

BatchNorm: weight -> scale, bias -> bias, running_mean -> mean, running_var -> var
(`num_batches_tracked` is dropped). Conv weights are OIDHW; ours are Dense (I, O) for 1x1x1 convs,
(kt, kh, kw, C) for depthwise convs and DHWIO for the stem's full conv.

Head caveat: pytorchvideo's head averages with a fixed AvgPool3d window sized for the training clip
(frames, ceil(crop/32)^2) and then averages the sliding-window outputs; ours is a global mean. The two
agree exactly at the clip size the spec was built for (and whenever the final feature map equals the
window), not at a larger test crop.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from autox3d_jax import labels
from autox3d_jax.models.spec import ArchSpec


class CheckpointError(ValueError):
  """The state_dict does not fit the spec; the message names the first offending key."""


# ------------------------------------------------------------------------------------ transforms
def _pointwise(w: np.ndarray) -> np.ndarray:
  """(O, I, 1, 1, 1) conv or (O, I) linear -> Dense kernel (I, O)."""
  if w.ndim == 5:
    if w.shape[2:] != (1, 1, 1):
      raise ValueError(f"expected a 1x1x1 conv weight (O, I, 1, 1, 1), got {w.shape}")
    w = w[:, :, 0, 0, 0]
  if w.ndim != 2:
    raise ValueError(f"expected (O, I) or (O, I, 1, 1, 1), got {w.shape}")
  return w.T


def _depthwise(w: np.ndarray) -> np.ndarray:
  """(C, 1, kt, kh, kw) grouped conv -> (kt, kh, kw, C)."""
  if w.ndim != 5 or w.shape[1] != 1:
    raise ValueError(f"expected a depthwise conv weight (C, 1, kt, kh, kw), got {w.shape}")
  return w[:, 0].transpose(1, 2, 3, 0)


def _full_conv(w: np.ndarray) -> np.ndarray:
  """(O, I, kt, kh, kw) -> DHWIO (kt, kh, kw, I, O)."""
  if w.ndim != 5:
    raise ValueError(f"expected a conv weight (O, I, kt, kh, kw), got {w.shape}")
  return w.transpose(2, 3, 4, 1, 0)


def _identity(w: np.ndarray) -> np.ndarray:
  return w


_BN_PARAMS = (("weight", "params", "scale"), ("bias", "params", "bias"))
_BN_STATS = (("running_mean", "batch_stats", "mean"), ("running_var", "batch_stats", "var"))
_IGNORED_SUFFIXES = (".num_batches_tracked",)

# (torch key, collection, our path, transform)
_Entry = tuple[str, str, tuple[str, ...], Callable[[np.ndarray], np.ndarray]]


def _bn(prefix: str, path: tuple[str, ...]) -> list[_Entry]:
  return [(f"{prefix}.{t}", col, path + (ours,), _identity) for t, col, ours in _BN_PARAMS + _BN_STATS]


def pytorchvideo_key_map(spec: ArchSpec) -> list[_Entry]:
  """Every (torch key, collection, our variable path, transform) that `spec` needs, in model order."""
  entries: list[_Entry] = [
      ("blocks.0.conv.conv_t.weight", "params", ("stem", "conv_xy", "kernel"), _full_conv),
      ("blocks.0.conv.conv_xy.weight", "params", ("stem", "conv_t", "kernel"), _depthwise),
  ]
  entries += _bn("blocks.0.norm", ("stem", "bn"))
  in_width = spec.stem.width
  for i, stage in enumerate(spec.stages):
    for j, block in enumerate(stage.blocks):
      if block.type != "x3d":
        raise CheckpointError(f"{labels.block(i, j)}: block type '{block.type}' has no pytorchvideo "
                              "counterpart (only 'x3d' blocks can be imported)")
      ours = (labels.block(i, j),)
      pre = f"blocks.{i + 1}.res_blocks.{j}"
      if block.stride != 1 or in_width != block.width:
        entries.append((f"{pre}.branch1_conv.weight", "params", ours + ("shortcut", "conv", "kernel"),
                        _pointwise))
        if in_width != block.width:
          entries += _bn(f"{pre}.branch1_norm", ours + ("shortcut_bn",))
      b2 = f"{pre}.branch2"
      entries.append((f"{b2}.conv_a.weight", "params", ours + ("conv_a", "conv", "kernel"), _pointwise))
      entries += _bn(f"{b2}.norm_a", ours + ("bn_a",))
      entries.append((f"{b2}.conv_b.weight", "params", ours + ("conv_b", "kernel"), _depthwise))
      entries += _bn(f"{b2}.norm_b.0", ours + ("bn_b",))
      if block.se_ratio > 0:
        for t_idx, name in ((0, "reduce"), (2, "expand")):
          entries.append((f"{b2}.norm_b.1.block.{t_idx}.weight", "params", ours + ("se", name, "kernel"),
                          _pointwise))
          entries.append((f"{b2}.norm_b.1.block.{t_idx}.bias", "params", ours + ("se", name, "bias"),
                          _identity))
      entries.append((f"{b2}.conv_c.weight", "params", ours + ("conv_c", "conv", "kernel"), _pointwise))
      entries += _bn(f"{b2}.norm_c", ours + ("bn_c",))
      in_width = block.width
  head = f"blocks.{len(spec.stages) + 1}"
  entries.append((f"{head}.pool.pre_conv.weight", "params", ("head", "conv5", "kernel"), _pointwise))
  entries += _bn(f"{head}.pool.pre_norm", ("head", "conv5_bn"))
  entries.append((f"{head}.pool.post_conv.weight", "params", ("head", "fc1", "kernel"), _pointwise))
  entries.append((f"{head}.proj.weight", "params", ("head", "classifier", "kernel"), _pointwise))
  entries.append((f"{head}.proj.bias", "params", ("head", "classifier", "bias"), _identity))
  return entries


def _expected_shapes(spec: ArchSpec) -> dict:
  """{'params': ..., 'batch_stats': ...} of ShapeDtypeStructs for `builder.build(spec)` (no compute)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from autox3d_jax.models import builder  # pylint: disable=import-outside-toplevel
  model = builder.build(spec)
  x = jax.ShapeDtypeStruct((1,) + spec.input_shape, jnp.float32)
  return jax.eval_shape(lambda r, x: model.init(r, x, train=False), jax.random.PRNGKey(0), x)


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Drop a DataParallel 'module.' prefix (when every key has it)."""
  keys = list(state_dict)
  if keys and all(k.startswith("module.") for k in keys):
    return {k[len("module."):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def params_from_pytorchvideo(state_dict: Mapping[str, np.ndarray], spec: ArchSpec,
                             dtype=np.float32) -> dict:
  """pytorchvideo X3D state_dict (numpy arrays) -> {'params', 'batch_stats'} for `builder.build(spec)`.

  Strict: raises CheckpointError naming the first missing key, the first key whose shape does not fit
  the spec (with both shapes), or the keys left over once the spec is covered.
  """
  sd = _strip_prefix(state_dict)
  entries = pytorchvideo_key_map(spec)
  expected = _expected_shapes(spec)
  want = {(col,) + path: leaf.shape for col in ("params", "batch_stats")
          for path, leaf in _flatten(expected.get(col, {})).items()}
  out: dict = {"params": {}, "batch_stats": {}}
  filled = set()
  for key, col, path, transform in entries:
    if key not in sd:
      raise CheckpointError(f"missing key '{key}' in the state_dict (needed for {col}/{'/'.join(path)} "
                            f"of {spec.name}); {len(sd)} keys given")
    full = (col,) + path
    if full not in want:  # the key map and the builder disagree: a bug here, not in the checkpoint.
      raise CheckpointError(f"internal: '{key}' maps to {'/'.join(full)}, which {spec.name} does not have")
    value = np.asarray(sd[key])
    try:
      converted = transform(value)
    except ValueError as e:
      raise CheckpointError(f"key '{key}': shape {value.shape} does not fit {'/'.join(full)}: {e}") from None
    if tuple(converted.shape) != tuple(want[full]):
      raise CheckpointError(f"shape mismatch for key '{key}': got {tuple(value.shape)} -> "
                            f"{tuple(converted.shape)}, but {'/'.join(full)} of {spec.name} needs "
                            f"{tuple(want[full])}")
    _set(out[col], path, np.ascontiguousarray(converted, dtype=dtype))
    filled.add(full)
  unfilled = [k for k in want if k not in filled]
  if unfilled:
    raise CheckpointError(f"internal: {'/'.join(unfilled[0])} of {spec.name} has no pytorchvideo key "
                          f"({len(unfilled)} unfilled)")
  used = {e[0] for e in entries}
  leftover = [k for k in sd if k not in used and not k.endswith(_IGNORED_SUFFIXES)]
  if leftover:
    raise CheckpointError(f"unexpected key '{leftover[0]}' in the state_dict ({len(leftover)} leftover "
                          f"keys not used by {spec.name}; first few: {leftover[:5]})")
  return out


TRUST_PICKLE_FLAG = "trust_pickle"


def load_torch_checkpoint(path: str, trust_pickle: bool = False) -> dict[str, np.ndarray]:
  """A `.pyth` / `.pt` file -> {key: numpy array}. Imports torch lazily (only this needs it).

  Unwraps SlowFast / pytorchvideo's {'model_state': ...} (also 'state_dict' / 'model') wrappers and a
  DataParallel 'module.' prefix. Only tensors are kept.

  Safety: a checkpoint is a pickle, and unpickling arbitrary objects runs arbitrary code. By
  default the file is read with `torch.load(weights_only=True)`, whose unpickler accepts only
  tensors, containers and plain values -- what pytorchvideo state_dicts and SlowFast's
  {'epoch', 'model_state', 'optimizer_state', 'cfg' (a YAML string)} checkpoints hold. A file that
  needs anything else raises CheckpointError naming `trust_pickle`; `trust_pickle=True` loads it
  with the full unpickler (only for a file from a source you trust), with a warning.
  """
  import pickle
  import warnings

  import torch  # pylint: disable=import-outside-toplevel
  if trust_pickle:
    warnings.warn(f"{path}: loading with the full unpickler ({TRUST_PICKLE_FLAG}=True): any code the file "
                  "holds runs now; do this only for checkpoints from a source you trust", stacklevel=2)
  try:
    obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
  except pickle.UnpicklingError as e:
    first = str(e).strip().splitlines()
    reason = next((line.strip() for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else "")
    raise CheckpointError(
        f"{path} holds objects other than tensors and plain values ({reason}); it was not loaded, since "
        f"unpickling them could run code. If the file comes from a source you trust, pass "
        f"{TRUST_PICKLE_FLAG}=True (--{TRUST_PICKLE_FLAG})") from None
  except (RuntimeError, EOFError, OSError) as e:
    if isinstance(e, OSError) and e.filename is not None:
      raise
    raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or another format): "
                          f"{' '.join(str(e).split())[:200]}") from None
  for wrapper in ("model_state", "state_dict", "model"):
    if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
      obj = obj[wrapper]
      break
  if not isinstance(obj, Mapping):
    raise CheckpointError(f"{path}: expected a state_dict (or a dict with 'model_state'), got {type(obj)}")
  out = {k: v.detach().cpu().numpy() for k, v in obj.items() if isinstance(v, torch.Tensor)}
  if not out:
    raise CheckpointError(f"{path}: no tensors found (top-level keys: {list(obj)[:10]})")
  return _strip_prefix(out)
