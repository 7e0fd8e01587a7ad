"""`moving_digits`: the embedded, offline video dataset, as a tensorflow-datasets builder.

Clips are rendered by `digits` (this project's renderer: pure numpy, deterministic from the
config's seed) from scikit-learn's 1,797 bundled handwritten digits, so building needs no download
and no internet. The registry reaches this builder through the plug-in table
(`autox3d_jax.data.registry.DATASET_PLUGINS`) and the package's `build`. Configs:

=================  ==========  ======  ========  =======  ====================================
config             task        frames  size      train    validation
=================  ==========  ======  ========  =======  ====================================
motion             motion      16      64x64     10,000   2,000   (Something-Something-like)
appearance         appearance  16      64x64     10,000   2,000   (Kinetics-like)
motion_small       motion      12      48x48     4,000    800     (demo.py:motion; builds in ~20 s)
appearance_small   appearance  12      48x48     4,000    800     (its appearance counterpart)
sequence_small     sequence    12      48x48     4,000    800     (two moves in order, 16 classes)
speed_small        speed       12      48x48     4,000    800     (the README demo: 8 speed bins)
motion_tiny        motion      12      32x32     64       32      (tests: builds in seconds)
appearance_tiny    appearance  12      32x32     64       32
=================  ==========  ======  ========  =======  ====================================

Build (prints the prepared directory)::

    python -m autox3d_jax.projects.moving_digits --config motion --data_dir ~/tensorflow_datasets

or from Python: ``build_moving_digits("motion", data_dir)``. Custom sizes:
``build_moving_digits("motion", data_dir, num_frames=32, resolution=96)`` builds a config named
``motion_32x96``; ``active_distractors=2`` adds digits doing motions of their own (``_distractors2``).

Storage format -- why tfds' own records and not `tf.train.SequenceExample`
-------------------------------------------------------------------------
tfds writes `tf.train.Example`s (its `Video` feature stores the clip as a list of JPEG strings), not
SequenceExamples, and fighting that would lose what tfds is for (``tfds.load``, split metadata,
shard lengths, `features.json`, versioning). So the builder stores tfds format, and the pipeline
reads its shards with ``decoders={'video': tfds.decode.SkipDecoding()}``: each record parses to
the *same* ``{'frames': string (T,), 'label', 'video_id', 'fps'}`` dict that
`records.parse_clip` produces for converted real datasets, and from there one code path samples the
clip's frame indices and decodes only those JPEGs (the DMVR approach). The SequenceExample clip
record format is still available for this dataset: ``--format records`` (or
`write_moving_digits_records`) writes the same clips as clip-record shards plus
`dataset_info.json`, readable as a converted dataset.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
import tensorflow_datasets as tfds

from autox3d_jax.projects.moving_digits import digits

BUILDER_NAME = "moving_digits"
FPS = 10.0
_SHARDS_FULL = 16
_SHARDS_TINY = 2


@dataclasses.dataclass(eq=False)
class MovingDigitsConfig(tfds.core.BuilderConfig):
  """One variant of the dataset; every field changes the data, so each variant is its own config."""
  task: str = "motion"
  num_frames: int = 16
  resolution: int = 64
  num_train: int = 10_000
  num_validation: int = 2_000
  seed: int = 0
  jpeg_quality: int = 90
  active_distractors: int = 0     # see digits.ClipSpec: extra digits doing motions of their own

  @property
  def clip_spec(self) -> digits.ClipSpec:
    return digits.ClipSpec(task=self.task, num_frames=self.num_frames, height=self.resolution,
                           width=self.resolution, active_distractors=self.active_distractors)

  @property
  def flip_invariant(self) -> bool:
    # Motion labels flip (left <-> right). Digits are chiral: a mirrored 2 is not a 2 any more, so
    # the appearance labels are not declared flip-invariant either.
    return False

  @property
  def num_shards(self) -> int:
    return _SHARDS_TINY if self.num_train < 1000 else _SHARDS_FULL


def _config(name: str, task: str, **kw) -> MovingDigitsConfig:
  c = MovingDigitsConfig(name=name, task=task, **kw)
  c.description = (f"{task} task, {c.num_frames} frames at {c.resolution}x{c.resolution}, "
                   f"{c.num_train} train / {c.num_validation} validation clips, seed {c.seed}")
  return c


CONFIGS = {
    c.name: c for c in (
        _config("motion", "motion"),
        _config("appearance", "appearance"),
        _config("motion_small", "motion", num_frames=12, resolution=48, num_train=4000, num_validation=800),
        _config("appearance_small", "appearance", num_frames=12, resolution=48, num_train=4000,
                num_validation=800),
        _config("sequence_small", "sequence", num_frames=12, resolution=48, num_train=4000,
                num_validation=800),
        _config("speed_small", "speed", num_frames=12, resolution=48, num_train=4000, num_validation=800),
        _config("motion_tiny", "motion", num_frames=12, resolution=32, num_train=64, num_validation=32),
        _config("appearance_tiny", "appearance", num_frames=12, resolution=32, num_train=64,
                num_validation=32),
    )
}


# Not registered when run as `python -m ...` (the importable module registers it; twice would clash).
class MovingDigits(tfds.core.GeneratorBasedBuilder, skip_registration=(__name__ == "__main__")):
  """Moving handwritten digits (sklearn's bundled set), motion and appearance tasks; offline."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = list(CONFIGS.values())
  DEFAULT_CONFIG_NAME = "motion"

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # tfds' default looks the module up through `importlib_resources`, a package some installs
    # lack (tfds' etils[epath] extra); the answer is simply this file.
    from etils import epath

    return epath.Path(__file__)

  def __init__(self, *, workers: int | None = None, **kwargs):
    self._workers = workers
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    spec = c.clip_spec
    return self.dataset_info_from_configs(
        description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Video(shape=(c.num_frames, c.resolution, c.resolution, 3),
                                         encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=list(spec.class_names)),
            "video_id": tfds.features.Text(),
            "fps": tfds.features.Scalar(dtype=np.float32),
        }),
        supervised_keys=("video", "label"),
        metadata=tfds.core.MetadataDict(task=c.task, flip_invariant=c.flip_invariant, seed=c.seed),
        homepage="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: the digits ship with scikit-learn
    c = self.builder_config
    return {
        "train": self._generate_examples("train", c.num_train),
        "validation": self._generate_examples("validation", c.num_validation),
    }

  def _generate_examples(self, split: str, num_clips: int):
    c = self.builder_config
    workers = self._workers
    if workers is None:
      workers = 1 if num_clips < 512 else (os.cpu_count() or 1)
    for index, label, frames in digits.iter_encoded(c.clip_spec, split, num_clips, seed=c.seed,
                                                    quality=c.jpeg_quality, workers=workers):
      video_id = f"{split}_{index:06d}"
      yield video_id, {"video": frames, "label": label, "video_id": video_id, "fps": FPS}


def get_config(config_name: str, **overrides) -> MovingDigitsConfig:
  """A predefined config, or a variant of one (`overrides`: num_frames, resolution, num_train, ...)."""
  if config_name not in CONFIGS:
    raise ValueError(f"unknown moving_digits config {config_name!r}; known: {sorted(CONFIGS)}")
  base = CONFIGS[config_name]
  if not overrides:
    return base
  fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(MovingDigitsConfig)
            if f.name not in ("name", "version", "release_notes", "supported_versions", "description", "tags")}
  unknown = set(overrides) - set(fields)
  if unknown:
    raise ValueError(f"unknown moving_digits config fields {sorted(unknown)}; known: {sorted(fields)}")
  fields.update(overrides)
  name = config_name
  if overrides.get("num_frames", base.num_frames) != base.num_frames or \
      overrides.get("resolution", base.resolution) != base.resolution:
    name += f"_{fields['num_frames']}x{fields['resolution']}"
  for key in ("num_train", "num_validation", "seed", "active_distractors"):
    if fields[key] != getattr(base, key):
      name += f"_{key.replace('num_', '').replace('active_', '')}{fields[key]}"
  return _config(name, **fields)


def default_data_dir() -> str:
  return os.path.expanduser(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


def builder(config: str | MovingDigitsConfig, data_dir: str | None = None,
            workers: int | None = None) -> MovingDigits:
  cfg = get_config(config) if isinstance(config, str) else config
  return MovingDigits(config=cfg, data_dir=data_dir or default_data_dir(), workers=workers)


def build_moving_digits(config_name: str = "motion", data_dir: str | None = None, *,
                        workers: int | None = None, **overrides) -> str:
  """Generates and prepares `moving_digits/<config>` under `data_dir` (no-op if already prepared);
  returns the prepared dataset directory. Offline: nothing is downloaded."""
  cfg = get_config(config_name, **overrides)
  b = builder(cfg, data_dir, workers)
  download_config = tfds.download.DownloadConfig(num_shards=cfg.num_shards, try_download_gcs=False)
  b.download_and_prepare(download_config=download_config, file_format="tfrecord")
  return os.fspath(b.data_path)


def write_moving_digits_records(config_name: str, out_dir: str, *, workers: int | None = None,
                                **overrides) -> str:
  """The same clips as clip-record shards (`records` format, SequenceExample) + dataset_info.json."""
  from autox3d_jax.data import records

  cfg = get_config(config_name, **overrides)
  spec = cfg.clip_spec
  meta = records.DatasetMeta(name=f"{BUILDER_NAME}/{cfg.name}", class_names=list(spec.class_names),
                             flip_invariant=cfg.flip_invariant, image_format="jpeg", fps=FPS,
                             short_side=cfg.resolution)
  for split, n in (("train", cfg.num_train), ("validation", cfg.num_validation)):
    with records.ShardedWriter(out_dir, split, cfg.num_shards, n) as w:
      for index, label, frames in digits.iter_encoded(spec, split, n, seed=cfg.seed,
                                                      quality=cfg.jpeg_quality, workers=workers):
        w.write(records.encode_clip(frames, label=label, video_id=f"{split}_{index:06d}", fps=FPS,
                                    label_name=spec.class_names[label], dataset=meta.name,
                                    num_classes=spec.num_classes, height=cfg.resolution,
                                    width=cfg.resolution), index)
    meta.splits[split] = records.SplitMeta(files=w.filenames, shard_lengths=w.lengths)
  meta.save(out_dir)
  return out_dir


def records_dir(config_name: str, data_dir: str | None = None) -> str:
  """Where `--format records` puts a config's clip records by default."""
  return os.path.join(data_dir or default_data_dir(), f"{BUILDER_NAME}_records", config_name)


def main(argv=None) -> int:
  import argparse

  p = argparse.ArgumentParser(prog="python -m autox3d_jax.projects.moving_digits", description=(
      "Build the offline moving-digits video dataset (tfds builder `moving_digits`)."))
  p.add_argument("--config", default="motion", choices=sorted(CONFIGS))
  p.add_argument("--data_dir", default=None, help="tfds data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  p.add_argument("--format", default="tfds", choices=("tfds", "records"),
                 help="tfds: tfds builder (what the pipeline reads as moving_digits/<config>); "
                      "records: SequenceExample clip records + dataset_info.json")
  p.add_argument("--out_dir", default=None, help="records format only (default: DATA_DIR/moving_digits_records/CONFIG)")
  p.add_argument("--workers", type=int, default=None, help="rendering processes (default: all cores)")
  fields = ("num_frames", "resolution", "num_train", "num_validation", "seed", "active_distractors")
  for name in fields:
    p.add_argument(f"--{name}", type=int, default=None)
  args = p.parse_args(argv)
  overrides = {k: getattr(args, k) for k in fields if getattr(args, k) is not None}
  t0 = time.time()
  if args.format == "tfds":
    path = build_moving_digits(args.config, args.data_dir, workers=args.workers, **overrides)
  else:
    name = get_config(args.config, **overrides).name
    path = write_moving_digits_records(args.config, args.out_dir or records_dir(name, args.data_dir),
                                       workers=args.workers, **overrides)
  print(f"built {args.config} ({args.format}) in {time.time() - t0:.1f}s: {path}", file=sys.stderr)
  print(path)
  return 0


if __name__ == "__main__":
  # Run the importable module's main: tfds locates builder resources by package, not `__main__`.
  from autox3d_jax.projects.moving_digits import builder as _module

  sys.exit(_module.main())
