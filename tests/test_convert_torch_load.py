"""models/convert_torch.load_torch_checkpoint: safe by default. A checkpoint whose pickle would run
code is refused, naming the opt-in; state_dicts and SlowFast-style checkpoints load; a truncated
file is a CheckpointError. Needs torch (the `test` extra installs the CPU build)."""
import collections
import os
import warnings

import numpy as np
import pytest
import torch

from autox3d_jax.models.convert_torch import CheckpointError, load_torch_checkpoint


class _RunsCode:
  """Pickles into a call of os.system: what a malicious checkpoint carries."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def _state_dict():
  """A DataParallel-saved state_dict: every key has the 'module.' prefix the loader strips."""
  return collections.OrderedDict([("module.blocks.0.conv.weight", torch.arange(6, dtype=torch.float32).reshape(2, 3)),
                                  ("module.blocks.1.norm.running_var", torch.ones(3))])


def test_a_checkpoint_that_would_run_code_is_refused_by_default_naming_the_flag(tmp_path):
  marker = tmp_path / "ran"
  path = tmp_path / "evil.pyth"
  torch.save({"model_state": _state_dict(), "payload": _RunsCode(marker)}, path)
  with pytest.raises(CheckpointError, match=r"trust_pickle=True \(config.pretrained.trust_pickle=True in mode=import\)") as err:
    load_torch_checkpoint(str(path))
  assert "could run code" in str(err.value) and str(path) in str(err.value)
  assert not marker.exists(), "the payload ran"
  # The explicit opt-in loads it (and so runs the payload), with a warning.
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    sd = load_torch_checkpoint(str(path), trust_pickle=True)
  assert marker.exists() and any("trust_pickle=True" in str(w.message) for w in caught)
  assert set(sd) == {"blocks.0.conv.weight", "blocks.1.norm.running_var"}


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,                                                          # a bare state_dict
    lambda sd: {"model_state": sd},                                         # pytorchvideo hub files
    lambda sd: {"epoch": 300, "model_state": sd, "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.1}]},
                "cfg": "MODEL:\n  ARCH: x3d\n"},                             # SlowFast's checkpoint dict
], ids=["state_dict", "model_state", "slowfast"])
def test_tensor_checkpoints_load_safely(tmp_path, wrap):
  path = tmp_path / "ok.pyth"
  torch.save(wrap(_state_dict()), path)
  with warnings.catch_warnings():
    warnings.simplefilter("error")   # the safe path warns about nothing
    sd = load_torch_checkpoint(str(path))
  assert set(sd) == {"blocks.0.conv.weight", "blocks.1.norm.running_var"}   # 'module.' stripped
  np.testing.assert_array_equal(sd["blocks.0.conv.weight"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_a_truncated_checkpoint_is_a_checkpoint_error(tmp_path):
  path = tmp_path / "cut.pyth"
  torch.save({"model_state": _state_dict()}, path)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
    load_torch_checkpoint(str(path))
  with pytest.raises(FileNotFoundError):
    load_torch_checkpoint(str(tmp_path / "missing.pyth"))
