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
    steps = unit_pieces(self)
    if inverse:
      steps = steps[::-1]
    logdet = 0.0
    for step in steps:
      x, ld = step(x, inverse)
      logdet = logdet + ld
    return x, logdet


def unit_pieces(unit: InvUnit) -> list[nn.Module]:
  """A unit's invertible pieces in forward order, named as their parameters.

  A plain function, not a method: inside `InvUnit.__call__` the pieces become its
  submodules; called on an unbound unit (the invertibility report) they are standalone.
  """
  steps = [ActNorm(name="actnorm")] if unit.use_act_norm else []
  steps.append(make_mixing(unit.permutation, unit.seed, name="permute"))
  steps.append(Coupling(unit.hidden, unit.coupling, name="coupling"))
  return steps
