"""A trained network whose stage outputs guide the supernet's weight step: FlowNAS's feature
alignment distillation (config.search.feature_distill; arXiv 2207.01271, github.com/VDIGPKU/FlowNAS).

FlowNAS trains its supernet with a well-trained flow estimator as teacher and compares student and
teacher features reduced by a maximum over channels (`train.losses.feature_alignment`). Here the
teacher is any trained network of the project (a training run's checkpoint, or mode=import's
weights: a zoo X3D, a retrained baseline), run in eval mode on the weight step's clips; the
aligned features are the outputs of config.search.feature_distill.stages. Student and teacher
need equal (T, H, W) there at every clip the search trains on, which `load_teacher` checks before
any dataset is built; their widths may differ.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from autox3d_jax import labels
from autox3d_jax.models import builder
from autox3d_jax.models.spec import ArchSpec
from autox3d_jax.search.space import SearchSpace

KEY = "search.feature_distill.teacher"


@dataclasses.dataclass(frozen=True)
class FeatureTeacher:
  """The teacher network (`spec`), its {'params', 'batch_stats'} (host arrays) and the 0-based
  stage indices whose outputs are aligned."""
  spec: ArchSpec
  variables: dict
  stages: tuple[int, ...]


def stage_shapes(spec: ArchSpec, frames: int, crop: int) -> dict[int, tuple[int, ...]]:
  """{stage index: (T, H, W, C)} of `spec`'s stage outputs on one (frames, crop, crop) clip; traced
  (`jax.eval_shape`), nothing compiled or run."""
  model = builder.build(spec)
  x = jax.ShapeDtypeStruct((1, frames, crop, crop, spec.in_channels), jnp.float32)

  def run(rng, clip):
    variables = model.init(rng, clip, train=False)
    return model.apply(variables, clip, train=False, mutable=["intermediates"])[1]

  sown = jax.eval_shape(run, jax.random.PRNGKey(0), x)["intermediates"]
  return {i: tuple(sown[labels.stage_output(i)][0].shape[1:]) for i in range(len(spec.stages))}


def load_teacher(cfg: ml_collections.ConfigDict, space: SearchSpace) -> FeatureTeacher | None:
  """config.search.feature_distill's teacher (None when unset), checked before any dataset build:
  the checkpoint exists and records its architecture, holds that architecture's tensors, has the
  aligned stages, and matches the supernet's (T, H, W) there at every clip the search trains on.
  Raises CheckpointError / ConfigError naming the key and the fix."""
  section = cfg.search.feature_distill
  if not section.teacher:
    return None
  from autox3d_jax.config import ConfigError, feature_stages
  from autox3d_jax.train import weights
  spec, variables = weights.load_recorded(section.teacher, KEY)
  stages = feature_stages(tuple(section.stages), space.num_stages)
  if len(spec.stages) != space.num_stages:
    raise ConfigError(f"config.{KEY}: the teacher {spec.name} has {len(spec.stages)} stages, the space "
                      f"{space.num_stages}: stage indices must mean the same stage in both")
  student = space.to_arch(space.largest_point(), name="largest")
  clips = {(c.frames, c.crop) for c in (space.input_of(p) for p in space.input_settings())}
  for frames, crop in sorted(clips):
    have, want = stage_shapes(spec, frames, crop), stage_shapes(student, frames, crop)
    for i in stages:
      if have[i][:3] != want[i][:3]:
        raise ConfigError(f"config.{KEY}: at a {frames}-frame {crop}x{crop} clip the teacher's stage {i} output is "
                          f"{have[i][:3]} (T, H, W) but the supernet's is {want[i][:3]}: align stages of equal "
                          f"resolution (config.search.feature_distill.stages) or use a teacher with the space's "
                          f"strides")
  return FeatureTeacher(spec, jax.tree_util.tree_map(np.asarray, variables), stages)


def teacher_features(spec: ArchSpec, variables, video: jax.Array, stages: tuple[int, ...],
                     dtype=None) -> dict[int, jax.Array]:
  """{stage index: (N, T, H, W, C_t)} outputs of the teacher in eval mode on `video`, held constant
  (stop-gradient): it guides the supernet and is not trained."""
  model = builder.VideoNet(spec, dtype)
  _, sown = model.apply(variables, video, train=False, mutable=["intermediates"])
  return {i: jax.lax.stop_gradient(sown["intermediates"][labels.stage_output(i)][0]) for i in stages}
