"""Small fixtures for tests and examples: tiny moving-digits builds and hand-made clip-record datasets.

Everything is built once per process into a temporary directory (tiny configs take seconds).
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

import numpy as np


@functools.lru_cache(maxsize=None)
def tiny_data_dir() -> str:
  """A tfds data_dir holding `moving_digits/motion_tiny` and `moving_digits/appearance_tiny`, built
  through the registry's plug-in table (as training's build-if-missing does)."""
  from autox3d_jax.data import registry

  root = tempfile.mkdtemp(prefix="autox3d_tiny_tfds_")
  atexit.register(shutil.rmtree, root, ignore_errors=True)
  for config in ("motion_tiny", "appearance_tiny"):
    registry.builder_for(f"moving_digits/{config}")(root)  # tiny: rendered in-process (1 worker)
  return root


def write_records_dataset(directory: str, *, name: str = "toy", num_videos: int = 12, num_frames: int = 10,
                          size: int = 32, num_classes: int = 3, num_shards: int = 2,
                          flip_invariant: bool = True, split: str = "train", seed: int = 0,
                          corrupt: dict[int, bytes] | None = None) -> str:
  """Clip-record dataset of `num_videos` moving-digit clips (labels = index % num_classes).
  `corrupt` maps a video position to bytes that replace all its frames (e.g. garbage)."""
  from autox3d_jax.data import records
  from autox3d_jax.projects.moving_digits import digits  # the demo project's clip renderer

  spec = digits.ClipSpec(task="motion", num_frames=num_frames, height=size, width=size)
  class_names = [f"class_{i}" for i in range(num_classes)]
  meta = records.DatasetMeta.load(directory) if records.has_meta(directory) else records.DatasetMeta(
      name=name, class_names=class_names, flip_invariant=flip_invariant, image_format="jpeg", fps=10.0,
      short_side=size)
  with records.ShardedWriter(directory, split, num_shards, num_videos) as w:
    for i in range(num_videos):
      frames, _ = digits.generate_clip(spec, "train" if split == "train" else "validation", i, seed)
      encoded = digits.encode_jpeg(frames)
      if corrupt and i in corrupt:
        encoded = [corrupt[i]] * len(encoded)
      label = i % num_classes
      w.write(records.encode_clip(encoded, label=label, video_id=f"{split}_{i:04d}", fps=10.0,
                                  label_name=class_names[label], dataset=name, num_classes=num_classes,
                                  height=size, width=size), i)
  meta.splits[split] = records.SplitMeta(files=w.filenames, shard_lengths=w.lengths)
  meta.save(directory)
  return directory


def truncate_file(path: str, keep_fraction: float = 0.6) -> None:
  """Cuts a file short (as an interrupted copy would)."""
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(int(size * keep_fraction))


def encode_video(path: str, frames: np.ndarray, fps: int = 10, codec: str | None = None) -> str:
  """Writes uint8 (T, H, W, 3) frames as a real video file with PyAV (codec from the extension:
  .mp4 -> libx264, .webm -> libvpx, .avi -> mpeg4)."""
  import av
  from fractions import Fraction

  ext = os.path.splitext(path)[1].lower()
  codec = codec or {".mp4": "libx264", ".webm": "libvpx", ".avi": "mpeg4", ".mkv": "libx264"}[ext]
  t, h, w, _ = frames.shape
  with av.open(path, mode="w") as container:
    stream = container.add_stream(codec, rate=Fraction(fps))
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return path


def square_or_die(x: int) -> int:
  """For tests of `parallel.ordered_map`: kills its worker process on negative input."""
  if x < 0:
    os._exit(3)
  return x * x
