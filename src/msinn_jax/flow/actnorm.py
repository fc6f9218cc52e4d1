"""ActNorm (Kingma & Dhariwal 2018), as in the official `ActNorm2d`.

    forward:  y = (x + b) * exp(logs)          log|det| = H * W * sum(logs)
    inverse:  x = y * exp(-logs) - b

Data-dependent initialisation happens when the parameters are created, i.e. during
`Module.init` on the first batch: b = -mean(x), logs = log(1 / (std(x) + 1e-6)), per
channel over batch and space. There is no "inited" flag: once created, the parameters
are ordinary parameters.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class ActNorm(nn.Module):
  """Per-channel affine normalisation with data-dependent initialisation."""

  scale: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    """Applies the map (or its inverse).

    Args:
      x: [B, H, W, C].
      inverse: apply the inverse map.

    Returns:
      The output [B, H, W, C] and the log-determinant of the applied map, [B].
    """
    c = x.shape[-1]
    # During init in the forward direction the first batch sets the parameters.
    data_init = not inverse
    stats = jax.lax.stop_gradient(x.astype(jnp.float32))

    def init_bias(_, shape):
      if not data_init:
        return jnp.zeros(shape, jnp.float32)
      return -jnp.mean(stats, axis=(0, 1, 2))

    def init_logs(_, shape):
      if not data_init:
        return jnp.zeros(shape, jnp.float32)
      centred = stats - jnp.mean(stats, axis=(0, 1, 2))
      std = jnp.sqrt(jnp.mean(centred**2, axis=(0, 1, 2)))
      return jnp.log(self.scale / (std + 1e-6))

    bias = self.param("bias", init_bias, (c,)).astype(x.dtype)
    logs = self.param("logs", init_logs, (c,)).astype(x.dtype)
    num_pixels = x.shape[1] * x.shape[2]
    logdet = jnp.full((x.shape[0],), num_pixels * jnp.sum(logs), x.dtype)
    if inverse:
      return x * jnp.exp(-logs) - bias, -logdet
    return (x + bias) * jnp.exp(logs), logdet
