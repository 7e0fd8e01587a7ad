"""Command-line path of the shipped config `autox3d_jax/configs/demo.py` (its docstring has the run
commands); from Python: `autox3d_jax.configs.get("demo", arg)`."""
from autox3d_jax.configs.demo import get_config  # noqa: F401
