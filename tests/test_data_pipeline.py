"""tf.data pipeline: shapes, normalisation, flips, multi-view eval, host sharding, determinism and
exact resume, corrupt input."""
import os

import numpy as np
import pytest

from autox3d_jax.data import pipeline, registry, testing

MOTION = "moving_digits/motion_tiny"
T, STRIDE, CROP = 4, 2, 24
COMMON = dict(num_frames=T, sampling_stride=STRIDE, crop_size=CROP, process_index=0, process_count=1)


@pytest.fixture(scope="module")
def data_dir():
  return testing.tiny_data_dir()


def _take(p, n):
  it = p.as_numpy_iterator()
  return [next(it) for _ in range(n)]


def _train(data_dir, **kw):
  args = dict(COMMON, batch_size=8, data_dir=data_dir, scale_jitter=(28, 36), shuffle_buffer=32, seed=3)
  args.update(kw)
  return pipeline.make_train_pipeline(kw.pop("name", MOTION), **{k: v for k, v in args.items() if k != "name"})


def test_train_shapes_dtypes_and_normalisation(data_dir):
  p = _train(data_dir)
  b = _take(p, 1)[0]
  assert b["video"].shape == (8, T, CROP, CROP, 3) and b["video"].dtype == np.float32
  assert b["label"].shape == (8,) and b["label"].dtype == np.int32
  assert ((0 <= b["label"]) & (b["label"] < 12)).all()
  lo, hi = (0 - 0.45) / 0.225, (1 - 0.45) / 0.225
  assert b["video"].min() >= lo - 1e-4 and b["video"].max() <= hi + 1e-4
  assert p.num_classes == 12 and p.host_examples == 64 and p.steps_per_epoch == 8
  # uint8 output is the same clip before normalisation.
  raw = _take(_train(data_dir, output_dtype="uint8"), 1)[0]
  assert raw["video"].dtype == np.uint8
  np.testing.assert_allclose((raw["video"] / 255.0 - 0.45) / 0.225, b["video"], atol=0.01)
  bf = _take(_train(data_dir, output_dtype="bfloat16"), 1)[0]
  assert bf["video"].dtype.name == "bfloat16"


def test_flip_disabled_for_motion(data_dir):
  auto = _take(_train(data_dir), 2)
  off = _take(_train(data_dir, flip=False), 2)
  for a, o in zip(auto, off):
    np.testing.assert_array_equal(a["video"], o["video"])
  with pytest.raises(ValueError, match="flip"):
    _train(data_dir, flip=True)


def test_flip_applied_when_dataset_is_flip_invariant(tmp_path):
  d = testing.write_records_dataset(str(tmp_path / "toy"), num_videos=16, num_frames=6, flip_invariant=True)
  kw = dict(COMMON, batch_size=16, data_dir=str(tmp_path), scale_jitter=(28, 36), shuffle_buffer=1, seed=0)
  flipped = _take(pipeline.make_train_pipeline("toy", **kw), 1)[0]["video"]
  plain = _take(pipeline.make_train_pipeline("toy", flip=False, **kw), 1)[0]["video"]
  same = [np.array_equal(f, p) for f, p in zip(flipped, plain)]
  mirrored = [np.allclose(f, p[:, :, ::-1]) for f, p in zip(flipped, plain)]
  assert all(s or m for s, m in zip(same, mirrored))
  assert 0 < sum(mirrored) < 16
  del d


def test_eval_multiview_shape_and_views_differ(data_dir):
  p = pipeline.make_eval_pipeline(MOTION, data_dir=data_dir, batch_size=6, short_side=32,
                                  num_temporal_views=3, num_spatial_crops=3, **COMMON)
  batches = list(p.as_numpy_iterator())
  assert p.views == 9 and len(batches) == p.num_batches == 6  # 32 validation clips / 6 -> 6 batches
  b = batches[0]
  assert b["video"].shape == (6, 9, T, CROP, CROP, 3) and b["video"].dtype == np.float32
  v = b["video"][0]
  # Temporal views (same crop) differ, spatial crops (same clip) differ.
  assert not np.allclose(v[0], v[3]) and not np.allclose(v[3], v[6])
  assert not np.allclose(v[0], v[1]) and not np.allclose(v[1], v[2])
  masks = np.concatenate([x["mask"] for x in batches])
  assert masks.sum() == 32 and not masks[32:].any()
  ids = np.concatenate([x["video_id"] for x in batches])[masks]
  assert len(set(ids)) == 32
  # Single-view fast mode: the centre crop of the centre clip, view axis kept.
  fast = next(pipeline.make_eval_pipeline(MOTION, data_dir=data_dir, batch_size=6, short_side=32,
                                          num_temporal_views=1, num_spatial_crops=1, **COMMON).as_numpy_iterator())
  assert fast["video"].shape == (6, 1, T, CROP, CROP, 3)
  np.testing.assert_allclose(fast["video"][:, 0], b["video"][:, 4], atol=1e-5)  # view 4 = centre, centre


@pytest.mark.parametrize("hosts", [2, 3])
def test_host_sharding_is_disjoint_and_covers_the_split(data_dir, hosts):
  seen, counts = [], []
  for i in range(hosts):
    p = pipeline.make_eval_pipeline(MOTION, data_dir=data_dir, batch_size=4, short_side=24, num_temporal_views=1,
                                    num_spatial_crops=1, num_frames=2, crop_size=24, process_index=i,
                                    process_count=hosts)
    bs = list(p.as_numpy_iterator())
    counts.append(len(bs))
    ids = [x for b in bs for x, m in zip(b["video_id"], b["mask"]) if m]
    assert len(ids) == p.host_examples
    seen.append(set(ids))
  assert len(set(counts)) == 1  # every host runs the same number of eval steps
  for i in range(hosts):
    for j in range(i + 1, hosts):
      assert not seen[i] & seen[j]
  assert len(set.union(*seen)) == 32
  src = registry.get_source(MOTION, "train", data_dir)
  plans = [pipeline.host_plan(src, i, hosts) for i in range(hosts)]
  assert sum(t for plan in plans for _, _, t in plan) == src.num_examples


def test_deterministic_and_exact_resume(data_dir):
  a = _take(_train(data_dir), 12)            # 8 steps per epoch: crosses an epoch boundary
  b = _take(_train(data_dir), 12)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["video"], y["video"])
    np.testing.assert_array_equal(x["label"], y["label"])
  assert not np.array_equal(a[0]["label"], a[8]["label"]) or not np.array_equal(a[0]["video"], a[8]["video"])
  for k in (3, 10):
    resumed = _take(_train(data_dir, start_step=k), 2)
    for j in range(2):
      np.testing.assert_array_equal(resumed[j]["video"], a[k + j]["video"])
      np.testing.assert_array_equal(resumed[j]["index"], a[k + j]["index"])
  by_index = _take(_train(data_dir, start_index=int(a[4]["index"].max()) + 1), 1)[0]
  np.testing.assert_array_equal(by_index["video"], a[5]["video"])
  other_seed = _take(_train(data_dir, seed=4), 1)[0]
  assert not np.array_equal(other_seed["video"], a[0]["video"])


def test_corrupt_records_are_skipped_and_counted(tmp_path):
  root = str(tmp_path)
  testing.write_records_dataset(os.path.join(root, "bad"), name="bad", num_videos=12, num_frames=6, num_shards=2,
                                corrupt={2: b"garbage, not a jpeg" * 20, 4: b"\xff\xd8\xff" + b"\x00" * 300})
  src = registry.get_source("bad", "train", root)
  testing.truncate_file(src.files[1], 0.55)      # second shard (videos 6..11) cut mid-record
  kw = dict(COMMON, data_dir=root)
  p = pipeline.make_eval_pipeline("bad", split="train", batch_size=4, short_side=24, num_temporal_views=1, num_spatial_crops=1,
                                  **kw)
  bs = list(p.as_numpy_iterator())
  stats = p.stats.as_dict()
  good = [x for b in bs for x, m in zip(b["video_id"], b["mask"]) if m]
  assert stats["invalid_records"] == 2
  assert stats["truncated_records"] >= 1 and stats["truncated_files"] == [src.files[1]]
  assert len(good) == 12 - 2 - stats["truncated_records"]
  assert b"train_0002" not in good and b"train_0004" not in good
  assert stats["skipped_records"] == 12 - len(good)
  # Training goes on over the same data (repeating), counting as it goes.
  t = pipeline.make_train_pipeline("bad", batch_size=4, shuffle_buffer=4, scale_jitter=(28, 36), **kw)
  batches = _take(t, 4)
  assert all(b["video"].shape == (4, T, CROP, CROP, 3) for b in batches)
  assert t.stats.as_dict()["invalid_records"] >= 2


def test_bad_jpeg_that_passes_the_precheck_is_dropped_by_the_safety_net(tmp_path):
  import io
  from PIL import Image

  buf = io.BytesIO()
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="JPEG")
  good = buf.getvalue()
  broken = good[:20] + b"\x00" * 200 + good[-2:]   # valid markers, destroyed tables
  root = str(tmp_path)
  testing.write_records_dataset(os.path.join(root, "hb"), name="hb", num_videos=6, num_frames=4, num_shards=1,
                                corrupt={1: broken})
  p = pipeline.make_eval_pipeline("hb", split="train", data_dir=root, batch_size=6, short_side=24, num_temporal_views=1,
                                  num_spatial_crops=1, num_frames=2, crop_size=24, process_index=0, process_count=1)
  b = next(p.as_numpy_iterator())
  assert b["mask"].sum() == 5 and b"train_0001" not in list(b["video_id"][b["mask"]])
  assert p.stats.as_dict()["decode_failures"] == 1


def test_config_dict_and_global_arrays(data_dir):
  import jax
  import ml_collections
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

  cfg = ml_collections.ConfigDict(dict(name=MOTION, data_dir=data_dir, split="train", num_frames=T,
                                       sampling_stride=STRIDE, crop_size=CROP, scale_jitter=(28, 36), batch_size=4,
                                       shuffle_buffer=16, seed=0, deterministic=True, num_temporal_views=2,
                                       num_spatial_crops=1, eval_split="validation", eval_batch_size=2,
                                       process_index=0, process_count=1, unrelated_field=1))
  b = _take(pipeline.pipeline_from_config(cfg, "train"), 1)[0]
  assert b["video"].shape == (4, T, CROP, CROP, 3)
  e = pipeline.pipeline_from_config(cfg, "eval")
  eb = next(e.as_numpy_iterator())
  assert eb["video"].shape == (2, 2, T, CROP, CROP, 3) and e.source.split == "validation"
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  g = pipeline.to_global_batch(eb, NamedSharding(mesh, P("data")))
  assert isinstance(g["video"], jax.Array) and g["video"].shape == eb["video"].shape
  assert isinstance(g["video_id"], np.ndarray)


def test_record_with_bad_checksum_is_lost_alone_and_counted(tmp_path):
  """64 flipped bytes inside one record body: only that record is lost (tf.data's reader alone
  stops the shard there), in the eval pass and in every training epoch."""
  root = str(tmp_path)
  testing.write_records_dataset(os.path.join(root, "crc"), name="crc", num_videos=8, num_frames=3, num_shards=1)
  path = registry.get_source("crc", "train", root).files[0]
  from autox3d_jax.data import records
  third, fourth = records.record_offset(path, 2), records.record_offset(path, 3)
  data = bytearray(open(path, "rb").read())
  for k in range(64):                               # inside record 2's body
    data[third + 12 + 40 + k] ^= 0xFF
  assert third + 12 + 40 + 64 < fourth - 4
  open(path, "wb").write(bytes(data))
  p = pipeline.make_eval_pipeline("crc", split="train", data_dir=root, batch_size=8, short_side=24,
                                  num_temporal_views=1, num_spatial_crops=1, num_frames=2, crop_size=24,
                                  process_index=0, process_count=1)
  b = next(p.as_numpy_iterator())
  ids = sorted(v.decode() for v in b["video_id"][b["mask"]])
  assert ids == [f"train_{i:04d}" for i in range(8) if i != 2]
  assert p.stats.as_dict()["lost_records"] == 1
  t = pipeline.make_train_pipeline("crc", data_dir=root, batch_size=7, num_frames=2, crop_size=24,
                                   scale_jitter=(24, 28), shuffle_buffer=1, process_index=0, process_count=1)
  epochs = _take(t, 3)
  assert t.stats.as_dict()["lost_records"] >= 2      # counted again in each epoch read so far
  assert all(len(set(e["index"].tolist())) == 7 for e in epochs)


def test_corrupt_header_loses_the_rest_of_its_shard_only(tmp_path):
  root = str(tmp_path)
  testing.write_records_dataset(os.path.join(root, "hdr"), name="hdr", num_videos=8, num_frames=3, num_shards=2)
  src = registry.get_source("hdr", "train", root)
  from autox3d_jax.data import records
  at = records.record_offset(src.files[0], 1)
  data = bytearray(open(src.files[0], "rb").read())
  data[at + 2] ^= 0xFF                               # record 1's length field
  open(src.files[0], "wb").write(bytes(data))
  p = pipeline.make_eval_pipeline("hdr", split="train", data_dir=root, batch_size=8, short_side=24,
                                  num_temporal_views=1, num_spatial_crops=1, num_frames=2, crop_size=24,
                                  process_index=0, process_count=1, validate_files=False)
  b = next(p.as_numpy_iterator())
  ids = sorted(v.decode() for v in b["video_id"][b["mask"]])
  assert ids == ["train_0000"] + [f"train_{i:04d}" for i in range(4, 8)]
  assert p.stats.as_dict()["lost_records"] == 3


def _wait_until(predicate, timeout=30.0):
  import time
  end = time.monotonic() + timeout
  while time.monotonic() < end:
    if predicate():
      return True
    time.sleep(0.05)
  return predicate()


def _input_threads():
  import threading
  return [t for t in threading.enumerate() if t.name.startswith("input-") and t.is_alive()]


def test_every_record_invalid_stops_with_an_error_naming_the_split(tmp_path):
  """Before: the filters dropped every record, every epoch, and next() never returned."""
  root = str(tmp_path)
  testing.write_records_dataset(os.path.join(root, "void"), name="void", num_videos=6, num_frames=3, num_shards=2,
                                corrupt={i: b"not an image" * 8 for i in range(6)})
  t = pipeline.make_train_pipeline("void", data_dir=root, batch_size=2, num_frames=2, crop_size=24,
                                   scale_jitter=(24, 28), shuffle_buffer=4, process_index=0, process_count=1)
  from autox3d_jax.data import feed
  with pytest.raises(feed.NoValidInputError, match=r"void/train \(host 0/1\): no valid clip in a whole pass "
                                                    r"over its 6 records: \d+ records skipped in a row \(\d+ invalid"):
    next(t.as_numpy_iterator())
  assert isinstance(feed.NoValidInputError("x"), registry.DatasetError)
  assert t.stats.as_dict()["invalid_records"] >= 6
  assert _wait_until(lambda: not _input_threads(), 10)   # the stream was stopped: its thread ended


def test_every_shard_losing_its_first_header_stops_with_an_error(tmp_path):
  root = str(tmp_path)
  testing.write_records_dataset(os.path.join(root, "hdr0"), name="hdr0", num_videos=6, num_frames=3, num_shards=2)
  src = registry.get_source("hdr0", "train", root)
  for path in src.files:
    data = bytearray(open(path, "rb").read())
    data[2] ^= 0xFF                                  # the first record's length field
    open(path, "wb").write(bytes(data))
  t = pipeline.make_train_pipeline("hdr0", data_dir=root, batch_size=2, num_frames=2, crop_size=24,
                                   scale_jitter=(24, 28), shuffle_buffer=1, process_index=0, process_count=1,
                                   validate_files=False)
  from autox3d_jax.data import feed
  with pytest.raises(feed.NoValidInputError, match=r"hdr0/train .*\(0 invalid, \d+ lost after a corrupt record header"):
    next(t.as_numpy_iterator())


def test_sigterm_ends_a_wait_for_data_that_never_comes(monkeypatch):
  """A pipeline that blocks (a stalled file system): the wait ends with Interrupted within a
  second of SIGTERM, and the helper thread is not left behind once the stream is released."""
  import signal
  import threading
  import time
  from autox3d_jax import preemption
  from autox3d_jax.data import feed

  release = threading.Event()

  class Blocking:
    def as_numpy_iterator(self):
      release.wait(60)
      yield {"x": np.zeros(1)}

  class Counters:   # a pipeline's counters that never move
    def __init__(self):
      import tensorflow as tf
      for k in ("decode_successes", "invalid_records", "lost_records", "decode_attempts"):
        setattr(self, k, tf.Variable(0, dtype=tf.int64))
    def summary(self):
      return "nothing skipped"

  original = signal.signal(signal.SIGTERM, lambda *a: None)
  try:
    with preemption.SigtermFlag() as flag:
      batches = feed.guarded_batches(Blocking(), Counters(), what="slow/train", pass_size=10, in_flight=0,
                                     poll_s=0.05)
      threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
      began = time.monotonic()
      with pytest.raises(preemption.Interrupted, match="SIGTERM while waiting for slow/train"):
        next(batches)
      assert time.monotonic() - began < 5 and flag.raised
    assert not preemption.requested()      # outside the block nothing is pending
  finally:
    signal.signal(signal.SIGTERM, original)
    release.set()
  assert _wait_until(lambda: not _input_threads(), 10)


@pytest.mark.parametrize("released_after_s, grace_s, gets_batch", [(0.5, 5.0, True), (None, 0.6, False)])
def test_with_several_processes_a_sigterm_waits_a_grace_for_the_batch(monkeypatch, released_after_s, grace_s,
                                                                       gets_batch):
  """Several processes (the grace patched in): after SIGTERM the wait goes on for the grace, so a
  batch that arrives within it is delivered (the step can run on every process); one that does not
  ends the wait with Interrupted once the grace is over, not before."""
  import signal
  import threading
  import time
  from autox3d_jax import preemption
  from autox3d_jax.data import feed

  release = threading.Event()

  class Blocking:
    def as_numpy_iterator(self):
      release.wait(60)
      yield {"x": np.ones(1)}

  class Counters:
    def __init__(self):
      import tensorflow as tf
      for k in ("decode_successes", "invalid_records", "lost_records", "decode_attempts"):
        setattr(self, k, tf.Variable(0, dtype=tf.int64))
    def summary(self):
      return "nothing skipped"

  monkeypatch.setattr(preemption, "data_wait_grace_s", lambda: grace_s)
  original = signal.signal(signal.SIGTERM, lambda *a: None)
  try:
    with preemption.SigtermFlag():
      batches = feed.guarded_batches(Blocking(), Counters(), what="slow/train", pass_size=10, in_flight=0,
                                     poll_s=0.05)
      os.kill(os.getpid(), signal.SIGTERM)
      _wait_until(preemption.requested, 5)
      began = time.monotonic()
      if released_after_s is not None:
        threading.Timer(released_after_s, release.set).start()
      if gets_batch:
        assert next(batches)["x"].tolist() == [1.0]
        assert time.monotonic() - began < grace_s
      else:
        with pytest.raises(preemption.Interrupted, match="SIGTERM while waiting for slow/train"):
          next(batches)
        assert grace_s <= time.monotonic() - began < grace_s + 5
      batches.close()
  finally:
    signal.signal(signal.SIGTERM, original)
    release.set()
  assert _wait_until(lambda: not _input_threads(), 10)
