"""Reads and writes of run outputs (workdir files, arch specs, latency tables), local or remote.

Paths are strings; a remote one (`gs://bucket/run`) is handled by `etils.epath`, the layer orbax
uses for the checkpoints, so one workdir string works for everything a run writes. Writes are
atomic: locally the text goes to a temporary sibling that is then renamed over the target, so a
run killed mid-write leaves the previous file (or none), never half of one that a rerun would
trust; on GCS an object only appears once its upload completes, so it is written directly (a
rename there is a copy and a delete).
"""
from __future__ import annotations

import json
import os
from typing import Any


def is_remote(path: str) -> bool:
  """True for URLs such as gs://bucket/dir (anything with a scheme)."""
  return "://" in str(path)


def _epath(path: str):
  from etils import epath
  return epath.Path(path)


def absolute(path: str) -> str:
  """A local path made absolute; a remote one unchanged (os.path would mangle 'gs://')."""
  return str(path) if is_remote(path) else os.path.abspath(path)


def join(*parts: str) -> str:
  return str(_epath(parts[0]).joinpath(*parts[1:])) if is_remote(parts[0]) else os.path.join(*parts)


def makedirs(path: str) -> str:
  if is_remote(path):
    _epath(path).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(path, exist_ok=True)
  return path


def exists(path: str) -> bool:
  return _epath(path).exists() if is_remote(path) else os.path.exists(path)


def parent(path: str) -> str:
  return str(_epath(path).parent) if is_remote(path) else os.path.dirname(os.path.abspath(path))


def write_bytes(path: str, data: bytes) -> str:
  """Write `data` to `path` atomically (see the module doc); creates the parent."""
  makedirs(parent(path))
  if is_remote(path):   # one object upload: it appears whole or not at all (object stores rename by copying)
    _epath(path).write_bytes(data)
    return path
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def write_text(path: str, text: str) -> str:
  return write_bytes(path, text.encode("utf-8"))


def write_json(path: str, data: Any, indent: int | None = 1, **kwargs) -> str:
  return write_text(path, json.dumps(data, indent=indent, **kwargs))


def read_text(path: str) -> str:
  if is_remote(path):
    return _epath(path).read_text()
  with open(path, encoding="utf-8") as f:
    return f.read()


def read_json(path: str) -> Any:
  return json.loads(read_text(path))
