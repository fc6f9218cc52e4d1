"""`ModelConfig.compute_dtype`: bfloat16 networks outside the flow, the flow untouched."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import image, small_config
from msinn_jax.codec import Codec
from msinn_jax.config import ModelConfig
from msinn_jax.model import MSINN
from msinn_jax.weights import untrained_params


@pytest.fixture(scope="module")
def models():
  f32 = small_config()
  bf16 = small_config(compute_dtype="bfloat16")
  params = untrained_params(f32)  # The same parameters serve both.
  return f32, bf16, {"params": params}


def test_float32_configs_serialise_as_before_and_bfloat16_is_kept():
  assert "compute_dtype" not in ModelConfig().to_dict()  # Official kwargs, old model ids.
  cfg = ModelConfig(compute_dtype="bfloat16")
  assert ModelConfig.from_dict(cfg.to_dict()) == cfg
  assert cfg.to_json() != ModelConfig().to_json()
  with pytest.raises(ValueError, match="compute_dtype"):
    ModelConfig(compute_dtype="float16")


def test_bfloat16_leaves_the_flow_exactly_invertible(models):
  f32, bf16, variables = models
  x = image(0, 1, 64, 64)
  latents = {}
  for cfg in (f32, bf16):
    model = MSINN(cfg)
    # Jitted: run op by op, each of the flow's primitives would compile on its own.
    ys, logdet = jax.jit(functools.partial(model.apply, method=MSINN.analysis))(variables, x)
    back, logdet_inv = jax.jit(functools.partial(model.apply, method=MSINN.synthesis))(
        variables, ys)
    assert all(y.dtype == jnp.float32 for y in ys)
    assert float(jnp.max(jnp.abs(back - x))) < 1e-5
    assert float(jnp.max(jnp.abs(logdet + logdet_inv))) < 1e-2
    latents[cfg.compute_dtype] = ys
  # The flow is the same function in both: bfloat16 touches only the other networks.
  a, b = latents[f32.compute_dtype], latents[bf16.compute_dtype]
  assert all(np.array_equal(u, v) for u, v in zip(a, b))


def test_bfloat16_networks_compute_in_bfloat16_and_return_float32(models):
  f32, bf16, variables = models
  x, rates = image(1, 2, 64, 64), jnp.array([1.0, 2.5])
  # Jitted: one compile each is about half the time of applying the model op by op.
  apply32, apply16 = (jax.jit(MSINN(cfg).apply) for cfg in (f32, bf16))
  out32, out16 = apply32(variables, x, rates), apply16(variables, x, rates)
  assert out16["x_hat"].dtype == jnp.float32
  for lik in out16["likelihoods"]:
    assert lik.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(lik)))
  # Close to float32, but not equal: the context and post-filter really ran in bfloat16.
  diff = float(jnp.max(jnp.abs(out16["x_hat"] - out32["x_hat"])))
  assert 0 < diff < 0.05
  assert "bf16" in apply16.lower(variables, x, rates).as_text()
  assert "bf16" not in apply32.lower(variables, x, rates).as_text()


def test_bfloat16_codec_decodes_its_own_streams(models):
  _, bf16, variables = models
  img = np.asarray(image(2, 1, 32, 48)[0] * 255, np.uint8)
  codec = Codec(bf16, variables)
  enc = codec.compress(img, 1.5)
  dec = codec.decompress(enc.data)
  assert np.array_equal(dec.image, enc.reconstruction)
  # A float32 model with the same weights is another model: its id refuses the stream.
  with pytest.raises(Exception, match="model"):
    Codec(small_config(), variables).decompress(enc.data)
