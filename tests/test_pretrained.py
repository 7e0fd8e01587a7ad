"""Pretrained weights in and out: SlowFast and pytorchvideo X3D checkpoints imported (mode=import),
weights checkpoints read by train.init_from / eval.checkpoint / export.checkpoint, and the 'torch'
export that pytorchvideo's create_x3d loads.

The SlowFast fixture (tests/fixtures/x3d_tiny_slowfast.npz, tools/make_slowfast_fixture.py) was made
with SlowFast's own X3D class; the pytorchvideo one (x3d_tiny_pytorchvideo.npz) with create_x3d.
"""
import dataclasses
import io
import json
import os
import subprocess

import jax
import numpy as np
import pytest
import torch

from autox3d_jax import config as config_lib
from autox3d_jax import export as export_lib
from autox3d_jax import pretrained
from autox3d_jax.models import builder, convert_torch, zoo
from autox3d_jax.models.convert_torch import CheckpointError
from autox3d_jax.models.spec import ArchSpec
from autox3d_jax.train import weights

from test_main import env_for, main_cmd

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
PYTORCHVIDEO_CONFIG = dict(input_clip_length=4, input_crop_size=40, width_factor=0.5, depth_factor=1.0,
                           head_dim_out=64, model_num_class=5)   # tools/make_torch_fixture.py CONFIG


def _fixture(name):
  with np.load(os.path.join(FIXTURES, f"x3d_tiny_{name}.npz")) as f:
    data = {k: f[k] for k in f.files}
  return dict(spec=ArchSpec.from_json(str(data["spec_json"])),
              sd={k[len("sd."):]: v for k, v in data.items() if k.startswith("sd.")},
              x=np.ascontiguousarray(data["input_ncthw"].transpose(0, 2, 3, 4, 1)), data=data)


@pytest.fixture(scope="module")
def slowfast():
  return _fixture("slowfast")


@pytest.fixture(scope="module")
def pytorchvideo():
  return _fixture("pytorchvideo")


def _logits(spec, variables, x):
  return np.asarray(jax.jit(lambda v, x: builder.build(spec).apply(v, x, train=False))(variables, x))


def _save_pyth(path, sd, wrap=True):
  tensors = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
  torch.save({"epoch": 7, "model_state": tensors, "optimizer_state": {}, "cfg": "X3D:\n  WIDTH_FACTOR: 0.5\n"}
             if wrap else tensors, path)
  return str(path)


# --------------------------------------------------------------------------------- conversion
def test_the_layout_is_detected_from_the_keys(slowfast, pytorchvideo):
  assert convert_torch.detect_layout(slowfast["sd"]) == "slowfast"
  assert convert_torch.detect_layout(pytorchvideo["sd"]) == "pytorchvideo"
  with pytest.raises(CheckpointError, match=r"no pytorchvideo stem \('blocks.0.\*'\) and no SlowFast stem"):
    convert_torch.detect_layout({"features.0.weight": np.zeros(3)})


def test_a_slowfast_checkpoint_gives_slowfasts_output(slowfast):
  """SlowFast's eval-mode output is softmax(logits); ours are logits: log-softmax equals log(probs)."""
  variables = convert_torch.params_from_state_dict(slowfast["sd"], slowfast["spec"])
  ours = jax.nn.log_softmax(_logits(slowfast["spec"], variables, slowfast["x"]))
  ref = np.log(slowfast["data"]["probs"])
  assert np.max(np.abs(ours - ref)) < 1e-4
  assert np.array_equal(np.argmax(ours, -1), np.argmax(ref, -1))


def test_the_slowfast_shortcut_bn_is_folded_into_the_conv_and_bn_c(slowfast):
  """res2's first block keeps the width (6 -> 6, stride 2): SlowFast has branch1_bn there, we do not."""
  sd, spec = slowfast["sd"], slowfast["spec"]
  assert "s2.pathway0_res0.branch1_bn.weight" in sd and "s3.pathway0_res0.branch1_bn.weight" in sd
  variables = convert_torch.params_from_state_dict(sd, spec)
  block = variables["params"]["s1_b1"]
  assert "shortcut_bn" not in block and "shortcut_bn" in variables["params"]["s2_b1"]
  bn = {t: sd[f"s2.pathway0_res0.branch1_bn.{t}"].astype(np.float64) for t in ("weight", "bias", "running_mean",
                                                                                  "running_var")}
  a = bn["weight"] / np.sqrt(bn["running_var"] + 1e-5)
  np.testing.assert_allclose(block["shortcut"]["conv"]["kernel"],
                             sd["s2.pathway0_res0.branch1.weight"][:, :, 0, 0, 0].T * a[None], rtol=1e-6)
  np.testing.assert_allclose(block["bn_c"]["bias"], sd["s2.pathway0_res0.branch2.c_bn.bias"]
                             + bn["bias"] - a * bn["running_mean"], rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_another_variant_fails_naming_the_tensor_and_both_shapes(slowfast):
  wider = zoo.x3d("XS", num_classes=5, num_frames=4, crop_size=40, depths=(1, 2, 5, 3), widths=(8, 12, 24, 48))
  with pytest.raises(CheckpointError, match=r"shape mismatch for key 's1.pathway0_stem.conv_xy.weight': got "
                                            r"\(6, 3, 1, 3, 3\) -> \(1, 3, 3, 3, 6\), but params/stem/conv_xy/kernel of X3D-XS "
                                            r"needs \(1, 3, 3, 3, 8\)"):
    convert_torch.params_from_state_dict(slowfast["sd"], wider)
  deeper = zoo.x3d("XS", num_classes=5, num_frames=4, crop_size=40, depths=(1, 2, 6, 3), widths=(6, 12, 24, 48))
  with pytest.raises(CheckpointError, match=r"missing key 's4.pathway0_res5.branch2.a.weight'"):
    convert_torch.params_from_state_dict(slowfast["sd"], deeper)
  shallower = zoo.x3d("XS", num_classes=5, num_frames=4, crop_size=40, depths=(1, 2, 4, 3), widths=(6, 12, 24, 48))
  shallower = shallower.replace(head=slowfast["spec"].head)
  with pytest.raises(CheckpointError, match=r"unexpected key 's4.pathway0_res4"):
    convert_torch.params_from_state_dict(slowfast["sd"], shallower)


def test_a_slowfast_head_with_bn_lin5_is_rejected_with_the_reason(slowfast):
  sd = dict(slowfast["sd"], **{f"head.lin_5_bn.{t}": np.ones(64, np.float32)
                               for t in ("weight", "bias", "running_mean", "running_var")})
  with pytest.raises(CheckpointError, match=r"unexpected key 'head.lin_5_bn.weight'.*X3D.BN_LIN5"):
    convert_torch.params_from_state_dict(sd, slowfast["spec"])


def test_the_pytorchvideo_state_dict_round_trips_exactly(pytorchvideo):
  """Ours -> pytorchvideo gives back create_x3d's own state_dict (every key, shape and value), plus
  the num_batches_tracked buffers it carries."""
  variables = convert_torch.params_from_state_dict(pytorchvideo["sd"], pytorchvideo["spec"])
  back = convert_torch.pytorchvideo_state_dict(variables, pytorchvideo["spec"])
  tracked = {k for k in back if k.endswith(".num_batches_tracked")}
  assert set(back) - tracked == set(pytorchvideo["sd"])
  assert {k[:-len("num_batches_tracked")] for k in tracked} == {k[:-len("running_var")] for k in back
                                                                 if k.endswith(".running_var")}
  for k, v in pytorchvideo["sd"].items():
    assert back[k].shape == v.shape and back[k].dtype == np.float32 and np.array_equal(back[k], v), k


def test_create_x3d_kwargs_rebuild_the_fixture_and_the_zoo():
  spec = _fixture("pytorchvideo")["spec"]
  kwargs = convert_torch.create_x3d_kwargs(spec)
  assert {k: kwargs[k] for k in PYTORCHVIDEO_CONFIG} == PYTORCHVIDEO_CONFIG
  assert kwargs["head_activation"] is None and kwargs["bottleneck_factor"] == 2.25 and kwargs["se_ratio"] == 1 / 16
  # pytorchvideo's hub models: width 2.0, depth 2.2 (XS/S/M) or 5.0 (L), each variant's clip.
  for name, depth, clip in (("x3d_xs", 2.2, (4, 160)), ("x3d_s", 2.2, (13, 160)), ("x3d_m", 2.2, (16, 224)),
                            ("x3d_l", 5.0, (16, 312))):
    kw = convert_torch.create_x3d_kwargs(zoo.get(name))
    assert (kw["width_factor"], kw["depth_factor"], kw["input_clip_length"], kw["input_crop_size"]) == (2.0, depth,
                                                                                                        *clip)


def test_create_x3d_kwargs_reject_what_create_x3d_cannot_build():
  spec = zoo.x3d("XS", num_classes=5, num_frames=4, crop_size=40)
  stages = list(spec.stages)
  blocks = list(stages[1].blocks)
  blocks[1] = dataclasses.replace(blocks[1], inner=blocks[1].inner * 2)
  stages[1] = dataclasses.replace(stages[1], blocks=tuple(blocks))
  with pytest.raises(CheckpointError, match=r"s2_b2 differs from the stage's first block"):
    convert_torch.create_x3d_kwargs(spec.replace(stages=tuple(stages)))
  with pytest.raises(CheckpointError, match=r"block type 'x2d' has no pytorchvideo / SlowFast counterpart"):
    convert_torch.create_x3d_kwargs(zoo.x3d("XS", block_type="x2d", kernel=(1, 3, 3)))
  with pytest.raises(CheckpointError, match=r"stage widths \[6, 12, 24, 48\] come from no width_factor"):
    convert_torch.create_x3d_kwargs(_fixture("slowfast")["spec"])   # SlowFast rounds widths to 1, pytorchvideo to 8


# ------------------------------------------------------------------------------- weights files
def test_a_weights_checkpoint_round_trips_with_its_architecture(tmp_path, pytorchvideo):
  spec = pytorchvideo["spec"]
  variables = convert_torch.params_from_state_dict(pytorchvideo["sd"], spec)
  weights.save(str(tmp_path / "w"), spec, variables, {"source": "here"})
  assert weights.arch_of(str(tmp_path / "w"), "k") == spec
  assert weights.meta_of(str(tmp_path / "w"), "k")["source"] == "here"
  loaded = weights.load(str(tmp_path / "w"), spec, "k")
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)


def test_weights_that_do_not_fit_fail_naming_the_key_the_tensor_and_both_shapes(tmp_path, pytorchvideo):
  spec = pytorchvideo["spec"]
  variables = convert_torch.params_from_state_dict(pytorchvideo["sd"], spec)
  with pytest.raises(CheckpointError, match=r"config.train.init_from = '.*nothing' holds no checkpoint"):
    weights.read(str(tmp_path / "nothing"), "train.init_from")
  other = zoo.x3d("XS", num_classes=5, num_frames=4, crop_size=40, depths=(1, 2, 5, 3), widths=(8, 16, 24, 56))
  with pytest.raises(CheckpointError, match=r"config.eval.checkpoint: tensor params/s4_b1/bn_a/bias is \(108,\) in "
                                            r"the checkpoint but X3D-XS needs \(126,\)"):
    weights.fit(variables, other, "eval.checkpoint")
  with pytest.raises(CheckpointError, match=r"has no tensor params/s4_b4/bn_a/bias, which X3D-XS needs"):
    weights.fit(variables, zoo.x3d("XS", num_classes=5, num_frames=4, crop_size=40, depths=(1, 2, 5, 4),
                                   widths=(8, 16, 24, 48)).replace(head=spec.head), "k")
  ten = spec.replace(head=dataclasses.replace(spec.head, num_classes=10))
  with pytest.raises(CheckpointError, match=r"classifier/bias is \(5,\) .* needs \(10,\) \(the checkpoint has 5 "
                                            r"classes: fine-tune it with mode=train and config.train.init_from"):
    weights.fit(variables, ten, "eval.checkpoint")


def test_fine_tuning_to_other_classes_replaces_only_the_classifier(pytorchvideo):
  spec = pytorchvideo["spec"]
  variables = convert_torch.params_from_state_dict(pytorchvideo["sd"], spec)
  ten = spec.replace(head=dataclasses.replace(spec.head, num_classes=10))
  fitted = weights.fit(variables, ten, "train.init_from", new_classes=True, seed=3)
  assert fitted["params"]["head"]["classifier"]["kernel"].shape == (64, 10)
  fresh = builder.init_variables(ten, jax.random.PRNGKey(3))
  np.testing.assert_array_equal(fitted["params"]["head"]["classifier"]["kernel"],
                                fresh["params"]["head"]["classifier"]["kernel"])
  same = {k: v for k, v in fitted["params"].items() if k != "head"}
  jax.tree_util.tree_map(np.testing.assert_array_equal, same,
                         {k: v for k, v in variables["params"].items() if k != "head"})
  np.testing.assert_array_equal(fitted["params"]["head"]["fc1"]["kernel"], variables["params"]["head"]["fc1"]["kernel"])


# ------------------------------------------------------------------------------------ mode=import
def import_config(**pretrained_keys):
  cfg = config_lib.base_config()
  cfg.mode = "import"
  cfg.pretrained.update(pretrained_keys)
  return config_lib.validate(cfg)


def test_mode_import_writes_a_weights_checkpoint_of_the_slowfast_network(tmp_path, slowfast):
  spec_file = tmp_path / "tiny.json"
  spec_file.write_text(slowfast["spec"].to_json())
  source = _save_pyth(tmp_path / "tiny.pyth", slowfast["sd"])
  summary = pretrained.run(import_config(source=source, variant=str(spec_file)), str(tmp_path / "w"))
  out = tmp_path / "w" / "pretrained" / "X3D-XS"
  assert summary["layout"] == "slowfast" and summary["classes"] == 5 and summary["dir"] == str(out)
  assert weights.arch_of(str(out), "k") == slowfast["spec"]
  assert weights.meta_of(str(out), "k")["layout"] == "slowfast"
  loaded = weights.load(str(out), slowfast["spec"], "k")
  expected = convert_torch.params_from_state_dict(slowfast["sd"], slowfast["spec"])
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, expected)


def test_importing_again_does_nothing_and_other_weights_are_not_overwritten(tmp_path, slowfast):
  spec_file = tmp_path / "tiny.json"
  spec_file.write_text(slowfast["spec"].to_json())
  source = _save_pyth(tmp_path / "tiny.pyth", slowfast["sd"])
  cfg = import_config(source=source, variant=str(spec_file), dir=str(tmp_path / "out"))
  assert pretrained.run(cfg, str(tmp_path / "w"))["already_imported"] is False
  assert pretrained.run(cfg, str(tmp_path / "w"))["already_imported"] is True
  other = _save_pyth(tmp_path / "other.pyth", slowfast["sd"])
  with pytest.raises(config_lib.ConfigError, match=r"already holds other weights \(.*tiny.pyth\); they are not "
                                                   r"overwritten: set config.pretrained.dir"):
    pretrained.run(import_config(source=other, variant=str(spec_file), dir=str(tmp_path / "out")), str(tmp_path / "w"))
  assert weights.meta_of(str(tmp_path / "out"), "k")["source"] == source


@pytest.mark.parametrize("keys, message", [
    (dict(), "mode=import needs config.pretrained.source"),
    (dict(source="/nowhere/x.pyth"), "mode=import needs config.pretrained.variant"),
    (dict(source="/nowhere/x.pyth", variant="x3d_s"), r"config.pretrained.source = '/nowhere/x.pyth' does not exist"),
])
def test_an_incomplete_import_fails_naming_the_key(tmp_path, keys, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    pretrained.run(import_config(**keys), str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_a_bad_checkpoint_writes_nothing(tmp_path, slowfast):
  good = _save_pyth(tmp_path / "good.pyth", slowfast["sd"])
  truncated = tmp_path / "truncated.pyth"
  truncated.write_bytes(open(good, "rb").read()[:5000])
  with pytest.raises(CheckpointError, match=r"truncated.pyth is not a readable PyTorch checkpoint"):
    pretrained.run(import_config(source=str(truncated), variant="x3d_xs"), str(tmp_path / "w"))
  with pytest.raises(CheckpointError, match=r"shape mismatch for key 's1.pathway0_stem.conv_xy.weight'.*needs "
                                            r"\(1, 3, 3, 3, 24\)"):
    pretrained.run(import_config(source=good, variant="x3d_xs"), str(tmp_path / "w"))
  assert not (tmp_path / "w" / "pretrained").exists()


@pytest.mark.parametrize("keys, message", [
    ({"mode": "import", "pretrained.layout": "caffe2"}, r"config.pretrained.layout = 'caffe2' is not allowed"),
    ({"pretrained.source": "x.pyth"}, r"config.pretrained.source is set but config.mode is 'demo'"),
    ({"train.init_from": "/ckpt"}, r"config.train.init_from is set but config.mode is 'demo'"),
    ({"mode": "train", "train.init_from": "/ckpt", "train.init_from_supernet": True},
     r"init_from and config.train.init_from_supernet are both set"),
    ({"eval.checkpoint": "/ckpt"}, r"config.eval.checkpoint is set but config.mode is 'demo'"),
])
def test_bad_import_settings_are_rejected_naming_the_key(keys, message):
  import toys
  cfg = config_lib.base_config()
  cfg.search.target_arch = "X3D"
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(toys.set_keys(cfg, keys))


def test_mode_import_through_main_fails_in_one_line_and_builds_no_dataset(tmp_path, slowfast):
  source = _save_pyth(tmp_path / "tiny.pyth", slowfast["sd"])
  out = subprocess.run(main_cmd(tmp_path / "w", "--config.mode=import", f"--config.pretrained.source={source}",
                                "--config.pretrained.variant=x3d_m"),
                       capture_output=True, text=True, env=env_for(tmp_path / "data"), timeout=600)
  assert out.returncode == 2, out.stderr[-3000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: shape mismatch for key 's1.pathway0_stem.conv_xy.weight'"), last
  assert not (tmp_path / "data" / "moving_digits").exists() and not (tmp_path / "w" / "pretrained").exists()


# ------------------------------------------------------------------------------------ 'torch' export
def test_the_torch_export_is_create_x3ds_state_dict(tmp_path, pytorchvideo):
  spec = pytorchvideo["spec"]
  variables = convert_torch.params_from_state_dict(pytorchvideo["sd"], spec)
  manifest = export_lib.export_network(spec, variables, str(tmp_path), ("torch",))
  entry = manifest["artifacts"]["torch"]
  assert entry["max_abs_weight_diff_after_reload"] == 0.0
  state = torch.load(tmp_path / "model_pytorchvideo.pt", weights_only=True)
  for k, v in pytorchvideo["sd"].items():
    assert np.array_equal(state[k].numpy(), v), k
  kwargs = json.loads((tmp_path / "create_x3d_kwargs.json").read_text())
  assert {k: kwargs[k] for k in PYTORCHVIDEO_CONFIG} == PYTORCHVIDEO_CONFIG == {
      k: entry["create_x3d_kwargs"][k] for k in PYTORCHVIDEO_CONFIG}


def test_a_torch_export_of_a_non_x3d_network_is_rejected_before_any_work(tmp_path):
  from autox3d_jax.export import mode as export_mode
  cfg = config_lib.base_config()
  cfg.mode, cfg.export.formats, cfg.export.weights = "export", "torch", "random"
  config_lib.validate(cfg)
  spec = zoo.x3d("XS", num_classes=5, num_frames=4, crop_size=40, block_type="x2d", kernel=(1, 3, 3))
  with pytest.raises(config_lib.ConfigError, match=r"config.export.formats has 'torch': s1_b1: block type 'x2d'"):
    export_mode.check(cfg, str(tmp_path), spec)
  export_mode.check(cfg, str(tmp_path), zoo.x3d("XS", num_classes=5, num_frames=4, crop_size=40))


# ----------------------------------------------------------------------- import -> fine-tune -> eval
@pytest.mark.slow
def test_import_then_fine_tune_then_eval_and_export_through_main(tmp_path, pytorchvideo):
  """A pytorchvideo checkpoint imported (mode=import), fine-tuned on the tiny demo's 12-class data
  from it (train.init_from; the 5-class classifier is replaced) with a learning rate so small that
  the weights stay the imported ones, evaluated from that run's directory (eval.checkpoint), and
  exported from it as pytorchvideo's state_dict (export.checkpoint)."""
  env = env_for(tmp_path / "data")
  spec_file = tmp_path / "tiny.json"
  spec_file.write_text(pytorchvideo["spec"].to_json())
  source = _save_pyth(tmp_path / "x3d.pt", pytorchvideo["sd"], wrap=False)
  clip = ["--config.data.crop_size=40", "--config.data.scale_jitter=(40,48)"]
  imported = subprocess.run(main_cmd(tmp_path / "w", "--config.mode=import", f"--config.pretrained.source={source}",
                                     f"--config.pretrained.variant={spec_file}"),
                            capture_output=True, text=True, env=env, timeout=600)
  assert imported.returncode == 0, imported.stderr[-3000:]
  weights_dir = tmp_path / "w" / "pretrained" / "X3D-XS"
  trained = subprocess.run(main_cmd(tmp_path / "w", "--config.mode=train", f"--config.train.init_from={weights_dir}",
                                    "--config.train.steps=2", "--config.train.optimizer.lr=1e-12",
                                    "--config.train.optimizer.warmup_steps=0", *clip),
                           capture_output=True, text=True, env=env, timeout=1200)
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert "the classifier is freshly initialised" in trained.stderr
  run_dir = tmp_path / "w" / "checkpoints" / "train_X3D-XS"
  after = weights.read(str(run_dir), "k")
  start = convert_torch.params_from_state_dict(pytorchvideo["sd"], pytorchvideo["spec"])
  for name in ("s1_b1", "s3_b5", "stem"):
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), after["params"][name],
                           start["params"][name])
  assert after["params"]["head"]["classifier"]["bias"].shape == (12,)
  evaluated = subprocess.run(main_cmd(tmp_path / "other", "--config.mode=eval", f"--config.eval.checkpoint={run_dir}",
                                      f"--config.train.arch={spec_file}", *clip),
                             capture_output=True, text=True, env=env, timeout=600)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  result = json.loads(evaluated.stdout.strip().splitlines()[-1])
  assert result["name"] == "X3D-XS" and result["videos"] > 0
  exported = subprocess.run(main_cmd(tmp_path / "other", "--config.mode=export", "--config.export.formats=torch",
                                     f"--config.export.checkpoint={run_dir}", f"--config.train.arch={spec_file}", *clip),
                            capture_output=True, text=True, env=env, timeout=600)
  assert exported.returncode == 0, exported.stderr[-3000:]
  state = torch.load(tmp_path / "other" / "export" / "X3D-XS" / "model_pytorchvideo.pt", weights_only=True)
  assert state["blocks.5.proj.weight"].shape == (12, 64)
  back = convert_torch.params_from_pytorchvideo({k: v.numpy() for k, v in state.items()},
                                                pytorchvideo["spec"].replace(head=dataclasses.replace(
                                                    pytorchvideo["spec"].head, num_classes=12)))
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, after)
