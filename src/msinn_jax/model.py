"""MSINN: the multi-scale invertible transform with its spatial-channel context model.

Paper symbols -> code names (Tu et al., TMM 2025; official `models/msinn.py`):

    x                 input image, NHWC in [0, 1]
    g_a / g_s         `MultiScaleFlow.analysis` / `.synthesis`          (`MSINN.analysis`)
    y_1..y_5          latents, `analysis` order finest first; decoding order k = 0..4
                      is coarsest first (official `y_slices = y[::-1]`)
    g_ch (channel ctx) `cc_transforms_{k-1}` on the hidden state rebuilt by the inverse
                      flow (`MultiScaleFlow.merge`); for k = 0 the learned `initial_scale`
    g_sp (spatial ctx) `sc_transforms_{k}` (checkerboard masked convs)
    g_ep              `entropy_parameters_{k}`: [cc, sc] -> (sigma, mu)
    gain units        `GainUnits`: g, g' (inverse gain), g_s (scale gain), rate r
    LRP               `lrp_transforms_{k}`: y_hat += 0.5 tanh(.) * g'
    post-filter       `UNetPost`
    R                 `bits` (sum of -log2 likelihoods), D on `x_hat`

Data flow of one slice k (decoding order):

    support_{k-1} --cc_transforms--> cc ----------------+
                                                        v
    anchors:      [cc, 0] --entropy_parameters--> (sigma, mu) -> q = round((y - mu) g)
                                                                  y_hat = q g' + mu
    non-anchors:  [cc, sc_transforms(y_hat at anchors)] --> (sigma, mu) -> same
    y_hat --LRP--> y_hat --[y_hat, support] -> inverse stage -> unsqueeze--> support_k

`__call__` runs this schedule in one traced pass (training with noise, or evaluation with
rounding); the codec runs the very same schedule with separately jitted pieces.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from msinn_jax import schedule
from msinn_jax.config import ModelConfig
from msinn_jax.context.checkerboard import ALL, ANCHOR, SpatialContext, phase_mask
from msinn_jax.entropy import bits_of, gaussian_likelihood, ste_round
from msinn_jax.flow.multiscale import MultiScaleFlow
from msinn_jax.gain import GainUnits
from msinn_jax.layers import ConvStack
from msinn_jax.postfilter import UNetPost


def as_rate(rate: Any, batch: int) -> jax.Array:
  """A rate argument (int, float, list of per-sample values, or array) as float32 [B].

  Rates outside [0, anchor_num - 1] are clamped to it by the gain units (they may be
  traced, so they cannot be checked here); the codec and the tools reject them.
  """
  r = jnp.asarray(rate, jnp.float32)
  if r.ndim == 0:
    return jnp.full((batch,), r)
  if r.shape != (batch,):
    raise ValueError(f"rate has shape {r.shape}; expected a scalar or ({batch},)")
  return r


class MSINN(nn.Module):
  """The MSINN model. See the module docstring for the symbols.

  Main entry points (through `apply(..., method=...)`):
    `__call__(x, rate, train)`: the rate-distortion forward pass.
    `analysis(x)` / `synthesis(latents)`: g_a / g_s with log-determinants.
    `slice_prior`, `phase_params`, `finish_slice`, `residual`, `dequantize`,
    `postfilter`: the per-slice pieces the codec jits separately.
  """

  config: ModelConfig

  def setup(self):
    cfg = self.config
    c, w, dt = cfg.slice_channels, cfg.context_width, cfg.network_dtype
    self.flow = MultiScaleFlow(cfg, name="flow")
    self.initial_scale = self.param("initial_scale", nn.initializers.ones, (c[0],))
    self.cc_transforms = [
        ConvStack((w, w, w, w, 2 * c[k]), 3, dt, name=f"cc_transforms_{k - 1}")
        for k in range(1, cfg.num_slices)
    ]
    self.sc_transforms = [
        SpatialContext(2 * c[k], w, cfg.sc_type, cfg.sc_kernel_size, dt,
                       name=f"sc_transforms_{k}")
        for k in range(cfg.num_slices)
    ]
    self.entropy_parameters = [
        ConvStack((ck * 10 // 3, ck * 8 // 3, ck * 6 // 3), 1, dt,
                  name=f"entropy_parameters_{k}")
        for k, ck in enumerate(c)
    ]
    if cfg.lrp:
      self.lrp_transforms = [
          ConvStack((w, w, w, w, ck), 3, dt, name=f"lrp_transforms_{k}")
          for k, ck in enumerate(c)
      ]
    self.gains = GainUnits(cfg.anchor_num, cfg.total_latent_channels, name="gains")
    if cfg.post_process:
      self.post_net = UNetPost(dtype=dt, name="post_net")

  # --- The transform -----------------------------------------------------------------

  def analysis(self, x: jax.Array) -> tuple[list[jax.Array], jax.Array]:
    """g_a: [B, H, W, 3] -> (latents in analysis order, log|det| [B])."""
    return self.flow.analysis(x)

  def synthesis(self, latents: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """g_s (no post-filter): latents in analysis order -> ([B, H, W, 3], log|det| [B])."""
    return self.flow.synthesis(latents)

  def postfilter(self, x: jax.Array) -> jax.Array:
    return self.post_net(x) if self.config.post_process else x

  # --- The per-slice pieces of the schedule --------------------------------------------

  def gain_vector(self, name: str, k: int, rate: jax.Array) -> jax.Array:
    """g ("gain"), g' ("inv_gain") or g_s ("scale_gain") of slice k for rates [B]:
    [B, 1, 1, c_k]."""
    cfg = self.config
    return self.gains(name, rate, cfg.slice_offsets[k], cfg.slice_channels[k])

  def slice_prior(self, k: int, support: jax.Array | None,
                  shape: tuple[int, ...]) -> jax.Array:
    """Channel context of slice k: [B, h, w, 2 c_k] holding (sigma, mu) in that order.

    Args:
      k: slice index in decoding order.
      support: hidden state rebuilt from slices < k (None for k = 0).
      shape: (B, h, w, c_k) of the slice.
    """
    if k == 0:
      b, h, w, c = shape
      sigma = jnp.broadcast_to(self.initial_scale, (b, h, w, c))
      return jnp.concatenate([sigma, jnp.zeros_like(sigma)], axis=-1)
    return self.cc_transforms[k - 1](support)

  def phase_params(self, k: int, phase: str, cc: jax.Array, y_hat: jax.Array | None,
                   rate: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mu, sigma * g_s) for one phase of slice k, each [B, h, w, c_k].

    Args:
      k: slice index.
      phase: "anchor", "non_anchor" or "all" (no spatial context).
      cc: `slice_prior` output.
      y_hat: for "non_anchor", the slice decoded so far (zero at non-anchors).
      rate: [B].
    """
    if phase == ALL:
      sigma, mu = jnp.split(cc, 2, axis=-1)
    else:
      b, h, w, _ = cc.shape
      if phase == ANCHOR:
        sc = jnp.zeros_like(cc)
      else:
        sc = self.sc_transforms[k](y_hat)
        sc = jnp.where(phase_mask(k, ANCHOR, h, w), 0, sc)
      sigma, mu = jnp.split(self.entropy_parameters[k](jnp.concatenate([cc, sc], -1)), 2, -1)
    return mu, sigma * self.gain_vector("scale_gain", k, rate)

  def residual(self, k: int, y: jax.Array, mu: jax.Array, rate: jax.Array) -> jax.Array:
    """(y - mu) * g: the value that is rounded to the coded symbol."""
    return (y - mu) * self.gain_vector("gain", k, rate)

  def dequantize(self, k: int, q: jax.Array, mu: jax.Array, rate: jax.Array) -> jax.Array:
    """y_hat = q * g' + mu."""
    return q.astype(mu.dtype) * self.gain_vector("inv_gain", k, rate) + mu

  def finish_slice(self, k: int, y_hat: jax.Array, support: jax.Array | None,
                   rate: jax.Array) -> tuple[jax.Array, jax.Array]:
    """LRP on the decoded slice, then the progressive inverse flow.

    Returns:
      (y_hat after LRP [B, h, w, c_k], the new support).
    """
    if self.config.lrp:
      lrp_in = y_hat if k == 0 else jnp.concatenate([y_hat, support], axis=-1)
      inv_gain = self.gain_vector("inv_gain", k, rate)
      y_hat = y_hat + 0.5 * jnp.tanh(self.lrp_transforms[k](lrp_in)) * inv_gain
    return y_hat, self.flow.merge(k, y_hat, support)

  # --- The rate-distortion forward pass ------------------------------------------------

  def __call__(self, x: jax.Array, rate: Any, train: bool = False) -> dict[str, Any]:
    """Rate-distortion forward pass.

    Args:
      x: [B, H, W, 3] image in [0, 1], H and W multiples of 2**num_stages.
      rate: scalar or [B] rates in [0, anchor_num - 1] (integers = anchors).
      train: additive uniform noise for the rate term and straight-through rounding
        for the reconstruction (needs the "noise" RNG); otherwise rounding.

    Returns:
      A dict: "x_hat" [B, H, W, 3] (not clamped), "y" (latents, analysis order),
      "y_hat" (decoded latents after LRP, decoding order), "likelihoods" (decoding
      order, same shapes), "bits" [B], "logdet" [B] of g_a.
    """
    cfg = self.config
    rate = as_rate(rate, x.shape[0])
    y, logdet = self.analysis(x)
    y_slices = y[::-1]
    likelihoods = [None] * cfg.num_slices

    def code(k, phase, mask, mu, sigma):
      res = self.residual(k, y_slices[k], mu, rate)
      if train:
        noise = jax.random.uniform(self.make_rng("noise"), res.shape, res.dtype, -0.5, 0.5)
        lik = gaussian_likelihood(res + noise, sigma)
        q = ste_round(res)
      else:
        q = jnp.round(res)
        lik = gaussian_likelihood(q, sigma)
      prev = likelihoods[k]
      likelihoods[k] = lik if prev is None else jnp.where(mask, lik, prev)
      return self.dequantize(k, q, mu, rate)

    shapes = [t.shape for t in y_slices]
    y_hat, x_tilde = schedule.run(cfg, _ModuleOps(self, rate), shapes, code)
    bits = sum(bits_of(lik) for lik in likelihoods)
    return {
        "x_hat": self.postfilter(x_tilde),
        "y": y,
        "y_hat": y_hat,
        "likelihoods": likelihoods,
        "bits": bits,
        "logdet": logdet,
    }


class _ModuleOps:
  """`schedule.SliceOps` over the module's own methods (inside a traced forward)."""

  def __init__(self, model: MSINN, rate: jax.Array):
    self.model, self.rate = model, rate

  def prior(self, k, support, shape):
    return self.model.slice_prior(k, support, shape)

  def params(self, k, phase, cc, y_hat):
    return self.model.phase_params(k, phase, cc, y_hat, self.rate)

  def finish(self, k, y_hat, support):
    return self.model.finish_slice(k, y_hat, support, self.rate)
