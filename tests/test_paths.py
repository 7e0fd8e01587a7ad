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


def test_schemes_supported_and_rejected():
  assert paths.scheme("gs://b/run") == "gs" and paths.scheme("/tmp/run") is None
  assert paths.check_scheme("gs://bkt/run") == "gs" and paths.check_scheme("rel/run") is None
  for url in ("s3://b/run", "foo://x", "file:///tmp/run"):
    with pytest.raises(ValueError, match=r"is not supported \(supported: a local directory or gs://bucket/path\)"):
      paths.check_scheme(url)
  assert paths.check_scheme("gs://my-bucket_1.example/a/b") == "gs"
  for bucket in ("b", "Upper", "-dash", "end-", "a" * 64, "sp ace"):
    with pytest.raises(ValueError, match=f"'{bucket}' is not a valid GCS bucket name"):
      paths.check_scheme(f"gs://{bucket}/run")


def test_local_directory_helpers(tmp_path):
  root = str(tmp_path / "run")
  assert not paths.exists(root) and not paths.isdir(root)
  assert paths.makedirs(paths.join(root, "search")) == os.path.join(root, "search")
  paths.makedirs(paths.join(root, "search"))             # again: no error
  paths.write_bytes(paths.join(root, "search", "b.bin"), b"\x00\x01")
  paths.write_text(paths.join(root, "a.txt"), "é")
  assert paths.listdir(root) == ["a.txt", "search"] and paths.listdir(tmp_path / "run" / "search") == ["b.bin"]
  assert paths.isdir(root) and not paths.isdir(paths.join(root, "a.txt")) and paths.exists(paths.join(root, "a.txt"))
  assert paths.read_bytes(paths.join(root, "search", "b.bin")) == b"\x00\x01"
  assert paths.read_text(paths.join(root, "a.txt")) == "é"
  assert paths.parent(paths.join(root, "a.txt")) == root
  paths.remove(paths.join(root, "a.txt"))
  assert paths.listdir(root) == ["search"]
  with pytest.raises(FileNotFoundError):
    paths.remove(paths.join(root, "a.txt"))
  assert paths.join(tmp_path, "x") == os.path.join(str(tmp_path), "x")   # PathLike parts


def test_save_figure_writes_the_format_of_the_extension_whole(tmp_path, monkeypatch):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(2, 2))
  FigureCanvasAgg(fig)
  fig.subplots().plot([0, 1], [1, 0])
  png = paths.save_figure(fig, str(tmp_path / "plots" / "a.png"))    # creates the folder
  assert png == str(tmp_path / "plots" / "a.png")
  assert paths.read_bytes(png).startswith(b"\x89PNG\r\n\x1a\n")
  assert paths.read_bytes(paths.save_figure(fig, tmp_path / "a.svg")).lstrip().startswith(b"<?xml")
  assert sorted(os.listdir(tmp_path)) == ["a.svg", "plots"] and os.listdir(tmp_path / "plots") == ["a.png"]

  def dies(src, dst):
    raise KeyboardInterrupt("killed between the drawing and the rename")
  before = paths.read_bytes(png)
  monkeypatch.setattr(os, "replace", dies)
  fig.subplots().plot([0, 1], [0, 1])
  with pytest.raises(KeyboardInterrupt):
    paths.save_figure(fig, png)
  assert paths.read_bytes(png) == before and os.listdir(tmp_path / "plots") == ["a.png"]


def test_remote_paths_go_through_epath(monkeypatch):
  """Each helper hands a gs:// path to etils.epath (tests/test_gcs.py checks the real round trip
  against a GCS emulator); none reaches os."""
  calls = []

  class FakePath:
    def __init__(self, p):
      self.p = str(p)
      self.name = self.p.rsplit("/", 1)[-1]

    def __str__(self):
      return self.p

    @property
    def parent(self):
      return FakePath(self.p.rsplit("/", 1)[0])

    def _record(self, what, result=None):
      calls.append((what, self.p))
      return result

    def joinpath(self, *parts):
      return FakePath("/".join((self.p,) + parts))

    def mkdir(self, parents=False, exist_ok=False):
      return self._record("mkdir")

    def exists(self):
      return self._record("exists", True)

    def is_dir(self):
      return self._record("is_dir", True)

    def iterdir(self):
      return self._record("iterdir", [FakePath(self.p + "/b"), FakePath(self.p + "/a")])

    def write_bytes(self, data):
      return self._record("write_bytes")

    def read_bytes(self):
      return self._record("read_bytes", b"{}")

    def read_text(self):
      return self._record("read_text", "{}")

    def unlink(self):
      return self._record("unlink")
  monkeypatch.setattr(paths, "_epath", FakePath)
  for name in ("replace", "makedirs", "remove", "listdir"):
    monkeypatch.setattr(os, name, lambda *a, **k: pytest.fail("os used on a gs:// path"))
  assert paths.join("gs://b/run", "search", "x.json") == "gs://b/run/search/x.json"
  assert paths.listdir("gs://b/run") == ["a", "b"] and paths.isdir("gs://b/run") and paths.exists("gs://b/run")
  paths.write_json("gs://b/run/x.json", {})
  paths.remove("gs://b/run/x.json")
  assert paths.read_json("gs://b/run/x.json") == {} and paths.read_bytes("gs://b/run/x.json") == b"{}"
  assert ("mkdir", "gs://b/run") in calls and ("write_bytes", "gs://b/run/x.json") in calls
  assert ("unlink", "gs://b/run/x.json") in calls
