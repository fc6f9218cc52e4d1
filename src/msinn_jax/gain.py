"""Extended gain units (paper Sec. III-C): one model, a continuous range of rates.

The model holds three tables of shape [anchor_num, C] (C = all latent channels in
decoding order): the gain g that scales the residual before rounding, the inverse gain
g' that scales it back, and the scale gain g_s that scales the predicted sigma:

    q = round((y - mu) * g),   y_hat = q * g' + mu,   sigma' = sigma * g_s.

A rate r in [0, anchor_num - 1] selects anchor r when it is an integer, and otherwise
interpolates geometrically between its neighbours i = floor(r) and i + 1
(official `get_gain_vectors`):  v(r) = v_i^(1 - t) * v_{i+1}^t,  t = r - i.
Each vector is then lower-bounded at 0.01.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from msinn_jax.entropy import GAIN_BOUND, lower_bound
from msinn_jax.errors import UserError


GAIN_TABLES = ("gain", "inv_gain", "scale_gain")  # g, g', g_s: parameter names.


def check_rate(rate: object, anchor_num: int) -> float:
  """`rate` as a float if it is a rate of the model: a number in [0, anchor_num - 1]
  (an anchor index, or a point between two anchors).

  Raises:
    UserError: not a number, or outside that range.
  """
  top = anchor_num - 1
  try:
    value = float(rate)
  except (TypeError, ValueError):
    raise UserError(f"rate must be a number, got {rate!r}") from None
  if not np.isfinite(value) or not 0 <= value <= top:
    raise UserError(f"rate {rate} is outside [0, {top}] (anchor_num={anchor_num})")
  return value


def interpolate_gains(table: jax.Array, rate: jax.Array) -> jax.Array:
  """Gain vectors for per-sample rates.

  Args:
    table: [A, C] anchor vectors.
    rate: [B] float rates in [0, A - 1] (integers select anchors exactly).

  Returns:
    [B, C] vectors (before the 0.01 lower bound).
  """
  num_anchors = table.shape[0]
  rate = jnp.clip(jnp.asarray(rate, jnp.float32), 0, num_anchors - 1)
  lo = jnp.clip(jnp.floor(rate).astype(jnp.int32), 0, max(num_anchors - 2, 0))
  hi = jnp.minimum(lo + 1, num_anchors - 1)
  t = (rate - lo)[:, None].astype(table.dtype)
  left, right = table[lo], table[hi]
  mixed = left ** (1 - t) * right ** t
  # Exact anchors: no pow round-off at integer rates.
  return jnp.where(t == 0, left, jnp.where(t == 1, right, mixed))


def lambda_spaced_tables(lambdas: Sequence[float], channels: int) -> dict[str, np.ndarray]:
  """Gain tables that start each anchor near its rate: g_a = sqrt(lambda_a / lambda_bar).

  The official initialisation (all ones) starts every anchor at the same rate, and the
  tables then move by about the learning rate per step: a short run ends with anchors
  that barely differ. At high rate a quantiser of step 1/g has D ~ 1/(12 g^2) and
  R ~ log2(g) + const, so R + lambda * D is smallest at g ~ sqrt(lambda); the tables start
  there, around the geometric mean lambda_bar of the anchors' lambdas (g' = 1/g,
  g_s = g). `train.gain_init = "lambda"` uses them.

  Returns:
    {"gain", "inv_gain", "scale_gain"}: float32 [len(lambdas), channels].
  """
  lam = np.asarray(lambdas, np.float64)
  g = np.sqrt(lam / np.exp(np.mean(np.log(lam))))
  g = np.repeat(g[:, None], channels, axis=1).astype(np.float32)
  return {"gain": g, "inv_gain": 1.0 / g, "scale_gain": g}


class GainUnits(nn.Module):
  """The gain, inverse-gain and scale-gain tables, all initialised to ones."""

  anchor_num: int
  channels: int

  def setup(self):
    shape = (self.anchor_num, self.channels)
    self.gain = self.param("gain", nn.initializers.ones, shape)
    self.inv_gain = self.param("inv_gain", nn.initializers.ones, shape)
    self.scale_gain = self.param("scale_gain", nn.initializers.ones, shape)

  def __call__(self, name: str, rate: jax.Array, offset: int, size: int) -> jax.Array:
    """Table `name` (one of `GAIN_TABLES`) at rates [B], channels [offset, offset + size):
    [B, 1, 1, size], lower-bounded at 0.01.

    One table per call, as each use needs one: interpolating all three every time put
    two unused tables into every traced program (2660 of the training step's 18224
    equations; XLA then dropped them).
    """
    if name not in GAIN_TABLES:
      raise ValueError(f"no gain table {name!r}; the tables are {GAIN_TABLES}")
    v = interpolate_gains(getattr(self, name)[:, offset:offset + size], rate)
    return lower_bound(v, GAIN_BOUND)[:, None, None, :]
