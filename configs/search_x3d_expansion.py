"""Command-line path of the shipped config `autox3d_jax/configs/search_x3d_expansion.py` (its
docstring has the run commands); from Python: `autox3d_jax.configs.get("search_x3d_expansion", arg)`."""
from autox3d_jax.configs.search_x3d_expansion import get_config  # noqa: F401
