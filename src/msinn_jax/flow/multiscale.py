"""The multi-scale bijection g_a / g_s (paper Sec. III-A, official `g_a`, `g_s`).

Stage s (s = 0 finest ... S-1 coarsest) squeezes its input 2x2 into 4x channels, runs
`depths[s]` invertible units, and splits the result in half along channels: the first
half is a latent at this scale, the second half goes on to the next stage. The last
stage keeps both halves as latents. For RGB and four stages:

    x [H,W,3] -squeeze-> 12 -stage0-> 6 (y0, H/2)  + 6 -squeeze-> 24 -stage1-> 12 (y1, H/4)
      + 12 -squeeze-> 48 -stage2-> 24 (y2, H/8) + 24 -squeeze-> 96 -stage3-> 48 (y3) + 48 (y4)

g_s runs the same stages backwards, one `merge` per latent. The decoder uses `merge`
progressively: after decoding latent k (coarsest first) it rebuilds the hidden state of
the next finer scale, which is the channel context of the next slice.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from msinn_jax.config import ModelConfig
from msinn_jax.flow.squeeze import depth_to_space, space_to_depth
from msinn_jax.flow.unit import InvUnit


class FlowStage(nn.Module):
  """`depth` invertible units applied in order (inverse: reverse order)."""

  depth: int
  hidden: int
  permutation: str
  coupling: str
  use_act_norm: bool
  seed: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    units = stage_units(self)
    logdet = jnp.zeros((x.shape[0],), x.dtype)
    for unit in (units[::-1] if inverse else units):
      x, ld = unit(x, inverse)
      logdet = logdet + ld
    return x, logdet


def stage_units(stage: FlowStage) -> list[InvUnit]:
  """A stage's units in forward order, named as their parameters (see `unit_pieces`)."""
  return [InvUnit(stage.hidden, stage.permutation, stage.coupling, stage.use_act_norm,
                  seed=stage.seed * 1000 + i, name=f"unit{i}") for i in range(stage.depth)]


def make_stages(config: ModelConfig) -> list[FlowStage]:
  """The flow's stages, finest first, named as their parameters (`stage{s}`)."""
  return [
      FlowStage(d, h, config.flow_permutation, config.flow_coupling, config.use_act_norm,
                seed=s, name=f"stage{s}")
      for s, (d, h) in enumerate(zip(config.depths, config.stage_hidden))
  ]


class MultiScaleFlow(nn.Module):
  """g_a: image -> five latents; g_s: its exact inverse."""

  config: ModelConfig

  def setup(self):
    self.stages = make_stages(self.config)

  def analysis(self, x: jax.Array) -> tuple[list[jax.Array], jax.Array]:
    """g_a.

    Args:
      x: [B, H, W, 3] image, H and W multiples of 2**num_stages.

    Returns:
      The latents in analysis order (finest first; [B, H/2, W/2, 6] ... two of
      [B, H/16, W/16, 48]) and the log-determinant of the whole map, [B].
    """
    latents = []
    logdet = jnp.zeros((x.shape[0],), x.dtype)
    h = x
    for s, stage in enumerate(self.stages):
      h, ld = stage(space_to_depth(h))
      logdet = logdet + ld
      keep, h = jnp.split(h, 2, axis=-1)
      latents.append(keep)
    latents.append(h)
    return latents, logdet

  def merge(self, k: int, y_k: jax.Array, support: jax.Array | None) -> jax.Array:
    """Progressive inversion step; see `merge_with_logdet`."""
    return self.merge_with_logdet(k, y_k, support)[0]

  def merge_with_logdet(self, k: int, y_k: jax.Array,
                        support: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Progressive inversion step after decoding latent k (decoding order).

    Args:
      k: slice index in decoding order (0 = coarsest).
      y_k: the latent of slice k, [B, h, w, c_k].
      support: what `merge` returned for slice k - 1 (None for k = 0).

    Returns:
      For k = 0 the latent itself; otherwise the inverse of stage S - k applied to
      [y_k, support], unsqueezed: the hidden state at the next finer scale (for k = S,
      the image), and the log-determinant of this inverse step, [B].
    """
    if k == 0:
      return y_k, jnp.zeros((y_k.shape[0],), y_k.dtype)
    stage = self.stages[self.config.num_stages - k]
    h, logdet = stage(jnp.concatenate([y_k, support], axis=-1), inverse=True)
    return depth_to_space(h), logdet

  def synthesis(self, latents: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """g_s: latents in analysis order -> (image, log-determinant [B]), merging them
    coarsest first."""
    support, logdet = None, 0.0
    for k, y_k in enumerate(reversed(latents)):
      support, ld = self.merge_with_logdet(k, y_k, support)
      logdet = logdet + ld
    return support, logdet

