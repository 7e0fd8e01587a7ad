"""Command-line path of the shipped config `autox3d_jax/configs/search_autox3d.py` (its docstring has the run
commands); from Python: `autox3d_jax.configs.get("search_autox3d", arg)`."""
from autox3d_jax.configs.search_autox3d import get_config  # noqa: F401
