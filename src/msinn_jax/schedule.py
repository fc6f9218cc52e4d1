"""The decoding schedule: the one loop shared by training, evaluation, compression and
decompression.

Latents are decoded coarsest first (slice k = 0 ... 4); each slice is decoded in one
phase, or in two checkerboard phases (anchors, then non-anchors) when it uses the spatial
context. For every phase the model predicts (mu, sigma) and a *coder* turns them into the
decoded values of that phase's positions:

    for k in slices:                       cc = prior(k, support)       (channel context)
      for phase in phases(k):              mu, sigma = params(k, phase, cc, y_hat)
                                           y_hat[phase] = code(k, phase, mask, mu, sigma)
      y_hat, support = finish(k, y_hat, support)   (LRP, then progressive inverse flow)

What differs between the passes is only `code`: add noise or round in the model's
forward pass, emit symbols in `compress`, read symbols in `decompress`. The model's
networks are reached through `SliceOps`, which is either the module's own methods
(inside one jitted forward) or separately jitted functions (in the codec, where host
entropy coding happens between phases).
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from msinn_jax.config import ModelConfig
from msinn_jax.context.checkerboard import ALL, ANCHOR, NON_ANCHOR, phase_mask


def phases(config: ModelConfig, k: int) -> tuple[str, ...]:
  """The phases of slice k in decoding order."""
  return (ANCHOR, NON_ANCHOR) if config.uses_spatial_context(k) else (ALL,)


def steps(config: ModelConfig) -> list[tuple[int, str]]:
  """Every (slice, phase) of one image, in decoding (= bitstream) order."""
  return [(k, p) for k in range(config.num_slices) for p in phases(config, k)]


def slice_shapes(config: ModelConfig, batch: int, height: int, width: int):
  """[(B, h_k, w_k, c_k)] of the slices in decoding order for a padded image."""
  return [(batch, height // config.slice_scale(k), width // config.slice_scale(k), c)
          for k, c in enumerate(config.slice_channels)]


class SliceOps(Protocol):
  """The model's per-slice networks (see `MSINN.slice_prior` and friends)."""

  def prior(self, k: int, support: jax.Array | None, shape: tuple[int, ...]) -> jax.Array:
    ...

  def params(self, k: int, phase: str, cc: jax.Array,
             y_hat: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    ...

  def finish(self, k: int, y_hat: jax.Array,
             support: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    ...


# code(k, phase, mask [1, h, w, 1] bool, mu, sigma) -> decoded values [B, h, w, c_k],
# meaningful at the positions of `mask`.
Coder = Callable[[int, str, np.ndarray, jax.Array, jax.Array], jax.Array]


def run(config: ModelConfig, ops: SliceOps, shapes: Sequence[tuple[int, ...]],
        code: Coder) -> tuple[list[jax.Array], jax.Array]:
  """Decodes all slices.

  Args:
    config: the model configuration.
    ops: the per-slice networks.
    shapes: `slice_shapes(...)`.
    code: the coder of this pass.

  Returns:
    The decoded latents in decoding order (after LRP) and the output of the inverse flow
    (the reconstruction before the post-filter), [B, H, W, 3].
  """
  support, y_hats = None, []
  for k, shape in enumerate(shapes):
    cc = ops.prior(k, support, shape)
    y_hat = None
    for phase in phases(config, k):
      mask = phase_mask(k, phase, shape[1], shape[2])
      mu, sigma = ops.params(k, phase, cc, y_hat)
      decoded = code(k, phase, mask, mu, sigma)
      # Positions outside this and earlier phases stay zero: the spatial context of the
      # next phase must not see them.
      y_hat = jnp.where(mask, decoded, 0 if y_hat is None else y_hat)
    y_hat, support = ops.finish(k, y_hat, support)
    y_hats.append(y_hat)
  return y_hats, support
