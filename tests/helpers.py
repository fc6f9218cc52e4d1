"""Shared test helpers: small configurations and non-trivial random weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from msinn_jax.config import ModelConfig
from msinn_jax.model import MSINN

# A configuration small enough for 2 CPU cores but with every path of the paper's. One
# unit per stage: the tests that are about composing units ask for more (`depths=`), and
# each unit adds its own programs to compile.
SMALL = ModelConfig(N=16, M=24, depths=(1, 1, 1, 1), context_width=16, anchor_num=4)


def small_config(**overrides) -> ModelConfig:
  return ModelConfig(**{**SMALL.to_dict(), **overrides})


def perturb(params, seed: int = 0, scale: float = 0.02):
  """Makes the weights do real work, as the parity fixtures' recipe does: the
  zero-initialised coupling outputs get small random values, and the gain tables vary
  from anchor to anchor (the official init makes couplings identities, gains ones)."""
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(params)
  out = {}
  for path, v in flat.items():
    name = "/".join(path)
    v = np.asarray(v)
    if "/conditioner/out/" in name:
      v = rng.normal(0, scale, v.shape)
    elif path[-1] in ("gain", "inv_gain", "scale_gain"):
      a = v.shape[0]
      base = np.linspace(-1.0, 1.0, a)[:, None]
      sign = -1 if path[-1] == "inv_gain" else 1
      v = np.exp(sign * base + 0.1 * rng.normal(size=v.shape))
    elif path[-1] == "initial_scale":
      v = 0.5 + rng.random(v.shape)
    out[path] = jnp.asarray(v, jnp.float32)
  return traverse_util.unflatten_dict(out)


def image(seed: int, b: int, h: int, w: int) -> jax.Array:
  """A smooth random image in [0, 1] (more like a photo than white noise)."""
  rng = np.random.default_rng(seed)
  low = rng.random((b, max(h // 8, 1), max(w // 8, 1), 3))
  x = np.asarray(jax.image.resize(low, (b, h, w, 3), "bilinear"))
  return jnp.asarray(np.clip(x + 0.05 * rng.normal(size=x.shape), 0, 1), jnp.float32)


def init_model(config: ModelConfig, x: jax.Array, seed: int = 0):
  """(model, variables) with ActNorm initialised on x and perturbed weights."""
  model = MSINN(config)
  rngs = {"params": jax.random.key(seed), "noise": jax.random.key(seed + 1)}
  variables = jax.jit(model.init)(rngs, x, 0)
  return model, {"params": perturb(variables["params"], seed)}


def break_decoder(codec, monkeypatch) -> None:
  """Makes `codec.decompress` flip one value of every image it decodes (a decoder that
  disagrees with its encoder), for this test only."""
  decompress = codec.decompress

  def flip_one_value(data):
    out = decompress(data)
    out.image = out.image.copy()
    out.image[0, 0, 0] ^= 1
    return out

  monkeypatch.setattr(codec, "decompress", flip_one_value)
