"""Test set-up: simulate an 8-device slice on CPU before jax is imported anywhere."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tf.data must never grab an accelerator.


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end tests excluded from the default run (-m slow)")
