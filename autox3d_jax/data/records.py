"""Clip records: TFRecord shards of `tf.train.SequenceExample`, one video per record (DMVR convention).

Layout of one record::

    context:
      clip/label/index    int64   class index (-1: unlabelled)
      clip/label/string   bytes   class name
      clip/id             bytes   video id (unique within the dataset)
      clip/fps            float   frame rate of the stored frames
      clip/source         bytes   where the video came from (path), informational
      image/format        bytes   b"jpeg" (or b"png")
      image/height        int64   frame height (0 if unknown)
      image/width         int64   frame width
      dataset/name        bytes
      dataset/num_classes int64
    feature_lists:
      image/encoded       bytes   one encoded frame per time step

A dataset directory holds the shards ``{split}.tfrecord-{i:05d}-of-{n:05d}`` and a
``dataset_info.json`` (`DatasetMeta`) that names the classes, whether labels are invariant to a
horizontal flip, and the number of records in every shard (what per-host sharding and exact
resume need). `parse_clip` is the single TF-side parser of these records; the pipeline samples the
clip's frame indices while frames are still encoded strings and decodes only those.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
from typing import Iterable, Iterator, Sequence

FRAMES_KEY = "image/encoded"
LABEL_KEY = "clip/label/index"
LABEL_NAME_KEY = "clip/label/string"
ID_KEY = "clip/id"
FPS_KEY = "clip/fps"
SOURCE_KEY = "clip/source"
FORMAT_KEY = "image/format"
HEIGHT_KEY = "image/height"
WIDTH_KEY = "image/width"
DATASET_KEY = "dataset/name"
NUM_CLASSES_KEY = "dataset/num_classes"

META_FILENAME = "dataset_info.json"
_META_VERSION = 1


def shard_filename(split: str, index: int, num_shards: int) -> str:
  return f"{split}.tfrecord-{index:05d}-of-{num_shards:05d}"


# ------------------------------------------------------------------------------------ writing
def encode_clip(frames: Sequence[bytes], *, label: int, video_id: str, fps: float, label_name: str = "",
                dataset: str = "", num_classes: int = 0, height: int = 0, width: int = 0,
                image_format: str = "jpeg", source: str = "") -> bytes:
  """Serialized `tf.train.SequenceExample` of one clip. `frames`: encoded images (JPEG bytes)."""
  from tensorflow.core.example import example_pb2

  def b(v) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode("utf-8")

  seq = example_pb2.SequenceExample()
  ctx = seq.context.feature
  ctx[LABEL_KEY].int64_list.value.append(int(label))
  ctx[LABEL_NAME_KEY].bytes_list.value.append(b(label_name))
  ctx[ID_KEY].bytes_list.value.append(b(video_id))
  ctx[FPS_KEY].float_list.value.append(float(fps))
  ctx[SOURCE_KEY].bytes_list.value.append(b(source))
  ctx[FORMAT_KEY].bytes_list.value.append(b(image_format))
  ctx[HEIGHT_KEY].int64_list.value.append(int(height))
  ctx[WIDTH_KEY].int64_list.value.append(int(width))
  ctx[DATASET_KEY].bytes_list.value.append(b(dataset))
  ctx[NUM_CLASSES_KEY].int64_list.value.append(int(num_classes))
  fl = seq.feature_lists.feature_list[FRAMES_KEY]
  for frame in frames:
    fl.feature.add().bytes_list.value.append(bytes(frame))
  return seq.SerializeToString()


def decode_clip_proto(serialized: bytes) -> dict:
  """Python-side parse (protobuf, no TF graph): for inspection and tests."""
  from tensorflow.core.example import example_pb2

  seq = example_pb2.SequenceExample.FromString(serialized)
  ctx = seq.context.feature
  return {
      "frames": [f.bytes_list.value[0] for f in seq.feature_lists.feature_list[FRAMES_KEY].feature],
      "label": int(ctx[LABEL_KEY].int64_list.value[0]),
      "label_name": ctx[LABEL_NAME_KEY].bytes_list.value[0].decode(),
      "video_id": ctx[ID_KEY].bytes_list.value[0].decode(),
      "fps": float(ctx[FPS_KEY].float_list.value[0]),
      "source": ctx[SOURCE_KEY].bytes_list.value[0].decode(),
      "format": ctx[FORMAT_KEY].bytes_list.value[0].decode(),
      "height": int(ctx[HEIGHT_KEY].int64_list.value[0]),
      "width": int(ctx[WIDTH_KEY].int64_list.value[0]),
      "dataset": ctx[DATASET_KEY].bytes_list.value[0].decode(),
      "num_classes": int(ctx[NUM_CLASSES_KEY].int64_list.value[0]),
  }


class ShardedWriter:
  """Writes serialized records of one split into `num_shards` files: the input at position p (of
  `expected`) goes to shard p*k//n, so shards hold contiguous, even runs of the input even when
  some inputs are skipped. Tracks per-shard lengths for `DatasetMeta`."""

  def __init__(self, directory: str, split: str, num_shards: int, expected: int):
    import tensorflow as tf

    if num_shards < 1:
      raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    self._tf = tf
    self.directory = directory
    self.split = split
    self.num_shards = num_shards
    self.expected = max(int(expected), 1)
    self.filenames = [shard_filename(split, i, num_shards) for i in range(num_shards)]
    self.lengths = [0] * num_shards
    self._writer = None
    self._current = -1
    tf.io.gfile.makedirs(directory)

  def shard_of(self, position: int) -> int:
    """Shard of the `position`-th input (0-based) so that inputs spread evenly over the shards."""
    return min(self.num_shards - 1, position * self.num_shards // self.expected)

  def write(self, serialized: bytes, position: int) -> None:
    shard = self.shard_of(position)
    if shard < self._current:
      raise ValueError("records must be written in increasing position order")
    while self._current < shard:
      self._open(self._current + 1)
    self._writer.write(serialized)
    self.lengths[shard] += 1

  def _open(self, shard: int) -> None:
    if self._writer is not None:
      self._writer.close()
    self._current = shard
    self._writer = self._tf.io.TFRecordWriter(os.path.join(self.directory, self.filenames[shard]))

  def close(self) -> None:
    while self._current < self.num_shards - 1:  # empty trailing shards still exist as files
      self._open(self._current + 1)
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def write_records(records: Iterable[bytes], directory: str, split: str, num_shards: int = 1,
                  expected: int | None = None) -> tuple[list[str], list[int]]:
  """Writes serialized clips to shards; returns (file names, shard lengths)."""
  records = list(records) if expected is None else records
  n = len(records) if expected is None else expected
  with ShardedWriter(directory, split, num_shards, n) as w:
    for i, r in enumerate(records):
      w.write(r, i)
  return w.filenames, w.lengths


# ------------------------------------------------------------------------------------ metadata
@dataclasses.dataclass
class SplitMeta:
  files: list[str]                  # file names relative to the dataset directory
  shard_lengths: list[int]
  failed: list[dict] = dataclasses.field(default_factory=list)   # [{'path':..., 'error':...}]

  @property
  def num_examples(self) -> int:
    return int(sum(self.shard_lengths))


@dataclasses.dataclass
class DatasetMeta:
  """`dataset_info.json` of a directory of clip records."""
  name: str
  class_names: list[str]
  flip_invariant: bool
  image_format: str = "jpeg"
  fps: float | None = None          # target fps of the conversion (None: native)
  short_side: int | None = None     # frames were resized to this short side (None: native)
  splits: dict[str, SplitMeta] = dataclasses.field(default_factory=dict)
  version: int = _META_VERSION

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def to_json(self) -> str:
    d = dataclasses.asdict(self)
    return json.dumps(d, indent=1, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> "DatasetMeta":
    d = json.loads(text)
    splits = {k: SplitMeta(**v) for k, v in d.pop("splits", {}).items()}
    return cls(splits=splits, **d)

  def save(self, directory: str) -> str:
    import tensorflow as tf

    path = os.path.join(directory, META_FILENAME)
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
      f.write(self.to_json())
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return path

  @classmethod
  def load(cls, directory: str) -> "DatasetMeta":
    import tensorflow as tf

    with tf.io.gfile.GFile(os.path.join(directory, META_FILENAME)) as f:
      return cls.from_json(f.read())


def has_meta(directory: str) -> bool:
  import tensorflow as tf

  return tf.io.gfile.exists(os.path.join(directory, META_FILENAME))


# ------------------------------------------------------------------------------------ reading
def parse_clip(serialized):
  """TF-graph parser: serialized SequenceExample -> {'frames': string (T,), 'label': int32,
  'video_id': string, 'fps': float32}. Frames stay encoded."""
  import tensorflow as tf

  context, sequence = tf.io.parse_single_sequence_example(
      serialized,
      context_features={
          LABEL_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
          ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
          FPS_KEY: tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
      },
      sequence_features={FRAMES_KEY: tf.io.FixedLenSequenceFeature([], tf.string)},
  )
  return {
      "frames": sequence[FRAMES_KEY],
      "label": tf.cast(context[LABEL_KEY], tf.int32),
      "video_id": context[ID_KEY],
      "fps": context[FPS_KEY],
  }


def scan_tfrecord(path: str) -> tuple[int, bool]:
  """(number of complete records, truncated?) by walking the TFRecord framing (12-byte headers and
  seeks; record bodies and CRCs are not read). A file cut short mid-record is `truncated`."""
  import tensorflow as tf

  count = 0
  with tf.io.gfile.GFile(path, "rb") as f:
    size = f.size()
    pos = 0
    while pos < size:
      if pos + 12 > size:
        return count, True
      f.seek(pos)
      header = f.read(12)
      if len(header) < 12:
        return count, True
      (length,) = struct.unpack("<Q", header[:8])
      end = pos + 12 + length + 4
      if end > size:
        return count, True
      pos = end
      count += 1
  return count, False


def record_offset(path: str, index: int) -> int:
  """Byte offset of record `index` of a TFRecord file, found by walking the framing's 12-byte headers
  (bodies are seeked over, not read). Raises ValueError when the file has fewer records."""
  import tensorflow as tf

  with tf.io.gfile.GFile(path, "rb") as f:
    size, pos = f.size(), 0
    for _ in range(index):
      f.seek(pos)
      header = f.read(12)
      if len(header) < 12:
        raise ValueError(f"{path} has fewer than {index + 1} records")
      pos += 12 + struct.unpack("<Q", header[:8])[0] + 4
      if pos > size:
        raise ValueError(f"{path} has fewer than {index + 1} records")
  return pos


_CORRUPT_AT = re.compile(r"corrupted record at (\d+)")


def read_records_from(path: str, index: int, count: int) -> Iterator[bytes | None]:
  """Records `index` .. `index + count - 1` of a TFRecord file, each checked against its CRCs, for
  reading on past a corrupt record (tf.data's reader ends the file at the first one).

  Yields each record's bytes, or None for a record whose body fails its CRC: its header (length +
  its own CRC) is intact, so the next record is found and reading goes on. A record whose header is
  corrupt ends the iteration early, since the records after it cannot be located. TF's random
  reader reports where the check failed: at the record's offset (the header) or 12 bytes on (the
  body), which tells the two apart.
  """
  import tensorflow as tf
  from tensorflow.python.lib.io import tf_record

  offset = record_offset(path, index)
  reader = tf_record.tf_record_random_reader(path)
  try:
    for _ in range(count):
      try:
        record, offset = reader.read(offset)
      except tf.errors.DataLossError as e:
        where = _CORRUPT_AT.search(str(e))
        if where is None or int(where.group(1)) != offset + 12:
          return                                   # a broken header: the rest cannot be located
        with tf.io.gfile.GFile(path, "rb") as f:
          f.seek(offset)
          (length,) = struct.unpack("<Q", f.read(8))
        offset += 12 + length + 4
        yield None
        continue
      except IndexError:                           # end of file
        return
      yield record
  finally:
    reader.close()


def iter_clip_protos(paths: Sequence[str]) -> Iterator[dict]:
  """Python-side iteration over record files (tests, inspection)."""
  import tensorflow as tf

  for path in paths:
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
      yield decode_clip_proto(raw)
