"""The variable-rate training objective R + lambda_r D (Tu et al., TMM 2025; official train.py).

Each training sample b draws an integer rate index r_b uniformly from the anchors and is
coded with that anchor's gain vectors; its loss is

    L_b = lambda_{r_b} * 255^2 * MSE(x_hat_b, x_b) + bpp_b,   bpp_b = bits_b / (H W),

with the MSE over H, W and the three channels of the unclamped reconstruction in [0, 1].
The batch loss is the mean of L_b over the batch. This is exactly what the official
`RateDistortionLoss` computes for a list of lambdas: `sum_b lambda_b MSE_b / B` for the
distortion and the total bits over `B H W` pixels for the rate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Lambda of each anchor, lowest rate first (official `lmbda_list`, train.py and eval.py).
# anchor_num = 8 uses the first eight (lambda_max = 0.18), 12 all of them (1.8).
PAPER_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800, 0.320, 0.569,
                 1.012, 1.8)


def sample_rate_indexes(rng: jax.Array, batch: int, num_anchors: int) -> jax.Array:
  """Uniform integer anchor indexes for a batch (official `np.random.choice(anchor_num)`).

  Returns:
    [batch] int32 in [0, num_anchors).
  """
  return jax.random.randint(rng, (batch,), 0, num_anchors, dtype=jnp.int32)


def rate_distortion(x: jax.Array, x_hat: jax.Array, bits: jax.Array,
                    lmbda: jax.Array) -> dict[str, jax.Array]:
  """Per-sample rate-distortion terms.

  Args:
    x: [B, H, W, 3] float32 target in [0, 1].
    x_hat: [B, H, W, 3] reconstruction (not clamped).
    bits: [B] estimated code length in bits.
    lmbda: [B] lambda of each sample's rate.

  Returns:
    Dict of [B] float32: "loss" (L_b above), "bpp", "mse" (in [0, 1] units) and "psnr"
    (dB, 8-bit peak, from that MSE).
  """
  num_pixels = x.shape[1] * x.shape[2]
  mse = jnp.mean(jnp.square(x_hat - x), axis=(1, 2, 3))
  bpp = bits / num_pixels
  return {
      "loss": lmbda * 255.0**2 * mse + bpp,
      "bpp": bpp,
      "mse": mse,
      "psnr": -10.0 * jnp.log10(jnp.maximum(mse, 1e-10)),
  }


def sums_per_rate(values: dict[str, jax.Array], rate_index: jax.Array,
                  num_anchors: int) -> dict[str, jax.Array]:
  """Per-anchor sums of per-sample values, and how many samples each anchor had.

  Sums (not means) so that several steps, or shards, add up before dividing.

  Args:
    values: name -> [B] per-sample values.
    rate_index: [B] int anchor of each sample.
    num_anchors: number of anchors A.

  Returns:
    name -> [A] sums, plus "count" -> [A].
  """
  onehot = jax.nn.one_hot(rate_index, num_anchors, dtype=jnp.float32)  # [B, A]
  out = {name: v.astype(jnp.float32) @ onehot for name, v in values.items()}
  out["count"] = onehot.sum(axis=0)
  return out
