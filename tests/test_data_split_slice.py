"""Percent-sliced splits ('train[:80%]' / 'train[80%:]'): the architecture step's held-out data."""
import pytest

from autox3d_jax.data import pipeline, registry
from autox3d_jax.data.testing import write_records_dataset


def _indices(root, split):
  p = pipeline.make_eval_pipeline("toy", batch_size=4, data_dir=str(root), split=split,
                                  num_frames=4, crop_size=32, num_temporal_views=1, num_spatial_crops=1)
  ids = []
  for b in p:
    ids += [v for v, m in zip(b["video_id"], b["mask"]) if m]
  return ids


def test_slices_are_disjoint_and_cover_the_split(tmp_path):
  write_records_dataset(str(tmp_path / "toy"), num_videos=10, num_shards=3)
  name = "toy"
  full = registry.get_source(name, "train", str(tmp_path))
  head = registry.get_source(name, "train[:70%]", str(tmp_path))
  tail = registry.get_source(name, "train[70%:]", str(tmp_path))
  assert (head.num_examples, tail.num_examples) == (7, 3)
  a, b, all_ids = _indices(tmp_path, "train[:70%]"), _indices(tmp_path, "train[70%:]"), _indices(tmp_path, "train")
  assert not set(a) & set(b)
  assert sorted(a + b) == sorted(all_ids) and len(all_ids) == full.num_examples
  # Slicing works on top of per-host sharding too: two hosts split the head slice between them.
  plans = [pipeline.host_plan(head, i, 2) for i in range(2)]
  assert sum(take for plan in plans for _, _, take in plan) == 7


def test_empty_slice_is_a_clear_error(tmp_path):
  write_records_dataset(str(tmp_path / "toy"), num_videos=4, num_shards=1)
  with pytest.raises(registry.EmptySplitError, match="selects no examples"):
    registry.get_source("toy", "train[50%:50%]", str(tmp_path))
