"""Clip records: SequenceExample writer/parser round trip, sharding, metadata, truncation scan."""
import os

import numpy as np
import pytest

from autox3d_jax.data import records, testing
from autox3d_jax.projects.moving_digits import digits


def _frames(n=5, size=16):
  rng = np.random.default_rng(0)
  return digits.encode_jpeg((rng.random((n, size, size + 4, 3)) * 255).astype(np.uint8))


def test_encode_decode_round_trip_python():
  frames = _frames()
  raw = records.encode_clip(frames, label=3, video_id="vid/7", fps=12.5, label_name="jump", dataset="toy",
                            num_classes=5, height=16, width=20, source="/x/y.mp4")
  out = records.decode_clip_proto(raw)
  assert out["frames"] == frames
  assert (out["label"], out["video_id"], out["fps"], out["label_name"]) == (3, "vid/7", 12.5, "jump")
  assert (out["dataset"], out["num_classes"], out["height"], out["width"]) == ("toy", 5, 16, 20)
  assert out["format"] == "jpeg" and out["source"] == "/x/y.mp4"


def test_parse_clip_tf_round_trip(tmp_path):
  import tensorflow as tf

  clips = [_frames(n) for n in (3, 7)]
  serialized = [records.encode_clip(c, label=i, video_id=f"v{i}", fps=10.0) for i, c in enumerate(clips)]
  files, lengths = records.write_records(serialized, str(tmp_path), "train", num_shards=2)
  assert lengths == [1, 1]
  ds = tf.data.TFRecordDataset([os.path.join(tmp_path, f) for f in files]).map(records.parse_clip)
  got = list(ds.as_numpy_iterator())
  for i, (g, c) in enumerate(zip(got, clips)):
    assert list(g["frames"]) == c
    assert g["label"] == i and g["video_id"] == f"v{i}".encode() and g["fps"] == pytest.approx(10.0)
    decoded = tf.io.decode_jpeg(g["frames"][0]).numpy()
    assert decoded.shape == (16, 20, 3)


def test_sharded_writer_spreads_evenly_and_skips(tmp_path):
  with records.ShardedWriter(str(tmp_path), "train", 3, expected=10) as w:
    for i in range(10):
      if i != 4:  # a skipped input (e.g. a video that failed) leaves its shard one shorter
        w.write(b"x%d" % i, i)
  assert w.lengths == [4, 2, 3] and sum(w.lengths) == 9
  assert all(os.path.exists(os.path.join(tmp_path, f)) for f in w.filenames)
  assert w.filenames[0] == "train.tfrecord-00000-of-00003"


def test_meta_round_trip(tmp_path):
  meta = records.DatasetMeta(name="toy", class_names=["a", "b"], flip_invariant=False, fps=5.0, short_side=64)
  meta.splits["train"] = records.SplitMeta(files=["f0"], shard_lengths=[3], failed=[{"path": "p", "error": "e"}])
  meta.save(str(tmp_path))
  back = records.DatasetMeta.load(str(tmp_path))
  assert back == meta and back.num_classes == 2 and back.splits["train"].num_examples == 3


def test_scan_detects_truncation(tmp_path):
  d = testing.write_records_dataset(str(tmp_path), num_videos=6, num_frames=3, size=16, num_shards=1)
  path = os.path.join(d, "train.tfrecord-00000-of-00001")
  assert records.scan_tfrecord(path) == (6, False)
  testing.truncate_file(path, 0.5)
  count, truncated = records.scan_tfrecord(path)
  assert truncated and 0 < count < 6
