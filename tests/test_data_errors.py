"""Bad dataset requests fail before training, naming what is missing and how to make it."""
import os

import pytest

from autox3d_jax.data import pipeline, records, registry, testing


def test_unknown_dataset_name(tmp_path):
  with pytest.raises(registry.UnknownDatasetError) as e:
    registry.get_source("no_such_set", "train", str(tmp_path))
  msg = str(e.value)
  assert "no_such_set" in msg and "python -m autox3d_jax.data.convert" in msg and "moving_digits/motion" in msg


def test_missing_data_dir_names_the_build_command(tmp_path):
  missing = str(tmp_path / "nowhere")
  with pytest.raises(registry.DatasetNotFoundError) as e:
    pipeline.make_train_pipeline("moving_digits/motion", data_dir=missing, batch_size=2, process_index=0,
                                 process_count=1)
  msg = str(e.value)
  assert missing in msg and "does not exist" in msg
  assert f"python -m autox3d_jax.projects.moving_digits --config motion --data_dir {missing}" in msg
  assert isinstance(e.value, FileNotFoundError)


def test_not_built_moving_digits(tmp_path):
  with pytest.raises(registry.DatasetNotFoundError) as e:
    registry.get_source("moving_digits/appearance", "train", str(tmp_path))
  assert "not built" in str(e.value) and "--config appearance" in str(e.value)


def test_known_real_dataset_not_converted(tmp_path):
  with pytest.raises(registry.DatasetNotFoundError) as e:
    registry.get_source("ucf101", "train", str(tmp_path))
  msg = str(e.value)
  assert "ucf101" in msg and "python -m autox3d_jax.data.convert --videos" in msg
  with pytest.raises(registry.DatasetNotFoundError, match="--csv"):
    registry.get_source("ssv2", "train", str(tmp_path))


def test_empty_or_missing_split(tmp_path):
  d = testing.write_records_dataset(str(tmp_path / "toy"), num_videos=2, num_frames=2, num_shards=1)
  meta = records.DatasetMeta.load(d)
  meta.splits["validation"] = records.SplitMeta(files=[], shard_lengths=[])
  meta.save(d)
  with pytest.raises(registry.EmptySplitError) as e:
    registry.get_source("toy", "validation", str(tmp_path))
  assert "empty" in str(e.value) and "python -m autox3d_jax.data.convert" in str(e.value)
  with pytest.raises(registry.EmptySplitError, match="available"):
    registry.get_source("toy", "test", str(tmp_path))


def test_missing_shard_file(tmp_path):
  d = testing.write_records_dataset(str(tmp_path / "toy"), num_videos=4, num_frames=2, num_shards=2)
  os.remove(os.path.join(d, records.DatasetMeta.load(d).splits["train"].files[1]))
  with pytest.raises(registry.DatasetNotFoundError, match="missing"):
    pipeline.make_train_pipeline("toy", data_dir=str(tmp_path), batch_size=2, crop_size=16, process_index=0,
                                 process_count=1)


def test_bad_arguments(tmp_path):
  d = testing.write_records_dataset(str(tmp_path / "toy"), num_videos=2, num_frames=2, num_shards=1)
  del d
  with pytest.raises(ValueError, match="scale_jitter"):
    pipeline.make_train_pipeline("toy", data_dir=str(tmp_path), batch_size=2, crop_size=32, scale_jitter=(16, 20),
                                 process_index=0, process_count=1)
  with pytest.raises(ValueError, match="short_side"):
    pipeline.make_eval_pipeline("toy", split="train", data_dir=str(tmp_path), batch_size=2, crop_size=32,
                                short_side=16, process_index=0, process_count=1)
