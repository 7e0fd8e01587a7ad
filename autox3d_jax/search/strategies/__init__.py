"""Search strategies by name. Each shares the distribution, the supernet and the cost table.

`make(dist, table, search_cfg, ...)` builds the strategy `search_cfg.strategy` names; the names
equal `config.STRATEGIES` (tests/test_config.py checks it).
"""
from autox3d_jax.search.strategies.base import Strategy
from autox3d_jax.search.strategies.dnas import DNAS
from autox3d_jax.search.strategies.gdas import GDAS
from autox3d_jax.search.strategies.msg import MSG
from autox3d_jax.search.strategies.probabilistic import Probabilistic
from autox3d_jax.search.strategies.spos import SPOS

STRATEGIES = {cls.name: cls for cls in (Probabilistic, DNAS, GDAS, SPOS, MSG)}


def make(dist, table, search_cfg, *, cost_target: float = 0.0, val_examples_per_group: int = 1) -> Strategy:
  """The strategy `search_cfg.strategy` (config.search) over `dist` and `table`; see
  `Strategy.__init__` for the other arguments."""
  try:
    cls = STRATEGIES[search_cfg.strategy]
  except KeyError:
    raise ValueError(f"unknown search strategy '{search_cfg.strategy}'; known: {sorted(STRATEGIES)}") from None
  return cls(dist, table, search_cfg, cost_target=cost_target, val_examples_per_group=val_examples_per_group)
