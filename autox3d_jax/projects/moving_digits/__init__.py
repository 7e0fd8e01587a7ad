"""`moving_digits`: the embedded offline demo dataset (handwritten digits in motion), a project.

A dataset plug-in (see `autox3d_jax.projects`): the registry resolves ``moving_digits/<config>``
names through this module. Modules:

  digits    the clip renderer: pure numpy, deterministic from a seed, scikit-learn's bundled digits
  builder   the tensorflow-datasets builder `moving_digits` (configs motion, appearance,
            *_small, *_tiny), `build_moving_digits`, the clip-record export, and the command line

Build (prints the prepared directory)::

    python -m autox3d_jax.projects.moving_digits --config motion --data_dir ~/tensorflow_datasets

Importing this package is light (no TensorFlow): `CONFIGS` and `build` load the tfds builder on
first use, so `digits` stays importable on its own.
"""
from __future__ import annotations

DEFAULT_CONFIG = "motion"


def build(config_name: str, data_dir: str | None = None) -> None:
  """Generates and prepares ``moving_digits/<config_name>`` under `data_dir` (default
  $TFDS_DATA_DIR or ~/tensorflow_datasets); a no-op when it is already prepared. Offline."""
  from autox3d_jax.projects.moving_digits import builder  # pylint: disable=import-outside-toplevel

  builder.build_moving_digits(config_name, data_dir)


def __getattr__(name: str):
  # `CONFIGS` lives with the tfds builder; importing it here eagerly would pull in TensorFlow.
  if name == "CONFIGS":
    from autox3d_jax.projects.moving_digits.builder import CONFIGS  # pylint: disable=import-outside-toplevel

    return CONFIGS
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
