"""Every read and write of a run's outputs (workdir files, checkpoints' directories, arch specs,
latency tables, report figures), local or remote: the one path layer of the package.

Paths are strings. A local one goes through `os`; a remote one (`gs://bucket/run`) through
`etils.epath`, the layer orbax uses for the checkpoints, so one workdir string works for
everything a run writes. Only gs:// is supported remotely (`check_scheme`): it is the scheme orbax's
array storage (tensorstore) and TensorFlow's file system (TensorBoard event files) both serve.

Writes are atomic: locally the bytes go to a temporary sibling that is then renamed over the
target, so a run killed mid-write leaves the previous file (or none), never half of one that a
rerun would trust; on GCS an object only appears once its upload completes, so it is written
directly (a rename there is a copy and a delete).
"""
from __future__ import annotations

import io
import json
import os
import re
from typing import Any

SUPPORTED_SCHEMES = ("gs",)   # remote schemes every layer of a run can write (module doc)


def is_remote(path: str) -> bool:
  """True for URLs such as gs://bucket/dir (anything with a scheme)."""
  return "://" in str(path)


def scheme(path: str) -> str | None:
  """'gs' for gs://bucket/dir, None for a local path."""
  return str(path).split("://", 1)[0] if is_remote(path) else None


# GCS bucket names: lowercase letters, digits, '-', '_' and '.', starting and ending with a letter or
# digit, 3-63 characters (up to 222 when dotted). tensorstore rejects any other at the first save.
_GCS_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


def check_scheme(path: str) -> str | None:
  """The scheme of `path` (None when local). ValueError naming what is supported when a remote
  path has another scheme (s3://, file://, a typo) or a gs:// path a bucket name GCS cannot have,
  so a run fails before it writes anything."""
  s = scheme(path)
  if s is not None and s not in SUPPORTED_SCHEMES:
    raise ValueError(f"{s}:// is not supported (supported: a local directory or "
                     f"{', '.join(f'{x}://bucket/path' for x in SUPPORTED_SCHEMES)})")
  if s == "gs":
    bucket = str(path).split("://", 1)[1].split("/", 1)[0]
    if not _GCS_BUCKET.fullmatch(bucket) or (len(bucket) > 63 and "." not in bucket):
      raise ValueError(f"{bucket!r} is not a valid GCS bucket name (3-63 lowercase letters, digits, "
                       f"'-', '_' and '.', starting and ending with a letter or digit)")
  return s


def _epath(path: str):
  from etils import epath
  return epath.Path(path)


def absolute(path: str) -> str:
  """A local path made absolute; a remote one unchanged (os.path would mangle 'gs://')."""
  return str(path) if is_remote(path) else os.path.abspath(path)


def join(*parts: str) -> str:
  """`parts` joined with '/': gs://b/run + search -> gs://b/run/search (os.path.join locally)."""
  parts = tuple(os.fspath(p) for p in parts)
  return str(_epath(parts[0]).joinpath(*parts[1:])) if is_remote(parts[0]) else os.path.join(*parts)


def makedirs(path: str) -> str:
  """Create directory `path` and its parents (no error when it exists); returns `path`."""
  if is_remote(path):
    _epath(path).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(path, exist_ok=True)
  return path


def exists(path: str) -> bool:
  return _epath(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  """True when `path` is a directory (on GCS: a prefix with objects under it, or a bucket)."""
  return _epath(path).is_dir() if is_remote(path) else os.path.isdir(path)


def listdir(path: str) -> list[str]:
  """The names (not paths) of the entries in directory `path`, sorted."""
  if is_remote(path):
    return sorted(p.name for p in _epath(path).iterdir())
  return sorted(os.listdir(path))


def parent(path: str) -> str:
  return str(_epath(path).parent) if is_remote(path) else os.path.dirname(os.path.abspath(path))


def remove(path: str) -> None:
  """Delete file `path` (FileNotFoundError when there is none)."""
  if is_remote(path):
    _epath(path).unlink()
  else:
    os.remove(path)


def write_bytes(path: str, data: bytes) -> str:
  """Write `data` to `path` atomically (see the module doc); creates the parent. Returns `path`."""
  path = os.fspath(path)
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


def save_figure(fig, path: str, **savefig_kwargs) -> str:
  """Render matplotlib figure `fig` into `path` (format from its extension, e.g. .png) through
  `write_bytes`: drawn in memory first, so a remote path gets one whole object and a local one
  is replaced atomically. Returns `path`."""
  path = os.fspath(path)
  buffer = io.BytesIO()
  fmt = os.path.splitext(path)[1].lstrip(".").lower() or None
  fig.savefig(buffer, format=fmt, **savefig_kwargs)
  return write_bytes(path, buffer.getvalue())


def read_bytes(path: str) -> bytes:
  path = os.fspath(path)
  if is_remote(path):
    return _epath(path).read_bytes()
  with open(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  path = os.fspath(path)
  if is_remote(path):
    return _epath(path).read_text()
  with open(path, encoding="utf-8") as f:
    return f.read()


def read_json(path: str) -> Any:
  return json.loads(read_text(path))
