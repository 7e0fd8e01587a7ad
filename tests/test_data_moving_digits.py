"""The tfds builder `moving_digits`: builds offline into a temp data_dir, loads through tfds and
through our parse path, matches the generator, and its records export matches too."""
import os

import numpy as np
import pytest

from autox3d_jax.data import records, registry, testing
from autox3d_jax.projects.moving_digits import builder as moving_digits
from autox3d_jax.projects.moving_digits import digits


@pytest.fixture(scope="module")
def data_dir():
  return testing.tiny_data_dir()


def test_builds_offline_and_loads_with_tfds(data_dir):
  import tensorflow_datasets as tfds

  b = moving_digits.builder("motion_tiny", data_dir)
  info = b.info
  cfg = moving_digits.CONFIGS["motion_tiny"]
  assert info.splits["train"].num_examples == cfg.num_train
  assert info.splits["validation"].num_examples == cfg.num_validation
  assert info.features["label"].names == list(digits.MOTION_CLASSES)
  assert info.metadata["flip_invariant"] is False
  ds = b.as_dataset(split="validation")
  ex = next(iter(ds))
  assert ex["video"].shape == (cfg.num_frames, cfg.resolution, cfg.resolution, 3)
  assert ex["video"].dtype.name == "uint8"
  # Encoded access, as the pipeline reads it: a vector of JPEG strings.
  raw = next(iter(b.as_dataset(split="validation", decoders={"video": tfds.decode.SkipDecoding()})))
  assert raw["video"].shape == (cfg.num_frames,) and raw["video"].dtype.name == "string"
  assert raw["video"].numpy()[0][:2] == b"\xff\xd8"


def test_stored_clips_are_the_generator_clips(data_dir):
  import tensorflow as tf

  src = registry.get_source("moving_digits/appearance_tiny", "train", data_dir)
  cfg = moving_digits.CONFIGS["appearance_tiny"]
  assert src.kind == "tfds" and src.num_examples == cfg.num_train and src.image_format == "jpeg"
  ex = next(iter(tf.data.TFRecordDataset(list(src.files)).map(src.parse_fn)))
  vid = ex["video_id"].numpy().decode()
  index = int(vid.split("_")[1])
  frames, label = digits.generate_clip(cfg.clip_spec, "train", index, cfg.seed)
  assert int(ex["label"]) == label
  decoded = np.stack([tf.io.decode_jpeg(f).numpy() for f in ex["frames"].numpy()])
  assert decoded.shape == frames.shape
  assert np.abs(decoded.astype(np.float32) - frames).mean() < 6.0  # JPEG q90


def test_build_is_idempotent_and_custom_configs(data_dir, tmp_path):
  path = moving_digits.build_moving_digits("motion_tiny", data_dir, workers=1)  # already there: no-op
  assert os.path.isdir(path) and path.endswith(os.path.join("motion_tiny", "1.0.0"))
  cfg = moving_digits.get_config("motion_tiny", num_frames=6, resolution=24, num_train=8, num_validation=4)
  assert cfg.name == "motion_tiny_6x24_train8_validation4"
  with pytest.raises(ValueError, match="unknown moving_digits config"):
    moving_digits.get_config("nope")


def test_records_export_matches(tmp_path):
  out = moving_digits.write_moving_digits_records("motion_tiny", str(tmp_path / "rec"), workers=1,
                                                  num_train=6, num_validation=3)
  meta = records.DatasetMeta.load(out)
  assert meta.splits["train"].num_examples == 6 and meta.splits["validation"].num_examples == 3
  assert meta.flip_invariant is False and meta.class_names == list(digits.MOTION_CLASSES)
  first = next(records.iter_clip_protos([os.path.join(out, meta.splits["train"].files[0])]))
  cfg = moving_digits.get_config("motion_tiny", num_train=6, num_validation=3)
  frames, label = digits.generate_clip(cfg.clip_spec, "train", 0, cfg.seed)
  assert first["video_id"] == "train_000000" and first["label"] == label
  assert first["frames"] == digits.encode_jpeg(frames, cfg.jpeg_quality)


def test_cli_help():
  with pytest.raises(SystemExit) as e:
    moving_digits.main(["--help"])
  assert e.value.code == 0


def test_generic_tfds_source(data_dir):
  src = registry.get_source("tfds:moving_digits/motion_tiny", "validation", data_dir)
  assert src.kind == "tfds" and src.num_classes == 12 and src.flip_invariant is False
  with pytest.raises(registry.UnknownDatasetError, match="several configs"):
    registry.get_source("tfds:moving_digits", "train", data_dir)
  with pytest.raises(registry.DatasetNotFoundError, match="tfds build"):
    registry.get_source("tfds:ucf101", "train", data_dir)


def test_ucf101_falls_back_to_a_prepared_tfds_build(data_dir, tmp_path):
  import shutil

  # Stand-in for `tfds build ucf101`: any prepared tfds video dataset laid out as ucf101/<config>/<version>.
  shutil.copytree(os.path.join(data_dir, "moving_digits", "motion_tiny", "1.0.0"),
                  tmp_path / "ucf101" / "ucf101_1_256" / "1.0.0")
  src = registry.get_source("ucf101", "train", str(tmp_path))
  assert src.kind == "tfds" and src.num_examples == 64 and all(os.path.exists(f) for f in src.files)


def test_harder_tasks_build_through_tfds_with_their_class_names(tmp_path):
  """The sequence / speed tasks and active distractors as tfds configs: names, labels, clips."""
  import tensorflow as tf

  cfg = moving_digits.get_config("motion_tiny", num_train=4, num_validation=2, active_distractors=2)
  assert cfg.name == "motion_tiny_train4_validation2_distractors2" and cfg.clip_spec.active_distractors == 2
  for name, classes in (("sequence_small", digits.SEQUENCE_CLASSES), ("speed_small", digits.SPEED_CLASSES)):
    base = moving_digits.CONFIGS[name]
    moving_digits.build_moving_digits(name, str(tmp_path), workers=1, num_frames=4, resolution=24,
                                      num_train=4, num_validation=2)
    built = moving_digits.get_config(name, num_frames=4, resolution=24, num_train=4, num_validation=2)
    src = registry.get_source(f"moving_digits/{built.name}", "train", str(tmp_path))
    assert base.task == built.task and list(src.class_names) == list(classes) and src.num_examples == 4
    ex = next(iter(tf.data.TFRecordDataset(list(src.files)).map(src.parse_fn)))
    index = int(ex["video_id"].numpy().decode().split("_")[1])
    assert int(ex["label"]) == digits.generate_clip(built.clip_spec, "train", index, built.seed)[1]


def test_builder_for_plugin_names_only(data_dir):
  """`registry.builder_for`: a build function for the plug-in's predefined configs, None otherwise."""
  for name in ("moving_digits/motion", "moving_digits/appearance_tiny", " moving_digits/speed_small",
               "moving_digits"):
    assert callable(registry.builder_for(name)), name
  assert registry.builder_for("moving_digits").__name__ == "build_moving_digits_motion"  # bare: 'motion'
  for name in ("ucf101", "kinetics400", "ssv2", "no_such_set", "tfds:moving_digits/motion",
               "tfds:ucf101", "moving_digits/nope", "moving_digits/motion_32x96", "moving_digitsx/motion"):
    assert registry.builder_for(name) is None, name
  # Calling it builds into data_dir (already built here: a no-op), readable by name afterwards.
  registry.builder_for("moving_digits/motion_tiny")(data_dir)
  assert registry.get_source("moving_digits/motion_tiny", "train", data_dir).num_examples == 64


def test_plugin_table_modules_follow_the_contract():
  import importlib

  for prefix, module_path in registry.DATASET_PLUGINS.items():
    plugin = importlib.import_module(module_path)
    assert plugin.DEFAULT_CONFIG in plugin.CONFIGS and callable(plugin.build), prefix
  assert registry.DATASET_PLUGINS["moving_digits"] == "autox3d_jax.projects.moving_digits"


def test_project_imports_stay_light():
  """The renderer and the plug-in package import without TensorFlow (CONFIGS loads it lazily)."""
  import subprocess
  import sys

  script = ("import sys; import autox3d_jax.projects.moving_digits as p, autox3d_jax.projects.moving_digits.digits; "
            "assert 'tensorflow' not in sys.modules and p.DEFAULT_CONFIG == 'motion'; "
            "assert 'motion' in p.CONFIGS and 'tensorflow_datasets' in sys.modules; print('LIGHT_OK')")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                        timeout=300, check=False)
  assert "LIGHT_OK" in proc.stdout, proc.stderr[-3000:]


def test_module_cli_runs_as_package():
  """`python -m autox3d_jax.projects.moving_digits` (the command the registry's errors name)."""
  import subprocess
  import sys

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-m", "autox3d_jax.projects.moving_digits", "--help"], env=env,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0 and "--config" in proc.stdout, proc.stderr[-3000:]
