"""The clip's input axes as search decisions: frames, sampling stride and crop (X3D's gamma_t,
gamma_tau and gamma_s, searched inside AutoX3D's fine-grained space).

One input setting per step. A jitted program has static shapes, so the K architectures of a step
share one clip shape; the step's input is drawn inside the previous step (from the architecture
distribution's input decisions) and the host picks the program compiled for it (one per input
setting). The input pipeline decodes one *superclip* that holds every setting: the most frames any
(frames, stride) pair spans, at the smallest stride, at the largest crop. `select_clip` cuts a
setting out of it inside the step: the centred window of `frames * stride / min_stride` frames,
every (stride / min_stride)-th frame of it, resized to the crop (same field of view, as X3D scales
its crop with the short side).

    sup = superclip(frames=(4, 8), strides=(2, 4), crops=(32, 40))    # ClipInput(16, 2, 40)
    video = select_clip(batch_video, sup, ClipInput(8, 4, 32))        # (N, 8, 32, 32, C)
"""
from __future__ import annotations

import dataclasses
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class ClipInput:
  """A clip's input setting: frames, sampling stride (source frames between two sampled ones) and
  crop side (pixels)."""
  frames: int
  stride: int
  crop: int

  @property
  def span(self) -> int:
    """Source frames the clip covers."""
    return self.frames * self.stride


def superclip(frames: Sequence[int], strides: Sequence[int], crops: Sequence[int]) -> ClipInput:
  """The clip every input setting can be cut from (`select_clip`): the smallest stride, the most
  frames any (frames, stride) pair spans at it, the largest crop. Every stride must be a multiple
  of the smallest (checked by `SpaceConfig.validate`)."""
  step = min(strides)
  return ClipInput(frames=max(f * s // step for f in frames for s in strides), stride=step, crop=max(crops))


def frame_indices(source: ClipInput, target: ClipInput) -> list[int]:
  """Indices into `source`'s frames that sample `target`: the centred window of target.span source
  frames, every (target.stride / source.stride)-th one. ValueError when target cannot be cut."""
  if target.stride % source.stride or target.span > source.span:
    raise ValueError(f"clip {target} cannot be cut from {source}: its stride must be a multiple of "
                     f"{source.stride} and its span at most {source.span}")
  step = target.stride // source.stride
  start = (source.frames - target.frames * step) // 2
  return [start + step * k for k in range(target.frames)]


def select_clip(video, source: ClipInput, target: ClipInput):
  """`target`'s clip cut from a batch of `source` clips (N, T, H, W, C), traceable under jit:
  frames by `frame_indices`, then a resize to target.crop (antialiased linear, the field of view
  kept). Returns `video` itself when target == source."""
  import jax
  import jax.numpy as jnp
  if target == source:
    return video
  idx = frame_indices(source, target)
  if idx != list(range(source.frames)):
    video = jnp.take(video, jnp.asarray(idx), axis=1)
  if target.crop != source.crop:
    n, t, _, _, c = video.shape
    video = jax.image.resize(video, (n, t, target.crop, target.crop, c), "linear", antialias=True).astype(video.dtype)
  return video
