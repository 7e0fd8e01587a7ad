"""Dataset name -> where its clip records are, how to parse them, and what their labels mean.

Names the pipeline accepts:

* ``<prefix>/<config>`` for a dataset plug-in in `DATASET_PLUGINS` -- today ``moving_digits/<config>``
  (``motion``, ``appearance``, ``motion_tiny``, ``appearance_tiny``, ..., or a custom config built
  with `autox3d_jax.projects.moving_digits.builder.build_moving_digits`): the embedded dataset,
  prepared by the plug-in's tfds builder under ``data_dir/<prefix>/<config>`` (or its
  ``--format records`` export under ``data_dir/<prefix>_records/<config>``). A bare ``<prefix>``
  means the plug-in's default config. `builder_for(name)` returns the function that generates such
  a dataset (None for every other name: real datasets are converted, not generated).
* ``tfds:<name>[/<config>]``: any *prepared* tfds video dataset under ``data_dir`` whose features
  have a `tfds.features.Video` (e.g. ``tfds:ucf101/ucf101_1_256`` once its files are there).
* any other name: clip records written by `autox3d_jax.data.convert` into ``data_dir/<name>``
  (or ``data_dir`` itself when its ``dataset_info.json`` names that dataset). Well-known names
  (ucf101, kinetics400, ssv2, ...) that are not there get an error with the conversion command;
  ``ucf101`` also falls back to a prepared tfds ``ucf101``.

Every problem -- unknown name, missing directory, dataset not built, empty split -- raises a
`DatasetError` *before* any training step, naming what is missing and the command that makes it.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import re
from typing import Callable

from autox3d_jax.data import records

MOVING_DIGITS = "moving_digits"
TFDS_PREFIX = "tfds:"

# Dataset plug-ins: dataset-name prefix -> the module that generates those datasets (a project,
# see `autox3d_jax.projects`). The library reaches projects only through this table. Each module
# exposes CONFIGS (the config names it builds), DEFAULT_CONFIG (what a bare prefix means) and
# build(config_name, data_dir) -> None, and runs as `python -m <module> --config C --data_dir D`.
DATASET_PLUGINS: dict[str, str] = {MOVING_DIGITS: "autox3d_jax.projects.moving_digits"}

# Real datasets we know the layout of: name -> (converter input flag, layout hint, flip-invariant).
KNOWN_REAL = {
    "ucf101": ("--videos UCF-101/", "class-per-subfolder", True),
    "hmdb51": ("--videos hmdb51/", "class-per-subfolder", True),
    "kinetics400": ("--videos kinetics400/train/", "class-per-subfolder", True),
    "kinetics600": ("--videos kinetics600/train/", "class-per-subfolder", True),
    "kinetics700": ("--videos kinetics700/train/", "class-per-subfolder", True),
    "ssv2": ("--csv something-something-v2-train.csv", "CSV of path,label", False),
    "something_something_v2": ("--csv something-something-v2-train.csv", "CSV of path,label", False),
    "charades": ("--csv charades_train.csv", "CSV of path,label", True),
}
# tfds datasets whose labels are not invariant to a horizontal flip.
_TFDS_NOT_FLIP_INVARIANT = {"something_something_v2", "moving_digits"}


class DatasetError(ValueError):
  """The dataset asked for cannot be read; the message says what is missing and how to make it."""


class UnknownDatasetError(DatasetError):
  pass


class DatasetNotFoundError(DatasetError, FileNotFoundError):
  pass


class EmptySplitError(DatasetError):
  pass


def default_data_dir() -> str:
  return os.path.expanduser(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


@dataclasses.dataclass(frozen=True)
class Source:
  """One split of one dataset, resolved to files."""
  name: str
  split: str
  kind: str                          # "tfds" | "records"
  directory: str
  files: tuple[str, ...]             # full paths, in shard order
  shard_lengths: tuple[int, ...]
  class_names: tuple[str, ...]
  flip_invariant: bool
  image_format: str                  # "jpeg" | "png"
  parse_fn: Callable = dataclasses.field(compare=False, repr=False)
  # First record used in each file (non-zero only for a sliced split such as 'train[80%:]').
  shard_offsets: tuple[int, ...] | None = None
  # serialized record (tf.string) -> {'frames': string (T,), 'label': int32, 'video_id': string, 'fps': float32}

  @property
  def num_examples(self) -> int:
    return int(sum(self.shard_lengths))

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def _plugin(prefix: str):
  """The plug-in module for dataset-name prefix `prefix` (imported on first use)."""
  return importlib.import_module(DATASET_PLUGINS[prefix])


def _plugin_name(name: str) -> tuple[str, str] | None:
  """(prefix, config) when `name` is ``<prefix>`` or ``<prefix>/<config>`` of a plug-in, else None."""
  prefix, sep, config = name.strip().partition("/")
  if prefix not in DATASET_PLUGINS:
    return None
  return prefix, (config if sep else _plugin(prefix).DEFAULT_CONFIG)


def builder_for(name: str) -> Callable[[str | None], None] | None:
  """A function `build(data_dir)` that generates dataset `name` into data_dir (None: the default,
  $TFDS_DATA_DIR or ~/tensorflow_datasets), or None when no plug-in can generate `name`.

  Generated: a plug-in's predefined configs, e.g. ``moving_digits/motion`` or bare
  ``moving_digits`` (its default config, 'motion'). None: real datasets (ucf101, tfds:<name>,
  converted records), unknown names, and plug-in configs that are not predefined (a custom
  ``moving_digits/motion_32x96`` is built from Python with its overrides, not from its name).
  """
  parsed = _plugin_name(name)
  if parsed is None:
    return None
  prefix, config = parsed
  plugin = _plugin(prefix)
  if config not in plugin.CONFIGS:
    return None

  def build(data_dir: str | None = None) -> None:
    plugin.build(config, data_dir)

  build.__qualname__ = build.__name__ = f"build_{prefix}_{config}"
  build.__doc__ = f"Generates {prefix}/{config} into data_dir (plug-in {DATASET_PLUGINS[prefix]})."
  return build


def _build_hint(prefix: str, config: str, data_dir: str) -> str:
  """How to get plug-in dataset prefix/config: its build command, or (for a config the plug-in
  does not predefine, whose build command would fail) the predefined configs to choose from."""
  configs = _plugin(prefix).CONFIGS  # may import tfds: only on error paths
  if config not in configs:
    return (f"{config!r} is not a predefined {prefix} config: choose one of "
            f"{[f'{prefix}/{c}' for c in sorted(configs)]} (custom configs are built from Python)")
  return f"build it with `{_build_cmd(prefix, config, data_dir)}`"


def _build_cmd(prefix: str, config: str, data_dir: str) -> str:
  return f"python -m {DATASET_PLUGINS[prefix]} --config {config} --data_dir {data_dir}"


def _convert_cmd(name: str, data_dir: str, split: str = "train") -> str:
  flag = KNOWN_REAL.get(name, ("--videos VIDEO_DIR/", "", True))[0]
  return (f"python -m autox3d_jax.data.convert {flag} --split {split} "
          f"--output {os.path.join(data_dir, name)}")


def _latest_version_dir(path: str) -> str | None:
  import tensorflow as tf

  if not tf.io.gfile.isdir(path):
    return None
  versions = []
  for entry in tf.io.gfile.listdir(path):
    entry = entry.rstrip("/")
    parts = entry.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and tf.io.gfile.exists(
        os.path.join(path, entry, "dataset_info.json")):
      versions.append(tuple(int(p) for p in parts))
  if not versions:
    return None
  return os.path.join(path, ".".join(str(v) for v in max(versions)))


def _tfds_source(name: str, prepared_dir: str, split: str, *, display: str,
                 flip_default: bool, build_hint: str) -> Source:
  import tensorflow_datasets as tfds

  builder = tfds.builder_from_directory(prepared_dir)
  info = builder.info
  features = info.features
  video_key = next((k for k, f in features.items() if isinstance(f, tfds.features.Video)), None)
  if video_key is None:
    raise DatasetError(f"{display} at {prepared_dir} has no tfds.features.Video feature "
                       f"(features: {sorted(features.keys())}); it is not a video dataset")
  label_key = None
  if info.supervised_keys and len(info.supervised_keys) == 2 and isinstance(info.supervised_keys[1], str):
    label_key = info.supervised_keys[1]
  elif "label" in features:
    label_key = "label"
  if label_key is None or not isinstance(features[label_key], tfds.features.ClassLabel):
    raise DatasetError(f"{display} at {prepared_dir}: no ClassLabel label feature found")
  if split not in info.splits:
    raise EmptySplitError(f"{display} has no split {split!r} in {prepared_dir}; "
                          f"available: {sorted(info.splits.keys())}. {build_hint}")
  split_info = info.splits[split]
  if split_info.num_examples == 0:
    raise EmptySplitError(f"split {split!r} of {display} in {prepared_dir} is empty. {build_hint}")
  image_format = getattr(features[video_key], "_encoding_format", None) or "png"
  metadata = info.metadata or {}
  flip = bool(metadata.get("flip_invariant", flip_default))
  names = tuple(features[label_key].names)
  optional = {k: k in features for k in ("video_id", "fps")}

  def parse_fn(serialized):
    import tensorflow as tf

    ex = features.deserialize_example(serialized, decoders={video_key: tfds.decode.SkipDecoding()})
    return {
        "frames": ex[video_key],
        "label": tf.cast(ex[label_key], tf.int32),
        "video_id": ex["video_id"] if optional["video_id"] else tf.constant(""),
        "fps": tf.cast(ex["fps"], tf.float32) if optional["fps"] else tf.constant(0.0),
    }

  files = tuple(os.fspath(p) for p in split_info.filepaths)
  return Source(name=name, split=split, kind="tfds", directory=prepared_dir, files=files,
                shard_lengths=tuple(int(n) for n in split_info.shard_lengths), class_names=names,
                flip_invariant=flip, image_format=image_format, parse_fn=parse_fn)


def _records_source(name: str, directory: str, split: str, build_hint: str) -> Source:
  meta = records.DatasetMeta.load(directory)
  split_meta = meta.splits.get(split)
  if split_meta is None:
    raise EmptySplitError(f"{name} in {directory} has no split {split!r}; available: "
                          f"{sorted(meta.splits)}. {build_hint}")
  if split_meta.num_examples == 0:
    failed = f" ({len(split_meta.failed)} videos failed to decode at conversion)" if split_meta.failed else ""
    raise EmptySplitError(f"split {split!r} of {name} in {directory} is empty{failed}. {build_hint}")
  return Source(name=name, split=split, kind="records", directory=directory,
                files=tuple(os.path.join(directory, f) for f in split_meta.files),
                shard_lengths=tuple(int(n) for n in split_meta.shard_lengths),
                class_names=tuple(meta.class_names), flip_invariant=bool(meta.flip_invariant),
                image_format=meta.image_format, parse_fn=records.parse_clip)


_SLICE = re.compile(r"^(?P<base>[\w-]+)\[(?P<lo>\d*)%?:(?P<hi>\d*)%?\]$")


def slice_source(source: Source, lo_pct: float, hi_pct: float, split: str) -> Source:
  """The records [N * lo%, N * hi%) of a split, in shard order (tfds' 'train[:80%]' semantics), as
  a Source whose files start at per-file offsets. Used to hold out part of train for the
  architecture step."""
  n = source.num_examples
  lo, hi = n * lo_pct // 100, n * hi_pct // 100
  if hi <= lo:
    raise EmptySplitError(f"split {split!r} of {source.name} selects no examples (of {n})")
  files, lengths, offsets, cursor = [], [], [], 0
  base_offsets = source.shard_offsets or (0,) * len(source.files)
  for path, length, base in zip(source.files, source.shard_lengths, base_offsets):
    a, b = max(lo, cursor), min(hi, cursor + length)
    if b > a:
      files.append(path)
      lengths.append(b - a)
      offsets.append(base + a - cursor)
    cursor += length
  return dataclasses.replace(source, split=split, files=tuple(files), shard_lengths=tuple(lengths),
                             shard_offsets=tuple(offsets))


def get_source(name: str, split: str = "train", data_dir: str | None = None) -> Source:
  """`split` may be sliced by percent, as in tfds: 'train[:80%]', 'train[80%:]'."""
  match = _SLICE.match(split.strip())
  if match:
    base = get_source(name, match["base"], data_dir)
    return slice_source(base, int(match["lo"] or 0), int(match["hi"] or 100), split)
  return _get_source(name, split, data_dir)


def _get_source(name: str, split: str = "train", data_dir: str | None = None) -> Source:
  """Resolves `name`/`split` under `data_dir` (default $TFDS_DATA_DIR or ~/tensorflow_datasets).

  Raises `DatasetError` (UnknownDatasetError, DatasetNotFoundError, EmptySplitError) with the
  missing piece and the command that builds or converts it.
  """
  import tensorflow as tf

  data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
  name = name.strip()
  plugin_name = _plugin_name(name)
  if not tf.io.gfile.isdir(data_dir):
    if plugin_name is not None:
      hint = _build_hint(*plugin_name, data_dir)
    elif name.startswith(TFDS_PREFIX):
      hint = f"prepare it with `tfds build {name[len(TFDS_PREFIX):]} --data_dir {data_dir}`"
    else:
      hint = f"convert videos into it with `{_convert_cmd(name, data_dir, split)}`"
    raise DatasetNotFoundError(f"data directory {data_dir} does not exist (dataset {name!r}); {hint}")

  if plugin_name is not None:
    prefix, config = plugin_name
    full = f"{prefix}/{config}"
    hint = _build_hint(prefix, config, data_dir)
    prepared = _latest_version_dir(os.path.join(data_dir, prefix, config))
    if prepared is not None:
      return _tfds_source(full, prepared, split, display=full, flip_default=False, build_hint=hint)
    exported = os.path.join(data_dir, f"{prefix}_records", config)
    if records.has_meta(exported):
      return _records_source(full, exported, split, hint)
    raise DatasetNotFoundError(f"{full} is not built in {data_dir}; {hint}")

  if name.startswith(TFDS_PREFIX):
    tfds_name = name[len(TFDS_PREFIX):]
    base, _, config = tfds_name.partition("/")
    hint = (f"Prepare it with `tfds build {tfds_name} --data_dir {data_dir}` "
            f"(for manual-download datasets, put the files in --manual_dir first).")
    root = os.path.join(data_dir, base)
    prepared = _latest_version_dir(os.path.join(root, config)) if config else _latest_version_dir(root)
    if prepared is None and not config and tf.io.gfile.isdir(root):
      configs = [c.rstrip("/") for c in tf.io.gfile.listdir(root)
                 if _latest_version_dir(os.path.join(root, c.rstrip("/")))]
      if len(configs) == 1:
        prepared = _latest_version_dir(os.path.join(root, configs[0]))
      elif configs:
        raise UnknownDatasetError(f"{name}: several configs are prepared in {root}: {sorted(configs)}; "
                                  f"name one, e.g. {TFDS_PREFIX}{base}/{sorted(configs)[0]}")
    if prepared is None:
      raise DatasetNotFoundError(f"tfds dataset {tfds_name!r} is not prepared in {data_dir}. {hint}")
    return _tfds_source(name, prepared, split, display=name,
                        flip_default=base not in _TFDS_NOT_FLIP_INVARIANT, build_hint=hint)

  # Converted clip records.
  hint = f"Convert it with `{_convert_cmd(name, data_dir, split)}`."
  for directory in (os.path.join(data_dir, name), data_dir):
    if records.has_meta(directory):
      meta_name = records.DatasetMeta.load(directory).name
      if directory != data_dir or meta_name == name:
        return _records_source(name, directory, split, hint)
  if name == "ucf101" and tf.io.gfile.isdir(os.path.join(data_dir, "ucf101")):
    # tfds' own UCF-101 builder, if it was prepared here (`tfds build ucf101`): its default config first.
    configs = sorted(c.rstrip("/") for c in tf.io.gfile.listdir(os.path.join(data_dir, "ucf101")))
    for config in sorted(configs, key=lambda c: c != "ucf101_1_256"):
      prepared = _latest_version_dir(os.path.join(data_dir, "ucf101", config))
      if prepared is not None:
        return _tfds_source(name, prepared, split, display=f"ucf101/{config} (tfds)", flip_default=True,
                            build_hint=hint)
  if name in KNOWN_REAL:
    layout = KNOWN_REAL[name][1]
    raise DatasetNotFoundError(f"{name} has not been converted into {os.path.join(data_dir, name)} "
                               f"(no {records.META_FILENAME}). {hint} (input layout: {layout})")
  raise UnknownDatasetError(
      f"unknown dataset {name!r}: not moving_digits/<config>, not tfds:<name>, and no converted "
      f"records in {os.path.join(data_dir, name)}. Known: {MOVING_DIGITS}/motion, {MOVING_DIGITS}/appearance, "
      f"{MOVING_DIGITS}/motion_tiny, {MOVING_DIGITS}/appearance_tiny, {', '.join(sorted(KNOWN_REAL))} "
      f"(after conversion), tfds:<name>. To use your own videos: "
      f"`python -m autox3d_jax.data.convert --videos VIDEO_DIR --output {os.path.join(data_dir, name)}`.")


def describe(name: str, data_dir: str | None = None, split: str = "train") -> dict:
  """Small summary for logs / the trainer: num_classes, class names, examples, flip invariance."""
  s = get_source(name, split, data_dir)
  return {"name": s.name, "split": s.split, "num_classes": s.num_classes, "class_names": list(s.class_names),
          "num_examples": s.num_examples, "flip_invariant": s.flip_invariant, "kind": s.kind,
          "directory": s.directory}
