"""The moving-digits clip generator: determinism, time-reversed pairs, appearance labels, splits."""
import numpy as np
import pytest

from autox3d_jax.data import digits

SPEC = digits.ClipSpec(task="motion", num_frames=8, height=32, width=32)


def test_same_seed_same_clip_different_seed_different_clip():
  a, la = digits.generate_clip(SPEC, "train", 5, seed=1)
  b, lb = digits.generate_clip(SPEC, "train", 5, seed=1)
  c, _ = digits.generate_clip(SPEC, "train", 5, seed=2)
  d, _ = digits.generate_clip(SPEC, "train", 6, seed=1)
  assert a.dtype == np.uint8 and a.shape == (8, 32, 32, 3)
  np.testing.assert_array_equal(a, b)
  assert la == lb
  assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_parallel_generation_matches_serial():
  serial = list(digits.iter_encoded(SPEC, "train", 10, seed=3, workers=1, chunk=4))
  chunked = list(digits.iter_encoded(SPEC, "train", 10, seed=3, workers=1, chunk=3))
  two_procs = list(digits.iter_encoded(SPEC, "train", 10, seed=3, workers=2, chunk=3))
  assert [s[0] for s in serial] == list(range(10))
  assert serial == chunked == two_procs


def test_motion_pairs_are_time_reversals():
  """Class 2p+1 is class 2p played backwards: same rng draws, frames reversed."""
  for index in range(40):
    frames, label = digits.generate_clip(SPEC, "train", index, seed=0)
    rng = digits.clip_rng(0, "train", index)
    pair = int(rng.integers(digits.NUM_MOTION_PAIRS))
    reverse = bool(rng.integers(2))
    forward = digits.render_motion_pair(rng, pair, SPEC, "train")
    assert label == 2 * pair + int(reverse)
    np.testing.assert_array_equal(frames, forward[::-1] if reverse else forward)
  names = digits.MOTION_CLASSES
  for a, b in [("move_left", "move_right"), ("move_up", "move_down"), ("rotate_cw", "rotate_ccw"),
               ("zoom_in", "zoom_out"), ("approach", "separate"), ("appear", "disappear")]:
    assert names.index(b) == names.index(a) + 1 and names.index(a) % 2 == 0


def _centroid_x(frames):
  g = frames.astype(np.float32).mean(-1)
  g = g - np.median(g, axis=(1, 2), keepdims=True)
  g = np.clip(g, 0, None) ** 2
  xs = np.arange(g.shape[2])
  return (g.sum(1) * xs).sum(1) / g.sum((1, 2))


def test_move_left_moves_left_and_its_reverse_moves_right():
  spec = digits.ClipSpec(task="motion", num_frames=8, height=48, width=48, distractor=False, max_noise=0.0)
  rng = np.random.default_rng(0)
  forward = digits.render_motion_pair(rng, 0, spec)          # pair 0 = move_left
  cx = _centroid_x(forward)
  assert cx[-1] < cx[0] - 5
  assert _centroid_x(forward[::-1])[-1] > _centroid_x(forward[::-1])[0] + 5
  zoom = digits.render_motion_pair(np.random.default_rng(1), 3, spec)   # zoom in: ink grows
  ink = (zoom.astype(np.float32).mean(-1) > zoom.mean() + 30).sum((1, 2))
  assert ink[-1] > 1.5 * ink[0]


def test_labels_cover_all_classes_roughly_evenly():
  labels = [digits.generate_clip(SPEC, "train", i, seed=0)[1] for i in range(240)]
  counts = np.bincount(labels, minlength=12)
  assert counts.min() > 5 and counts.sum() == 240


def test_appearance_label_is_the_digit_identity():
  spec = digits.ClipSpec(task="appearance", num_frames=6, height=32, width=32)
  sprites, targets = digits.load_digit_sprites()
  for index in range(30):
    _, label = digits.generate_clip(spec, "validation", index, seed=4)
    rng = digits.clip_rng(4, "validation", index)
    rng.integers(digits.NUM_MOTION_PAIRS), rng.integers(2)
    assert int(rng.integers(10)) == label
    pool = digits.digit_pool("validation")
    chosen = rng.choice(pool[targets[pool] == label], size=2, replace=False)
    assert set(targets[chosen]) == {label}
  assert spec.class_names == tuple("0123456789")


def test_handwriting_pools_are_disjoint():
  train, val = digits.digit_pool("train"), digits.digit_pool("validation")
  assert len(train) + len(val) == 1797 and not set(train) & set(val)
  with pytest.raises(ValueError):
    digits.digit_pool("test")
