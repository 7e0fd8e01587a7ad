"""FlowNAS's feature alignment distillation (config.search.feature_distill, #24).

The distance equals a hand computation and ignores the widths (channel-max maps); its gradient
pulls the student's map towards the teacher's and gives the teacher none; the supernet sows the
derived network's stage outputs; a teacher is loaded and checked against the space before any
dataset build (bad settings rejected naming the key); the compiled search step adds the weighted
distance of each group's features to its weight loss."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autox3d_jax import config as config_lib
from autox3d_jax import labels
from autox3d_jax.models import builder
from autox3d_jax.models.convert_torch import CheckpointError
from autox3d_jax.models.spec import HeadSpec
from autox3d_jax.search import derive
from autox3d_jax.search import supernet as sn
from autox3d_jax.train import teacher as teacher_lib
from autox3d_jax.train import weights
from autox3d_jax.train.losses import channel_max_map, feature_alignment

import toys

HEAD = HeadSpec(conv5_width=16, head_width=16, dropout=0.0, num_classes=3)


def test_the_distance_equals_a_hand_computation():
  rng = np.random.default_rng(0)
  student = rng.standard_normal((3, 2, 4, 5, 5, 6)).astype(np.float32)   # K=3 groups, n=2, (T, H, W), 6 channels
  teacher = rng.standard_normal((2, 4, 5, 5, 9)).astype(np.float32)      # other width
  got = feature_alignment(jnp.asarray(student), jnp.asarray(teacher))
  t = teacher.astype(np.float64).max(-1)
  hand = [np.mean((student[k].astype(np.float64).max(-1) - t) ** 2) / (np.mean(t ** 2) + 1e-6) for k in range(3)]
  np.testing.assert_allclose(got, hand, rtol=1e-5)


def test_the_distance_is_zero_when_the_maps_agree_whatever_the_widths():
  rng = np.random.default_rng(1)
  teacher = np.maximum(rng.standard_normal((2, 3, 4, 4, 5)), 0).astype(np.float32)
  # A narrower student whose channels hold the teacher's channel maximum, padded with masked (zero) channels.
  student = np.zeros((1, 2, 3, 4, 4, 8), np.float32)
  student[0, ..., 0] = teacher.max(-1)
  student[0, ..., 1] = 0.5 * teacher.max(-1)
  assert float(feature_alignment(jnp.asarray(student), jnp.asarray(teacher))[0]) == 0.0
  assert channel_max_map(jnp.asarray(student)).shape == (1, 2, 3, 4, 4)


def test_the_gradient_pulls_the_student_towards_the_teacher_and_not_the_teacher():
  rng = np.random.default_rng(2)
  student = jnp.asarray(rng.standard_normal((2, 2, 3, 4, 4, 6)).astype(np.float32))
  teacher = jnp.asarray(rng.standard_normal((2, 3, 4, 4, 6)).astype(np.float32))
  loss = lambda s, t: jnp.mean(feature_alignment(s, t))   # noqa: E731
  g_student, g_teacher = jax.grad(loss, argnums=(0, 1))(student, teacher)
  assert float(loss(student - 1.0 * g_student, teacher)) < float(loss(student, teacher))
  assert not np.any(np.asarray(g_teacher))


def test_the_supernet_sows_the_derived_networks_stage_outputs():
  """A one-hot arch: each stage's sown output equals the derived network's on its channels, and the
  channels beyond the sampled width are zero."""
  space = toys.tiny_space(head=HEAD)
  point = toys.random_point(space, np.random.default_rng(3))
  model = sn.Supernet(space)
  variables = sn.init_supernet(space, jax.random.PRNGKey(0))
  video = jnp.asarray(np.random.default_rng(4).standard_normal((2, 4, 16, 16, 3)).astype(np.float32))
  arch = jax.tree_util.tree_map(lambda a: a[None], sn.one_hot_arch(space, point))
  # Both compiled whole (one compile each, not one per eager op shape).
  _, _, feats = jax.jit(lambda v, x, a: sn.apply_groups_with_features(model, v, x, a, train=False, stages=(0, 1)))(
      variables, video, arch)
  spec, inherited = derive.derive(space, point, variables)
  net = builder.build(spec)
  _, sown = jax.jit(lambda v, x: net.apply(v, x, train=False, mutable=["intermediates"]))(inherited, video)
  for i in (0, 1):
    want = np.asarray(sown["intermediates"][labels.stage_output(i)][0])
    got = np.asarray(feats[i][0])
    c = want.shape[-1]
    np.testing.assert_allclose(got[..., :c], want, rtol=1e-4, atol=1e-5)
    assert not np.any(got[..., c:])


def _save_teacher(directory, space, stride=None):
  spec = space.to_arch(space.largest_point(), name="teacher")
  if stride is not None:
    spec = dataclasses.replace(spec, stem=dataclasses.replace(spec.stem, spatial_stride=stride))
  weights.save(str(directory), spec, builder.init_variables(spec, jax.random.PRNGKey(5)))
  return spec


def _teacher_cfg(directory, **keys):
  cfg = config_lib.base_config()
  cfg.mode = "search"
  cfg.search.feature_distill.teacher = str(directory)
  return toys.set_keys(cfg, keys)


def test_a_teacher_loads_with_its_stages_resolved(tmp_path):
  space = toys.tiny_space(head=HEAD)
  spec = _save_teacher(tmp_path / "t", space)
  loaded = teacher_lib.load_teacher(_teacher_cfg(tmp_path / "t", **{"search.feature_distill.stages": (0, -1)}), space)
  assert loaded.spec == spec and loaded.stages == (0, 1)
  assert teacher_lib.load_teacher(config_lib.base_config(), space) is None


def test_a_teacher_of_other_strides_is_rejected_naming_the_stage(tmp_path):
  space = toys.tiny_space(head=HEAD)
  _save_teacher(tmp_path / "t", space, stride=1)
  with pytest.raises(config_lib.ConfigError, match=r"search.feature_distill.teacher: at a 4-frame 16x16 clip the "
                                                   r"teacher's stage 1 output is \(4, 4, 4\) .* supernet's is \(4, 2, 2\)"):
    teacher_lib.load_teacher(_teacher_cfg(tmp_path / "t"), space)


def test_a_missing_teacher_is_rejected_naming_the_key(tmp_path):
  with pytest.raises(CheckpointError, match=r"config.search.feature_distill.teacher = .* holds no checkpoint"):
    teacher_lib.load_teacher(_teacher_cfg(tmp_path / "nothing"), toys.tiny_space(head=HEAD))


@pytest.mark.parametrize("keys, message", [
    ({"search.feature_distill.weight": 2.0}, r"feature_distill.weight is set but config.search.feature_distill.teacher "
                                             r"is empty"),
    ({"search.feature_distill.stages": (0,)}, r"feature_distill.stages is set but .*teacher is empty"),
    ({"search.feature_distill.teacher": "/t", "mode": "train"}, r"guides a search's supernet"),
    ({"search.feature_distill.teacher": "/t", "search.feature_distill.weight": 0.0}, r"feature_distill.weight"),
    ({"search.feature_distill.teacher": "/t", "search.feature_distill.stages": (4,)}, r"holds 4: each entry is a stage "
                                                                                     r"index in \[-4, 4\)"),
    ({"search.feature_distill.teacher": "/t", "search.feature_distill.stages": (-1, 3)}, r"distinct"),
    ({"search.feature_distill.teacher": "/t", "search.feature_distill.stages": ()}, r"non-empty tuple"),
])
def test_bad_feature_distillation_settings_are_rejected_naming_the_key(keys, message):
  cfg = config_lib.base_config()
  cfg.mode, cfg.search.target_arch = "search", "X3D"
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(toys.set_keys(cfg, keys))


@pytest.mark.slow   # compiles a supernet step with a teacher (about a minute)
def test_the_search_step_adds_the_weighted_feature_distance(tmp_path):
  """The jitted step's weight loss is the groups' cross-entropy plus weight x the mean distance of
  each group's last-stage output to the teacher's on that group's clips (the step's own samples)."""
  from autox3d_jax.search.cost_table import CostTable
  from autox3d_jax.search.distribution import ArchDistribution
  from autox3d_jax.train import partitioning, search_loop
  from autox3d_jax.train import search_step as ss
  from autox3d_jax.train.losses import cross_entropy
  from autox3d_jax.train.optim import make_arch_optimizer, make_optimizer
  from test_search_step import batches

  space = toys.tiny_space(head=HEAD)
  _save_teacher(tmp_path / "t", space)
  cfg = _teacher_cfg(tmp_path / "t", **{"search.feature_distill.weight": 0.5, "search.num_groups": 2,
                                       "search.penalty": "none", "search.arch_warmup_steps": 1})
  loaded = teacher_lib.load_teacher(cfg, space)
  dist = ArchDistribution(space)
  table = CostTable.build(space)
  strategy = search_loop.make_strategy(cfg, dist, table, 0.0)
  w_tx, a_tx = make_optimizer(cfg.search.weight_opt, 10), make_arch_optimizer(cfg.search.arch_opt)
  model = sn.Supernet(space)
  step = ss.make_search_step(model, dist, strategy, w_tx, a_tx, cfg, table, loaded)
  state = ss.init_search_state(model, dist, strategy, w_tx, a_tx, seed=0, teacher=loaded)
  train, val = next(iter(batches(1, seed=0))), next(iter(batches(1, seed=1)))
  mesh = partitioning.make_mesh()
  _, metrics = jax.jit(step)(state, partitioning.global_batch(train, mesh), partitioning.global_batch(val, mesh))

  k_sample = jax.random.split(jax.random.fold_in(state.rng, state.step), 4)[0]
  archs, shifts = strategy.weight_archs(k_sample, state.logits, state.strategy, state.step)
  video = jnp.asarray(train["video"])
  logits, _, feats = sn.apply_groups_with_features(
      sn.Supernet(space, exclusive=True), {"params": state.params, "batch_stats": state.batch_stats}, video, archs,
      train=True, rngs={"dropout": jax.random.PRNGKey(0)}, shifts=shifts, stages=(1,))
  ce = jnp.mean(cross_entropy(logits, jnp.asarray(train["label"])))
  target = teacher_lib.teacher_features(loaded.spec, loaded.variables, video, (1,))[1]
  n = video.shape[0] // 2
  distance = np.mean([float(feature_alignment(feats[1][g][None], target[g * n:(g + 1) * n])[0]) for g in range(2)])
  assert distance > 0
  np.testing.assert_allclose(metrics["feature_distance"], distance, rtol=1e-4)
  np.testing.assert_allclose(metrics["train_loss"], ce + 0.5 * distance, rtol=1e-4)


@pytest.mark.parametrize("mode", ["search", "demo"])
def test_a_missing_teacher_stops_the_run_before_the_dataset_is_built(tmp_path, mode):
  """Through the run modes main calls: the teacher is read before anything is built."""
  from autox3d_jax import configs, run
  cfg = configs.get("demo", "tiny")
  cfg.mode, cfg.data.data_dir = mode, str(tmp_path / "data")
  cfg.search.feature_distill.teacher = str(tmp_path / "nothing")
  config_lib.validate(cfg)
  with pytest.raises(CheckpointError, match=r"config.search.feature_distill.teacher = .* holds no checkpoint"):
    run.MODES[mode](cfg, str(tmp_path / "w"))
  assert not (tmp_path / "data").exists()
