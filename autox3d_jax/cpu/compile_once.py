"""Compiling functions that run once (initialisers) cheaply.

Why: on the CPU, XLA spends most of an initialiser's compile time in LLVM optimising the
threefry RNG code of every parameter (at level 0 the init compiles in half the time or less;
benchmarks/RESULTS.md, 'Start-up of the search'), for a program that then runs once in
milliseconds. The random bits do not depend on the optimisation level (threefry is
integer arithmetic); the initialisers' float transforms may round differently in the last bit
(`tests/test_compile_once.py`). Other backends keep their defaults.
"""
from __future__ import annotations

from typing import Callable

import jax

FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0}


def run_once(fn: Callable, *args):
  """jax.jit(fn)(*args), compiled with fast-compile options on the CPU."""
  jitted = jax.jit(fn)
  if jax.default_backend() != "cpu":
    return jitted(*args)
  return jitted.lower(*args).compile(compiler_options=FAST_COMPILE_OPTIONS)(*args)
