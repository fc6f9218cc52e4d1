"""Distortion metrics of the evaluation protocol: PSNR and MS-SSIM on 8-bit RGB.

The MSINN paper (Tu et al., IEEE TMM 2025, Sec. V-A) reports PSNR and MS-SSIM on RGB images
in [0, 255], like CompressAI's `eval_model`, which computes MS-SSIM with `pytorch_msssim`.
`ms_ssim` here reproduces `pytorch_msssim.ms_ssim` (v1.0.0, default arguments):

* an 11-tap Gaussian window with sigma 1.5, applied separably as a 'valid' convolution
  (no padding), first along H then along W;
* K = (0.01, 0.03), so C1 = (0.01 * max_val)**2 and C2 = (0.03 * max_val)**2;
* five scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), finest first;
  between scales a 2x2 average pool with stride 2 that, along a dimension of odd size,
  pads one zero on each side and counts the padding in the mean (torch's
  `avg_pool2d(padding=s % 2)` with `count_include_pad=True`);
* the contrast-structure terms of the four finest scales and the full SSIM of the
  coarsest scale are clamped at 0 (relu), raised to their weights and multiplied per
  image and channel; the result is the mean over channels, one value per image.

Small images. `pytorch_msssim` asserts that the short side is larger than
(win_size - 1) * 2**4 = 160 pixels. Here smaller images are accepted with fewer scales:
the number of scales is the largest L <= 5 with short side > (win_size - 1) * 2**(L - 1)
(so the coarsest scale is still at least one window wide), and the L finest weights are
divided by their sum. With L = 1 the value is the plain SSIM (clamped at 0). An image whose short side is below the window size (< 11 px) is
measured at one scale with the window shrunk to the largest odd size that fits, and the
same sigma. Sizes >= 161 px follow the reference exactly.

Accuracy. Variances are computed from per-image, per-channel mean-centred values, which
is mathematically identical to the reference's E[x^2] - E[x]^2 but avoids most of the
float32 cancellation at pixel values near 255. The window taps are the exactly normalised
Gaussian; pytorch_msssim normalises them in float32, so its taps sum to 1 - 3e-8, which at
8-bit pixel values moves its local variances by ~1e-3 and its MS-SSIM by up to ~1e-6. That
is the size of the remaining difference from the reference (see `tests/test_metrics.py`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WIN_SIZE = 11
_WIN_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03


def psnr(a: jnp.ndarray, b: jnp.ndarray, max_val: float = 255.) -> jnp.ndarray:
  """Peak signal-to-noise ratio per image.

  Args:
    a: [B, H, W, C] images with values in [0, max_val] (any real or integer dtype).
    b: [B, H, W, C] images, same shape as `a`.
    max_val: peak value of the pixel range.

  Returns:
    [B] float32 PSNR in dB, 10 log10(max_val**2 / MSE) with the MSE over H, W and C;
    +inf for identical images.
  """
  a, b = _check_pair(a, b)
  mse = jnp.mean(jnp.square(a - b), axis=(1, 2, 3))
  return 10. * jnp.log10(max_val**2 / mse)


def ms_ssim(a: jnp.ndarray, b: jnp.ndarray, max_val: float = 255.) -> jnp.ndarray:
  """Multi-scale SSIM per image, matching `pytorch_msssim.ms_ssim` (see module docstring).

  Compiled with `jax.jit` once per input shape and `max_val`; can be called inside `jit`.

  Args:
    a: [B, H, W, C] images with values in [0, max_val] (any real or integer dtype).
    b: [B, H, W, C] images, same shape as `a`.
    max_val: peak value of the pixel range (`data_range` in pytorch_msssim).

  Returns:
    [B] float32 MS-SSIM in [0, 1], the mean over channels of each image's value.
  """
  a, b = _check_pair(a, b)
  return _ms_ssim(a, b, float(max_val))


@functools.partial(jax.jit, static_argnames="max_val")
def _ms_ssim(a: jnp.ndarray, b: jnp.ndarray, max_val: float) -> jnp.ndarray:
  """`ms_ssim` on validated float inputs; compiled once per shape (eager dispatch is slow)."""
  short_side = min(a.shape[1], a.shape[2])
  num_scales, win_size = _num_scales_and_window(short_side)
  weights = _WEIGHTS
  if num_scales < len(_WEIGHTS):
    weights = tuple(w / sum(_WEIGHTS[:num_scales]) for w in _WEIGHTS[:num_scales])
  window = _gaussian_window(win_size, _WIN_SIGMA)
  c1 = (_K1 * max_val)**2
  c2 = (_K2 * max_val)**2

  value = 1.
  for scale in range(num_scales):
    ssim, cs = _ssim_and_cs(a, b, window, c1, c2)
    term = ssim if scale == num_scales - 1 else cs
    value = value * jnp.maximum(term, 0.)**weights[scale]
    if scale < num_scales - 1:
      a, b = _avg_pool_2x2(a), _avg_pool_2x2(b)
  return jnp.mean(value, axis=-1)


def ms_ssim_db(v: jnp.ndarray | float) -> jnp.ndarray:
  """MS-SSIM in decibels, -10 log10(1 - v); +inf for v = 1.

  Args:
    v: MS-SSIM values in [0, 1], any shape.

  Returns:
    Same shape, float.
  """
  return -10. * jnp.log10(1. - jnp.asarray(v, jnp.result_type(float)))


def _check_pair(a, b) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Validates two NHWC batches of equal shape and casts them to a float dtype."""
  a, b = jnp.asarray(a), jnp.asarray(b)
  if a.ndim != 4 or a.shape != b.shape:
    raise ValueError(f"Expected two [B, H, W, C] arrays of equal shape, got {a.shape} and {b.shape}.")
  dtype = jnp.promote_types(jnp.promote_types(a.dtype, b.dtype), jnp.float32)
  return a.astype(dtype), b.astype(dtype)


def _num_scales_and_window(short_side: int) -> tuple[int, int]:
  """Number of scales and window size used for an image with this short side."""
  if short_side < _WIN_SIZE:
    return 1, short_side if short_side % 2 else short_side - 1
  num_scales = 1
  while (num_scales < len(_WEIGHTS) and
         short_side > (_WIN_SIZE - 1) * 2**num_scales):
    num_scales += 1
  return num_scales, _WIN_SIZE


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
  """Normalised 1-D Gaussian taps [size], float64."""
  coords = np.arange(size, dtype=np.float64) - size // 2
  g = np.exp(-coords**2 / (2. * sigma**2))
  return g / g.sum()


def _blur(x: jnp.ndarray, window: np.ndarray) -> jnp.ndarray:
  """Separable 'valid' Gaussian filter of each channel of [B, H, W, C], along H then W.

  Written as a sum of shifted slices: XLA's depthwise convolution is ~30x slower on CPU.
  """
  k = len(window)
  for axis in (1, 2):
    n = x.shape[axis] - k + 1
    x = sum(float(t) * lax.slice_in_dim(x, i, i + n, axis=axis) for i, t in enumerate(window))
  return x


def _ssim_and_cs(a, b, window, c1, c2) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Mean SSIM and mean contrast-structure term, each [B, C], at one scale."""
  # Shift by the per-channel mean: variances are shift-invariant, and the shift keeps the
  # float32 differences E[x^2] - E[x]^2 away from catastrophic cancellation.
  shift_a = jnp.mean(a, axis=(1, 2), keepdims=True)
  shift_b = jnp.mean(b, axis=(1, 2), keepdims=True)
  a0, b0 = a - shift_a, b - shift_b
  moments = _blur(jnp.concatenate([a0, b0, a0 * a0, b0 * b0, a0 * b0], axis=-1), window)
  mu_a0, mu_b0, e_aa, e_bb, e_ab = jnp.split(moments, 5, axis=-1)
  var_a = e_aa - mu_a0 * mu_a0
  var_b = e_bb - mu_b0 * mu_b0
  cov = e_ab - mu_a0 * mu_b0
  mu_a, mu_b = mu_a0 + shift_a, mu_b0 + shift_b

  cs_map = (2. * cov + c2) / (var_a + var_b + c2)
  luminance = (2. * mu_a * mu_b + c1) / (mu_a * mu_a + mu_b * mu_b + c1)
  return jnp.mean(luminance * cs_map, axis=(1, 2)), jnp.mean(cs_map, axis=(1, 2))


def _avg_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 mean pool, stride 2; an odd dimension is zero-padded by 1 on both sides first.

  The zero padding counts in the mean, as in torch's `avg_pool2d(x, 2, padding=s % 2)`.
  """
  _, h, w, _ = x.shape
  x = jnp.pad(x, ((0, 0), (h % 2, h % 2), (w % 2, w % 2), (0, 0)))
  h_out, w_out = x.shape[1] // 2, x.shape[2] // 2
  x = x[:, :2 * h_out, :2 * w_out]
  x = x.reshape(x.shape[0], h_out, 2, w_out, 2, x.shape[3])
  return jnp.mean(x, axis=(2, 4))
