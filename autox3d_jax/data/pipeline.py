"""tf.data input pipeline: clip records -> per-host numpy batches for training and X3D evaluation.

Per element, frames arrive as *encoded* strings (`registry.Source.parse_fn`, the same for tfds and
converted clip records). The clip's frame indices are sampled first and only those frames are
decoded (the DMVR approach); in training, the crop window is chosen before decoding too, so
`tf.io.decode_and_crop_jpeg` decodes and resizes only the pixels that end up in the clip.

Train (`make_train_pipeline`):
  host's records -> per-epoch file shuffle + interleave -> shuffle buffer -> repeat (epoch by
  epoch) -> [resume skip] -> validity check (skipped + counted) -> random temporal clip
  (num_frames x sampling_stride) -> random short-side scale jitter + random square crop -> flip
  (only if the dataset declares its labels flip-invariant) -> batch -> normalise -> prefetch.
  Randomness is stateless, keyed by (seed, host, stream position), so a deterministic run is a
  pure function of its arguments, whatever the parallelism.

Eval (`make_eval_pipeline`): the X3D multi-view protocol. Every video gives
  ``num_temporal_views`` uniformly spaced clips x ``num_spatial_crops`` crops (1: centre; 3: both
  ends and the centre of the long side) after resizing the short side to ``short_side``: video is
  (B, views, T, crop, crop, 3), views ordered temporal-major, so the evaluator averages logits
  over axis 1. ``num_temporal_views=num_spatial_crops=1`` is the single-view fast mode. All hosts
  yield the same number of batches: the tail is padded with ``mask=False`` examples.

Multi-host: every process reads only its own contiguous, near-equal range of the split's examples
(by `jax.process_index()` / `jax.process_count()`, or passed explicitly), so the parts are
disjoint and cover the split. Batch sizes are per host; `to_global_batch` makes global
`jax.Array`s from the per-host numpy dicts.

Exact resume: the pipeline can be re-created at a position. ``start_step=k`` restarts at batch k
(exact when no record was skipped before it); for exactness even after skipped records pass
``start_index=batch['index'].max() + 1`` of the last consumed batch.

Bad input: a record whose frames are not JPEG/PNG, are truncated (no end-of-image marker), is empty
or has an out-of-range label is skipped and counted (`PipelineStats.invalid_records`); shards cut
short are detected when the pipeline is built and read up to the last complete record
(`truncated_records`); a record whose body fails its CRC is skipped, and reading goes on with the
next record of its shard; records a shard cannot deliver at all (after a corrupt header) are
counted too (`lost_records`); any other decode failure is dropped by `ignore_errors` and
counted (`decode_failures`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any, Iterator, Sequence

import numpy as np

from autox3d_jax.data import feed, registry

log = logging.getLogger(__name__)

AUTOTUNE = -1  # tf.data.AUTOTUNE, without importing TF at module import
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND"
_TAIL = 16  # end-of-image marker must be within the last _TAIL bytes (encoders may pad)


def _tf():
  import tensorflow as tf

  try:  # TF only feeds data: keep it off any accelerator JAX uses.
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):
    pass
  return tf


# ------------------------------------------------------------------------------------ stats
class PipelineStats:
  """Counters of skipped input. Variables are updated from inside tf.data; read with `as_dict`."""

  def __init__(self):
    tf = _tf()
    with tf.init_scope():
      self.invalid_records = tf.Variable(0, dtype=tf.int64, trainable=False, name="invalid_records")
      self.lost_records = tf.Variable(0, dtype=tf.int64, trainable=False, name="lost_records")
      self.decode_attempts = tf.Variable(0, dtype=tf.int64, trainable=False, name="decode_attempts")
      self.decode_successes = tf.Variable(0, dtype=tf.int64, trainable=False, name="decode_successes")
      # Position (+1) in the decode stage's input of the last clip delivered, and clips delivered:
      # their difference counts the failures *resolved* so far (decodes still in flight excluded).
      self.decode_resolved = tf.Variable(0, dtype=tf.int64, trainable=False, name="decode_resolved")
      self.decode_delivered = tf.Variable(0, dtype=tf.int64, trainable=False, name="decode_delivered")
      # Set by the consumer (`feed.guarded_batches`) when the stream cannot deliver: ends it.
      self.stop = tf.Variable(False, trainable=False, name="stop")
    self.truncated_records = 0       # records missing from shards cut short (found at build time)
    self.truncated_files: list[str] = []
    self.drained = False             # set when an `InputPipeline` iterator ran to its end

  @property
  def decode_failures(self) -> int:
    """Clips dropped by the decode safety net. Once the pipeline is drained: attempts - successes.
    While running: failures before the last delivered clip (exact in deterministic mode)."""
    if self.drained:
      return int(self.decode_attempts.numpy() - self.decode_successes.numpy())
    return max(0, int(self.decode_resolved.numpy() - self.decode_delivered.numpy()))

  @property
  def skipped_records(self) -> int:
    return (int(self.invalid_records.numpy()) + int(self.lost_records.numpy()) + self.truncated_records
            + self.decode_failures)

  @property
  def records_seen(self) -> int:
    """Records read so far (valid or not; decodes in flight included)."""
    return int(self.invalid_records.numpy()) + int(self.lost_records.numpy()) + int(self.decode_attempts.numpy())

  def summary(self) -> str:
    """One line for logs: the counts of skipped input by cause."""
    return skip_causes(self.as_dict())

  def as_dict(self) -> dict[str, Any]:
    return {
        "invalid_records": int(self.invalid_records.numpy()),
        "lost_records": int(self.lost_records.numpy()),
        "truncated_records": self.truncated_records,
        "truncated_files": list(self.truncated_files),
        "decode_failures": self.decode_failures,
        "skipped_records": self.skipped_records,
        "records_seen": self.records_seen,
    }


def skip_causes(counts: dict[str, Any]) -> str:
  """'3 invalid, 0 lost after a corrupt record header, ...': the skipped records of `counts` (an
  `as_dict()` or a `skip_report`) by cause, as logs, errors and the report phrase them."""
  return (f"{counts['invalid_records']} invalid, {counts['lost_records']} lost after a corrupt record header, "
          f"{counts['truncated_records']} missing from truncated shards, {counts['decode_failures']} failed to decode")


def skip_report(stats: dict[str, PipelineStats]) -> dict[str, Any]:
  """Counts of skipped input over several pipelines ({split: stats}): the totals (`skipped_records`,
  `records_seen`, `skipped_fraction` = skipped / seen, and each cause) and, under 'splits', each
  pipeline's own `as_dict()` -- what the loops log, write as metrics and put in results."""
  return _with_totals({name: s.as_dict() for name, s in stats.items()})


def _with_totals(splits: dict[str, dict]) -> dict[str, Any]:
  keys = ("invalid_records", "lost_records", "truncated_records", "decode_failures", "skipped_records", "records_seen")
  totals = {k: sum(d[k] for d in splits.values()) for k in keys}
  totals["skipped_fraction"] = totals["skipped_records"] / max(1, totals["records_seen"] + totals["truncated_records"])
  return {**totals, "splits": splits}


_COUNTED_PER_READ = ("invalid_records", "lost_records", "decode_failures", "records_seen")


def merge_skip_reports(earlier: dict[str, Any] | None, now: dict[str, Any]) -> dict[str, Any]:
  """A resumed run's counts: `earlier` (saved with the checkpoint it resumed from) plus `now` (this
  process's). Counts of records read add up; truncation, found when a pipeline is built, is a
  property of the files and is not added twice. Records prefetched past the checkpoint are read
  again after the restart, so those near it may count twice."""
  if not earlier:
    return now
  splits = {}
  for name, d in now["splits"].items():
    before = earlier.get("splits", {}).get(name)
    if before is None:
      splits[name] = d
      continue
    merged = {k: d[k] + before.get(k, 0) for k in _COUNTED_PER_READ}
    merged["truncated_records"] = max(d["truncated_records"], before.get("truncated_records", 0))
    merged["truncated_files"] = sorted(set(d["truncated_files"]) | set(before.get("truncated_files", [])))
    merged["skipped_records"] = (merged["invalid_records"] + merged["lost_records"] + merged["decode_failures"]
                                 + merged["truncated_records"])
    splits[name] = merged
  return _with_totals(splits)


# ------------------------------------------------------------------------------------ host plan
def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  return int(process_index), int(process_count)


def host_range(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, stop) of the examples (in shard order) that host `process_index` reads."""
  return (num_examples * process_index // process_count, num_examples * (process_index + 1) // process_count)


def host_plan(source: registry.Source, process_index: int, process_count: int) -> list[tuple[str, int, int]]:
  """[(file, skip, take)] covering this host's range of the split."""
  start, stop = host_range(source.num_examples, process_index, process_count)
  plan = []
  offset = 0
  base_offsets = source.shard_offsets or (0,) * len(source.files)
  for path, n, base in zip(source.files, source.shard_lengths, base_offsets):
    lo, hi = max(start, offset), min(stop, offset + n)
    if hi > lo:
      plan.append((path, base + lo - offset, hi - lo))
    offset += n
  return plan


def _check_files(plan: list[tuple[str, int, int]], stats: PipelineStats, validate: bool) -> list[tuple[str, int, int]]:
  """Missing files are an error; shards cut short are read up to their last complete record."""
  import tensorflow as tf

  from autox3d_jax.data import records

  checked = []
  for path, skip, take in plan:
    if not tf.io.gfile.exists(path):
      raise registry.DatasetNotFoundError(f"shard {path} is missing (listed in the dataset's metadata)")
    if validate:
      complete, truncated = records.scan_tfrecord(path)
      if truncated or complete < skip + take:
        missing = skip + take - min(complete, skip + take)
        log.warning("shard %s is truncated: %d complete records; %d of this host's records are lost",
                    path, complete, missing)
        stats.truncated_records += missing
        stats.truncated_files.append(path)
        take = max(0, min(take, complete - skip))
    if take > 0:
      checked.append((path, skip, take))
  return checked


# ------------------------------------------------------------------------------------ reading
def _read_records(plan, stats: PipelineStats, *, epoch, seed: int, shuffle_files: bool,
                  cycle_length: int, deterministic: bool):
  """Serialized records of one epoch of this host's plan. Each file is read by tf.data's reader;
  when it stops early at a corrupt record, the rest of the file is read past it by
  `_records_after_corrupt` (Python, only for that file), so only the corrupt records are lost.
  They are counted into `stats.lost_records` when the file ends."""
  tf = _tf()
  paths = tf.constant([p for p, _, _ in plan], tf.string)
  skips = tf.constant([s for _, s, _ in plan], tf.int64)
  takes = tf.constant([t for _, _, t in plan], tf.int64)
  files = tf.data.Dataset.from_tensor_slices((paths, skips, takes))
  if shuffle_files and len(plan) > 1:
    files = files.shuffle(len(plan), seed=_mix(seed, epoch, 1))

  element = (tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.bool), tf.TensorSpec((), tf.int64))

  def one_file(path, skip, take):
    recs = tf.data.TFRecordDataset(path).skip(skip).take(take).ignore_errors()
    recs = recs.map(lambda r: (r, tf.constant(False)))
    sentinel = tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(True)))

    def element_or_rest(delivered, x):
      # At the sentinel, `delivered` is the number of records the fast reader gave. Fewer than
      # `take`: it stopped at a corrupt record; the rest of the file is read past it.
      record, is_sentinel = x
      missing = take - delivered
      return tf.cond(
          is_sentinel & (missing > 0),
          lambda: tf.data.Dataset.from_generator(_records_after_corrupt, args=(path, skip + delivered, missing),
                                                 output_signature=element),
          lambda: tf.data.Dataset.from_tensors((record, is_sentinel, tf.constant(0, tf.int64))))

    return recs.concatenate(sentinel).enumerate().flat_map(element_or_rest)

  cycle = max(1, min(cycle_length, len(plan)))
  if cycle > 1:
    recs = files.interleave(one_file, cycle_length=cycle, block_length=1, num_parallel_calls=AUTOTUNE,
                            deterministic=deterministic)
  else:
    recs = files.interleave(one_file, cycle_length=1, block_length=1)

  def keep(record, is_sentinel, lost):
    del record
    with tf.control_dependencies([stats.lost_records.assign_add(lost)]):
      return tf.logical_not(is_sentinel)

  return recs.filter(keep).map(lambda r, s, m: r)


_REPORTED_CORRUPT: set[tuple[str, int, int]] = set()


def _records_after_corrupt(path: bytes, index, count):
  """(record, False, 0) for each readable record of `path`'s records index .. index+count-1, then
  the sentinel (b"", True, number not delivered): exactly the corrupt ones, or all those after a
  corrupt header (see `records.read_records_from`)."""
  from autox3d_jax.data import records

  path = path.decode() if isinstance(path, bytes) else str(path)
  delivered = 0
  for record in records.read_records_from(path, int(index), int(count)):
    if record is not None:
      delivered += 1
      yield record, False, 0
  lost = int(count) - delivered
  if (path, int(index), lost) not in _REPORTED_CORRUPT:   # once per process, not once per epoch
    _REPORTED_CORRUPT.add((path, int(index), lost))
    log.warning("%s: %d corrupt record(s) skipped among records %d..%d", path, lost, int(index),
                int(index) + int(count) - 1)
  yield b"", True, lost


def _mix(seed, epoch, salt: int):
  """int64 seed from (seed, epoch, salt); works on Python ints or tensors."""
  tf = _tf()
  return tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64) * 7_919 + salt


# ------------------------------------------------------------------------------------ per-element ops
def _validate(ex: dict, image_format: str, num_classes: int):
  """True iff the record looks decodable: >= 1 frame, every frame starts with the format's magic
  and ends (within _TAIL bytes) with its end marker, label in range. Cheap: no decoding."""
  tf = _tf()
  frames = ex["frames"]
  magic, end = (_JPEG_SOI, _JPEG_EOI) if image_format == "jpeg" else (_PNG_MAGIC, _PNG_IEND)
  lengths = tf.strings.length(frames)
  head_ok = tf.equal(tf.strings.substr(frames, 0, len(magic)), magic)
  # Pad so every substr below is in range, even for garbage shorter than the tail window.
  padded = tf.strings.join([frames, tf.constant(b"\x00" * _TAIL)])
  tail = tf.strings.substr(padded, tf.maximum(lengths - _TAIL, 0), tf.fill(tf.shape(lengths), _TAIL))
  tail_ok = tf.zeros_like(head_ok)
  for k in range(_TAIL - len(end) + 1):
    tail_ok = tf.logical_or(tail_ok, tf.equal(tf.strings.substr(tail, k, len(end)), end))
  frames_ok = tf.logical_and(tf.size(frames) > 0, tf.reduce_all(head_ok & tail_ok & (lengths > 2 * len(magic))))
  label_ok = tf.logical_and(ex["label"] >= 0, ex["label"] < num_classes)
  return tf.logical_and(frames_ok, label_ok)


def _frame_shape(frames, image_format: str):
  """(height, width) of the first frame, from its header (no decode for JPEG)."""
  tf = _tf()
  if image_format == "jpeg":
    shape = tf.io.extract_jpeg_shape(frames[0])
  else:
    shape = tf.shape(tf.io.decode_png(frames[0], channels=3))
  return tf.cast(shape[0], tf.int32), tf.cast(shape[1], tf.int32)


def _decode(frames, image_format: str, window=None, dct_method: str = ""):
  """Decode encoded frames (n,) -> uint8 (n, h, w, 3); `window` = [y, x, h, w] decodes a crop."""
  tf = _tf()
  if image_format == "jpeg":
    if window is not None:
      fn = lambda f: tf.io.decode_and_crop_jpeg(f, window, channels=3, dct_method=dct_method)
    else:
      fn = lambda f: tf.io.decode_jpeg(f, channels=3, dct_method=dct_method)
  else:
    def fn(f):
      img = tf.io.decode_png(f, channels=3)
      if window is not None:
        img = img[window[0]:window[0] + window[2], window[1]:window[1] + window[3]]
      return img
  return tf.map_fn(fn, frames, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
                   parallel_iterations=4)


def _temporal_indices(length, start, num_frames: int, stride: int):
  tf = _tf()
  idx = start + tf.range(num_frames, dtype=tf.int32) * stride
  return tf.minimum(idx, length - 1)  # short videos repeat their last frame


def _guarded_decode(ds, stats: PipelineStats, fn, deterministic: bool):
  """ds.map(fn) (parallel), dropping elements whose decode raises (`ignore_errors`) and counting
  them: see `PipelineStats.decode_failures`."""
  tf = _tf()

  def wrapped(position, ex):
    with tf.control_dependencies([stats.decode_attempts.assign_add(1)]):
      out = fn(ex)
    with tf.control_dependencies(tf.nest.flatten(out)):
      done = stats.decode_successes.assign_add(1)
    with tf.control_dependencies([done]):
      return position, tf.nest.map_structure(tf.identity, out)

  def delivered(position, out):
    updates = [stats.decode_delivered.assign_add(1), stats.decode_resolved.assign(position + 1)]
    with tf.control_dependencies(updates):
      return tf.nest.map_structure(tf.identity, out)

  ds = ds.enumerate().map(wrapped, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
  return ds.ignore_errors(log_warning=True).map(delivered)  # sequential: counters stay consistent


# ------------------------------------------------------------------------------------ pipeline object
@dataclasses.dataclass
class InputPipeline:
  """A tf.data.Dataset of per-host batches plus what the training loop needs to know about it."""
  dataset: Any                      # tf.data.Dataset
  stats: PipelineStats
  source: registry.Source
  batch_size: int                   # per host
  process_index: int
  process_count: int
  host_examples: int                # records this host reads per epoch
  num_batches: int | None           # eval: batches per host (same on every host); train: None (infinite)
  views: int = 1

  @property
  def num_classes(self) -> int:
    return self.source.num_classes

  @property
  def steps_per_epoch(self) -> int:
    """Train: global steps in one pass over the split (batch_size per host x process_count)."""
    return self.source.num_examples // (self.batch_size * self.process_count)

  def as_numpy_iterator(self) -> Iterator[dict[str, np.ndarray]]:
    """The batches as numpy dicts. Interruptible: raises `preemption.Interrupted` on SIGTERM (inside
    a `SigtermFlag`) and `feed.NoValidInputError` when a whole pass yields no valid clip."""
    what = f"{self.source.name}/{self.source.split} (host {self.process_index}/{self.process_count})"
    in_flight = 2 * self.batch_size * self.views + 4 * (os.cpu_count() or 1) + 64
    yield from feed.guarded_batches(self.dataset, self.stats, what=what, pass_size=self.host_examples,
                                    in_flight=in_flight)
    self.stats.drained = True

  def __iter__(self):
    return self.as_numpy_iterator()


def _options(deterministic: bool):
  tf = _tf()
  opts = tf.data.Options()
  opts.deterministic = bool(deterministic)
  opts.experimental_optimization.map_parallelization = True
  opts.experimental_optimization.parallel_batch = True
  # The counters are tf.Variables: let iterator checkpoints warn about them instead of failing.
  opts.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.WARN
  return opts


def _normalize_batch(video, mean, std, output_dtype: str):
  tf = _tf()
  if output_dtype == "uint8":
    return tf.cast(tf.clip_by_value(tf.round(video), 0.0, 255.0), tf.uint8)
  mean = tf.constant(np.asarray(mean, np.float32) * 255.0)
  inv_std = tf.constant(1.0 / (np.asarray(std, np.float32) * 255.0))
  video = (tf.cast(video, tf.float32) - mean) * inv_std
  return tf.cast(video, tf.bfloat16) if output_dtype == "bfloat16" else video


def _check_common(batch_size: int, num_frames: int, sampling_stride: int, crop_size: int, output_dtype: str):
  for name, v in (("batch_size", batch_size), ("num_frames", num_frames), ("sampling_stride", sampling_stride),
                  ("crop_size", crop_size)):
    if not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"{name} must be a positive integer, got {v!r}")
  if output_dtype not in ("float32", "bfloat16", "uint8"):
    raise ValueError(f"output_dtype must be float32, bfloat16 or uint8, got {output_dtype!r}")


# ------------------------------------------------------------------------------------ train
def make_train_pipeline(
    name: str,
    *,
    batch_size: int,
    data_dir: str | None = None,
    split: str = "train",
    num_frames: int = 16,
    sampling_stride: int = 1,
    crop_size: int = 56,
    scale_jitter: Sequence[int] | None = None,
    flip: bool | None = None,
    shuffle_buffer: int = 1024,
    seed: int = 0,
    deterministic: bool = True,
    start_step: int = 0,
    start_index: int | None = None,
    num_epochs: int | None = None,
    mean: Sequence[float] = KINETICS_MEAN,
    std: Sequence[float] = KINETICS_STD,
    output_dtype: str = "float32",
    process_index: int | None = None,
    process_count: int | None = None,
    validate_files: bool = True,
    cycle_length: int = 8,
    prefetch: int = 2,
    dct_method: str = "",
) -> InputPipeline:
  """Training input: infinite (or `num_epochs`) stream of per-host batches
  ``{'video': (B, T, crop, crop, 3), 'label': int32 (B,), 'index': int64 (B,)}``.

  scale_jitter: (min, max) short side the video is resized to before the random crop; default
    X3D's ratio to the crop (182..228 for 160): (round(1.14 crop), round(1.43 crop)).
  flip: None = random horizontal flip iff the dataset declares flip-invariant labels; True forces
    it (an error for datasets that are not flip-invariant); False disables it.
  index: each element's position in this host's record stream; resume exactly with
    ``start_index=int(batch['index'].max()) + 1``. `start_step=k` is ``start_index=k*batch_size``.
  deterministic: fixed element order (tf.data determinism) -- same arguments, same batches.
  """
  tf = _tf()
  _check_common(batch_size, num_frames, sampling_stride, crop_size, output_dtype)
  if scale_jitter is None:
    scale_jitter = (int(round(1.14 * crop_size)), int(round(1.43 * crop_size)))
  smin, smax = (int(scale_jitter[0]), int(scale_jitter[1]))
  if not crop_size <= smin <= smax:
    raise ValueError(f"scale_jitter must satisfy crop_size <= min <= max, got {scale_jitter} for crop {crop_size}")
  pi, pc = _process(process_index, process_count)
  source = registry.get_source(name, split, data_dir)
  if flip is None:
    flip = source.flip_invariant
  elif flip and not source.flip_invariant:
    raise ValueError(f"{source.name} does not declare flip-invariant labels (e.g. left/right motion); "
                     f"horizontal flips would corrupt them: use flip=None or False")
  stats = PipelineStats()
  plan = _check_files(host_plan(source, pi, pc), stats, validate_files)
  host_examples = sum(t for _, _, t in plan)
  if host_examples == 0:
    raise registry.EmptySplitError(f"host {pi}/{pc} has no readable records of {source.name}/{split}")
  if start_index is None:
    start_index = int(start_step) * batch_size
  start_epoch, offset = divmod(int(start_index), host_examples)
  if num_epochs is not None and start_epoch >= num_epochs:
    raise ValueError(f"start_index {start_index} is past the last of {num_epochs} epochs")

  host_seed = int(seed) * 4_099 + pi

  def epoch_records(epoch):
    recs = _read_records(plan, stats, epoch=epoch, seed=host_seed, shuffle_files=True,
                         cycle_length=cycle_length, deterministic=deterministic)
    if shuffle_buffer > 1:
      recs = recs.shuffle(shuffle_buffer, seed=_mix(host_seed, epoch, 2), reshuffle_each_iteration=False)
    return recs

  stop_epoch = num_epochs if num_epochs is not None else np.iinfo(np.int64).max
  # `stats.stop` ends the stream (the epochs and the records in one) once the consumer gave up.
  running = lambda *_: tf.logical_not(stats.stop)  # noqa: E731
  ds = tf.data.Dataset.range(start_epoch, stop_epoch).take_while(running).flat_map(epoch_records)
  if offset:
    ds = ds.skip(offset)
  ds = ds.enumerate(start=start_index).take_while(running)
  fmt = source.image_format
  num_classes = source.num_classes
  parse_fn = source.parse_fn

  def parse(index, record):
    ex = parse_fn(record)
    ex["index"] = index
    ex["valid"] = _validate(ex, fmt, num_classes)
    return ex

  def keep(ex):
    with tf.control_dependencies([stats.invalid_records.assign_add(tf.cast(~ex["valid"], tf.int64))]):
      return tf.identity(ex["valid"])

  seed_const = tf.constant(host_seed, tf.int64)
  span = (num_frames - 1) * sampling_stride + 1

  def train_clip(ex):
    frames = ex["frames"]
    seeds = tf.random.experimental.stateless_split(tf.stack([seed_const, ex["index"]]), 5)
    length = tf.shape(frames)[0]
    max_start = tf.maximum(length - span, 0)
    start = tf.random.stateless_uniform([], seeds[0], minval=0, maxval=max_start + 1, dtype=tf.int32)
    clip = tf.gather(frames, _temporal_indices(length, start, num_frames, sampling_stride))
    h, w = _frame_shape(clip, fmt)
    short = tf.minimum(h, w)
    scale = tf.random.stateless_uniform([], seeds[1], minval=float(smin), maxval=float(smax) + 1e-3)
    # Crop window in source pixels: crop_size at the jittered scale, i.e. crop * short / scale.
    win = tf.cast(tf.round(crop_size * tf.cast(short, tf.float32) / scale), tf.int32)
    win = tf.clip_by_value(win, 1, short)
    y = tf.random.stateless_uniform([], seeds[2], minval=0, maxval=h - win + 1, dtype=tf.int32)
    x = tf.random.stateless_uniform([], seeds[3], minval=0, maxval=w - win + 1, dtype=tf.int32)
    video = _decode(clip, fmt, tf.stack([y, x, win, win]), dct_method)
    video = tf.image.resize(video, [crop_size, crop_size], method="bilinear")
    if flip:
      do_flip = tf.random.stateless_uniform([], seeds[4]) < 0.5
      video = tf.cond(do_flip, lambda: tf.reverse(video, axis=[2]), lambda: video)
    video = tf.ensure_shape(video, [num_frames, crop_size, crop_size, 3])
    return {"video": video, "label": ex["label"], "index": ex["index"]}

  ds = ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
  ds = ds.filter(keep)
  ds = _guarded_decode(ds, stats, train_clip, deterministic)
  ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
  ds = ds.map(lambda b: {**b, "video": _normalize_batch(b["video"], mean, std, output_dtype)},
              num_parallel_calls=AUTOTUNE, deterministic=deterministic)
  ds = ds.prefetch(prefetch if prefetch > 0 else AUTOTUNE)
  ds = ds.with_options(_options(deterministic))
  return InputPipeline(dataset=ds, stats=stats, source=source, batch_size=batch_size, process_index=pi,
                       process_count=pc, host_examples=host_examples, num_batches=None)


# ------------------------------------------------------------------------------------ eval
def make_eval_pipeline(
    name: str,
    *,
    batch_size: int,
    data_dir: str | None = None,
    split: str = "validation",
    num_frames: int = 16,
    sampling_stride: int = 1,
    crop_size: int = 56,
    short_side: int | None = None,
    num_temporal_views: int = 10,
    num_spatial_crops: int = 3,
    mean: Sequence[float] = KINETICS_MEAN,
    std: Sequence[float] = KINETICS_STD,
    output_dtype: str = "float32",
    process_index: int | None = None,
    process_count: int | None = None,
    validate_files: bool = True,
    deterministic: bool = True,
    prefetch: int = 2,
    dct_method: str = "",
) -> InputPipeline:
  """Evaluation input, one pass: per-host batches ``{'video': (B, V, T, crop, crop, 3), 'label':
  int32 (B,), 'video_id': bytes (B,), 'mask': bool (B,)}`` with V = temporal views x spatial crops
  (temporal-major). short_side: the frames' short side is resized to this before cropping
  (default crop_size, as in X3D testing). `num_batches` is the same on every host.
  """
  tf = _tf()
  _check_common(batch_size, num_frames, sampling_stride, crop_size, output_dtype)
  short_side = int(short_side or crop_size)
  if short_side < crop_size:
    raise ValueError(f"short_side ({short_side}) must be >= crop_size ({crop_size})")
  if num_temporal_views < 1 or num_spatial_crops not in (1, 3):
    raise ValueError(f"num_temporal_views must be >= 1 and num_spatial_crops 1 or 3, got "
                     f"{num_temporal_views}, {num_spatial_crops}")
  pi, pc = _process(process_index, process_count)
  source = registry.get_source(name, split, data_dir)
  stats = PipelineStats()
  plan = _check_files(host_plan(source, pi, pc), stats, validate_files)
  host_examples = sum(t for _, _, t in plan)
  # Same number of batches on every host: enough for the largest host range.
  largest = max(b - a for a, b in (host_range(source.num_examples, i, pc) for i in range(pc)))
  num_batches = max(1, math.ceil(largest / batch_size))
  views = num_temporal_views * num_spatial_crops
  fmt = source.image_format
  num_classes = source.num_classes
  parse_fn = source.parse_fn
  span = (num_frames - 1) * sampling_stride + 1

  if plan:
    ds = _read_records(plan, stats, epoch=0, seed=0, shuffle_files=False, cycle_length=1,
                       deterministic=True)
  else:
    ds = tf.data.Dataset.from_tensor_slices(tf.constant([], tf.string))

  def parse(record):
    ex = parse_fn(record)
    ex["valid"] = _validate(ex, fmt, num_classes)
    return ex

  def keep(ex):
    with tf.control_dependencies([stats.invalid_records.assign_add(tf.cast(~ex["valid"], tf.int64))]):
      return tf.identity(ex["valid"])

  def eval_views(ex):
    frames = ex["frames"]
    length = tf.shape(frames)[0]
    delta = tf.maximum(length - span, 0)
    if num_temporal_views == 1:
      starts = tf.reshape(delta // 2, [1])
    else:
      starts = tf.cast(tf.round(tf.linspace(0.0, tf.cast(delta, tf.float32), num_temporal_views)), tf.int32)
    idx = tf.minimum(starts[:, None] + tf.range(num_frames, dtype=tf.int32)[None, :] * sampling_stride,
                     length - 1)
    unique, inverse = tf.unique(tf.reshape(idx, [-1]))
    decoded = _decode(tf.gather(frames, unique), fmt, None, dct_method)     # each needed frame once
    h, w = tf.shape(decoded)[1], tf.shape(decoded)[2]
    short = tf.minimum(h, w)
    nh = tf.cast(tf.round(tf.cast(h * short_side, tf.float32) / tf.cast(short, tf.float32)), tf.int32)
    nw = tf.cast(tf.round(tf.cast(w * short_side, tf.float32) / tf.cast(short, tf.float32)), tf.int32)
    nh, nw = tf.maximum(nh, short_side), tf.maximum(nw, short_side)
    resized = tf.image.resize(decoded, tf.stack([nh, nw]), method="bilinear")
    clips = tf.reshape(tf.gather(resized, inverse), [num_temporal_views, num_frames, nh, nw, 3])
    cy, cx = (nh - crop_size) // 2, (nw - crop_size) // 2
    if num_spatial_crops == 1:
      offsets = [(cy, cx)]
    else:  # along the long side: start, centre, end (SlowFast `uniform_crop` spatial_idx 0, 1, 2)
      tall = nh > nw
      offsets = [(tf.where(tall, 0, cy), tf.where(tall, cx, 0)), (cy, cx),
                 (tf.where(tall, nh - crop_size, cy), tf.where(tall, cx, nw - crop_size))]
    crops = [clips[:, :, oy:oy + crop_size, ox:ox + crop_size] for oy, ox in offsets]
    video = tf.stack(crops, axis=1)                                      # (N, S, T, c, c, 3)
    video = tf.reshape(video, [views, num_frames, crop_size, crop_size, 3])
    return {"video": video, "label": ex["label"], "video_id": ex["video_id"], "mask": tf.constant(True)}

  ds = ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=True)
  ds = ds.filter(keep)
  ds = _guarded_decode(ds, stats, eval_views, deterministic)
  pad = tf.data.Dataset.from_tensors({
      "video": tf.zeros([views, num_frames, crop_size, crop_size, 3], tf.float32),
      "label": tf.constant(0, tf.int32), "video_id": tf.constant(b""), "mask": tf.constant(False)}).repeat()
  ds = ds.concatenate(pad).take(num_batches * batch_size)
  ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds.map(lambda b: {**b, "video": _normalize_batch(b["video"], mean, std, output_dtype)},
              num_parallel_calls=AUTOTUNE, deterministic=True)
  ds = ds.prefetch(prefetch if prefetch > 0 else AUTOTUNE)
  ds = ds.with_options(_options(deterministic))
  return InputPipeline(dataset=ds, stats=stats, source=source, batch_size=batch_size, process_index=pi,
                       process_count=pc, host_examples=host_examples, num_batches=num_batches, views=views)


# ------------------------------------------------------------------------------------ conveniences
def make_train_dataset(name: str, **kwargs):
  """`make_train_pipeline(...).dataset`: a tf.data.Dataset of per-host batch dicts."""
  return make_train_pipeline(name, **kwargs).dataset


def make_eval_dataset(name: str, **kwargs):
  """`make_eval_pipeline(...).dataset`."""
  return make_eval_pipeline(name, **kwargs).dataset


_TRAIN_KEYS = ("data_dir", "split", "num_frames", "sampling_stride", "crop_size", "scale_jitter", "flip",
               "shuffle_buffer", "seed", "deterministic", "start_step", "start_index", "num_epochs", "mean",
               "std", "output_dtype", "process_index", "process_count", "validate_files", "cycle_length",
               "prefetch", "dct_method")
_EVAL_KEYS = ("data_dir", "split", "num_frames", "sampling_stride", "crop_size", "short_side",
              "num_temporal_views", "num_spatial_crops", "mean", "std", "output_dtype", "process_index",
              "process_count", "validate_files", "deterministic", "prefetch", "dct_method")


def pipeline_from_config(cfg, mode: str = "train", **overrides) -> InputPipeline:
  """Builds the pipeline from a ConfigDict/dict with fields `name`, `batch_size` (per host) and any
  keyword of `make_train_pipeline` / `make_eval_pipeline` (others are ignored); `overrides` win.
  In eval mode `eval_split`, `eval_batch_size` and `eval_crop_size`, when present, replace `split`,
  `batch_size` and `crop_size`."""
  get = (lambda k: cfg[k] if k in cfg else None)
  values = {k: get(k) for k in (_TRAIN_KEYS if mode == "train" else _EVAL_KEYS) if get(k) is not None}
  if mode == "eval":
    for k in ("split", "batch_size", "crop_size"):
      if get(f"eval_{k}") is not None:
        values[k] = get(f"eval_{k}")
    values.setdefault("batch_size", get("batch_size"))
  else:
    values["batch_size"] = get("batch_size")
  if "scale_jitter" in values and values["scale_jitter"] is not None:
    values["scale_jitter"] = tuple(values["scale_jitter"])
  for k in ("mean", "std"):
    if k in values:
      values[k] = tuple(values[k])
  values.update(overrides)
  name = values.pop("name", None) or get("name")
  if mode == "train":
    return make_train_pipeline(name, **values)
  if mode == "eval":
    return make_eval_pipeline(name, **values)
  raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")


def to_global_batch(batch: dict[str, np.ndarray], sharding) -> dict[str, Any]:
  """Per-host numpy batch -> global `jax.Array`s sharded along the batch axis by `sharding`
  (e.g. `NamedSharding(mesh, P('data'))`). String fields (video_id) stay on the host."""
  import jax

  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    if v.dtype.kind in ("S", "U", "O"):
      out[k] = v
    else:
      out[k] = jax.make_array_from_process_local_data(sharding, v)
  return out


def normalize(video, mean: Sequence[float] = KINETICS_MEAN, std: Sequence[float] = KINETICS_STD):
  """On-device normalisation for `output_dtype='uint8'` batches (jnp or np arrays)."""
  import jax.numpy as jnp

  mean = jnp.asarray(mean, jnp.float32) * 255.0
  std = jnp.asarray(std, jnp.float32) * 255.0
  return (jnp.asarray(video, jnp.float32) - mean) / std
