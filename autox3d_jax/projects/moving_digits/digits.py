"""Moving-digits clip generator: pure numpy, deterministic from a seed, no TensorFlow.

Clips are rendered from the 1,797 real handwritten 8x8 digits that scikit-learn ships offline
(`sklearn.datasets.load_digits`), upsampled once to smooth 32x32 sprites, then moved, rotated,
zoomed and faded over time by inverse-affine bilinear sampling, composited in colour over a
random background with a distractor digit and pixel noise.

Two tasks mirror the two benchmarks of the paper, two more are harder probes:

* ``motion`` (Something-Something-V2-like: the label is *what happens over time*). Twelve classes
  in six time-reversed pairs ``(2p, 2p+1)``: move left/right, move up/down, rotate cw/ccw, zoom
  in/out, approach/separate, appear/disappear. A clip of class ``2p+1`` is *generated* as a clip of
  class ``2p`` with its frame order reversed, so the unordered set of frames has exactly the same
  distribution in both classes of a pair: a model that ignores temporal order cannot beat chance
  within a pair.
* ``appearance`` (Kinetics-like: the label is *what is there*): the label is the digit identity;
  the motion (any of the above, either direction) is random nuisance.
* ``speed`` (a graded task): one digit moves in a random direction at a constant speed, bouncing
  off the frame's edges; the label is the speed's bin among 8 geometric bins (each 30% faster than
  the last). Speeds are uniform within a bin, so a model's accuracy grows with the precision of
  its velocity estimate instead of saturating once it has found the cue. Scale augmentation
  changes apparent speed: train it with a fixed scale (scale_jitter = (crop, crop)).
* ``sequence`` (temporal order over the whole clip): the digit makes two straight moves, one in
  each half of the clip, among left/right/up/down; the label is the ordered pair (16 classes).
  ``left_then_up`` and ``up_then_left`` contain the same local motions at different times, and
  every class's time reversal is another class (``left_then_up`` reversed is ``down_then_right``),
  so a model must relate the start of the clip to its end: a long temporal receptive field,
  which is what the search space's temporal kernels buy and a short-kernel network lacks.

Handwriting is split between train and validation: 80% of the 1,797 digits (a fixed permutation)
feed the train split and the other 20% the validation split, so validation measures
generalisation to unseen writers' digits.

Everything is a function of ``(seed, split, index)``: clip ``i`` of a split is identical whatever
the chunking or the number of worker processes.
"""
from __future__ import annotations

import dataclasses
import functools
import io
from typing import Iterator, Sequence

import numpy as np

MOTION_CLASSES: tuple[str, ...] = (
    "move_left", "move_right",
    "move_up", "move_down",
    "rotate_cw", "rotate_ccw",
    "zoom_in", "zoom_out",
    "approach", "separate",
    "appear", "disappear",
)
APPEARANCE_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
# `sequence`: two moves one after the other; class 4*a + b is "first DIRECTIONS[a], then DIRECTIONS[b]".
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
SEQUENCE_CLASSES: tuple[str, ...] = tuple(f"{a}_then_{b}" for a in DIRECTIONS for b in DIRECTIONS)
_DIRECTION_VECTORS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
# `speed`: how fast one digit moves (any direction, bouncing off the frame's edges), in 8 bins.
NUM_SPEED_CLASSES = 8
SPEED_RANGE = (0.4, 3.2)          # px per frame at a 48-pixel frame (scaled with the frame size)
SPEED_CLASSES: tuple[str, ...] = tuple(f"speed_{k}" for k in range(NUM_SPEED_CLASSES))
TASKS = ("motion", "appearance", "sequence", "speed")
SPLITS = ("train", "validation")
# Pair p renders the first class of the pair; the second class is its time reversal.
NUM_MOTION_PAIRS = len(MOTION_CLASSES) // 2

SPRITE_SIZE = 32          # digits are upsampled once from 8x8 to this many pixels
_POOL_SEED = 20240229     # fixed: the train/validation handwriting split never changes
_TRAIN_FRACTION = 0.8
_SPLIT_CODE = {"train": 0, "validation": 1}


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """What to render. Sizes are in pixels; motion amplitudes scale with the frame size."""
  task: str = "motion"
  num_frames: int = 16
  height: int = 64
  width: int = 64
  distractor: bool = True        # a slow, dimmer extra digit (not in the appearance task)
  max_noise: float = 0.06        # per-pixel Gaussian noise std is uniform in [0, max_noise]
  # Harder variants (motion and sequence tasks). Active distractors are smaller, dimmer digits that each
  # perform a random motion of the task's own vocabulary (any pair, either direction, independent
  # of the label), so a model must tell *which* digit does what (bind salience to motion), not
  # just detect a kind of motion anywhere in the clip.
  active_distractors: int = 0

  def __post_init__(self):
    if self.task not in TASKS:
      raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
    if self.num_frames < 2:
      raise ValueError(f"num_frames must be >= 2 (motion needs time), got {self.num_frames}")
    if min(self.height, self.width) < 16:
      raise ValueError(f"frames must be at least 16x16, got {self.height}x{self.width}")
    if not 0 <= self.active_distractors <= 3:
      raise ValueError(f"active_distractors must be in [0, 3], got {self.active_distractors}")
    if self.active_distractors and self.task not in ("motion", "sequence"):
      raise ValueError("active_distractors applies to the motion and sequence tasks only")

  @property
  def class_names(self) -> tuple[str, ...]:
    return {"motion": MOTION_CLASSES, "appearance": APPEARANCE_CLASSES, "sequence": SEQUENCE_CLASSES,
            "speed": SPEED_CLASSES}[self.task]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


# ------------------------------------------------------------------------------------ digit sprites
_SPRITES: tuple[np.ndarray, np.ndarray] | None = None


def load_digit_sprites() -> tuple[np.ndarray, np.ndarray]:
  """(sprites float32 (1797, 32, 32) in [0, 1], targets int64 (1797,)) from sklearn's bundled set."""
  global _SPRITES
  if _SPRITES is None:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download
    from scipy import ndimage

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    # Pad by one pixel so the cubic upsampling has room to fall off to zero at the border.
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    zoom = SPRITE_SIZE / padded.shape[1]
    sprites = ndimage.zoom(padded, (1, zoom, zoom), order=3, mode="constant")
    sprites = np.clip(sprites, 0.0, 1.0).astype(np.float32)
    _SPRITES = (sprites, digits.target.astype(np.int64))
  return _SPRITES


@functools.lru_cache(maxsize=2)
def digit_pool(split: str) -> np.ndarray:
  """Indices (into the 1,797 digits) whose handwriting this split uses; train and validation are disjoint."""
  if split not in _SPLIT_CODE:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  _, targets = load_digit_sprites()
  perm = np.random.default_rng(_POOL_SEED).permutation(len(targets))
  cut = int(round(_TRAIN_FRACTION * len(targets)))
  return np.sort(perm[:cut] if split == "train" else perm[cut:])


# ------------------------------------------------------------------------------------ rendering
def _sample_sprite(sprite: np.ndarray, cx, cy, angle, size, window: tuple[int, int, int, int]) -> np.ndarray:
  """Coverage (T, y1-y0, x1-x0) over pixel window (y0, y1, x0, x1) of `sprite` centred at (cx, cy),
  rotated by `angle` (radians, clockwise on screen), `size` pixels wide; all parameters are (T,)
  arrays. Bilinear, zero outside the sprite."""
  s = sprite.shape[0]
  y0, y1, x0, x1 = window
  ys = np.arange(y0, y1, dtype=np.float32) + 0.5
  xs = np.arange(x0, x1, dtype=np.float32) + 0.5
  dx = xs[None, None, :] - cx.astype(np.float32)[:, None, None]
  dy = ys[None, :, None] - cy.astype(np.float32)[:, None, None]
  cos = (np.cos(angle) * s / size).astype(np.float32)[:, None, None]
  sin = (np.sin(angle) * s / size).astype(np.float32)[:, None, None]
  # Inverse rotation (screen y points down, so a positive angle turns the digit clockwise), in the
  # coordinates of the sprite padded by one zero pixel: [0, s + 2), sprite pixel centres at i + 1.5.
  # Clipping to [0, s + 1) sends every point off the sprite onto the zero border.
  u = cos * dx + sin * dy
  u += s / 2 + 0.5
  np.clip(u, 0.0, s + 1 - 1e-3, out=u)
  v = cos * dy - sin * dx
  v += s / 2 + 0.5
  np.clip(v, 0.0, s + 1 - 1e-3, out=v)
  iu = u.astype(np.int32)  # floor: u >= 0
  iv = v.astype(np.int32)
  u -= iu                  # fractions
  v -= iv
  w = s + 2
  flat = np.pad(sprite, 1).ravel()
  base = iv * w + iu
  top = flat[base]
  top += (flat[base + 1] - top) * u
  bottom = flat[base + w]
  bottom += (flat[base + w + 1] - bottom) * u
  top += (bottom - top) * v
  return top


@dataclasses.dataclass
class _Sprite:
  digit: int                 # index into the 1,797 sprites
  cx: np.ndarray             # (T,) pixels
  cy: np.ndarray
  angle: np.ndarray          # (T,) radians, clockwise
  size: np.ndarray           # (T,) pixels
  alpha: np.ndarray          # (T,) opacity in [0, 1]
  color: np.ndarray          # (3,) in [0, 1]


def _const(value: float, t: int) -> np.ndarray:
  return np.full((t,), value, np.float32)


def _random_color(rng: np.random.Generator, low: float) -> np.ndarray:
  color = rng.uniform(low, 1.0, size=3)
  color[rng.integers(3)] = 1.0  # keep it saturated enough to read
  return color.astype(np.float32)


def _main_sprites(rng: np.random.Generator, pair: int, digits: Sequence[int], spec: ClipSpec) -> list[_Sprite]:
  """Sprites of the *forward* class of motion pair `pair` (0..5)."""
  t = spec.num_frames
  h, w = spec.height, spec.width
  short = float(min(h, w))
  ramp = np.linspace(0.0, 1.0, t, dtype=np.float32)           # 0 -> 1 over the clip
  angle0 = rng.uniform(-0.35, 0.35)
  base = rng.uniform(0.38, 0.5) * short                      # digit box size in pixels
  color = _random_color(rng, 0.45)

  def jitter_path(scale: float):
    """Small random drift (a fraction of the frame), so 'static' things are never perfectly still."""
    return rng.uniform(-scale, scale) * short * (ramp - 0.5)

  if pair in (0, 1):  # move left (pair 0: along x) / move up (pair 1: along y)
    dist = rng.uniform(0.3, 0.55) * short
    size = base * rng.uniform(0.8, 1.0)
    mid_along = rng.uniform(-0.08, 0.08) * short
    across = rng.uniform(0.3, 0.7)
    along = mid_along + dist * (0.5 - ramp)                   # decreasing: left / up
    if pair == 0:
      cx = w / 2 + along
      cy = across * h + jitter_path(0.06)
    else:
      cy = h / 2 + along
      cx = across * w + jitter_path(0.06)
    return [_Sprite(digits[0], cx.astype(np.float32), np.asarray(cy, np.float32), _const(angle0, t),
                    _const(size, t), _const(1.0, t), color)]
  if pair == 2:  # rotate clockwise
    total = np.deg2rad(rng.uniform(100.0, 220.0))
    cx = rng.uniform(0.4, 0.6) * w + jitter_path(0.05)
    cy = rng.uniform(0.4, 0.6) * h + jitter_path(0.05)
    angle = angle0 - total / 2 + total * ramp
    return [_Sprite(digits[0], cx.astype(np.float32), cy.astype(np.float32), angle.astype(np.float32),
                    _const(base, t), _const(1.0, t), color)]
  if pair == 3:  # zoom in (the digit grows)
    s0 = rng.uniform(0.22, 0.32) * short
    s1 = s0 * rng.uniform(2.0, 2.6)
    size = s0 * (s1 / s0) ** ramp                             # geometric: constant zoom rate
    cx = rng.uniform(0.42, 0.58) * w + jitter_path(0.04)
    cy = rng.uniform(0.42, 0.58) * h + jitter_path(0.04)
    return [_Sprite(digits[0], cx.astype(np.float32), cy.astype(np.float32), _const(angle0, t),
                    size.astype(np.float32), _const(1.0, t), color)]
  if pair == 4:  # approach: two digits move towards each other along a random axis
    phi = rng.uniform(0, np.pi)
    d0 = rng.uniform(0.58, 0.72) * short
    d1 = rng.uniform(0.18, 0.3) * short
    sep = d0 + (d1 - d0) * ramp
    mx = rng.uniform(0.45, 0.55) * w
    my = rng.uniform(0.45, 0.55) * h
    ux, uy = np.cos(phi), np.sin(phi)
    size = base * rng.uniform(0.7, 0.85)
    other = _random_color(rng, 0.45)
    return [
        _Sprite(digits[0], (mx + ux * sep / 2).astype(np.float32), (my + uy * sep / 2).astype(np.float32),
                _const(angle0, t), _const(size, t), _const(1.0, t), color),
        _Sprite(digits[1], (mx - ux * sep / 2).astype(np.float32), (my - uy * sep / 2).astype(np.float32),
                _const(rng.uniform(-0.35, 0.35), t), _const(size, t), _const(1.0, t), other),
    ]
  if pair == 5:  # appear: fade in somewhere in the clip
    start = rng.uniform(0.05, 0.45)
    length = rng.uniform(0.2, 0.45)
    alpha = np.clip((ramp - start) / length, 0.0, 1.0)
    cx = rng.uniform(0.35, 0.65) * w + jitter_path(0.08)
    cy = rng.uniform(0.35, 0.65) * h + jitter_path(0.08)
    return [_Sprite(digits[0], cx.astype(np.float32), cy.astype(np.float32), _const(angle0, t),
                    _const(base, t), alpha.astype(np.float32), color)]
  raise ValueError(f"motion pair must be in [0, {NUM_MOTION_PAIRS}), got {pair}")


def _distractor(rng: np.random.Generator, digit: int, spec: ClipSpec) -> _Sprite:
  """A smaller, dimmer digit drifting slowly in a random direction (direction-symmetric, so it
  carries no information about the label, forwards or reversed)."""
  t = spec.num_frames
  short = float(min(spec.height, spec.width))
  ramp = np.linspace(-0.5, 0.5, t, dtype=np.float32)
  phi = rng.uniform(0, 2 * np.pi)
  drift = rng.uniform(0.0, 0.12) * short
  cx = rng.uniform(0.15, 0.85) * spec.width + np.cos(phi) * drift * ramp
  cy = rng.uniform(0.15, 0.85) * spec.height + np.sin(phi) * drift * ramp
  return _Sprite(digit, cx.astype(np.float32), cy.astype(np.float32), _const(rng.uniform(-0.5, 0.5), t),
                 _const(rng.uniform(0.22, 0.32) * short, t), _const(rng.uniform(0.35, 0.6), t),
                 _random_color(rng, 0.3))


def _active_distractor(rng: np.random.Generator, digits: Sequence[int], spec: ClipSpec) -> list[_Sprite]:
  """A random motion of the task's vocabulary (random pair and direction), played by a smaller,
  dimmer digit (or two, for approach/separate) whose path is shifted off the frame's centre.
  Direction-symmetric like the drifting distractor, so it carries no information about the label."""
  t = spec.num_frames
  short = float(min(spec.height, spec.width))
  pair = int(rng.integers(NUM_MOTION_PAIRS))
  reverse = bool(rng.integers(2))
  scale = rng.uniform(0.55, 0.7)
  opacity = rng.uniform(0.45, 0.65)
  phi = rng.uniform(0, 2 * np.pi)
  offset = rng.uniform(0.18, 0.3) * short
  if spec.task == "sequence":   # a sequence of its own: the same kind of motion as the label's
    n = len(DIRECTIONS)
    moving = [_sequence_sprite(rng, int(rng.integers(n)), int(rng.integers(n)), digits[0], spec)]
  else:
    moving = _main_sprites(rng, pair, digits, spec)
  out = []
  for sp in moving:
    order = slice(None, None, -1) if reverse else slice(None)
    out.append(_Sprite(sp.digit, (sp.cx + np.cos(phi) * offset)[order].astype(np.float32),
                       (sp.cy + np.sin(phi) * offset)[order].astype(np.float32),
                       np.broadcast_to(sp.angle, (t,))[order].astype(np.float32),
                       (np.broadcast_to(sp.size, (t,)) * scale)[order].astype(np.float32),
                       (np.broadcast_to(sp.alpha, (t,)) * opacity)[order].astype(np.float32),
                       sp.color * np.float32(0.85)))
  return out


def _active_distractors(rng: np.random.Generator, pool: np.ndarray, spec: ClipSpec) -> list[_Sprite]:
  """spec.active_distractors of them, each with two fresh digits from the split's pool."""
  out = []
  for _ in range(spec.active_distractors):
    extra = rng.choice(pool, size=2, replace=False)
    out += _active_distractor(rng, [int(extra[0]), int(extra[1])], spec)
  return out


def _composite(rng: np.random.Generator, sprites: Sequence[_Sprite], spec: ClipSpec,
               sprite_images: np.ndarray) -> np.ndarray:
  """Renders sprites (first = bottom) over a random background; returns uint8 (T, H, W, 3)."""
  t, h, w = spec.num_frames, spec.height, spec.width
  # Background: dark random colour with a gentle static gradient.
  c0 = rng.uniform(0.0, 0.3, size=3).astype(np.float32)
  c1 = rng.uniform(0.0, 0.3, size=3).astype(np.float32)
  phi = rng.uniform(0, 2 * np.pi)
  yy, xx = np.meshgrid(np.linspace(-0.5, 0.5, h, dtype=np.float32), np.linspace(-0.5, 0.5, w, dtype=np.float32),
                       indexing="ij")
  g = (np.cos(phi) * xx + np.sin(phi) * yy + 0.5)[..., None]
  # Work in [0, 255] shifted by +0.5 (compositing is affine, so the shift carries through), so the
  # final uint8 cast rounds without an extra pass.
  background = ((c0 * (1 - g) + c1 * g) * 255.0 + 0.5).astype(np.float32)
  frames = np.broadcast_to(background, (t, h, w, 3)).copy()
  for sp in sprites:
    # Only the window the sprite can touch over the clip (its rotated box is within 0.71*size of the centre).
    reach = 0.71 * sp.size + 1.5
    y0 = int(np.clip(np.floor(np.min(sp.cy - reach)), 0, h))
    y1 = int(np.clip(np.ceil(np.max(sp.cy + reach)), 0, h))
    x0 = int(np.clip(np.floor(np.min(sp.cx - reach)), 0, w))
    x1 = int(np.clip(np.ceil(np.max(sp.cx + reach)), 0, w))
    if y1 <= y0 or x1 <= x0:
      continue
    cover = _sample_sprite(sprite_images[sp.digit], sp.cx, sp.cy, sp.angle, sp.size, (y0, y1, x0, x1))
    cover *= sp.alpha[:, None, None]
    cover = cover[..., None]
    region = frames[:, y0:y1, x0:x1]
    region += (sp.color * np.float32(255.0) + np.float32(0.5) - region) * cover   # "over", in place
  sigma = rng.uniform(0.0, spec.max_noise)
  if sigma > 0:
    bank = _noise_bank()
    n = frames.size
    if n < bank.size // 2:
      offset = int(rng.integers(0, bank.size - n))
      noise = bank[offset:offset + n].reshape(frames.shape)
    else:  # very large clips: fresh samples
      noise = rng.standard_normal(frames.shape, dtype=np.float32)
    frames += noise * np.float32(255.0 * sigma)
  np.clip(frames, 0.0, 255.49, out=frames)
  return frames.astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
  """A fixed bank of standard-normal samples; each clip's noise is a random window of it (drawn from
  the clip's rng, so still deterministic): 5x cheaper than drawing fresh normals per pixel."""
  return np.random.default_rng(_POOL_SEED + 1).standard_normal(1 << 22, dtype=np.float32)


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
  if split not in _SPLIT_CODE:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  return np.random.default_rng([int(seed), _SPLIT_CODE[split], int(index)])


def render_motion_pair(rng: np.random.Generator, pair: int, spec: ClipSpec, split: str = "train") -> np.ndarray:
  """Forward clip of motion pair `pair` (class 2*pair), uint8 (T, H, W, 3). Reverse axis 0 for class 2*pair+1."""
  sprites, targets = load_digit_sprites()
  pool = digit_pool(split)
  digits = rng.choice(pool, size=3, replace=False)
  main = _main_sprites(rng, pair, [int(digits[0]), int(digits[1])], spec)
  layers = ([_distractor(rng, int(digits[2]), spec)] if spec.distractor else [])
  # Drawn after everything the plain task draws, so the plain configs' clips are unchanged.
  layers += _active_distractors(rng, pool, spec)
  return _composite(rng, layers + main, spec, sprites)


def _sequence_sprite(rng: np.random.Generator, first: int, then: int, digit: int, spec: ClipSpec) -> _Sprite:
  """A digit moving DIRECTIONS[first] over the first half of the clip, then DIRECTIONS[then].
  The two legs have independent speeds, so duration is not a cue to the order."""
  t, h, w = spec.num_frames, spec.height, spec.width
  short = float(min(h, w))
  split_at = (t - 1) / 2 + rng.uniform(-0.5, 0.5)            # the turn, between the middle frames
  time = np.arange(t, dtype=np.float32)
  legs = np.stack([np.minimum(time, split_at), np.maximum(time - split_at, 0.0)], 1)   # (T, 2)
  speeds = rng.uniform(0.26, 0.4, size=2) * short / ((t - 1) / 2)   # px per frame of each leg
  vel = np.array([_DIRECTION_VECTORS[DIRECTIONS[first]], _DIRECTION_VECTORS[DIRECTIONS[then]]],
                 np.float32) * speeds[:, None]
  path = legs @ vel                                             # (T, 2) offset from the start
  # Start so the path's bounding box is centred (with jitter): the digit stays in the frame.
  lo, hi = path.min(0), path.max(0)
  centre = np.array([w, h], np.float32) / 2 + rng.uniform(-0.08, 0.08, size=2) * short
  xy = path + centre - (lo + hi) / 2
  return _Sprite(digit, xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32),
                 _const(rng.uniform(-0.35, 0.35), t), _const(rng.uniform(0.38, 0.48) * short, t),
                 _const(1.0, t), _random_color(rng, 0.45))


def render_sequence(rng: np.random.Generator, first: int, then: int, spec: ClipSpec,
                    split: str = "train") -> np.ndarray:
  """The `sequence` task's clip of class (first, then): uint8 (T, H, W, 3)."""
  sprites, _ = load_digit_sprites()
  pool = digit_pool(split)
  chosen = rng.choice(pool, size=3, replace=False)
  main = _sequence_sprite(rng, first, then, int(chosen[0]), spec)
  layers = [_distractor(rng, int(chosen[1]), spec)] if spec.distractor else []
  layers += _active_distractors(rng, pool, spec)
  return _composite(rng, layers + [main], spec, sprites)


def speed_bin_edges(short_side: float) -> np.ndarray:
  """(NUM_SPEED_CLASSES + 1,) geometric bin edges in px per frame for frames of this short side."""
  lo, hi = SPEED_RANGE
  return np.geomspace(lo, hi, NUM_SPEED_CLASSES + 1) * short_side / 48.0


def _bounce(start: float, velocity: float, t: np.ndarray, lo: float, hi: float) -> np.ndarray:
  """Positions start + velocity * t reflected into [lo, hi] (a ball bouncing between two walls)."""
  span = hi - lo
  u = np.mod(start - lo + velocity * t, 2 * span)
  return lo + np.where(u > span, 2 * span - u, u)


def render_speed(rng: np.random.Generator, label: int, spec: ClipSpec, split: str = "train") -> np.ndarray:
  """The `speed` task's clip of speed bin `label`: uint8 (T, H, W, 3)."""
  sprites, _ = load_digit_sprites()
  pool = digit_pool(split)
  chosen = rng.choice(pool, size=2, replace=False)
  t, h, w = spec.num_frames, spec.height, spec.width
  short = float(min(h, w))
  edges = speed_bin_edges(short)
  speed = rng.uniform(edges[label], edges[label + 1])
  phi = rng.uniform(0, 2 * np.pi)
  size = rng.uniform(0.34, 0.42) * short
  margin = 0.3 * size                      # the digit's centre may come this close to an edge
  time = np.arange(t, dtype=np.float32)
  cx = _bounce(rng.uniform(margin, w - margin), np.cos(phi) * speed, time, margin, w - margin)
  cy = _bounce(rng.uniform(margin, h - margin), np.sin(phi) * speed, time, margin, h - margin)
  main = _Sprite(int(chosen[0]), cx.astype(np.float32), cy.astype(np.float32),
                 _const(rng.uniform(-0.35, 0.35), t), _const(size, t), _const(1.0, t), _random_color(rng, 0.45))
  layers = [_distractor(rng, int(chosen[1]), spec)] if spec.distractor else []
  return _composite(rng, layers + [main], spec, sprites)


def generate_clip(spec: ClipSpec, split: str, index: int, seed: int = 0) -> tuple[np.ndarray, int]:
  """Clip `index` of `split`: (uint8 frames (T, H, W, 3), label). Pure function of its arguments."""
  rng = clip_rng(seed, split, index)
  if spec.task == "speed":
    label = int(rng.integers(NUM_SPEED_CLASSES))
    return render_speed(rng, label, spec, split), label
  if spec.task == "sequence":
    label = int(rng.integers(len(SEQUENCE_CLASSES)))
    return render_sequence(rng, label // len(DIRECTIONS), label % len(DIRECTIONS), spec, split), label
  sprites, targets = load_digit_sprites()
  pool = digit_pool(split)
  pair = int(rng.integers(NUM_MOTION_PAIRS))
  reverse = bool(rng.integers(2))
  if spec.task == "motion":
    frames = render_motion_pair(rng, pair, spec, split)
    label = 2 * pair + int(reverse)
  else:
    label = int(rng.integers(10))
    same_class = pool[targets[pool] == label]
    digits = rng.choice(same_class, size=2, replace=False)  # approach: two writers of the same digit
    layers = _main_sprites(rng, pair, [int(digits[0]), int(digits[1])], spec)
    frames = _composite(rng, layers, spec, sprites)
  if reverse:
    frames = frames[::-1].copy()
  return frames, label


def encode_jpeg(frames: np.ndarray, quality: int = 90) -> list[bytes]:
  """uint8 (T, H, W, 3) -> list of T baseline JPEG byte strings (PIL/libjpeg)."""
  from PIL import Image

  out = []
  for frame in frames:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="JPEG", quality=int(quality))
    out.append(buf.getvalue())
  return out


def generate_encoded(spec: ClipSpec, split: str, indices: Sequence[int], seed: int = 0,
                     quality: int = 90) -> list[tuple[int, int, list[bytes]]]:
  """[(index, label, jpeg frames)] for `indices`: the unit of work of a generation worker."""
  out = []
  for i in indices:
    frames, label = generate_clip(spec, split, int(i), seed)
    out.append((int(i), label, encode_jpeg(frames, quality)))
  return out


def _worker_init(sprites: np.ndarray, targets: np.ndarray) -> None:
  # Children get the parent's sprites (same values) instead of importing sklearn/scipy again.
  global _SPRITES
  _SPRITES = (sprites, targets)


def _work(args) -> list[tuple[int, int, list[bytes]]]:
  spec, split, indices, seed, quality = args
  return generate_encoded(spec, split, indices, seed, quality)


def iter_encoded(spec: ClipSpec, split: str, num_clips: int, seed: int = 0, quality: int = 90,
                 workers: int | None = None, chunk: int = 32) -> Iterator[tuple[int, int, list[bytes]]]:
  """Yields (index, label, jpeg frames) for clips 0..num_clips-1 in order, rendering in `workers`
  processes (default: all cores; 1 = in this process). Output does not depend on `workers`."""
  import os

  from autox3d_jax.data.parallel import ordered_map

  if workers is None:
    workers = os.cpu_count() or 1
  chunks = [(spec, split, list(range(a, min(a + chunk, num_clips))), seed, quality)
            for a in range(0, num_clips, chunk)]
  if len(chunks) <= 1:
    workers = 1
  sprites, targets = load_digit_sprites()
  for result in ordered_map(_work, chunks, workers, initializer=_worker_init, initargs=(sprites, targets)):
    yield from result
