"""The jitted, sharded search step: sample K architectures inside the step, update the supernet
weights on the train batch, then the architecture logits on the validation batch.

Everything a search needs to continue exactly lives in `SearchState` (a pytree): params, batch
stats, logits, both optimizer states, the strategy state (baseline, K), the step and the RNG.
The PRNG key is folded with the step inside the step, so sampling never leaves the device.

Input axes (`search.inputs`): a space that searches the clip's frames / stride / crop gets a step
with a fourth, static argument, the step's input setting (its input decisions' indices). Every
group of the step shares it; the batches hold the superclip and the step cuts the setting out of
it. The next step's setting is drawn at the end of the step from the updated distribution's input
decisions (uniform logits for spos) and kept in the strategy state ('input'), so the host picks
the next program from the state and a resumed run continues exactly.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from autox3d_jax.search import supernet as sn
from autox3d_jax.search.distribution import ArchDistribution, FixedInputs
from autox3d_jax.search.inputs import select_clip
from autox3d_jax.search.strategies import Strategy
from autox3d_jax.train import partitioning
from autox3d_jax.train.losses import cross_entropy, distillation_kl, feature_alignment, inplace_distillation, top1
from autox3d_jax.train.teacher import FeatureTeacher, teacher_features


def tile_for_groups(video: jax.Array, labels: jax.Array, k_groups: int) -> tuple[jax.Array, jax.Array]:
  """(video, labels) repeated k_groups times along the batch: group g of the result is a copy of
  the input, so every group runs on the same clips."""
  return jnp.tile(video, (k_groups,) + (1,) * (video.ndim - 1)), jnp.tile(labels, k_groups)


@flax.struct.dataclass
class SearchState:
  step: jax.Array
  params: Any
  batch_stats: Any
  weight_opt: Any
  logits: Any
  arch_opt: Any
  strategy: Any
  rng: jax.Array
  teacher: Any = None   # config.search.feature_distill's {'params', 'batch_stats'}, constant; None without


def init_search_state(model: sn.Supernet, dist: ArchDistribution, strategy: Strategy, w_tx, a_tx,
                      seed: int, init_logits=None, teacher: FeatureTeacher | None = None) -> SearchState:
  rng = jax.random.PRNGKey(seed)
  init_rng, step_rng = jax.random.split(rng)
  variables = sn.init_supernet(model.space, init_rng)
  logits = init_logits if init_logits is not None else dist.init_logits()
  strategy_state = strategy.init_state()
  space = dist.space
  if space.input_labels:   # the first step runs at the reference clip
    reference = space.input_point(space.config.reference_input)
    strategy_state = {**strategy_state, "input": jnp.asarray([reference[l] for l in space.input_labels], jnp.int32),
                      "input_baseline": jnp.full((), jnp.nan, jnp.float32)}
  return SearchState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                     batch_stats=variables["batch_stats"], weight_opt=w_tx.init(variables["params"]),
                     logits=logits, arch_opt=a_tx.init(logits), strategy=strategy_state, rng=step_rng,
                     teacher=None if teacher is None else jax.tree_util.tree_map(jnp.asarray, teacher.variables))


def input_setting(state: SearchState) -> tuple[int, ...]:
  """The input setting the next step runs at (host ints, the space's input labels' order); () when
  the space searches no input axis. Reads one small replicated array from the device."""
  if "input" not in state.strategy:
    return ()
  return tuple(int(v) for v in jax.device_get(state.strategy["input"]))


def make_search_step(model: sn.Supernet, dist: ArchDistribution, strategy: Strategy, w_tx, a_tx,
                     cfg: ml_collections.ConfigDict, table=None, teacher: FeatureTeacher | None = None):
  """The search step: step(state, train_batch, val_batch) -> (state, metrics), pure, to be jitted
  (`jit_search_step`). Batches are {'video': (N, T, H, W, C), 'label': (N,)} with N divisible by
  the strategy's K groups. The weight update trains `strategy.weight_archs` on train_batch; the
  architecture update (frozen for search.arch_warmup_steps) follows `strategy.arch_objective` on
  val_batch. `table` (a CostTable) adds the expected cost to the metrics. cfg: the run's config
  (search.arch_warmup_steps, search.distill, search.feature_distill.weight,
  search.msg.supernet_distill, train.label_smoothing are read here). msg with supernet_distill > 0
  adds that weight x the KL of each sub-graph's predictions to the soft supernet's (metric
  'supernet_kd'). `teacher` (config.search.feature_distill, its weights in the state's `teacher`):
  every group's stage outputs are pulled towards the teacher's on the same clips
  (`losses.feature_alignment`, weighted), reported as metric 'feature_distance'.

  When the space searches input axes the step is step(state, train_batch, val_batch, setting),
  `setting` static (see the module docstring); the batches hold the space's superclip."""
  space = dist.space
  if space.input_labels:
    return _step_over_inputs(model, dist, strategy, w_tx, a_tx, cfg, table, teacher)
  return _make_step(model, dist, strategy, w_tx, a_tx, cfg, table, teacher=teacher)


def _step_over_inputs(model, dist, strategy, w_tx, a_tx, cfg, table, teacher):
  """step(state, train_batch, val_batch, setting): the step of `setting`'s clip, built on first use
  (one program per input setting, each compiled once by jit)."""
  space = dist.space
  source = space.superclip()
  steps = {}

  def step(state: SearchState, train_batch, val_batch, setting: tuple[int, ...]):
    if setting not in steps:
      fixed = dict(zip(space.input_labels, setting))
      steps[setting] = _make_step(model, dist, strategy.with_distribution(FixedInputs(space, fixed)), w_tx, a_tx,
                                  cfg, table, fixed, teacher)
    target = space.input_of(dict(zip(space.input_labels, setting)))
    cut = lambda b: {**b, "video": select_clip(b["video"], source, target)}   # noqa: E731
    return steps[setting](state, cut(train_batch), cut(val_batch))

  return step


def _make_step(model, dist, strategy, w_tx, a_tx, cfg, table, fixed_inputs: dict | None = None,
               teacher: FeatureTeacher | None = None):
  """The step at one clip (`make_search_step`); `fixed_inputs`: the input decisions' indices of
  that clip when the space searches input axes (the step then also draws the next step's)."""
  k_groups = strategy.num_groups
  warmup = int(cfg.search.arch_warmup_steps)
  smoothing = float(cfg.train.label_smoothing)
  # BigNAS in-place distillation (search.distill): the groups share the clips, and every group but
  # the largest (group 0) learns the largest's soft predictions instead of the labels.
  distill = cfg.search.distill == "inplace"
  # FlowNAS feature alignment: the teacher's stage outputs on each group's clips.
  stages = teacher.stages if teacher is not None else ()
  fad_weight = float(cfg.search.feature_distill.weight) if teacher is not None else 0.0
  # MSG-DAS's super-net guidance (search.msg.supernet_distill, our reading): the soft supernet, every
  # choice weighted by the current distribution, teaches each sampled sub-graph on its clips. It
  # runs forward only (stop-gradient), so it keeps no activations for the backward pass.
  supernet_kd = float(cfg.search.msg.supernet_distill) if strategy.name == "msg" else 0.0
  soft_model = model.clone(exclusive=False)

  # One-hot samples run only the sampled family of each block (lax.switch); the gated sum stays where
  # soft weights or gradients w.r.t. the arch weights need every family.
  # Scoring every sample on the same validation clips (common random numbers) costs K forwards of
  # the val batch instead of one.
  shared_val = strategy.shares_val_batch
  weight_model = model.clone(exclusive=strategy.hard_samples)
  arch_model = model.clone(exclusive=strategy.hard_samples and not strategy.loss_grad_wrt_archs)

  def group_ce(params, batch_stats, video, labels, archs, rng, shifts=None, net=weight_model, features=()):
    logits, stats, feats = sn.apply_groups_with_features(
        net, {"params": params, "batch_stats": batch_stats}, video, archs, train=True, rngs={"dropout": rng},
        shifts=shifts, stages=features)
    ce = cross_entropy(logits, labels, smoothing)
    return ce.reshape(k_groups, -1).mean(axis=1), logits, stats, feats

  def feature_distance(teacher_vars, video, feats, shared_clips: bool):
    """(K,) mean over the aligned stages of each group's distance to the teacher: the teacher runs
    once on the n clips the groups share, or on every group's own clips."""
    n = video.shape[0] // k_groups
    seen = video[:n] if shared_clips else video
    targets = teacher_features(teacher.spec, teacher_vars, seen, stages, model.dtype)
    per_stage = []
    for i in stages:
      t = targets[i]
      if not shared_clips:   # group g's clips are rows g*n .. (g+1)*n - 1
        t = t.reshape((k_groups, n) + t.shape[1:])
        per_stage.append(jax.vmap(lambda s, tt: feature_alignment(s[None], tt)[0])(feats[i], t))
      else:
        per_stage.append(feature_alignment(feats[i], t))
    return jnp.mean(jnp.stack(per_stage), axis=0)

  def step(state: SearchState, train_batch, val_batch):
    key = jax.random.fold_in(state.rng, state.step)
    k_sample, k_arch, k_drop, k_drop_val = jax.random.split(key, 4)
    archs, shifts = strategy.weight_archs(k_sample, jax.lax.stop_gradient(state.logits), state.strategy,
                                          state.step)

    video, labels = train_batch["video"], train_batch["label"]
    if distill:   # every group sees the same clips: the first N / K, tiled
      n = video.shape[0] // k_groups
      video, labels = tile_for_groups(video[:n], labels[:n], k_groups)

    guide = None
    if supernet_kd:
      soft = jax.tree_util.tree_map(lambda p: p[None], dist.probs(jax.lax.stop_gradient(state.logits)))
      guide, _ = sn.apply_groups(soft_model, jax.lax.stop_gradient({"params": state.params,
                                                                    "batch_stats": state.batch_stats}),
                                 video, soft, train=True, rngs={"dropout": jax.random.fold_in(key, 2)})
      guide = jax.lax.stop_gradient(guide)

    def weight_loss(params):
      per_group, logits, stats, feats = group_ce(params, state.batch_stats, video, labels, archs, k_drop, shifts,
                                                 features=stages)
      if distill:
        loss, _ = inplace_distillation(logits.reshape((k_groups, -1) + logits.shape[1:]), labels[:n], smoothing)
      else:
        loss = jnp.mean(per_group)
      distance = jnp.zeros((), jnp.float32)
      if stages:
        distance = jnp.mean(feature_distance(state.teacher, video, feats, shared_clips=distill))
        loss = loss + fad_weight * distance
      kd = jnp.zeros((), jnp.float32)
      if guide is not None:
        kd = jnp.mean(distillation_kl(logits, guide))
        loss = loss + supernet_kd * kd
      return loss, (logits, stats, distance, kd)

    (loss, (logits, stats, distance, kd)), grads = jax.value_and_grad(weight_loss, has_aux=True)(state.params)
    updates, weight_opt = w_tx.update(grads, state.weight_opt, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"train_loss": loss,
               "train_top1": top1(logits, labels),
               "grad_norm": optax.global_norm(grads)}
    if stages:
      metrics["feature_distance"] = distance
    if guide is not None:
      metrics["supernet_kd"] = kd

    logits_arch, arch_opt, strategy_state = state.logits, state.arch_opt, state.strategy
    if strategy.updates_arch:
      def group_losses(candidate_archs):
        video, labels = val_batch["video"], val_batch["label"]
        if shared_val:   # group g = copy g of the whole val batch
          video, labels = tile_for_groups(video, labels, k_groups)
        return group_ce(params, stats, video, labels, candidate_archs, k_drop_val, net=arch_model)[0]

      def arch_loss(lg):
        return strategy.arch_objective(k_arch, lg, state.strategy, state.step, group_losses)

      (a_loss, (new_sstate, a_metrics)), a_grads = jax.value_and_grad(arch_loss, has_aux=True)(state.logits)
      a_updates, new_arch_opt = a_tx.update(a_grads, state.arch_opt, state.logits)
      new_logits = optax.apply_updates(state.logits, a_updates)
      frozen = state.step < warmup   # AutoX3D: the architecture is frozen while the weights warm up
      pick = lambda old, new: jax.tree_util.tree_map(lambda o, n: jnp.where(frozen, o, n), old, new)
      logits_arch, arch_opt = pick(state.logits, new_logits), pick(state.arch_opt, new_arch_opt)
      strategy_state = pick(state.strategy, {**state.strategy, **new_sstate})
      metrics.update(a_metrics)
      metrics["arch_loss"] = a_loss
    if fixed_inputs:   # the next step's input setting, from the updated distribution
      k_next = jax.random.fold_in(key, 1)
      drawn = dist.sample(k_next, logits_arch)
      strategy_state = {**strategy_state, "input": jnp.stack([drawn[l] for l in fixed_inputs]).astype(jnp.int32)}
    metrics["arch_entropy"] = dist.entropy(logits_arch)
    if table is not None:
      metrics["expected_cost"] = table.expected(dist.probs(logits_arch))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=stats, weight_opt=weight_opt,
                              logits=logits_arch, arch_opt=arch_opt, strategy=strategy_state)
    return new_state, metrics

  return step


def state_shardings(state: SearchState, mesh, rule: partitioning.ShardingRule | None = None) -> SearchState:
  """Params by the parameter rule (`partitioning.ShardingRule`: FSDP over 'data', tensor-parallel
  over 'model') and their optimizer moments the same way, the feature teacher's weights by the same
  rule; batch stats, logits, arch optimizer, strategy state and scalars replicated. `state` may be abstract (`jax.eval_shape`)."""
  rep = partitioning.replicated(mesh)
  params_sh = partitioning.param_shardings(state.params, mesh, rule)
  replicate = lambda tree: jax.tree_util.tree_map(lambda _: rep, tree)
  teacher = None if state.teacher is None else partitioning.param_shardings(state.teacher, mesh, rule)
  return SearchState(step=rep, params=params_sh, batch_stats=replicate(state.batch_stats),
                     weight_opt=partitioning.optimizer_shardings(state.weight_opt, state.params, params_sh, mesh),
                     logits=replicate(state.logits), arch_opt=replicate(state.arch_opt),
                     strategy=replicate(state.strategy), rng=rep, teacher=teacher)


def jit_search_step(step_fn, state: SearchState, mesh, rule: partitioning.ShardingRule | None = None):
  """(jax.jit of `step_fn` with explicit in/out shardings and the state donated, the state's
  shardings). Over input axes the returned function is step(state, train_batch, val_batch): it
  reads the state's input setting (`input_setting`) and runs that setting's compiled program."""
  st_sh = state_shardings(state, mesh, rule)
  batch_sh = partitioning.batch_sharding(mesh)
  # (a multi-task state holds {task: strategy state}, whatever the tasks are called)
  over_inputs = "input" in state.strategy and not isinstance(state.strategy["input"], dict)
  jitted = jax.jit(step_fn, in_shardings=(st_sh, batch_sh, batch_sh), out_shardings=(st_sh, partitioning.replicated(mesh)),
                   donate_argnums=(0,), static_argnums=(3,) if over_inputs else ())
  if not over_inputs:
    return jitted, st_sh

  def dispatch(state, train_batch, val_batch):
    return jitted(state, train_batch, val_batch, input_setting(state))

  return dispatch, st_sh
