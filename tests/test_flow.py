"""The bijection: every invertible piece and the whole g_a round-trip, and their
log-determinants agree with each other and with jax.jacobian."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import image, perturb, small_config
from msinn_jax.config import ModelConfig
from msinn_jax.flow.actnorm import ActNorm
from msinn_jax.flow.coupling import Coupling
from msinn_jax.flow.mixing import InvConv1x1, InvConv1x1LU, Permutation
from msinn_jax.flow.multiscale import FlowStage, MultiScaleFlow
from msinn_jax.flow.squeeze import depth_to_space, space_to_depth
from msinn_jax.flow.unit import InvUnit

HIGHEST = jax.default_matmul_precision("highest")

# Every invertible piece, built for 8 channels: name -> module.
BIJECTORS = {
    "actnorm": lambda: ActNorm(),
    "invconv": lambda: InvConv1x1(),
    "invconv_lu": lambda: InvConv1x1LU(),
    "reverse": lambda: Permutation("reverse"),
    "cross": lambda: Permutation("cross"),
    "shuffle": lambda: Permutation("shuffle", seed=3),
    "affine": lambda: Coupling(16, "affine"),
    "additive": lambda: Coupling(16, "additive"),
    "unit": lambda: InvUnit(16),
    "unit_lu_additive": lambda: InvUnit(16, "invconv_lu", "additive"),
    "stage": lambda: FlowStage(3, 16, "invconv", "affine", True),
}


def _init(module, x, seed=0):
  params = module.init(jax.random.key(seed), x).get("params", {})
  return {"params": perturb(params, seed, scale=0.2)}


@pytest.fixture(params=sorted(BIJECTORS))
def bijector(request):
  module = BIJECTORS[request.param]()
  x = jnp.tile(image(1, 2, 8, 8), (1, 1, 1, 3))[..., :8] * 2 - 1  # [2, 8, 8, 8]
  return module, _init(module, x), x


def test_round_trip_and_logdet_signs(bijector):
  module, variables, x = bijector
  with HIGHEST:
    y, ld_fwd = jax.jit(module.apply)(variables, x)
    x_back, ld_inv = jax.jit(functools.partial(module.apply, inverse=True))(variables, y)
  assert y.shape == x.shape and ld_fwd.shape == (x.shape[0],)
  # float32 round trip of a well-conditioned map: a whole stage gives up to 2.2e-6 on an
  # AVX2 CPU (less with AVX-512, whose convolutions sum in another order).
  np.testing.assert_allclose(x_back, x, atol=5e-6)
  np.testing.assert_allclose(ld_inv, -ld_fwd, rtol=1e-6, atol=1e-5)


def test_logdet_matches_jacobian(bijector):
  module, variables, x = bijector
  x1 = x[:1, :4, :4, :]
  with jax.enable_x64(True), HIGHEST:
    x64 = x1.astype(jnp.float64)
    f = lambda v: module.apply(variables, v.reshape(x64.shape))[0].reshape(-1)
    jac = jax.jacfwd(f)(x64.reshape(-1))
    _, ld = module.apply(variables, x64)
    _, expected = np.linalg.slogdet(np.asarray(jac))
  np.testing.assert_allclose(float(ld[0]), expected, rtol=1e-9, atol=1e-8)


def test_squeeze_is_the_official_channel_order():
  x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
  y = space_to_depth(x)
  # Official Space2Depth: out channel (i * 2 + j) * C + c takes pixel (2h + i, 2w + j).
  for i in range(2):
    for j in range(2):
      for c in range(3):
        np.testing.assert_array_equal(y[:, :, :, (i * 2 + j) * 3 + c], x[:, i::2, j::2, c])
  np.testing.assert_array_equal(depth_to_space(y), x)


def _flow(config, x, seed=0):
  """The flow with the parity fixtures' recipe: ActNorm initialised on a uniform-noise
  batch, couplings perturbed away from the identity."""
  flow = MultiScaleFlow(config)
  init_batch = jax.random.uniform(jax.random.key(seed), (2, 64, 64, 3), x.dtype)
  params = jax.jit(functools.partial(flow.init, method=flow.analysis))(jax.random.key(seed),
                                                                      init_batch)
  return flow, {"params": perturb(params["params"], seed)}


def test_latent_shapes_of_the_paper_configuration():
  config = ModelConfig()
  assert config.latent_channels == (6, 12, 24, 48, 48)
  assert config.slice_channels == (48, 48, 24, 12, 6)
  assert [config.slice_scale(k) for k in range(5)] == [16, 16, 8, 4, 2]
  flow = MultiScaleFlow(config)
  x = jax.ShapeDtypeStruct((1, 64, 128, 3), jnp.float32)
  shapes = jax.eval_shape(
      lambda: flow.init_with_output(jax.random.key(0), jnp.zeros(x.shape), method=flow.analysis))
  ys = shapes[0][0]
  assert [t.shape for t in ys] == [(1, 32, 64, 6), (1, 16, 32, 12), (1, 8, 16, 24),
                                   (1, 4, 8, 48), (1, 4, 8, 48)]


def _round_trip(config, x):
  flow, variables = _flow(config, x)
  with HIGHEST:
    ys, ld_a = jax.jit(functools.partial(flow.apply, method=flow.analysis))(variables, x)
    x_back, ld_s = jax.jit(functools.partial(flow.apply, method=flow.synthesis))(variables, ys)
  return np.asarray(x_back, np.float64), np.asarray(ld_a), np.asarray(ld_s)


@pytest.mark.slow
def test_paper_flow_round_trip_float32_768x512():
  x = image(0, 1, 512, 768)
  x_back, ld_a, ld_s = _round_trip(ModelConfig(), x)
  err = np.abs(x_back - np.asarray(x)).max()
  assert err <= 1e-5, err  # The official code reaches about 2e-6.
  np.testing.assert_allclose(ld_s, -ld_a, rtol=1e-5)


def test_flow_round_trip_float64():
  config = small_config(N=32, M=48, depths=(2, 2, 2, 2))
  with jax.enable_x64(True):
    x = image(0, 2, 64, 96).astype(jnp.float64)
    x_back, ld_a, ld_s = _round_trip(config, x)
    err = np.abs(x_back - np.asarray(x)).max()
  assert err <= 1e-12, err
  np.testing.assert_allclose(ld_s, -ld_a, rtol=1e-12)


@pytest.mark.parametrize("permutation,coupling", [("invconv", "affine"), ("invconv_lu", "affine"),
                                                  ("cross", "additive"), ("reverse", "affine")])
def test_flow_variants_round_trip_float32(permutation, coupling):
  config = small_config(flow_permutation=permutation, flow_coupling=coupling,
                        use_act_norm=permutation != "reverse")
  x = image(2, 1, 64, 64)
  x_back, ld_a, ld_s = _round_trip(config, x)
  assert np.abs(x_back - np.asarray(x)).max() <= 1e-5
  np.testing.assert_allclose(ld_s, -ld_a, rtol=1e-5, atol=1e-3)


def test_whole_flow_logdet_matches_jacobian():
  config = small_config(N=8, M=8, depths=(1, 1, 1, 1))
  with jax.enable_x64(True), HIGHEST:
    x = image(3, 1, 16, 16).astype(jnp.float64)
    flow, variables = _flow(config, x)
    analysis = functools.partial(flow.apply, variables, method=flow.analysis)
    f = lambda v: jnp.concatenate([t.reshape(-1) for t in analysis(v.reshape(x.shape))[0]])
    # Jitted as one program: run op by op, each primitive would compile on its own.
    jac, ld = jax.jit(lambda v: (jax.jacfwd(f)(v), analysis(v.reshape(x.shape))[1]))(
        x.reshape(-1))
  np.testing.assert_allclose(float(ld[0]), np.linalg.slogdet(np.asarray(jac))[1], rtol=1e-9)


def test_actnorm_initialises_from_the_first_batch():
  x = image(4, 4, 8, 8) * 3 + 2
  params = ActNorm().init(jax.random.key(0), x)["params"]
  y, _ = ActNorm().apply({"params": params}, x)
  np.testing.assert_allclose(np.mean(y, axis=(0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(np.std(y, axis=(0, 1, 2)), 1, atol=1e-3)
