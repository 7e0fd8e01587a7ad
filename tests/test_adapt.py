"""search.init_from / search/adapt.py: a trained network's weights in the supernet's slots.

The network's point gets its weights exactly (the one-hot supernet there computes the network and
weight inheritance gives them back), and the remapping keeps the function at deeper ('identity')
and wider choices; other kernels are centre-aligned copies; bad sources fail naming the key."""
import subprocess

import jax
import numpy as np
import pytest

from autox3d_jax import config as config_lib
from autox3d_jax.models import builder
from autox3d_jax.models.convert_torch import CheckpointError
from autox3d_jax.search import adapt
from autox3d_jax.search import derive as derive_lib
from autox3d_jax.search import supernet as sn
from autox3d_jax.search.space import Op
from autox3d_jax.train import search_loop, weights

from test_main import env_for, main_cmd
from test_supernet import random_point, randomize, toy_space

X = jax.random.normal(jax.random.PRNGKey(5), (2, 4, 32, 32, 3))


@pytest.fixture(scope="module")
def toy():
  space = toy_space()
  return space, sn.Supernet(space), sn.init_supernet(space, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def trained_supernet(toy):
  """A supernet with random weights and BN statistics: networks cut out of it stand for trained ones."""
  space, _, initial = toy
  return randomize(initial, seed=11)


def _network(space, point, source):
  """The network at `point` with the weights `source` (a supernet's variables) gives it: by the
  supernet's invariant (tests/test_supernet.py), the one-hot `source` at `point` computes it."""
  spec = space.to_arch(point)
  return spec, derive_lib.inherit_variables(space, point, source, spec)


def _points(space, n, seed=0):
  rng = np.random.default_rng(seed)
  points = [random_point(space, rng) for _ in range(n)]
  for k in range(len(space.config.ops)):   # every op in a kept block
    p = random_point(space, rng)
    p["s1_b1_op"] = k
    points.append(p)
  return points


def _rel(got, ref):
  return float(np.max(np.abs(np.asarray(got) - np.asarray(ref))) / np.max(np.abs(np.asarray(ref))))


def test_the_networks_point_computes_the_network_and_gives_its_weights_back(toy, trained_supernet):
  space, model, initial = toy
  run = jax.jit(lambda v, a: model.apply(v, X, a, False))
  for t, point in enumerate(_points(space, 3)):
    spec, variables = _network(space, point, trained_supernet)
    if t == 0:   # once against the standalone module itself
      standalone = jax.jit(lambda v: builder.build(spec).apply(v, X, train=False))(variables)
      assert _rel(run(trained_supernet, sn.one_hot_arch(space, point)), standalone) < 1e-5
    ref = run(trained_supernet, sn.one_hot_arch(space, point))
    for rule in adapt.NEW_BLOCK_RULES:
      placed = adapt.supernet_from_network(space, spec, variables, initial, rule)
      assert _rel(run(placed, sn.one_hot_arch(space, point)), ref) < 1e-5, (point, rule)
      back = derive_lib.inherit_variables(space, point, placed, spec)
      jax.tree_util.tree_map(np.testing.assert_array_equal, back, variables)


def test_deeper_identity_blocks_and_wider_choices_keep_the_function(toy, trained_supernet):
  """'identity' new blocks pass their input through; wider widths and expansions add zero channels."""
  space, model, initial = toy
  run = jax.jit(lambda v, a: model.apply(v, X, a, False))
  for point in _points(space, 3, seed=1):
    spec, variables = _network(space, point, trained_supernet)
    ref = run(trained_supernet, sn.one_hot_arch(space, point))
    placed = adapt.supernet_from_network(space, spec, variables, initial, "identity")
    bigger = {k: (space.by_label[k].size - 1 if k.endswith(("_depth", "_width", "_expansion")) else v)
              for k, v in point.items()}
    assert _rel(run(placed, sn.one_hot_arch(space, bigger)), ref) < 1e-4, point


def test_copy_last_fills_deeper_blocks_with_the_stages_last_block(toy, trained_supernet):
  space, _, initial = toy
  point = {d.label: 0 for d in space.decisions}    # depth 1 in every stage, op x3d 3x3x3
  spec, variables = _network(space, point, trained_supernet)
  placed = adapt.supernet_from_network(space, spec, variables, initial, "copy_last")
  last = derive_lib.inherit_variables(space, point, placed, spec)["params"]["s2_b1"]["conv_a"]["conv"]["kernel"]
  deeper = np.asarray(placed["params"]["s2_b3"]["conv_a"]["conv"]["kernel"])
  np.testing.assert_array_equal(deeper[:last.shape[0], :last.shape[1]], last)
  assert not deeper[last.shape[0]:].any() and not deeper[:, last.shape[1]:].any()
  identity = adapt.supernet_from_network(space, spec, variables, initial, "identity")
  assert not np.asarray(identity["params"]["s2_b3"]["bn_c"]["scale"]).any()


def test_other_kernels_of_the_family_get_the_kernel_centre_aligned(toy, trained_supernet):
  space, _, initial = toy
  point = {d.label: 0 for d in space.decisions}
  assert space.config.ops[0] == Op("x3d", (3, 3, 3))
  spec, variables = _network(space, point, trained_supernet)
  placed = adapt.supernet_from_network(space, spec, variables, initial)
  kernel = np.asarray(variables["params"]["s1_b1"]["conv_b"]["kernel"])        # (3, 3, 3, C)
  slots = placed["params"]["s1_b1"]["x3d"]["conv_b"]
  label = {op.kernel if op.type == "x3d" else op.type: op.label for op in space.config.ops}
  c = kernel.shape[-1]
  np.testing.assert_array_equal(slots[label[(3, 3, 3)]][..., :c], kernel)
  wide = np.asarray(slots[label[(3, 5, 5)]][..., :c])                           # zero-padded in h, w
  np.testing.assert_array_equal(wide[:, 1:4, 1:4], kernel)
  assert not wide[:, 0].any() and not wide[:, :, 4].any()
  np.testing.assert_array_equal(slots[label[(5, 3, 3)]][1:4, ..., :c], kernel)  # zero-padded in t
  np.testing.assert_array_equal(slots[label["x2d"]][..., :c], kernel[1:2])     # the middle frame


def test_a_network_of_other_classes_leaves_the_classifier_as_initialised(toy):
  space, model, initial = toy
  point = {d.label: 0 for d in space.decisions}
  spec, variables = _network(space, point, randomize(sn.init_supernet(space, jax.random.PRNGKey(1)), seed=7))
  spec = spec.replace(head=spec.head.__class__(**{**spec.head.__dict__, "num_classes": 9}))
  head = dict(variables["params"]["head"], classifier={"kernel": np.ones((32, 9), np.float32),
                                                        "bias": np.ones((9,), np.float32)})
  variables = {"params": dict(variables["params"], head=head), "batch_stats": variables["batch_stats"]}
  placed = adapt.supernet_from_network(space, spec, variables, initial)
  np.testing.assert_array_equal(placed["params"]["head"]["classifier"]["kernel"],
                                initial["params"]["head"]["classifier"]["kernel"])
  np.testing.assert_array_equal(placed["params"]["head"]["fc1"]["kernel"], variables["params"]["head"]["fc1"]["kernel"])


# ---------------------------------------------------------------------------------- the config path
def _tiny_config(**search):
  from autox3d_jax import configs
  cfg = configs.get("demo", "tiny")
  cfg.mode = "search"
  cfg.search.update(search)
  return config_lib.validate(cfg)


def test_an_init_from_that_is_not_a_point_of_the_space_fails_naming_the_key(tmp_path):
  from autox3d_jax.models import zoo
  spec = zoo.x3d("XS", num_classes=12, num_frames=4, crop_size=32, depths=(1, 1, 1, 1), widths=(8, 16, 24, 32))
  weights.save(str(tmp_path / "w"), spec, builder.init_variables(spec, jax.random.PRNGKey(0)))
  with pytest.raises(config_lib.ConfigError, match=r"config.search.init_from: the network is not a point of "
                                                   r"config.space: X3D-XS: stem/head differ"):
    search_loop.pretrained_network(_tiny_config(init_from=str(tmp_path / "w")))
  with pytest.raises(CheckpointError, match=r"config.search.init_from = '.*nothing' holds no checkpoint"):
    search_loop.pretrained_network(_tiny_config(init_from=str(tmp_path / "nothing")))


def test_bad_init_settings_are_rejected_naming_the_key():
  with pytest.raises(config_lib.ConfigError, match=r"config.search.init_new_blocks is set but config.search.init_from "
                                                   r"is empty"):
    _tiny_config(init_new_blocks="copy_last")
  with pytest.raises(config_lib.ConfigError, match=r"config.search.init_new_blocks = 'zero' is not allowed"):
    _tiny_config(init_from="/w", init_new_blocks="zero")
  cfg = _tiny_config()
  cfg.mode, cfg.search.init_from = "train", "/w"
  with pytest.raises(config_lib.ConfigError, match=r"config.search.init_from is set but config.mode is 'train'"):
    config_lib.validate(cfg)


@pytest.mark.slow
def test_a_search_from_a_trained_network_starts_at_its_weights_through_main(tmp_path):
  """mode=train of the tiny space's X3D-like point, then mode=search from its checkpoint: the
  search's first checkpoint (step 0 is not saved, so the one-step search's) is the adapted
  supernet after one step, and its derived weights at the network's point are close to the
  network's (one SGD step of a small learning rate)."""
  from autox3d_jax import configs
  from autox3d_jax.train import setup
  env = env_for(tmp_path / "data")
  cfg = configs.get("demo", "tiny")
  space = setup.build_space(cfg, classes=12)
  point = setup.x3d_like_point(space)
  spec_file = tmp_path / "net.json"
  spec_file.write_text(space.to_arch(point, name="net").to_json())
  trained = subprocess.run(main_cmd(tmp_path / "a", "--config.mode=train", f"--config.train.arch={spec_file}",
                                    "--config.train.steps=3"), capture_output=True, text=True, env=env, timeout=900)
  assert trained.returncode == 0, trained.stderr[-3000:]
  run_dir = tmp_path / "a" / "checkpoints" / "train_net"
  searched = subprocess.run(main_cmd(tmp_path / "b", "--config.mode=search", f"--config.search.init_from={run_dir}",
                                     "--config.search.steps=1", "--config.search.arch_warmup_steps=0",
                                     "--config.search.weight_opt.lr=1e-9", "--config.checkpoint.every_steps=1"),
                            capture_output=True, text=True, env=env, timeout=900)
  assert searched.returncode == 0, searched.stderr[-3000:]
  assert "supernet initialised from" in searched.stderr
  supernet = search_loop.restore_supernet_variables(str(tmp_path / "b"))
  start = weights.read(str(run_dir), "k")
  got = derive_lib.inherit_variables(space, point, supernet, space.to_arch(point, name="net"))
  for name in ("stem", "s1_b1", "s2_b1"):
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), got["params"][name],
                           start["params"][name])
