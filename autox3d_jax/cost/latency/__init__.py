"""Hardware-aware cost: a latency lookup table measured on the current backend (FBNet-style).

One job per module, dependencies pointing down the list:
  queries   which pieces (stem, blocks, heads) a space's networks are made of, and their table keys
  meta      where and how a table was measured; whether a stored one may be reused here
  measure   timing and memory analysis of compiled eval-mode forwards (the interleaved protocol)
  table     LatencyTable (JSON), build_table / load_or_build / share_across_processes, latency_fns
            (the CostTable hooks) and predict_ms
  plot      the validation's scatter plot (matplotlib, imported lazily)
  validate  validate_table: table-predicted vs measured end-to-end latency of random networks

The search side builds its differentiable cost from a table with
`CostTable.from_latency(space, table)` (search/cost_table.py), i.e.
`CostTable.build(space, 'latency', fns=latency_fns(table))`; nothing here imports the search.

Typical use (cfg.latency is `config.base_config().latency`):
  table = latency.load_or_build(space, cfg.latency, path)
  table = latency.share_across_processes(table)
  fns = latency.latency_fns(table)
  result = latency.validate_table(space, table, cfg.latency, out_dir)
  stats = latency.time_module(module, input_shape, dtype, warmup, repeats)
"""
from autox3d_jax.cost.latency import measure, meta, plot, queries, table, validate
from autox3d_jax.cost.latency.measure import (MAX_REPEATS, arch_item, arch_memory, block_item, block_module,
                                              head_item, measure_arch, measure_modules, measure_overhead_ms,
                                              stem_item, synthetic_variables, time_block, time_compiled,
                                              time_module)
from autox3d_jax.cost.latency.meta import (DTYPES, FORMAT_VERSION, MATCH_FIELDS, STATISTICS, current_meta,
                                           meta_mismatch, space_fingerprint)
from autox3d_jax.cost.latency.plot import plot_validation
from autox3d_jax.cost.latency.queries import (HEAD_ITEM, STEM_ITEM, block_key, network_queries,
                                              required_queries)
from autox3d_jax.cost.latency.table import (LatencyTable, build_table, latency_fns, load_or_build, predict_ms,
                                            share_across_processes)
from autox3d_jax.cost.latency.validate import arch_pieces, random_points, validate_table

__all__ = [
    "DTYPES", "FORMAT_VERSION", "HEAD_ITEM", "MATCH_FIELDS", "MAX_REPEATS", "STATISTICS", "STEM_ITEM",
    "LatencyTable", "arch_item", "arch_memory", "arch_pieces", "block_item", "block_key", "block_module",
    "build_table", "current_meta", "head_item", "latency_fns", "load_or_build", "measure_arch",
    "measure_modules", "measure_overhead_ms", "meta_mismatch", "network_queries", "plot_validation",
    "predict_ms", "random_points", "required_queries", "share_across_processes", "space_fingerprint",
    "stem_item", "synthetic_variables", "time_block", "time_compiled", "time_module", "validate_table",
]
