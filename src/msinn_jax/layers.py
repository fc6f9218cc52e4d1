"""Small building blocks shared by the flow, the context model and the post-filter.

All convolutions are NHWC with PyTorch's "same" padding for odd kernels (k // 2 on each
side), so kernels converted from the official OIHW weights line up exactly.

A module's `dtype` is the dtype its convolutions compute in (None: their inputs'); the
networks outside the flow (`ConvStack` here, the spatial context, the post-filter) hand
back their result in their input's dtype. `precision` is the convolutions'
`jax.lax.Precision` (None: JAX's default).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax


# PyTorch's default conv/linear weight init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), so that
# training starts where the official code starts.
torch_default_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def conv(features: int, kernel_size: int = 3, name: str | None = None, **kwargs) -> nn.Conv:
  """A stride-1 conv with symmetric k // 2 padding (the official `conv(...)` helper)."""
  pad = kernel_size // 2
  kwargs.setdefault("kernel_init", torch_default_init)
  return nn.Conv(features, (kernel_size, kernel_size), padding=((pad, pad), (pad, pad)),
                 name=name, **kwargs)


def gelu(x: jax.Array) -> jax.Array:
  """PyTorch's default `nn.GELU()`: the exact erf form."""
  return jax.nn.gelu(x, approximate=False)


def leaky_relu(x: jax.Array) -> jax.Array:
  """`nn.LeakyReLU()` with the default slope 0.01."""
  return jax.nn.leaky_relu(x, 0.01)


class ResidualBlock(nn.Module):
  """CompressAI's `ResidualBlock(in_ch, out_ch)`: two 3x3 convs with leaky ReLUs after
  each, plus the input (through a 1x1 conv when the widths differ)."""

  features: int
  precision: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out = leaky_relu(conv(self.features, 3, name="conv1", precision=self.precision)(x))
    out = leaky_relu(conv(self.features, 3, name="conv2", precision=self.precision)(out))
    identity = (x if x.shape[-1] == self.features
                else conv(self.features, 1, name="skip", precision=self.precision)(x))
    return out + identity


class ConvStack(nn.Module):
  """Convs with GELU between them (not after the last): the official `cc_transforms`,
  `lrp_transforms` and `entropy_parameters` stacks.

  Layer i is named `conv{2*i}`, the index of the conv in the official `nn.Sequential`.
  """

  features: tuple[int, ...]
  kernel_size: int = 3
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x
    for i, f in enumerate(self.features):
      h = conv(f, self.kernel_size, name=f"conv{2 * i}", dtype=self.dtype)(h)
      if i < len(self.features) - 1:
        h = gelu(h)
    return h.astype(x.dtype)
