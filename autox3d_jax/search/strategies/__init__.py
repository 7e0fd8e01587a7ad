"""Search strategies by name. Each shares the distribution, the supernet and the cost table."""
from autox3d_jax.search.strategies.base import PENALTIES, Strategy
from autox3d_jax.search.strategies.dnas import DNAS
from autox3d_jax.search.strategies.gdas import GDAS
from autox3d_jax.search.strategies.msg import MSG
from autox3d_jax.search.strategies.probabilistic import Probabilistic
from autox3d_jax.search.strategies.spos import SPOS

STRATEGIES = {cls.name: cls for cls in (Probabilistic, DNAS, GDAS, SPOS, MSG)}


def make(name, dist, table, cfg) -> Strategy:
  try:
    return STRATEGIES[name](dist, table, cfg)
  except KeyError:
    raise ValueError(f"unknown search strategy '{name}'; known: {sorted(STRATEGIES)}") from None
