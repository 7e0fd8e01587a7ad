"""Convert real video datasets into clip-record shards (`records` format) + dataset_info.json.

Inputs (the two common layouts):

* ``--videos DIR``: one sub-folder per class (UCF-101, HMDB-51, Kinetics after download), e.g.
  ``DIR/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi``. Class index = position of the folder name
  in the sorted list (or in ``--class_names``).
* ``--csv FILE``: rows ``path,label`` (Something-Something-V2 style; paths relative to ``--root``,
  default the CSV's folder; a header row is detected and skipped). Labels may be class names or
  integer indices.

Every video is decoded with PyAV, resampled to ``--fps`` (sample-and-hold on presentation
timestamps; omit to keep the native rate), resized so its short side is ``--short_side`` (omit to
keep the size), JPEG-encoded and written as one `tf.train.SequenceExample` per video. Videos are
processed in parallel (``--workers`` processes) with a progress bar; a video that fails to decode
is reported and skipped, and listed under ``failed`` in dataset_info.json -- it never aborts the
conversion. Output shards are ``{split}.tfrecord-XXXXX-of-YYYYY``; converting a second split into
the same ``--output`` adds it to dataset_info.json (class names must agree).

Example (UCF-101, official split 1, 10 fps, short side 128)::

    python -m autox3d_jax.data.convert --videos UCF-101/ --list ucfTrainTestlist/trainlist01.txt \\
        --split train --fps 10 --short_side 128 --output ~/tensorflow_datasets/ucf101
    python -m autox3d_jax.data.convert --videos UCF-101/ --list ucfTrainTestlist/testlist01.txt \\
        --split validation --fps 10 --short_side 128 --output ~/tensorflow_datasets/ucf101

then train with ``name='ucf101', data_dir='~/tensorflow_datasets'``.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import sys
import time
from typing import Sequence

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ogv", ".3gp")


@dataclasses.dataclass(frozen=True)
class VideoItem:
  path: str
  label: int
  label_name: str
  video_id: str


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  fps: float | None = None          # target frame rate (None: native)
  short_side: int | None = None     # resize so min(h, w) == short_side (None: native size)
  max_frames: int | None = None     # keep at most this many (after resampling)
  jpeg_quality: int = 90


@dataclasses.dataclass
class DecodedVideo:
  frames: list[bytes]               # JPEG
  fps: float
  height: int
  width: int


# ------------------------------------------------------------------------------------ listing
class ConversionError(ValueError):
  """Input the converter cannot turn into a dataset; the message names the file or flag."""


def _read_class_names(path: str) -> list[str]:
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


def list_videos_folder(root: str, class_names: Sequence[str] | None = None,
                       extensions: Sequence[str] = VIDEO_EXTENSIONS,
                       only: Sequence[str] | None = None) -> tuple[list[VideoItem], list[str]]:
  """Class-per-subfolder layout. `only`: relative paths to keep (e.g. an official split list)."""
  if os.path.isfile(root):
    raise ConversionError(f"--videos {root} is a file; it takes a folder with one sub-folder of videos per class "
                          f"(for a list of files, write a path,label CSV and pass --csv)")
  if not os.path.isdir(root):
    raise ConversionError(f"video folder {root} does not exist")
  folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  if class_names is None:
    class_names = folders
  index = {c: i for i, c in enumerate(class_names)}
  extensions = tuple(e.lower() for e in extensions)
  wanted = None if only is None else {os.path.normpath(p) for p in only}
  items = []
  for folder in folders:
    if folder not in index:
      raise ConversionError(f"class folder {folder!r} is not in the class names list")
    for dirpath, _, files in os.walk(os.path.join(root, folder)):
      for f in sorted(files):
        if not f.lower().endswith(extensions):
          continue
        path = os.path.join(dirpath, f)
        rel = os.path.relpath(path, root)
        if wanted is not None and os.path.normpath(rel) not in wanted:
          continue
        items.append(VideoItem(path, index[folder], folder, os.path.splitext(rel)[0].replace(os.sep, "/")))
  items.sort(key=lambda it: it.path)
  if not items:
    raise ConversionError(f"no videos ({', '.join(extensions)}) found under {root}"
                          + ("" if folders else ": it has no class sub-folders"))
  return items, list(class_names)


def read_split_list(path: str) -> list[str]:
  """UCF-101 style list: 'Class/video.avi [index]' per line -> relative paths."""
  with open(path) as f:
    return [line.split()[0] for line in f if line.strip()]


def list_videos_csv(csv_path: str, root: str | None = None,
                    class_names: Sequence[str] | None = None) -> tuple[list[VideoItem], list[str]]:
  """Rows `path,label` (label: class name or integer index). A header row is skipped."""
  root = root if root is not None else os.path.dirname(os.path.abspath(csv_path))
  rows = []
  with open(csv_path, newline="") as f:
    sample = f.read(4096)
    f.seek(0)
    dialect = csv.Sniffer().sniff(sample, delimiters=",;\t ") if sample.strip() else csv.excel
    for i, row in enumerate(csv.reader(f, dialect)):
      row = [c.strip() for c in row if c.strip()]
      if not row:
        continue
      if len(row) < 2:
        raise ConversionError(f"{csv_path}:{i + 1}: expected 'path,label', got {row!r}")
      if i == 0 and row[0].lower() in ("path", "video", "filename", "file", "id", "video_path"):
        continue
      rows.append((row[0], row[1]))
  if not rows:
    raise ConversionError(f"no rows in {csv_path}")
  labels = [r[1] for r in rows]
  all_int = all(lbl.lstrip("-").isdigit() for lbl in labels)
  if class_names is None:
    class_names = ([str(i) for i in range(max(int(lbl) for lbl in labels) + 1)] if all_int
                   else sorted(set(labels)))
  index = {c: i for i, c in enumerate(class_names)}
  items = []
  for path, lbl in rows:
    if all_int:
      label = int(lbl)
      if not 0 <= label < len(class_names):
        raise ConversionError(f"label {label} of {path} is out of range for {len(class_names)} classes")
    elif lbl in index:
      label = index[lbl]
    else:
      raise ConversionError(f"label {lbl!r} of {path} is not in the class names list")
    full = path if os.path.isabs(path) else os.path.join(root, path)
    items.append(VideoItem(full, label, class_names[label], os.path.splitext(path)[0].replace(os.sep, "/")))
  return items, list(class_names)


# ------------------------------------------------------------------------------------ decoding
def _resized_size(h: int, w: int, short_side: int | None) -> tuple[int, int]:
  if not short_side or min(h, w) == short_side:
    return h, w
  if h <= w:
    return short_side, max(1, int(round(w * short_side / h)))
  return max(1, int(round(h * short_side / w))), short_side


def decode_video(path: str, options: DecodeOptions = DecodeOptions()) -> DecodedVideo:
  """Decodes `path` with PyAV: resampled to options.fps, short side resized, JPEG-encoded.
  Raises on any decoding problem (the caller reports and skips the video)."""
  import av
  from PIL import Image

  frames: list[bytes] = []
  size = None

  def emit(frame) -> None:
    nonlocal size
    h, w = _resized_size(frame.height, frame.width, options.short_side)
    if (h, w) != (frame.height, frame.width):
      frame = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA")
    rgb = frame.to_ndarray(format="rgb24")
    size = rgb.shape[:2]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=options.jpeg_quality)
    frames.append(buf.getvalue())

  with av.open(path) as container:
    if not container.streams.video:
      raise ValueError("no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    native_fps = float(rate) if rate else 0.0
    target = options.fps
    step = 1.0 / target if target else None
    next_t = None
    prev = None
    prev_t = None
    n_decoded = 0
    full = False
    for frame in container.decode(stream):
      n_decoded += 1
      t = frame.time
      if t is None:
        t = (n_decoded - 1) / native_fps if native_fps else float(n_decoded - 1)
      if step is None:
        emit(frame)
      else:
        if next_t is None:
          next_t = t
        # Sample-and-hold: each target time takes the latest frame at or before it.
        while prev is not None and next_t < t - 1e-6:
          emit(prev)
          next_t += step
          if options.max_frames and len(frames) >= options.max_frames:
            full = True
            break
        prev, prev_t = frame, t
      if full or (options.max_frames and len(frames) >= options.max_frames):
        full = True
        break
    if step is not None and prev is not None and not full:
      while next_t <= prev_t + 1e-6 and not (options.max_frames and len(frames) >= options.max_frames):
        emit(prev)
        next_t += step
  if not frames:
    raise ValueError(f"no frames decoded ({n_decoded} packets decoded)")
  out_fps = float(target) if target else native_fps
  return DecodedVideo(frames=frames, fps=out_fps, height=int(size[0]), width=int(size[1]))


def _convert_one(args):
  item, options = args
  try:
    return item, decode_video(item.path, options), None
  except Exception as e:  # noqa: BLE001 -- any decoding failure: report and skip
    return item, None, f"{type(e).__name__}: {e}"


# ------------------------------------------------------------------------------------ converting
def convert(items: Sequence[VideoItem], class_names: Sequence[str], output_dir: str, *, split: str = "train",
            name: str | None = None, options: DecodeOptions = DecodeOptions(), num_shards: int | None = None,
            videos_per_shard: int = 64, workers: int | None = None, flip_invariant: bool = True,
            progress: bool = True):
  """Decodes `items` in `workers` processes and writes `split` shards + dataset_info.json into
  `output_dir`. Returns the `records.DatasetMeta` written. Failed videos are logged and skipped."""
  from autox3d_jax.data import records

  if not items:
    raise ConversionError("nothing to convert: no videos given")
  name = name or os.path.basename(os.path.normpath(output_dir))
  if num_shards is None:
    num_shards = max(1, math.ceil(len(items) / max(1, videos_per_shard)))
  num_shards = min(num_shards, len(items))
  workers = workers if workers is not None else (os.cpu_count() or 1)

  meta = None
  if records.has_meta(output_dir):
    meta = records.DatasetMeta.load(output_dir)
    if list(meta.class_names) != list(class_names):
      raise ConversionError(f"{output_dir} already holds {meta.name} with different class names; convert every "
                       f"split with the same classes (pass --class_names)")
  if meta is None:
    meta = records.DatasetMeta(name=name, class_names=list(class_names), flip_invariant=flip_invariant,
                               image_format="jpeg", fps=options.fps, short_side=options.short_side)
  meta.flip_invariant = bool(flip_invariant)

  failed = []
  jobs = [(item, options) for item in items]
  bar = None
  if progress:
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc=f"converting {split}", unit="video", file=sys.stderr)
  t0 = time.time()
  with records.ShardedWriter(output_dir, split, num_shards, len(items)) as writer:
    from autox3d_jax.data.parallel import ordered_map

    results = ordered_map(_convert_one, jobs, workers,
                          on_crash=lambda job: (job[0], None, "the decoder crashed (worker process died)"))
    try:
      for position, (item, video, error) in enumerate(results):
        if video is None:
          if bar is not None:
            bar.write(f"skipped {item.path}: {error}")
          else:
            log.warning("skipped %s: %s", item.path, error)
          failed.append({"path": item.path, "error": error})
        else:
          writer.write(records.encode_clip(
              video.frames, label=item.label, video_id=item.video_id, fps=video.fps, label_name=item.label_name,
              dataset=name, num_classes=len(class_names), height=video.height, width=video.width,
              source=item.path), position)
        if bar is not None:
          bar.update(1)
    finally:
      results.close()
      if bar is not None:
        bar.close()
  if not sum(writer.lengths):   # nothing decoded: leave no empty split behind for a run to trust
    for f in writer.filenames:
      path = os.path.join(output_dir, f)
      if os.path.exists(path):
        os.remove(path)
    raise ConversionError(f"none of the {len(items)} videos could be decoded (first: {failed[0]['path']}: "
                          f"{failed[0]['error']}); nothing written for split {split!r} in {output_dir}")
  meta.splits[split] = records.SplitMeta(files=writer.filenames, shard_lengths=writer.lengths, failed=failed)
  meta.save(output_dir)
  log.info("converted %d/%d videos of %s in %.1fs (%d failed) -> %s", sum(writer.lengths), len(items), split,
           time.time() - t0, len(failed), output_dir)
  return meta


def main(argv=None) -> int:
  import argparse

  p = argparse.ArgumentParser(prog="python -m autox3d_jax.data.convert", description=(
      "Convert a folder of videos (class-per-subfolder) or a CSV of path,label into TFRecord shards of "
      "SequenceExample clip records for the autox3d_jax input pipeline."))
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--videos", help="folder with one sub-folder of videos per class (UCF-101 / Kinetics layout)")
  src.add_argument("--csv", help="CSV of path,label rows (Something-Something layout)")
  p.add_argument("--root", default=None, help="--csv: folder the CSV paths are relative to (default: the CSV's folder)")
  p.add_argument("--list", default=None, help="--videos: only convert the videos named in this split list "
                                               "(UCF-101 trainlist01.txt style: 'Class/video.avi [index]')")
  p.add_argument("--output", required=True, help="output dataset directory (shards + dataset_info.json)")
  p.add_argument("--split", default="train", help="split name to write: train (default), validation, test, ...")
  p.add_argument("--name", default=None, help="dataset name (default: the output folder's name)")
  p.add_argument("--class_names", default=None, help="file with one class name per line (fixes the label order)")
  p.add_argument("--fps", type=float, default=None, help="target frame rate (default: keep native)")
  p.add_argument("--short_side", type=int, default=None, help="resize so the short side is this (default: keep)")
  p.add_argument("--max_frames", type=int, default=None, help="keep at most this many frames per video")
  p.add_argument("--jpeg_quality", type=int, default=90, help="JPEG quality of the stored frames (default: 90)")
  p.add_argument("--num_shards", type=int, default=None, help="default: one per --videos_per_shard videos")
  p.add_argument("--videos_per_shard", type=int, default=64, help="videos per shard (default: 64)")
  p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
  flip = p.add_mutually_exclusive_group()
  flip.add_argument("--flip_invariant", dest="flip_invariant", action="store_true", default=None,
                    help="labels survive a horizontal flip (default for --videos)")
  flip.add_argument("--no_flip_invariant", dest="flip_invariant", action="store_false",
                    help="labels do not survive a flip, e.g. left/right actions (default for --csv)")
  p.add_argument("--no_progress", action="store_true")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  try:
    return _run(args)
  except (ConversionError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def _run(args) -> int:
  class_names = _read_class_names(args.class_names) if args.class_names else None
  if args.videos:
    only = read_split_list(args.list) if args.list else None
    items, class_names = list_videos_folder(args.videos, class_names, only=only)
    flip_invariant = True if args.flip_invariant is None else args.flip_invariant
  else:
    items, class_names = list_videos_csv(args.csv, args.root, class_names)
    flip_invariant = False if args.flip_invariant is None else args.flip_invariant
  options = DecodeOptions(fps=args.fps, short_side=args.short_side, max_frames=args.max_frames,
                          jpeg_quality=args.jpeg_quality)
  meta = convert(items, class_names, args.output, split=args.split, name=args.name, options=options,
                 num_shards=args.num_shards, videos_per_shard=args.videos_per_shard, workers=args.workers,
                 flip_invariant=flip_invariant, progress=not args.no_progress)
  split = meta.splits[args.split]
  print(f"{args.split}: {split.num_examples} videos in {len(split.files)} shards, {len(split.failed)} failed "
        f"-> {args.output}")
  for f in split.failed:
    print(f"  failed: {f['path']}: {f['error']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
