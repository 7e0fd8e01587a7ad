"""Command-line path of the shipped config `autox3d_jax/configs/search_hybrid.py` (its docstring has the run
commands); from Python: `autox3d_jax.configs.get("search_hybrid", arg)`."""
from autox3d_jax.configs.search_hybrid import get_config  # noqa: F401
