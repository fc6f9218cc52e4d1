"""One invertible unit (official `InvUnit`): ActNorm -> channel mixing -> coupling."""

from __future__ import annotations

import flax.linen as nn
import jax

from msinn_jax.flow.actnorm import ActNorm
from msinn_jax.flow.coupling import Coupling
from msinn_jax.flow.mixing import make_mixing


class InvUnit(nn.Module):
  """forward = coupling . mixing . actnorm; inverse applies the inverses in reverse."""

  hidden: int
  permutation: str = "invconv"
  coupling: str = "affine"
  use_act_norm: bool = True
  seed: int = 0  # Only for the "shuffle" permutation.

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    """Args: x [B, H, W, C]. Returns (y [B, H, W, C], log|det| [B])."""
    steps = []
    if self.use_act_norm:
      steps.append(ActNorm(name="actnorm"))
    steps.append(make_mixing(self.permutation, self.seed, name="permute"))
    steps.append(Coupling(self.hidden, self.coupling, name="coupling"))
    if inverse:
      steps = steps[::-1]
    logdet = 0.0
    for step in steps:
      x, ld = step(x, inverse)
      logdet = logdet + ld
    return x, logdet
