"""Test set-up: simulate an 8-device slice on CPU before jax is imported anywhere."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tf.data must never grab an accelerator.


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end tests excluded from the default run (-m slow)")


def pytest_unconfigure(config):
  """A test run must end: terminate any multiprocessing child a test left behind (and say so), so
  the interpreter's exit hooks have nothing to wait on. tests/test_data_parallel.py checks that
  the library itself leaves none."""
  import multiprocessing
  import sys
  left = multiprocessing.active_children()
  for child in left:
    child.terminate()
    child.join(2)
    if child.is_alive():
      child.kill()
      child.join(2)
  if left:
    print(f"conftest: terminated {len(left)} child process(es) left behind: {[c.name for c in left]}",
          file=sys.stderr)
