"""Output geometry of the depthwise 3D conv, shared by `ops.depthwise` and `cpu.depthwise`.

Its own tiny module so the dependency stays one-way: `ops.depthwise` (the public op) imports
`cpu.depthwise` (the CPU kernels), and both need these pure helpers without importing each other.
Padding is symmetric k//2 on every axis (PyTorch `padding=k//2`); temporal stride is 1.
"""
from __future__ import annotations


def padding(kernel_shape) -> list[tuple[int, int]]:
  """(lo, hi) padding of the T, H, W axes: k//2 on both sides."""
  return [(k // 2, k // 2) for k in kernel_shape[:3]]


def out_len(n: int, k: int, s: int) -> int:
  """Output length of one axis with symmetric k//2 padding (== ceil(n/s) for odd k)."""
  return (n + 2 * (k // 2) - k) // s + 1


def output_shape(x_shape, kernel_shape, stride: int = 1) -> tuple[int, ...]:
  """Shape of `depthwise_conv3d(x, kernel, stride)` (leading batch dims of x are kept)."""
  *lead, t, h, w, c = x_shape
  kt, kh, kw = kernel_shape[:3]
  return (*lead, out_len(t, kt, 1), out_len(h, kh, stride), out_len(w, kw, stride), c)
