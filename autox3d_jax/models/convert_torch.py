"""Convert X3D checkpoints between PyTorch's layouts and the variables of `builder.build(spec)`.

Two PyTorch layouts of the same network are read (`LAYOUTS`, `detect_layout`):
- pytorchvideo's `create_x3d` (`pytorchvideo_key_map` below);
- SlowFast's `X3D` (facebookresearch/SlowFast@287ec00, slowfast/models/video_model_builder.py), whose
  `.pyth` checkpoints hold {'model_state', 'optimizer_state', 'epoch', 'cfg'}: the same tensors under
  other names (`_SLOWFAST_RENAMES`), plus a BatchNorm on every projection shortcut, where pytorchvideo
  (and we) have none on a shortcut that keeps the width (res2's first block). That BN is folded:
  y = a * (W x) + b with a = gamma / sqrt(var + eps), b = beta - a * mean becomes kernel columns
  scaled by a, and b added to the block's bn_c bias (the two branches are summed before the ReLU).
  Exact in inference; in training the folded shortcut is not batch-normalised, as in pytorchvideo.

`params_from_state_dict(state_dict, spec)` works on a plain dict of numpy arrays (no torch needed);
`load_torch_checkpoint(path)` imports torch lazily to turn a `.pyth` / `.pt` file into such a dict;
`pytorchvideo_state_dict(variables, spec)` is the inverse (our variables -> pytorchvideo's
state_dict) and `create_x3d_kwargs(spec)` the `create_x3d` arguments that build the same network.

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
window), not at a larger test crop. SlowFast's head does the same and, in eval mode, returns softmax
probabilities instead of logits.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Mapping

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from autox3d_jax import labels
from autox3d_jax.models.spec import ArchSpec, round_width


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


@dataclasses.dataclass(frozen=True)
class _Transform:
  """A torch tensor -> our variable (`forward`, checks the torch shape) and back (`inverse`)."""
  forward: Callable[[np.ndarray], np.ndarray]
  inverse: Callable[[np.ndarray], np.ndarray]


_POINTWISE_CONV = _Transform(_pointwise, lambda w: w.T[:, :, None, None, None])
_LINEAR = _Transform(_pointwise, lambda w: w.T)
_DEPTHWISE = _Transform(_depthwise, lambda w: w.transpose(3, 0, 1, 2)[:, None])
_FULL_CONV = _Transform(_full_conv, lambda w: w.transpose(4, 3, 0, 1, 2))
_IDENTITY = _Transform(_identity, _identity)

_BN_PARAMS = (("weight", "params", "scale"), ("bias", "params", "bias"))
_BN_STATS = (("running_mean", "batch_stats", "mean"), ("running_var", "batch_stats", "var"))
_BN_TORCH_NAMES = tuple(t for t, _, _ in _BN_PARAMS + _BN_STATS)
_IGNORED_SUFFIXES = (".num_batches_tracked",)

# (torch key, collection, our path, transform)
_Entry = tuple[str, str, tuple[str, ...], _Transform]

LAYOUTS = ("pytorchvideo", "slowfast")


def _bn(prefix: str, path: tuple[str, ...]) -> list[_Entry]:
  return [(f"{prefix}.{t}", col, path + (ours,), _IDENTITY) for t, col, ours in _BN_PARAMS + _BN_STATS]


def _has_shortcut(block, in_width: int) -> bool:
  return block.stride != 1 or in_width != block.width


def _x3d_blocks(spec: ArchSpec):
  """(stage index, block index, block, input width) of every block; only 'x3d' blocks have a
  PyTorch counterpart."""
  in_width = spec.stem.width
  for i, stage in enumerate(spec.stages):
    for j, block in enumerate(stage.blocks):
      if block.type != "x3d":
        raise CheckpointError(f"{labels.block(i, j)}: block type '{block.type}' has no pytorchvideo / SlowFast "
                              "counterpart (only 'x3d' blocks convert)")
      yield i, j, block, in_width
      in_width = block.width


def pytorchvideo_key_map(spec: ArchSpec) -> list[_Entry]:
  """Every (torch key, collection, our variable path, transform) that `spec` needs, in model order."""
  entries: list[_Entry] = [
      ("blocks.0.conv.conv_t.weight", "params", ("stem", "conv_xy", "kernel"), _FULL_CONV),
      ("blocks.0.conv.conv_xy.weight", "params", ("stem", "conv_t", "kernel"), _DEPTHWISE),
  ]
  entries += _bn("blocks.0.norm", ("stem", "bn"))
  for i, j, block, in_width in _x3d_blocks(spec):
    ours = (labels.block(i, j),)
    pre = f"blocks.{i + 1}.res_blocks.{j}"
    if _has_shortcut(block, in_width):
      entries.append((f"{pre}.branch1_conv.weight", "params", ours + ("shortcut", "conv", "kernel"),
                      _POINTWISE_CONV))
      if in_width != block.width:
        entries += _bn(f"{pre}.branch1_norm", ours + ("shortcut_bn",))
    b2 = f"{pre}.branch2"
    entries.append((f"{b2}.conv_a.weight", "params", ours + ("conv_a", "conv", "kernel"), _POINTWISE_CONV))
    entries += _bn(f"{b2}.norm_a", ours + ("bn_a",))
    entries.append((f"{b2}.conv_b.weight", "params", ours + ("conv_b", "kernel"), _DEPTHWISE))
    entries += _bn(f"{b2}.norm_b.0", ours + ("bn_b",))
    if block.se_ratio > 0:
      for t_idx, name in ((0, "reduce"), (2, "expand")):
        entries.append((f"{b2}.norm_b.1.block.{t_idx}.weight", "params", ours + ("se", name, "kernel"),
                        _POINTWISE_CONV))
        entries.append((f"{b2}.norm_b.1.block.{t_idx}.bias", "params", ours + ("se", name, "bias"),
                        _IDENTITY))
    entries.append((f"{b2}.conv_c.weight", "params", ours + ("conv_c", "conv", "kernel"), _POINTWISE_CONV))
    entries += _bn(f"{b2}.norm_c", ours + ("bn_c",))
  head = f"blocks.{len(spec.stages) + 1}"
  entries.append((f"{head}.pool.pre_conv.weight", "params", ("head", "conv5", "kernel"), _POINTWISE_CONV))
  entries += _bn(f"{head}.pool.pre_norm", ("head", "conv5_bn"))
  entries.append((f"{head}.pool.post_conv.weight", "params", ("head", "fc1", "kernel"), _POINTWISE_CONV))
  entries.append((f"{head}.proj.weight", "params", ("head", "classifier", "kernel"), _LINEAR))
  entries.append((f"{head}.proj.bias", "params", ("head", "classifier", "bias"), _IDENTITY))
  return entries


# pytorchvideo name -> SlowFast name (slowfast/models/{stem,resnet,head}_helper.py, operators.SE), in order.
_SLOWFAST_RENAMES = (
    (r"^blocks\.0\.conv\.conv_t\.", "s1.pathway0_stem.conv_xy."),
    (r"^blocks\.0\.conv\.conv_xy\.", "s1.pathway0_stem.conv."),
    (r"^blocks\.0\.norm\.", "s1.pathway0_stem.bn."),
    (r"\.branch1_conv\.", ".branch1."), (r"\.branch1_norm\.", ".branch1_bn."),
    (r"\.branch2\.conv_a\.", ".branch2.a."), (r"\.branch2\.norm_a\.", ".branch2.a_bn."),
    (r"\.branch2\.conv_b\.", ".branch2.b."), (r"\.branch2\.norm_b\.0\.", ".branch2.b_bn."),
    (r"\.branch2\.norm_b\.1\.block\.0\.", ".branch2.se.fc1."),
    (r"\.branch2\.norm_b\.1\.block\.2\.", ".branch2.se.fc2."),
    (r"\.branch2\.conv_c\.", ".branch2.c."), (r"\.branch2\.norm_c\.", ".branch2.c_bn."),
)


def _slowfast_key(key: str, num_stages: int) -> str:
  for pattern, repl in _SLOWFAST_RENAMES:
    key = re.sub(pattern, repl, key)
  head = f"blocks.{num_stages + 1}."
  if key.startswith(head):
    rest = key[len(head):]
    for old, new in (("pool.pre_conv.", "conv_5."), ("pool.pre_norm.", "conv_5_bn."), ("pool.post_conv.", "lin_5."),
                     ("proj.", "projection.")):
      if rest.startswith(old):
        return "head." + new + rest[len(old):]
    raise AssertionError(f"no SlowFast name for {key}")
  m = re.match(r"^blocks\.(\d+)\.res_blocks\.(\d+)\.(.*)$", key)
  if m:
    return f"s{int(m.group(1)) + 1}.pathway0_res{m.group(2)}.{m.group(3)}"
  return key


def slowfast_key_map(spec: ArchSpec) -> tuple[list[_Entry], list[tuple[str, str]]]:
  """(entries as in `pytorchvideo_key_map` under SlowFast's names, folds): each fold is (the prefix
  of a SlowFast shortcut BN our layout does not have, the label of the block it is folded into)."""
  entries = [(_slowfast_key(k, len(spec.stages)), col, path, t) for k, col, path, t in pytorchvideo_key_map(spec)]
  folds = [(f"s{i + 2}.pathway0_res{j}.branch1_bn", labels.block(i, j))
           for i, j, block, in_width in _x3d_blocks(spec) if _has_shortcut(block, in_width) and in_width == block.width]
  return entries, folds


def detect_layout(state_dict: Mapping[str, Any]) -> str:
  """'pytorchvideo' or 'slowfast', from the stem's key names; CheckpointError for anything else."""
  keys = list(_strip_prefix(state_dict))
  if any(k.startswith("s1.pathway0_stem.") for k in keys):
    return "slowfast"
  if any(k.startswith("blocks.0.") for k in keys):
    return "pytorchvideo"
  raise CheckpointError(f"not an X3D state_dict of a known layout: no pytorchvideo stem ('blocks.0.*') and no "
                        f"SlowFast stem ('s1.pathway0_stem.*'); first keys: {keys[:5]}")


def _expected_shapes(spec: ArchSpec) -> dict:
  """{'params': ..., 'batch_stats': ...} of ShapeDtypeStructs for `builder.build(spec)` (no compute)."""
  from autox3d_jax.models import builder  # pylint: disable=import-outside-toplevel
  return builder.variable_shapes(spec)


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Drop a DataParallel 'module.' prefix (when every key has it)."""
  keys = list(state_dict)
  if keys and all(k.startswith("module.") for k in keys):
    return {k[len("module."):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def params_from_state_dict(state_dict: Mapping[str, np.ndarray], spec: ArchSpec, layout: str = "auto",
                           dtype=np.float32) -> dict:
  """An X3D state_dict (numpy arrays) in `layout` ('pytorchvideo', 'slowfast' or 'auto': detected from
  the keys) -> {'params', 'batch_stats'} for `builder.build(spec)`.

  Strict: raises CheckpointError naming the first missing key, the first key whose shape does not fit
  the spec (with both shapes), or the keys left over once the spec is covered.
  """
  sd = _strip_prefix(state_dict)
  if layout == "auto":
    layout = detect_layout(sd)
  if layout == "pytorchvideo":
    entries, folds = pytorchvideo_key_map(spec), []
  elif layout == "slowfast":
    entries, folds = slowfast_key_map(spec)
  else:
    raise ValueError(f"layout must be 'auto' or one of {LAYOUTS}, got {layout!r}")
  expected = _expected_shapes(spec)
  want = {path: leaf.shape for path, leaf in flatten_dict(expected).items()}
  flat: dict = {}
  for key, col, path, transform in entries:
    full = (col,) + path
    if full not in want:  # the key map and the builder disagree: a bug here, not in the checkpoint.
      raise CheckpointError(f"internal: '{key}' maps to {'/'.join(full)}, which {spec.name} does not have")
    converted = _converted(sd, key, transform, want[full], f"{'/'.join(full)} of {spec.name}")
    flat[full] = np.ascontiguousarray(converted, dtype=dtype)
  unfilled = [k for k in want if k not in flat]
  if unfilled:
    raise CheckpointError(f"internal: {'/'.join(unfilled[0])} of {spec.name} has no {layout} key "
                          f"({len(unfilled)} unfilled)")
  out = unflatten_dict(flat)
  used = {e[0] for e in entries}
  for prefix, block in folds:
    _fold_shortcut_bn(sd, prefix, out["params"][block], dtype)
    used |= {f"{prefix}.{t}" for t in _BN_TORCH_NAMES}
  leftover = [k for k in sd if k not in used and not k.endswith(_IGNORED_SUFFIXES)]
  if leftover:
    hint = ("; SlowFast's X3D.BN_LIN5 = True (a BN after lin_5) has no counterpart in our head"
            if any(k.startswith("head.lin_5_bn.") for k in leftover) else "")
    raise CheckpointError(f"unexpected key '{leftover[0]}' in the state_dict ({len(leftover)} leftover "
                          f"keys not used by {spec.name}; first few: {leftover[:5]}){hint}")
  return out


def params_from_pytorchvideo(state_dict: Mapping[str, np.ndarray], spec: ArchSpec, dtype=np.float32) -> dict:
  """`params_from_state_dict` for pytorchvideo's layout."""
  return params_from_state_dict(state_dict, spec, "pytorchvideo", dtype)


def _converted(sd: Mapping[str, Any], key: str, transform: _Transform, shape, what: str) -> np.ndarray:
  """sd[key] through `transform`, checked against `shape` (CheckpointError naming the key otherwise)."""
  if key not in sd:
    raise CheckpointError(f"missing key '{key}' in the state_dict (needed for {what}); {len(sd)} keys given")
  value = np.asarray(sd[key])
  try:
    converted = transform.forward(value)
  except ValueError as e:
    raise CheckpointError(f"key '{key}': shape {value.shape} does not fit {what}: {e}") from None
  if tuple(converted.shape) != tuple(shape):
    raise CheckpointError(f"shape mismatch for key '{key}': got {tuple(value.shape)} -> {tuple(converted.shape)}, "
                          f"but {what} needs {tuple(shape)}")
  return converted


def _fold_shortcut_bn(sd: Mapping[str, Any], prefix: str, block: dict, dtype) -> None:
  """Fold the eval-mode BN `prefix` (after the block's shortcut conv) into the shortcut kernel (its
  scale) and the block's bn_c bias (its shift): shortcut + branch2 are summed before the ReLU."""
  kernel = block["shortcut"]["conv"]["kernel"]
  width = kernel.shape[1]
  bn = {t: _converted(sd, f"{prefix}.{t}", _IDENTITY, (width,), f"the shortcut BN folded into {prefix}")
        .astype(np.float64) for t in _BN_TORCH_NAMES}
  from autox3d_jax.models.layers import BN_EPSILON  # pylint: disable=import-outside-toplevel
  scale = bn["weight"] / np.sqrt(bn["running_var"] + BN_EPSILON)
  shift = bn["bias"] - scale * bn["running_mean"]
  block["shortcut"]["conv"]["kernel"] = np.ascontiguousarray(kernel * scale[None, :], dtype=dtype)
  block["bn_c"]["bias"] = np.ascontiguousarray(block["bn_c"]["bias"] + shift, dtype=dtype)


def pytorchvideo_state_dict(variables: Mapping, spec: ArchSpec) -> dict[str, np.ndarray]:
  """{'params', 'batch_stats'} of `builder.build(spec)` -> the state_dict (numpy float32 arrays, plus
  an int64 `num_batches_tracked` of 0 per BN) that pytorchvideo's `create_x3d(**create_x3d_kwargs(spec))`
  loads with `load_state_dict(..., strict=True)`. The inverse of `params_from_pytorchvideo`."""
  flat = flatten_dict(variables)
  out: dict[str, np.ndarray] = {}
  for key, col, path, transform in pytorchvideo_key_map(spec):
    out[key] = np.ascontiguousarray(transform.inverse(np.asarray(flat[(col,) + path])), dtype=np.float32)
    if key.endswith(".running_var"):
      out[key[:-len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
  return out


# pytorchvideo create_x3d's fixed structure (pytorchvideo/models/x3d.py, layers/utils.py).
_PV_STEM_DIM_IN = 12
_PV_STAGE_DEPTHS = (1, 2, 5, 3)


def _pv_round_repeats(repeats, multiplier):
  return repeats if not multiplier else int(math.ceil(multiplier * repeats))


def _pv_stage_dims() -> list[int]:
  dims = [_PV_STEM_DIM_IN]
  for _ in range(3):
    dims.append(round_width(dims[-1], 2.0, divisor=8))
  return dims


def _first_fitting(candidates, fits):
  for c in candidates:
    if fits(c):
      return c
  return None


def create_x3d_kwargs(spec: ArchSpec) -> dict:
  """The keyword arguments of pytorchvideo's `create_x3d` that build `spec`'s network (logits out:
  `head_activation` None), or CheckpointError naming what `create_x3d` cannot express (it takes one
  width, depth and bottleneck factor for the whole network, one kernel per stage, SE on every other
  block, 4 stages of stride 2)."""
  def no(reason):
    return CheckpointError(f"{spec.name} is not a network pytorchvideo's create_x3d builds: {reason}")
  blocks = list(_x3d_blocks(spec))   # raises for non-x3d blocks
  with_module = [labels.stage(i) for i, stage in enumerate(spec.stages) if stage.downsample]
  if with_module:
    raise no(f"stages {with_module} start with a downsampling module (create_x3d's first blocks stride)")
  if len(spec.stages) != 4:
    raise no(f"{len(spec.stages)} stages (create_x3d has 4)")
  if spec.stem.spatial_kernel != 3 or spec.stem.spatial_stride != 2:
    raise no(f"stem spatial kernel {spec.stem.spatial_kernel} / stride {spec.stem.spatial_stride} (create_x3d: 3 / 2)")
  widths = [stage.blocks[0].width for stage in spec.stages]
  depths = [len(stage.blocks) for stage in spec.stages]
  for i, j, block, _ in blocks:
    stage = spec.stages[i]
    first = stage.blocks[0]
    if block.width != first.width or block.inner != first.inner or block.kernel != first.kernel:
      raise no(f"{labels.block(i, j)} differs from the stage's first block in width, inner width or kernel")
    if block.stride != (2 if j == 0 else 1):
      raise no(f"{labels.block(i, j)} has stride {block.stride} (create_x3d: 2 on each stage's first block)")
    if block.se_ratio != (spec.stages[0].blocks[0].se_ratio if j % 2 == 0 else 0.0):
      raise no(f"{labels.block(i, j)} has SE ratio {block.se_ratio} (create_x3d: one ratio, on every other block)")
  dims = _pv_stage_dims()
  fits_width = lambda w: (round_width(_PV_STEM_DIM_IN, w) == spec.stem.width   # noqa: E731
                          and all(round_width(d, w) == wd for d, wd in zip(dims, widths)))
  width_factor = _first_fitting([wd / d for d, wd in zip(dims[::-1], widths[::-1])]
                                + [k / 100 for k in range(1, 1001)], fits_width)
  if width_factor is None:
    raise no(f"stem width {spec.stem.width} and stage widths {widths} come from no width_factor")
  fits_depth = lambda d: all(_pv_round_repeats(b, d) == n for b, n in zip(_PV_STAGE_DEPTHS, depths))  # noqa: E731
  depth_factor = _first_fitting([n / b for b, n in zip(_PV_STAGE_DEPTHS, depths)] + [k / 10 for k in range(1, 101)],
                                fits_depth)
  if depth_factor is None:
    raise no(f"stage depths {depths} come from no depth_factor")
  inners = [stage.blocks[0].inner for stage in spec.stages]
  fits_bottleneck = lambda b: all(int(b * w) == n for w, n in zip(widths, inners))  # noqa: E731
  bottleneck = _first_fitting([n / w for w, n in zip(widths, inners)], fits_bottleneck)
  if bottleneck is None:
    raise no(f"inner widths {inners} are no single bottleneck_factor times the widths {widths}")
  if spec.head.conv5_width != inners[-1]:
    raise no(f"head conv5 width {spec.head.conv5_width} (create_x3d: the last stage's inner width {inners[-1]})")
  return dict(input_clip_length=spec.num_frames, input_crop_size=spec.crop_size,
              model_num_class=spec.head.num_classes, dropout_rate=spec.head.dropout,
              width_factor=width_factor, depth_factor=depth_factor, bottleneck_factor=bottleneck,
              stem_conv_kernel_size=(spec.stem.temporal_kernel, 3, 3),
              stage_conv_kernel_size=tuple(tuple(stage.blocks[0].kernel) for stage in spec.stages),
              se_ratio=spec.stages[0].blocks[0].se_ratio, head_dim_out=spec.head.head_width,
              head_activation=None)


TRUST_PICKLE_FLAG = "trust_pickle"


def load_torch_checkpoint(path, trust_pickle: bool = False, name: str | None = None) -> dict[str, np.ndarray]:
  """A `.pyth` / `.pt` file (a path, or a binary file object called `name` in messages) -> {key: numpy
  array}. Imports torch lazily (only this needs it).

  Unwraps SlowFast / pytorchvideo's {'model_state': ...} (also 'state_dict' / 'model') wrappers and a
  DataParallel 'module.' prefix. Only tensors are kept.

  Safety: a checkpoint is a pickle, and unpickling arbitrary objects runs arbitrary code. By
  default the file is read with `torch.load(weights_only=True)`, whose unpickler accepts only
  tensors, containers and plain values -- what pytorchvideo state_dicts and SlowFast's
  {'epoch', 'model_state', 'optimizer_state', 'cfg' (a YAML string)} checkpoints hold. A file that
  needs anything else raises CheckpointError naming `trust_pickle`; `trust_pickle=True` loads it
  with the full unpickler (only for a file from a source you trust), with a warning.
  """
  where = name or path
  import pickle
  import warnings

  import torch  # pylint: disable=import-outside-toplevel
  if trust_pickle:
    warnings.warn(f"{where}: loading with the full unpickler ({TRUST_PICKLE_FLAG}=True): any code the file "
                  "holds runs now; do this only for checkpoints from a source you trust", stacklevel=2)
  try:
    obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
  except pickle.UnpicklingError as e:
    first = str(e).strip().splitlines()
    reason = next((line.strip() for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else "")
    raise CheckpointError(
        f"{where} holds objects other than tensors and plain values ({reason}); it was not loaded, since "
        f"unpickling them could run code. If the file comes from a source you trust, pass "
        f"{TRUST_PICKLE_FLAG}=True (config.pretrained.{TRUST_PICKLE_FLAG}=True in mode=import)") from None
  except (RuntimeError, EOFError, OSError) as e:
    if isinstance(e, OSError) and e.filename is not None:
      raise
    raise CheckpointError(f"{where} is not a readable PyTorch checkpoint (truncated or another format): "
                          f"{' '.join(str(e).split())[:200]}") from None
  for wrapper in ("model_state", "state_dict", "model"):
    if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
      obj = obj[wrapper]
      break
  if not isinstance(obj, Mapping):
    raise CheckpointError(f"{where}: expected a state_dict (or a dict with 'model_state'), got {type(obj)}")
  out = {k: v.detach().cpu().numpy() for k, v in obj.items() if isinstance(v, torch.Tensor)}
  if not out:
    raise CheckpointError(f"{where}: no tensors found (top-level keys: {list(obj)[:10]})")
  return _strip_prefix(out)
