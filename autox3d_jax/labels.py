"""Stable labels of network positions and search decisions, in one flax-free module.

Every log line, checkpoint key, cost table, plot and report names a block or a decision with these
strings, so they are built here and nowhere else. Stages and blocks count from 1 in labels (X3D's
res2..res5 are s1..s4) and from 0 in code:

  block(i, j)              's{i+1}_b{j+1}'            a block position (also the flax module name)
  width(i) / depth(i)      's{i+1}_width' / '_depth'  a stage's decisions
  downsample(i)            's{i+1}_downsample'        a stage's downsampling-module decision
  downsample_module(i)     's{i+1}_dsm'               that module (also the flax module name)
  stage_output(i)          's{i+1}_out'               stage i's output feature map (flax 'intermediates')
  block_decision(i, j, k)  's{i+1}_b{j+1}_{k}'        a block's decision of kind k (op, expansion, se)
  input_decision(k)        'input_{k}'                an input axis of the clip (frames, stride, crop)

Imports nothing of the project, so report, cost and config code can format a label without
loading flax or the model stack.
"""
from __future__ import annotations

BLOCK_KINDS = ("op", "expansion", "se")
STAGE_KINDS = ("width", "depth", "downsample")
INPUT_KINDS = ("frames", "stride", "crop")


def stage(i: int) -> str:
  """'s{i+1}': the label prefix of stage i (0-based)."""
  return f"s{i + 1}"


def block(i: int, j: int) -> str:
  """Label of block j (0-based) of stage i (0-based): 's{i+1}_b{j+1}'."""
  return f"s{i + 1}_b{j + 1}"


def width(i: int) -> str:
  """The width decision of stage i (0-based)."""
  return f"{stage(i)}_width"


def depth(i: int) -> str:
  """The depth decision of stage i (0-based)."""
  return f"{stage(i)}_depth"


def downsample(i: int) -> str:
  """The downsampling-module decision of stage i (0-based)."""
  return f"{stage(i)}_downsample"


def downsample_module(i: int) -> str:
  """The flax module name of stage i's downsampling module (0-based)."""
  return f"{stage(i)}_dsm"


def stage_output(i: int) -> str:
  """The name stage i's (0-based) output is sown under in the 'intermediates' collection."""
  return f"{stage(i)}_out"


def block_decision(i: int, j: int, kind: str) -> str:
  """A block's decision label; `kind` is one of BLOCK_KINDS."""
  if kind not in BLOCK_KINDS:
    raise ValueError(f"block decision kind must be one of {BLOCK_KINDS}, got {kind!r}")
  return f"{block(i, j)}_{kind}"


def input_decision(kind: str) -> str:
  """An input-axis decision label; `kind` is one of INPUT_KINDS."""
  if kind not in INPUT_KINDS:
    raise ValueError(f"input decision kind must be one of {INPUT_KINDS}, got {kind!r}")
  return f"input_{kind}"


def parse_block(label: str) -> tuple[int, int]:
  """(i, j), 0-based, of a block label 's{i+1}_b{j+1}' (the inverse of `block`); ValueError otherwise."""
  head, sep, tail = label.partition("_b")
  if not (sep and head.startswith("s") and head[1:].isdigit() and tail.isdigit()):
    raise ValueError(f"not a block label: {label!r}")
  return int(head[1:]) - 1, int(tail) - 1
