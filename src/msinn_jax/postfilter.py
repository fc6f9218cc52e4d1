"""The U-Net post-filter (official `models/post_process.py`, `UNetPost`).

x_hat = x_tilde + 0.3 * conv2(UNet(conv1(x_tilde))): a small two-level U-Net with
squeeze-excitation residual blocks refines the output of g_s. It is outside the bijection,
so it does not affect invertibility of the transform, only the reconstruction.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from msinn_jax.layers import conv, leaky_relu, torch_default_init


def pixel_shuffle(x: jax.Array, r: int = 2) -> jax.Array:
  """PyTorch `nn.PixelShuffle` order (channel c * r * r + i * r + j) for NHWC."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, c // (r * r), r, r)
  x = jnp.transpose(x, (0, 1, 4, 2, 5, 3))
  return x.reshape(b, h * r, w * r, c // (r * r))


def max_pool2(x: jax.Array) -> jax.Array:
  """`nn.MaxPool2d(2, 2)` (floor on odd sizes)."""
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")


class SqueezeExcite(nn.Module):
  """Official `SELayer(channel, reduction=16)` (bias-free linears)."""

  reduction: int = 16
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2))
    s = jax.nn.relu(nn.Dense(c // self.reduction, use_bias=False, kernel_init=torch_default_init,
                             dtype=self.dtype, name="fc0")(s))
    s = jax.nn.sigmoid(nn.Dense(c, use_bias=False, kernel_init=torch_default_init,
                                dtype=self.dtype, name="fc2")(s))
    return x * s[:, None, None, :]


class ConvBlockResidual(nn.Module):
  """conv3x3 -> LeakyReLU -> conv3x3 -> SE, plus a 1x1 projection of the input."""

  features: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = leaky_relu(conv(self.features, 3, name="conv0", dtype=self.dtype)(x))
    h = SqueezeExcite(dtype=self.dtype, name="se")(
        conv(self.features, 3, name="conv2", dtype=self.dtype)(h))
    return conv(self.features, 1, name="up_dim", dtype=self.dtype)(x) + h


class ReluResBlock(nn.Module):
  """Official `ResBlock(channel, slope=0)`: x + conv2(relu(conv1(relu(x))))."""

  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    h = conv(c, 3, name="conv1", dtype=self.dtype)(jax.nn.relu(x))
    h = conv(c, 3, name="conv2", dtype=self.dtype)(jax.nn.relu(h))
    return x + h


class UNet(nn.Module):
  out_features: int = 16
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dt = self.dtype
    x1 = ConvBlockResidual(32, dt, name="conv1")(x)
    x2 = ConvBlockResidual(64, dt, name="conv2")(max_pool2(x1))
    x3 = ConvBlockResidual(128, dt, name="conv3")(max_pool2(x2))
    for i in range(4):
      x3 = ReluResBlock(dt, name=f"context_refine{i}")(x3)
    d3 = pixel_shuffle(conv(64 * 4, 1, name="up3", dtype=dt)(x3))
    d3 = ConvBlockResidual(64, dt, name="up_conv3")(jnp.concatenate([x2, d3], -1))
    d2 = pixel_shuffle(conv(32 * 4, 1, name="up2", dtype=dt)(d3))
    return ConvBlockResidual(self.out_features, dt, name="up_conv2")(
        jnp.concatenate([x1, d2], -1))


class UNetPost(nn.Module):
  """x + 0.3 * conv2(UNet(conv1(x))) on [B, H, W, 3], H and W multiples of 4."""

  scale: float = 0.3
  dtype: Any = None  # Of the convolutions; the result is in x's dtype.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = conv(16, 3, name="conv1", dtype=self.dtype)(x)
    h = UNet(16, self.dtype, name="unet")(h)
    h = conv(x.shape[-1], 3, name="conv2", dtype=self.dtype)(h)
    return h.astype(x.dtype) * self.scale + x
