"""Channel mixing between couplings: invertible 1x1 convolutions and fixed permutations.

* `InvConv1x1` is the official `InvertibleConv1x1` with `LU_decomposed=False`: a plain
  matrix W (torch layout [out, in]), z = W x at every pixel, inverse by W^-1.
* `InvConv1x1LU` parameterises W = P L (U + diag(sign * exp(log_s))) (Glow); the inverse
  is two triangular solves and log|det| = H * W * sum(log_s). P and sign are fixed at
  initialisation; they are stored with the parameters but receive no gradient.
* `Permutation` is a fixed channel permutation ("shuffle", "reverse", "cross" in the
  official code); its log-determinant is zero.

Every matmul here runs at `Precision.HIGHEST`: TF32/bf16 channel mixing would break the
exactness of the inverse on accelerators.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import linalg as jsl

HIGHEST = jax.lax.Precision.HIGHEST


def _mix(x: jax.Array, w: jax.Array) -> jax.Array:
  """z[..., o] = sum_i w[o, i] x[..., i] (a 1x1 conv with a torch-layout kernel)."""
  return jnp.einsum("bhwi,oi->bhwo", x, w, precision=HIGHEST)


def _random_rotation(key: jax.Array, c: int) -> jax.Array:
  q, _ = jnp.linalg.qr(jax.random.normal(key, (c, c), jnp.float32))
  return q


class InvConv1x1(nn.Module):
  """Invertible 1x1 convolution with a plain weight matrix (the official form)."""

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    """Args: x [B, H, W, C]. Returns (z [B, H, W, C], log|det| [B])."""
    c = x.shape[-1]
    w = self.param("kernel", lambda key, _: _random_rotation(key, c), (c, c)).astype(x.dtype)
    logdet = x.shape[1] * x.shape[2] * jnp.linalg.slogdet(w)[1]
    if inverse:
      return _mix(x, jnp.linalg.inv(w)), jnp.full((x.shape[0],), -logdet)
    return _mix(x, w), jnp.full((x.shape[0],), logdet)


def lu_from_matrix(w: np.ndarray) -> dict[str, np.ndarray]:
  """LU parameters (p, lower, upper, log_s, sign_s) of a square matrix, W = P L U."""
  import scipy.linalg  # Only needed at init and conversion time.
  p, lower, upper = scipy.linalg.lu(np.asarray(w, np.float64))
  s = np.diag(upper)
  return {
      "p": p.astype(np.float32),
      "lower": np.tril(lower, -1).astype(np.float32),
      "upper": np.triu(upper, 1).astype(np.float32),
      "log_s": np.log(np.abs(s)).astype(np.float32),
      "sign_s": np.sign(s).astype(np.float32),
  }


class InvConv1x1LU(nn.Module):
  """Invertible 1x1 convolution parameterised by its LU decomposition."""

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    """Args: x [B, H, W, C]. Returns (z [B, H, W, C], log|det| [B])."""
    c = x.shape[-1]
    init = {}

    def make(name):
      def initializer(key, _):
        if not init:  # One random rotation, decomposed once, feeds all five parameters.
          p, lower, upper = jsl.lu(_random_rotation(key, c))
          s = jnp.diag(upper)
          init.update(p=p, lower=jnp.tril(lower, -1), upper=jnp.triu(upper, 1),
                      log_s=jnp.log(jnp.abs(s)), sign_s=jnp.sign(s))
        return init[name]
      return self.param(name, initializer, (c,) if name in ("log_s", "sign_s") else (c, c))

    p, lower, upper, log_s, sign_s = (make(n) for n in ("p", "lower", "upper", "log_s", "sign_s"))
    # P and the signs are constants of the parameterisation.
    p, sign_s = jax.lax.stop_gradient(p), jax.lax.stop_gradient(sign_s)
    dt = x.dtype
    p, lower, upper, log_s, sign_s = (a.astype(dt) for a in (p, lower, upper, log_s, sign_s))
    eye = jnp.eye(c, dtype=dt)
    lower = jnp.tril(lower, -1) + eye
    upper = jnp.triu(upper, 1) + jnp.diag(sign_s * jnp.exp(log_s))
    logdet = x.shape[1] * x.shape[2] * jnp.sum(log_s)
    if inverse:
      # W^-1 = U^-1 L^-1 P^T, from two triangular solves against P^T.
      l_inv_pt = jsl.solve_triangular(lower, p.T, lower=True, unit_diagonal=True)
      w_inv = jsl.solve_triangular(upper, l_inv_pt, lower=False)
      return _mix(x, w_inv), jnp.full((x.shape[0],), -logdet)
    w = jnp.matmul(p, jnp.matmul(lower, upper, precision=HIGHEST), precision=HIGHEST)
    return _mix(x, w), jnp.full((x.shape[0],), logdet)


def permutation_indices(kind: str, c: int, seed: int = 0) -> np.ndarray:
  """The fixed permutations of the official code, as index arrays (z = x[..., idx])."""
  if kind == "reverse":
    return np.arange(c)[::-1].copy()
  if kind == "cross":
    idx = np.empty(c, np.int64)
    idx[0::2], idx[1::2] = np.arange(c // 2), np.arange(c // 2, c)
    return idx
  if kind == "shuffle":
    return np.random.default_rng(seed).permutation(c)
  raise ValueError(f"unknown permutation {kind!r}; choose 'reverse', 'cross' or 'shuffle'")


class Permutation(nn.Module):
  """A fixed channel permutation (volume preserving)."""

  kind: str = "reverse"
  seed: int = 0

  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    idx = permutation_indices(self.kind, x.shape[-1], self.seed)
    if inverse:
      idx = np.argsort(idx)
    return x[..., idx], jnp.zeros((x.shape[0],), x.dtype)


def make_mixing(kind: str, seed: int = 0, name: str = "permute") -> nn.Module:
  """Builds the channel mixing named by `ModelConfig.flow_permutation`."""
  if kind == "invconv":
    return InvConv1x1(name=name)
  if kind == "invconv_lu":
    return InvConv1x1LU(name=name)
  return Permutation(kind=kind, seed=seed, name=name)
