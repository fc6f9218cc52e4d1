"""Checkerboard geometry: which latent positions are anchors, and the masked convolutions.

Each slice is coded in two phases. Phase 0 codes the *anchors* with the channel context
only; phase 1 codes the *non-anchors* with the channel context plus a spatial context
computed from the decoded anchors. The anchor parity alternates between slices (official
`slice_index % 2`):

    slice k even: anchors where (row + col) is odd     . A . A
    slice k odd:  anchors where (row + col) is even    A . A .

The spatial context is a stack of multistage masked 3x3 convs (official
`MultistageMaskedConv2d`): mask "A" (first layer) sees the 4-neighbours only, mask "B"
(later layers) the diagonals and the centre. Starting from a map that is zero at
non-anchors, the stack's output at a non-anchor therefore depends only on anchors.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from msinn_jax.layers import gelu, torch_default_init

ANCHOR, NON_ANCHOR, ALL = "anchor", "non_anchor", "all"


def anchor_parity(k: int) -> int:
  """(row + col) % 2 of the anchors of slice k."""
  return 1 if k % 2 == 0 else 0


def checkerboard_mask(h: int, w: int, parity: int) -> np.ndarray:
  """Boolean [1, h, w, 1], True where (row + col) % 2 == parity."""
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  return ((rows + cols) % 2 == parity)[None, :, :, None]


def phase_mask(k: int, phase: str, h: int, w: int) -> np.ndarray:
  """Positions of slice k coded in `phase` ("anchor", "non_anchor" or "all")."""
  if phase == ALL:
    return np.ones((1, h, w, 1), bool)
  parity = anchor_parity(k)
  return checkerboard_mask(h, w, parity if phase == ANCHOR else 1 - parity)


def kernel_mask(kernel_size: int, mask_type: str) -> np.ndarray:
  """[k, k, 1, 1] float mask: "A" keeps taps with (i + j) odd, "B" with (i + j) even."""
  if mask_type not in ("A", "B"):
    raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
  i, j = np.meshgrid(np.arange(kernel_size), np.arange(kernel_size), indexing="ij")
  keep = (i + j) % 2 == (1 if mask_type == "A" else 0)
  return keep.astype(np.float32)[:, :, None, None]


class MaskedConv(nn.Module):
  """A stride-1 conv whose kernel is multiplied by a constant checkerboard mask."""

  features: int
  kernel_size: int = 3
  mask_type: str = "A"
  dtype: Any = None  # Computes in this dtype (None: x's).

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.dtype is not None:
      x = x.astype(self.dtype)
    k = self.kernel_size
    kernel = self.param("kernel", torch_default_init, (k, k, x.shape[-1],
                                                                    self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    kernel = kernel * jnp.asarray(kernel_mask(k, self.mask_type), kernel.dtype)
    y = jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), (1, 1), ((k // 2, k // 2), (k // 2, k // 2)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias.astype(y.dtype)


class SpatialContext(nn.Module):
  """The spatial context network of one slice.

  "multi_ckbd": MaskedConv A -> GELU -> (MaskedConv B -> GELU) x 2 -> MaskedConv B,
  widths (hidden, hidden, hidden, 2c). "ckbd_k<K>": a single mask-A conv of kernel K.
  """

  out_features: int
  hidden: int = 128
  sc_type: str = "multi_ckbd"
  kernel_size: int = 3
  dtype: Any = None  # Of the convolutions; the result is in x's dtype.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.sc_type != "multi_ckbd":
      h = MaskedConv(self.out_features, self.kernel_size, "A", self.dtype, name="conv0")(x)
      return h.astype(x.dtype)
    widths = (self.hidden, self.hidden, self.hidden, self.out_features)
    h = x
    for i, f in enumerate(widths):
      h = MaskedConv(f, 3, "A" if i == 0 else "B", self.dtype, name=f"conv{2 * i}")(h)
      if i < len(widths) - 1:
        h = gelu(h)
    return h.astype(x.dtype)
