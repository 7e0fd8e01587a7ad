"""Timing and memory analysis of compiled eval-mode forwards on the current backend, or of the
same forwards converted to TFLite and run by the TFLite interpreter (backend 'tflite').

Takes flax modules (or the specs they are built from) with an input shape and dtype; returns timing
statistics in milliseconds and XLA's memory analysis. Knows nothing about latency tables: which
pieces a table holds and how they are named is `queries`' job, storing them is `table`'s.

Protocol. Every module is the one `models.builder` would build, run in eval mode (`train=False`)
with its variables as arguments (as in real inference, so they are not folded into the program as
constants), ahead-of-time compiled (`jax.jit(...).lower(...).compile()`), warmed up, and timed
with `block_until_ready`. `measure_modules` interleaves the timed calls: after all pieces are
compiled, `repeats` rounds each visit every piece in a shuffled order, so the load of other jobs
on a shared machine (which drifts over minutes) spreads over all pieces instead of inflating
whichever were measured during a busy minute. Fast pieces get more calls per round (>= `min_time_s`
of timed calls in all, at most MAX_REPEATS). Parameters are synthetic (right shapes, realistic
scales): running each block's `init` program would cost more compile time than the measurement.

Per-call overhead: `measure_overhead_ms` times a trivial compiled program, the dispatch /
synchronisation cost every timed piece includes once.

Backend 'tflite' (on-device latency as far as this machine can give it): each module, with the same
synthetic parameters as constants, is converted to a float32 TFLite model
(`export.tensorflow.tflite_of_function`, the network export's path) and timed as
`interpreter.invoke()` on TFLITE_THREADS thread(s), with the same interleaved protocol. It has no
memory analysis (those fields are None).
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from autox3d_jax.models.blocks import ResidualBlock
from autox3d_jax.models.builder import Head, Stem, build
from autox3d_jax.models.spec import ArchSpec, BlockSpec, HeadSpec

MAX_REPEATS = 200
BACKENDS = ("jax", "tflite")
TFLITE_THREADS = 1   # the TFLite interpreter's threads: one core, as a small device runs a model


# -------------------------------------------------------------------------------------- modules
def module_dtype(dtype: str):
  """The compute dtype argument of the model modules: float32 -> None, exactly what
  `builder.build(spec)` (no dtype) runs."""
  return None if dtype == "float32" else jnp.dtype(dtype)


def block_module(spec: BlockSpec, dtype: str = "float32"):
  """The flax module `models.builder` builds for one block (`VideoNet`'s ResidualBlock)."""
  return ResidualBlock(spec, module_dtype(dtype))


def stem_item(space_config, batch_size: int, dtype: str) -> tuple:
  """(module, input shape, input dtype) of the stem of a space (`space.config`, duck-typed)."""
  c = space_config
  return (Stem(c.stem, module_dtype(dtype)),
          (batch_size, c.num_frames, c.crop_size, c.crop_size, c.in_channels), dtype)


def block_item(spec: BlockSpec, in_width: int, thw, batch_size: int, dtype: str) -> tuple:
  """(module, input shape, input dtype) of one block on a (T, H, W) input of `in_width` channels."""
  return (block_module(spec, dtype), (batch_size, *thw, in_width), dtype)


def head_item(head: HeadSpec, width: int, thw, batch_size: int, dtype: str) -> tuple:
  """(module, input shape, input dtype) of the head on the final stage's output."""
  return (Head(head, module_dtype(dtype)), (batch_size, *thw, width), dtype)


def arch_item(spec: ArchSpec, batch_size: int, dtype: str) -> tuple:
  """(module, input shape, input dtype) of a whole network's eval forward. The input is float32 even
  for bfloat16 compute: VideoNet casts it itself, as it does behind a real input pipeline."""
  return (build(spec, module_dtype(dtype)),
          (batch_size, spec.num_frames, spec.crop_size, spec.crop_size, spec.in_channels), "float32")


# ------------------------------------------------------------------------------------ programs
def _random_input(shape, dtype: str, seed: int = 0):
  # numpy, not jax.random: that compiles a sampler per shape (seconds each on a loaded CPU).
  x = np.random.default_rng(seed).standard_normal(tuple(shape), dtype=np.float32)
  return jnp.asarray(x, jnp.dtype(dtype))


def _unfreeze(tree):
  return {k: _unfreeze(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree


def synthetic_variables(module, x, seed: int = 0) -> dict:
  """Variables with the shapes `module.init` would give, filled on the host (no init program to
  compile: that costs seconds per block on CPU, several times the apply's own compile).

  Kernels ~ N(0, 1/fan_in) (activations keep their scale through deep random networks), BN scale and
  running variance 1, biases and running means 0. Latency does not depend on the values, as long as
  they are finite and not denormal.
  """
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x, train=False))
  rng = np.random.default_rng(seed)
  flat = {}
  for path, leaf in traverse_util.flatten_dict(_unfreeze(shapes)).items():
    name = path[-1]
    if name in ("scale", "var"):
      value = np.ones(leaf.shape, leaf.dtype)
    elif name in ("bias", "mean"):
      value = np.zeros(leaf.shape, leaf.dtype)
    else:
      fan_in = max(1, int(np.prod(leaf.shape[:-1])))
      value = (rng.standard_normal(leaf.shape) / math.sqrt(fan_in)).astype(leaf.dtype)
    flat[path] = jnp.asarray(value)
  return traverse_util.unflatten_dict(flat)


def _compile_module(module, x):
  """(compiled eval-mode apply, variables) for `module` on input `x` (variables as arguments, as in
  real inference, so they are not folded into the program as constants)."""
  variables = synthetic_variables(module, x)
  compiled = jax.jit(lambda v, inp: module.apply(v, inp, train=False)).lower(variables, x).compile()
  return compiled, variables


def check_backend(backend: str) -> None:
  """ValueError unless `backend` is one of BACKENDS."""
  if backend not in BACKENDS:
    raise ValueError(f"latency backend must be one of {BACKENDS}, got {backend!r}")


def _program(module, x, backend: str):
  """(call, compiled or None): a no-argument callable running `module`'s eval forward on `x` once
  and waiting for it, on `backend`; the compiled XLA program for memory analysis (jax only)."""
  if backend == "jax":
    compiled, variables = _compile_module(module, x)
    return (lambda: jax.block_until_ready(compiled(variables, x))), compiled
  from autox3d_jax.export import tensorflow as tf_export   # pylint: disable=import-outside-toplevel
  variables = synthetic_variables(module, x)
  model = tf_export.tflite_of_function(lambda inp: module.apply(variables, inp, train=False), x.shape,
                                       np.dtype(x.dtype))
  return tf_export.tflite_invoker(model, np.asarray(x), TFLITE_THREADS), None


# -------------------------------------------------------------------------------------- timing
def time_compiled(fn: Callable, args: tuple, warmup: int, repeats: int, min_time_s: float = 0.0) -> dict:
  """Run `fn(*args)` `warmup` times (at least once: first-call host-kernel loading), then time calls,
  each ended by block_until_ready: at least `repeats` of them, and more (up to MAX_REPEATS) until
  `min_time_s` of timed calls have accumulated -- cheap for fast pieces, whose medians are the most
  sensitive to other jobs on the machine. Returns {'median_ms', 'min_ms', 'times_ms'}."""
  for _ in range(max(1, int(warmup))):
    jax.block_until_ready(fn(*args))
  times: list[float] = []
  total = 0.0
  while len(times) < max(1, int(repeats)) or (total < min_time_s and len(times) < MAX_REPEATS):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    dt = time.perf_counter() - t0
    total += dt
    times.append(dt * 1e3)
  return {"median_ms": statistics.median(times), "min_ms": min(times), "times_ms": times}


def measure_modules(items: Mapping[str, tuple], warmup: int, repeats: int, min_time_s: float = 0.0,
                    progress: bool = False, desc: str = "measure", memory: bool = False,
                    seed: int = 0, backend: str = "jax") -> dict:
  """Time many modules' eval forwards with one interleaved protocol; returns {name: stats}.
  `backend`: 'jax' (compiled XLA programs) or 'tflite' (the module doc).

  items: name -> (module, input_shape, input_dtype). Each module is compiled ahead of time
  (`jax.jit(...).lower(...).compile()`, variables as arguments), run `warmup` times (at least once:
  first-call host-kernel loading) and timed once for an estimate. Then `repeats` rounds: each round
  visits every item (in a fresh shuffled order, from `seed`) and times k consecutive calls, each
  ended by `block_until_ready`, with k chosen so that every item accumulates >= `min_time_s` of timed
  calls (fast pieces get more samples; at most MAX_REPEATS). Stats: median_ms, mean_ms, min_ms,
  n calls, and with `memory` XLA's memory analysis of the compiled program (`_memory_stats`).

  Interleaving matters on a shared machine: other jobs' load drifts over minutes, and timing items
  round-robin spreads that drift over all of them instead of letting it scale whichever items were
  measured during a busy minute.
  """
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  check_backend(backend)
  names = list(items)
  bar = tqdm(total=len(names) * (1 + max(1, int(repeats))), desc=f"{desc}: compile", unit="step",
             disable=not progress, dynamic_ncols=True)
  inputs: dict = {}
  programs, times, stats = {}, {}, {}
  try:
    for name in names:
      module, shape, in_dtype = items[name]
      key = (tuple(int(v) for v in shape), str(in_dtype))
      if key not in inputs:  # one input buffer per shape, shared by the items that take it
        inputs[key] = _random_input(key[0], key[1])
      call, compiled = _program(module, inputs[key], backend)
      for _ in range(max(1, int(warmup))):
        call()
      t0 = time.perf_counter()
      call()
      estimate = time.perf_counter() - t0
      per_round = max(1, min(MAX_REPEATS // max(1, int(repeats)),
                             math.ceil(min_time_s / max(1, int(repeats)) / max(estimate, 1e-6))))
      programs[name] = (call, per_round)
      times[name] = []
      if memory:
        stats[name] = {"memory": _memory_stats(compiled)}
      bar.update(1)
    bar.set_description(f"{desc}: time")
    rng = np.random.default_rng(seed)
    for _ in range(max(1, int(repeats))):
      for i in rng.permutation(len(names)):
        call, per_round = programs[names[i]]
        for _ in range(per_round):
          t0 = time.perf_counter()
          call()
          times[names[i]].append((time.perf_counter() - t0) * 1e3)
        bar.update(1)
  finally:
    bar.close()
  for name in names:
    t = times[name]
    stats[name] = {**stats.get(name, {}), "median_ms": statistics.median(t), "mean_ms": statistics.fmean(t),
                   "min_ms": min(t), "n": len(t)}
  return stats


def time_module(module, input_shape, dtype: str, warmup: int, repeats: int, min_time_s: float = 0.0,
                backend: str = "jax") -> dict:
  """One module's stats (`measure_modules` with a single item)."""
  return measure_modules({"m": (module, input_shape, dtype)}, warmup, repeats, min_time_s, backend=backend)["m"]


def time_block(spec: BlockSpec, in_width: int, thw, batch_size: int, dtype: str, warmup: int, repeats: int,
               min_time_s: float = 0.0) -> dict:
  """Time one block (the module `models.builder` would build for it) on this backend."""
  return time_module(*block_item(spec, in_width, thw, batch_size, dtype), warmup, repeats, min_time_s)


def measure_overhead_ms(repeats: int = 200, backend: str = "jax") -> float:
  """Median wall time of a trivial program (x + 1 on 8 floats) on `backend`: the per-call cost
  every timed piece includes."""
  check_backend(backend)
  if backend == "tflite":
    from autox3d_jax.export import tensorflow as tf_export   # pylint: disable=import-outside-toplevel
    call = tf_export.tflite_invoker(tf_export.tflite_of_function(lambda v: v + 1.0, (8,)), np.ones(8, np.float32),
                                    TFLITE_THREADS)
    return time_compiled(call, (), warmup=5, repeats=repeats)["median_ms"]
  x = jnp.ones((8,), jnp.float32)
  compiled = jax.jit(lambda v: v + 1.0).lower(x).compile()
  return time_compiled(compiled, (x,), warmup=5, repeats=repeats)["median_ms"]


def measure_arch(spec: ArchSpec, batch_size: int, dtype: str, warmup: int, repeats: int,
                 min_time_s: float, backend: str = "jax") -> dict:
  """End-to-end eval-forward latency of a whole network (same protocol as the table) + memory."""
  return measure_modules({"arch": arch_item(spec, batch_size, dtype)}, warmup, repeats, min_time_s,
                         memory=True, backend=backend)["arch"]


# -------------------------------------------------------------------------------------- memory
def _memory_stats(compiled) -> dict:
  """XLA's buffer-assignment memory analysis of a compiled program (None fields where the backend
  does not report it). `temp_bytes` is the peak of live intermediates (activations) XLA allocates."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    m = None
  if m is None:
    return {"temp_bytes": None, "argument_bytes": None, "output_bytes": None, "peak_bytes": None,
            "peak_activation_bytes": None}
  get = lambda name: (int(getattr(m, name)) if getattr(m, name, None) is not None else None)
  out = {"temp_bytes": get("temp_size_in_bytes"), "argument_bytes": get("argument_size_in_bytes"),
         "output_bytes": get("output_size_in_bytes"), "peak_bytes": get("peak_memory_in_bytes")}
  if not out["peak_bytes"]:
    out["peak_bytes"] = None  # 0 = not reported by this backend
  # Activations: XLA's temporaries (params are arguments) plus the output buffer.
  out["peak_activation_bytes"] = (None if out["temp_bytes"] is None
                                  else out["temp_bytes"] + (out["output_bytes"] or 0))
  return out


def arch_memory(spec: ArchSpec, batch_size: int = 1, dtype: str = "float32") -> dict:
  """Peak activation memory of the eval forward of `spec` (compile only, nothing runs): usable as a
  constraint (e.g. `arch_memory(spec)['peak_activation_bytes'] <= budget` in evolution).
  Fields: peak_activation_bytes (XLA temporaries + output), temp_bytes, argument_bytes (params and
  input), output_bytes, peak_bytes (where the backend reports it); None where it reports nothing."""
  module, shape, in_dtype = arch_item(spec, batch_size, dtype)
  compiled, _ = _compile_module(module, _random_input(shape, in_dtype))
  return _memory_stats(compiled)
