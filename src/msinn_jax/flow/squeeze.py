"""Squeeze (space-to-depth) and its inverse, in the official channel order.

The official `Space2Depth` (models/model_utils.py) puts the 2x2 sub-pixel offset
(i, j) in the outer channel position: output channel `(i * 2 + j) * C + c`. Converted
weights of the following 1x1 conv and coupling only line up with this order, so it is
kept here for NHWC tensors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def space_to_depth(x: jax.Array, r: int = 2) -> jax.Array:
  """[B, H, W, C] -> [B, H/r, W/r, r*r*C], channel index (i * r + j) * C + c."""
  b, h, w, c = x.shape
  if h % r or w % r:
    raise ValueError(f"space_to_depth needs H and W divisible by {r}, got {h}x{w}")
  x = x.reshape(b, h // r, r, w // r, r, c)
  x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
  return x.reshape(b, h // r, w // r, r * r * c)


def depth_to_space(x: jax.Array, r: int = 2) -> jax.Array:
  """Inverse of `space_to_depth`: [B, H, W, r*r*C] -> [B, H*r, W*r, C]."""
  b, h, w, c = x.shape
  if c % (r * r):
    raise ValueError(f"depth_to_space needs channels divisible by {r * r}, got {c}")
  x = x.reshape(b, h, w, r, r, c // (r * r))
  x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
  return x.reshape(b, h * r, w * r, c // (r * r))
