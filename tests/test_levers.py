"""The supernet-training levers (#24): in-place distillation and the SSR regulariser.

search.distill='inplace' (BigNAS's sandwich rule with in-place distillation): the loss equals a hand
computation; its gradient moves a student's logits towards the teacher's and gives the teacher none
from the students; the weight step puts the largest child in group 0 and the smallest in the last
group, every group on the same clips. search.ssr_weight (our reading of SSR): zero at one-hot
weights, positive elsewhere, pulls towards the most likely choice, added to the gradient
strategies' objective. Bad settings are rejected naming the key."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autox3d_jax import config as config_lib
from autox3d_jax.search import strategies
from autox3d_jax.search.cost_table import CostTable
from autox3d_jax.search.distribution import ArchDistribution
from autox3d_jax.search.space import ops_from_strings
from autox3d_jax.train.losses import distillation_kl, inplace_distillation

import toys
from test_strategies import search_cfg, toy_space


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_the_loss_equals_a_hand_computation():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((3, 4, 5)).astype(np.float32)
  labels = np.array([0, 3, 1, 4])
  loss, per_group = inplace_distillation(jnp.asarray(logits), jnp.asarray(labels), smoothing=0.1)
  onehot = np.eye(5)[labels] * 0.9 + 0.1 / 5
  teacher = _softmax(logits[0].astype(np.float64))
  hand = [np.mean(-np.sum(onehot * np.log(_softmax(logits[0].astype(np.float64))), -1))]
  hand += [np.mean(-np.sum(teacher * np.log(_softmax(logits[g].astype(np.float64))), -1)) for g in (1, 2)]
  np.testing.assert_allclose(per_group, hand, rtol=1e-5)
  np.testing.assert_allclose(loss, np.mean(hand), rtol=1e-5)


def test_the_gradient_moves_students_towards_the_teacher_and_leaves_the_teacher_to_the_labels():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.standard_normal((3, 6, 5)).astype(np.float32) * 2)
  labels = jnp.asarray(rng.integers(0, 5, 6))
  grads = jax.grad(lambda lg: inplace_distillation(lg, labels)[0])(logits)

  def kl_to_teacher(student):
    t, s = _softmax(np.asarray(logits[0], np.float64)), _softmax(np.asarray(student, np.float64))
    return float(np.mean(np.sum(t * (np.log(t) - np.log(s)), -1)))

  for g in (1, 2):
    stepped = logits[g] - 0.5 * grads[g]
    assert kl_to_teacher(stepped) < kl_to_teacher(logits[g])
  # The teacher's gradient is that of its own label cross-entropy (divided by K), nothing from the students.
  ce_grad = jax.grad(lambda t: jnp.mean(-jnp.sum(jax.nn.one_hot(labels, 5) * jax.nn.log_softmax(t), -1)) / 3)(logits[0])
  np.testing.assert_allclose(grads[0], ce_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["probabilistic", "spos"])
def test_the_full_sandwich_puts_the_largest_first_and_the_smallest_last(name):
  space = toy_space()
  dist = ArchDistribution(space)
  strategy = strategies.make(dist, CostTable.build(space),
                             search_cfg(name, num_groups=4, sandwich=True, distill="inplace"))
  archs, _ = strategy.weight_archs(jax.random.PRNGKey(0), dist.init_logits(), strategy.init_state(), 0)
  point = lambda g: {l: int(jnp.argmax(a[g])) for l, a in archs.items()}   # noqa: E731
  assert point(0) == space.largest_point() and point(3) == space.smallest_point()
  table = CostTable.build(space)
  assert table.of_point(point(3)) <= min(table.of_point(point(g)) for g in range(4))


@pytest.mark.parametrize("name", ["probabilistic", "spos"])
def test_sandwich_ops_pick_the_largest_and_smallest_children_among_those_ops(name):
  """search.sandwich_ops: the sandwich's and the warm-up's largest child (and the full sandwich's
  smallest) take their ops from the listed ones; every other decision stays at its extreme."""
  space = toy_space()                                # ops x3d 3x3x3, x2d 1x3x3, r2plus1d 3x3x3
  allowed = ("x2d:1x3x3", "r2plus1d:3x3x3")
  dist = ArchDistribution(space)
  point = lambda archs, g: {l: int(jnp.argmax(a[g])) for l, a in archs.items()}   # noqa: E731
  for cfg in (search_cfg(name, num_groups=4, sandwich=True, distill="inplace", sandwich_ops=allowed),
              search_cfg(name, num_groups=4, largest_warmup_steps=5, sandwich_ops=allowed)):
    strategy = strategies.make(dist, CostTable.build(space), cfg)
    archs, _ = strategy.weight_archs(jax.random.PRNGKey(0), dist.init_logits(), strategy.init_state(), 0)
    largest = point(archs, 0)
    ops = {space.config.ops[largest[d.label]].string for d in space.decisions if d.kind == "op"}
    assert ops == {"r2plus1d:3x3x3"}       # the costlier of the two; x3d (costlier still) is not allowed
    assert largest != space.largest_point()
    assert {l: v for l, v in largest.items() if not l.endswith("_op")} == \
        {l: v for l, v in space.largest_point().items() if not l.endswith("_op")}
    if cfg.sandwich:
      smallest = point(archs, 3)
      assert smallest == space.smallest_point(ops_from_strings(allowed))
      assert {space.config.ops[smallest[d.label]].string for d in space.decisions if d.kind == "op"} == {"x2d:1x3x3"}


def test_sandwich_ops_outside_the_space_fail_before_any_dataset_build(tmp_path):
  from autox3d_jax.train import setup
  cfg = toys.set_keys(config_lib.base_config(), {"mode": "search", "search.sandwich": True, "search.target_arch": "X3D",
                                                 "search.sandwich_ops": ("x3d:7x3x3",)})
  config_lib.validate(cfg)
  with pytest.raises(config_lib.ConfigError, match=r"config.search.sandwich_ops: ops \['x3d:7x3x3'\] are not "
                                                   r"among the space's ops"):
    setup.check_space(cfg)
  cfg.search.sandwich_ops = ("x3d",)
  with pytest.raises(config_lib.ConfigError, match=r"config.search.sandwich_ops: op 'x3d' must look like"):
    setup.check_space(cfg)


@pytest.mark.parametrize("keys, message", [
    ({"search.distill": "kd"}, r"config.search.distill = 'kd' is not allowed"),
    ({"search.distill": "inplace"}, r"distils from the largest child, which only the sandwich rule trains"),
    ({"search.distill": "inplace", "search.sandwich": True, "search.num_groups": 1}, r"num_groups >= 2"),
    ({"search.distill": "inplace", "search.sandwich": True, "search.strategy": "dnas"},
     r"config.search.sandwich applies to strategies"),
    ({"search.sandwich_ops": ("x3d:3x3x3",)}, r"config.search.sandwich_ops picks the ops .* neither is on"),
    ({"search.sandwich_ops": ("x3d:3x3x3",), "search.sandwich": True, "search.strategy": "gdas"},
     r"config.search.sandwich applies to strategies"),
    ({"search.sandwich_ops": ("x3d:3x3x3", ""), "search.sandwich": True}, r"config.search.sandwich_ops must be a tuple"),
])
def test_bad_distillation_settings_are_rejected_naming_the_key(keys, message):
  cfg = config_lib.base_config()
  cfg.search.target_arch = "X3D"
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(toys.set_keys(cfg, keys))


@pytest.mark.slow   # compiles a full supernet step (about a minute)
def test_the_search_step_distils_on_shared_clips():
  """The jitted step's weight loss equals `inplace_distillation` of the supernet's group logits on
  the first N / K clips tiled K times (the step's own samples: the same key derivation as
  `make_search_step`; the toy head has no dropout)."""
  from autox3d_jax.models.spec import HeadSpec
  from autox3d_jax.search import supernet as sn
  from autox3d_jax.train import partitioning, search_loop
  from test_search_step import batches, tiny_setup
  cfg, step, state = tiny_setup("probabilistic", num_groups=2, sandwich=True, distill="inplace")
  train, val = next(iter(batches(1, seed=0))), next(iter(batches(1, seed=1)))
  mesh = partitioning.make_mesh()
  _, metrics = jax.jit(step)(state, partitioning.global_batch(train, mesh), partitioning.global_batch(val, mesh))

  space = toys.tiny_space(head=HeadSpec(conv5_width=16, head_width=16, dropout=0.0, num_classes=3))
  strategy = search_loop.make_strategy(cfg, ArchDistribution(space), CostTable.build(space), 0.0)
  k_sample = jax.random.split(jax.random.fold_in(state.rng, state.step), 4)[0]
  archs, shifts = strategy.weight_archs(k_sample, state.logits, state.strategy, state.step)
  n = train["video"].shape[0] // 2
  video = jnp.tile(jnp.asarray(train["video"])[:n], (2, 1, 1, 1, 1))
  logits, _ = sn.apply_groups(sn.Supernet(space, exclusive=True), {"params": state.params,
                                                                    "batch_stats": state.batch_stats},
                              video, archs, train=True, rngs={"dropout": jax.random.PRNGKey(0)}, shifts=shifts)
  expected, _ = inplace_distillation(logits.reshape(2, n, -1), jnp.asarray(train["label"])[:n])
  np.testing.assert_allclose(metrics["train_loss"], expected, rtol=1e-4)


# ------------------------------------------------------------- MSG-DAS super-net guidance (msg)
def test_the_guidance_kl_equals_a_hand_computation_and_moves_only_the_student():
  rng = np.random.default_rng(3)
  student = jnp.asarray(rng.standard_normal((6, 5)).astype(np.float32) * 2)
  teacher = jnp.asarray(rng.standard_normal((6, 5)).astype(np.float32) * 2)
  t, s = _softmax(np.asarray(teacher, np.float64)), _softmax(np.asarray(student, np.float64))
  np.testing.assert_allclose(distillation_kl(student, teacher), np.sum(t * (np.log(t) - np.log(s)), -1), rtol=1e-5)
  g_student, g_teacher = jax.grad(lambda a, b: jnp.mean(distillation_kl(a, b)), argnums=(0, 1))(student, teacher)
  assert float(jnp.mean(distillation_kl(student - 2.0 * g_student, teacher))) < float(jnp.mean(distillation_kl(student, teacher)))
  assert not np.any(np.asarray(g_teacher))
  assert float(jnp.max(jnp.abs(distillation_kl(teacher, teacher)))) < 1e-6


def test_supernet_guidance_is_rejected_for_other_strategies():
  cfg = toys.set_keys(config_lib.base_config(), {"search.target_arch": "X3D", "search.msg.supernet_distill": 1.0})
  with pytest.raises(config_lib.ConfigError, match=r"config.search.msg.supernet_distill is set but "
                                                   r"config.search.strategy is 'probabilistic'"):
    config_lib.validate(cfg)


@pytest.mark.slow   # compiles a full supernet step (about a minute)
def test_the_msg_step_adds_the_soft_supernets_guidance():
  """The jitted msg step's weight loss is the sub-graphs' cross-entropy plus weight x the mean KL of
  their predictions to the soft supernet's (every choice weighted by the distribution) on the same
  clips (the step's own samples; the toy head has no dropout)."""
  from autox3d_jax.models.spec import HeadSpec
  from autox3d_jax.search import supernet as sn
  from autox3d_jax.train import partitioning, search_loop
  from autox3d_jax.train.losses import cross_entropy
  from test_search_step import batches, tiny_setup
  cfg, step, state = tiny_setup("msg", num_groups=2, **{"msg.supernet_distill": 0.5})
  train, val = next(iter(batches(1, seed=0))), next(iter(batches(1, seed=1)))
  mesh = partitioning.make_mesh()
  _, metrics = jax.jit(step)(state, partitioning.global_batch(train, mesh), partitioning.global_batch(val, mesh))

  space = toys.tiny_space(head=HeadSpec(conv5_width=16, head_width=16, dropout=0.0, num_classes=3))
  dist = ArchDistribution(space)
  strategy = search_loop.make_strategy(cfg, dist, CostTable.build(space), 0.0)
  k_sample = jax.random.split(jax.random.fold_in(state.rng, state.step), 4)[0]
  archs, shifts = strategy.weight_archs(k_sample, state.logits, state.strategy, state.step)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  video, labels = jnp.asarray(train["video"]), jnp.asarray(train["label"])
  logits, _ = sn.apply_groups(sn.Supernet(space, exclusive=True), variables, video, archs, train=True,
                              rngs={"dropout": jax.random.PRNGKey(0)}, shifts=shifts)
  soft = jax.tree_util.tree_map(lambda p: p[None], dist.probs(state.logits))
  guide, _ = sn.apply_groups(sn.Supernet(space), variables, video, soft, train=True,
                             rngs={"dropout": jax.random.PRNGKey(0)})
  kd = float(jnp.mean(distillation_kl(logits, guide)))
  assert kd > 0
  np.testing.assert_allclose(metrics["supernet_kd"], kd, rtol=1e-4)
  np.testing.assert_allclose(metrics["train_loss"], jnp.mean(cross_entropy(logits, labels)) + 0.5 * kd, rtol=1e-4)


# ------------------------------------------------------------------------------------------- SSR
def test_ssr_is_zero_at_one_hot_weights_and_positive_elsewhere():
  from autox3d_jax.search.strategies.base import ssr_loss
  one_hot = {"a": jnp.array([0.0, 1.0, 0.0]), "b": jnp.array([1.0, 0.0])}
  assert float(ssr_loss(one_hot)) == 0.0
  rng = np.random.default_rng(0)
  for _ in range(20):
    probs = {k: jnp.asarray(_softmax(rng.standard_normal(v.shape) * 3)) for k, v in one_hot.items()}
    assert float(ssr_loss(probs)) > 0.0
  uniform = {"a": jnp.full(3, 1 / 3), "b": jnp.full(2, 1 / 2)}
  np.testing.assert_allclose(ssr_loss(uniform), np.mean([1 - 1 / 3, 1 - 1 / 2]), rtol=1e-6)


def test_ssr_pulls_the_architecture_towards_its_most_likely_choice():
  """Gradient descent on SSR through the softmax raises each decision's largest probability."""
  from autox3d_jax.search.strategies.base import ssr_loss
  logits = {"a": jnp.array([0.3, 0.1, -0.2]), "b": jnp.array([-0.5, 0.4])}
  loss = lambda lg: ssr_loss({k: jax.nn.softmax(v) for k, v in lg.items()})   # noqa: E731
  stepped = jax.tree_util.tree_map(lambda v, g: v - 1.0 * g, logits, jax.grad(loss)(logits))
  for k in logits:
    before, after = jax.nn.softmax(logits[k]), jax.nn.softmax(stepped[k])
    assert int(jnp.argmax(after)) == int(jnp.argmax(before)) and float(after.max()) > float(before.max())
  assert float(loss(stepped)) < float(loss(logits))


@pytest.mark.parametrize("name", ["dnas", "gdas", "msg"])
def test_the_gradient_strategies_add_the_weighted_ssr_to_their_objective(name):
  space = toy_space()
  dist = ArchDistribution(space)
  table = CostTable.build(space)
  logits = {d.label: jnp.linspace(-1.0, 1.0, d.size) for d in space.decisions}
  losses = lambda archs: jax.vmap(table.expected)(archs) / 1e6   # noqa: E731
  out = {}
  for weight in (0.0, 2.0):
    strategy = strategies.make(dist, table, search_cfg(name, num_groups=2, ssr_weight=weight))
    out[weight] = strategy.arch_objective(jax.random.PRNGKey(0), logits, strategy.init_state(), 0, losses)
  from autox3d_jax.search.strategies.base import ssr_loss
  ssr = float(ssr_loss(dist.probs(logits)))
  assert float(out[2.0][1][1]["ssr"]) == pytest.approx(ssr)
  assert float(out[2.0][0]) == pytest.approx(float(out[0.0][0]) + 2.0 * ssr, rel=1e-5)


def test_ssr_is_rejected_for_strategies_without_soft_weights():
  cfg = config_lib.base_config()
  cfg.search.target_arch = "X3D"
  cfg.search.ssr_weight = 0.1
  with pytest.raises(config_lib.ConfigError, match=r"config.search.ssr_weight regularises .* not of 'probabilistic'"):
    config_lib.validate(cfg)
