"""paths.py: atomic writes (a write that dies midway leaves the previous file whole) and remote
paths passed through untouched (os.path would turn gs://b into cwd/gs:/b)."""
import json
import os

import pytest

from autox3d_jax import paths


def test_write_json_is_atomic_and_leaves_no_temporary(tmp_path, monkeypatch):
  target = str(tmp_path / "out" / "result.json")
  paths.write_json(target, {"steps": 6})                 # creates the parent
  assert paths.read_json(target) == {"steps": 6} and os.listdir(tmp_path / "out") == ["result.json"]

  def dies(src, dst):
    raise KeyboardInterrupt("killed between the write and the rename")
  monkeypatch.setattr(os, "replace", dies)
  with pytest.raises(KeyboardInterrupt):
    paths.write_json(target, {"steps": 30, "big": list(range(10_000))})
  assert json.loads(open(target).read()) == {"steps": 6}  # the old file, whole
  assert os.listdir(tmp_path / "out") == ["result.json"]  # and no half-written temporary


def test_remote_paths_are_not_mangled():
  assert paths.absolute("gs://bucket/run") == "gs://bucket/run"
  assert paths.absolute("rel") == os.path.join(os.getcwd(), "rel")
  assert paths.join("gs://bucket/run", "search", "arch.json") == "gs://bucket/run/search/arch.json"
  assert paths.is_remote("gs://b") and not paths.is_remote("/tmp/gs:/b")


def test_checkpointer_keeps_a_gs_directory_as_given(monkeypatch):
  import orbax.checkpoint as ocp
  from autox3d_jax.train import checkpoint
  seen = {}
  monkeypatch.setattr(ocp, "CheckpointManager", lambda directory, options: seen.setdefault("dir", directory))
  assert checkpoint.Checkpointer("gs://bucket/run/checkpoints").directory == "gs://bucket/run/checkpoints"
  assert seen["dir"] == "gs://bucket/run/checkpoints"
