"""The Gaussian conditional entropy model and the quantisers (CompressAI 1.2.6 semantics).

Every latent element is coded as an integer residual q = round((y - mu) * gain) under a
zero-mean Gaussian of scale sigma, discretised on unit bins:

    p(q) = Phi((0.5 - |q|) / sigma) - Phi((-0.5 - |q|) / sigma),

with sigma lower-bounded at 0.11 and p at 1e-9 (`GaussianConditional` defaults). In
training q is replaced by the residual plus uniform noise in [-0.5, 0.5) for the rate
term, and by a straight-through rounding for the reconstruction path.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

SCALE_BOUND = 0.11
LIKELIHOOD_BOUND = 1e-9
GAIN_BOUND = 0.01


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def lower_bound(x: jax.Array, bound: float) -> jax.Array:
  """max(x, bound) whose gradient still flows where it would push x up (CompressAI
  `LowerBound`): the gradient passes where x >= bound or the incoming gradient is < 0."""
  return jnp.maximum(x, bound)


def _lower_bound_fwd(x, bound):
  return jnp.maximum(x, bound), x


def _lower_bound_bwd(bound, x, g):
  return (jnp.where((x >= bound) | (g < 0), g, jnp.zeros_like(g)),)


lower_bound.defvjp(_lower_bound_fwd, _lower_bound_bwd)


@jax.custom_jvp
def ste_round(x: jax.Array) -> jax.Array:
  """Rounding with a straight-through (identity) gradient (official `quantize_ste`)."""
  return jnp.round(x)


@ste_round.defjvp
def _ste_round_jvp(primals, tangents):
  return jnp.round(primals[0]), tangents[0]


def standard_normal_cdf(x: jax.Array) -> jax.Array:
  return 0.5 * jax.scipy.special.erfc(-x * (2.0**-0.5))


def gaussian_likelihood(q: jax.Array, sigma: jax.Array) -> jax.Array:
  """Probability of the unit bin around q under N(0, sigma) (bounded below by 1e-9).

  Args:
    q: residuals (integers in evaluation, noisy reals in training), any shape.
    sigma: scales, broadcastable to q; lower-bounded at 0.11 here.
  """
  sigma = lower_bound(sigma, SCALE_BOUND)
  v = jnp.abs(q)
  upper = standard_normal_cdf((0.5 - v) / sigma)
  lower = standard_normal_cdf((-0.5 - v) / sigma)
  return lower_bound(upper - lower, LIKELIHOOD_BOUND)


def bits_of(likelihood: jax.Array) -> jax.Array:
  """Per-sample code length in bits, -sum log2 p over all but the batch axis."""
  return -jnp.sum(jnp.log2(likelihood), axis=tuple(range(1, likelihood.ndim)))
