"""CPU-only speed work, kept apart from the TPU-first library.

  hostmem        keep freed host memory in the process (glibc mallopt), applied once by `main`
  compile_once   run one-shot initialisers at XLA's fastest optimisation level on the CPU
  depthwise      the numba / shift-add depthwise 3D conv kernels `ops.depthwise` dispatches to on CPU

Nothing here changes results: each module is a faster route to the same values on the CPU backend
and a no-op (or not used) on TPU / GPU.
"""
