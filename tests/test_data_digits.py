"""The moving-digits clip generator: determinism, time-reversed pairs, appearance labels, splits."""
import numpy as np
import pytest

from autox3d_jax.projects.moving_digits import digits

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


def _centroid(frames):
  """Ink centroid (x, y) per frame of a clip without distractor or noise."""
  g = frames.astype(np.float32).mean(-1)
  g = np.clip(g - np.median(g, axis=(1, 2), keepdims=True), 0, None) ** 2
  ys, xs = np.arange(g.shape[1]), np.arange(g.shape[2])
  total = g.sum((1, 2))
  return np.stack([(g.sum(1) * xs).sum(1) / total, (g.sum(2) * ys).sum(1) / total], 1)


def test_sequence_clips_make_the_two_moves_of_their_label_in_order():
  spec = digits.ClipSpec(task="sequence", num_frames=12, height=48, width=48, distractor=False, max_noise=0.0)
  assert spec.num_classes == 16 and spec.class_names[digits.SEQUENCE_CLASSES.index("up_then_left")] == "up_then_left"
  unit = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
  for label, name in enumerate(digits.SEQUENCE_CLASSES):
    first, then = name.split("_then_")
    rng = np.random.default_rng(label)
    xy = _centroid(digits.render_sequence(rng, label // 4, label % 4, spec))
    leg1, leg2 = xy[5] - xy[0], xy[-1] - xy[6]
    for leg, direction in ((leg1, first), (leg2, then)):
      assert np.dot(leg, unit[direction]) > 5, (name, leg1, leg2)        # moved that way, >5 px
      assert abs(np.cross(leg, unit[direction])) < 2.5, (name, leg1, leg2)  # and not sideways


def test_sequence_labels_and_time_reversal_need_the_order():
  """Every class's time reversal is another class of the task: first/then swap and both directions
  flip, so the unordered set of frames cannot tell `a_then_b` from `rev(b)_then_rev(a)`."""
  opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
  names = set(digits.SEQUENCE_CLASSES)
  for name in names:
    a, b = name.split("_then_")
    assert f"{opposite[b]}_then_{opposite[a]}" in names
  spec = digits.ClipSpec(task="sequence", num_frames=8, height=32, width=32)
  labels = [digits.generate_clip(spec, "train", i, seed=0)[1] for i in range(320)]
  counts = np.bincount(labels, minlength=16)
  assert counts.min() > 5 and counts.sum() == 320
  a, la = digits.generate_clip(spec, "validation", 3, seed=2)
  b, lb = digits.generate_clip(spec, "validation", 3, seed=2)
  np.testing.assert_array_equal(a, b)
  assert la == lb


def test_active_distractors_add_motion_without_changing_labels_or_the_plain_task():
  plain = digits.ClipSpec(task="motion", num_frames=8, height=32, width=32)
  explicit_zero = digits.ClipSpec(task="motion", num_frames=8, height=32, width=32, active_distractors=0)
  busy = digits.ClipSpec(task="motion", num_frames=8, height=32, width=32, active_distractors=2)
  for i in range(10):
    f0, l0 = digits.generate_clip(plain, "train", i, seed=1)
    f1, l1 = digits.generate_clip(explicit_zero, "train", i, seed=1)
    f2, l2 = digits.generate_clip(busy, "train", i, seed=1)
    np.testing.assert_array_equal(f0, f1)
    assert l0 == l1 == l2
    assert not np.array_equal(f0, f2)
  with pytest.raises(ValueError, match="active_distractors"):
    digits.ClipSpec(task="motion", active_distractors=4)
  with pytest.raises(ValueError, match="motion and sequence"):
    digits.ClipSpec(task="appearance", active_distractors=1)


def test_speed_clips_move_at_their_bins_speed_and_bounce_inside_the_frame():
  spec = digits.ClipSpec(task="speed", num_frames=12, height=48, width=48, distractor=False, max_noise=0.0)
  edges = digits.speed_bin_edges(48)
  assert spec.num_classes == 8 and np.all(np.diff(edges) > 0)
  np.testing.assert_allclose(edges[1:] / edges[:-1], edges[1] / edges[0])   # geometric bins
  for label in range(8):
    for seed in range(3):
      xy = _centroid(digits.render_speed(np.random.default_rng(100 * label + seed), label, spec))
      step = np.linalg.norm(np.diff(xy, axis=0), axis=1)
      # The median frame-to-frame step (a bounce shortens only the frames it happens in) is within
      # the bin, give or take the centroid's rendering error.
      assert edges[label] * 0.8 - 0.15 < np.median(step) < edges[label + 1] * 1.2 + 0.15, (label, step)
  positions = [digits._bounce(5.0, 7.3, np.arange(40.0), 2.0, 30.0)]
  assert np.all((positions[0] >= 2.0) & (positions[0] <= 30.0))
  np.testing.assert_allclose(np.abs(np.diff(positions[0]))[:3], 7.3)
