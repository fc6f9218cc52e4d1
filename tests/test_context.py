"""Properties of the context model, the gain units and the quantisers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import image, init_model, small_config
from msinn_jax.context.checkerboard import (ANCHOR, NON_ANCHOR, MaskedConv, SpatialContext,
                                            anchor_parity, kernel_mask, phase_mask)
from msinn_jax.entropy import gaussian_likelihood, lower_bound, ste_round
from msinn_jax.gain import GAIN_TABLES, GainUnits, interpolate_gains
from msinn_jax.model import MSINN


def _perturbed_output_change(module, x, pos, out_pos):
  variables = module.init(jax.random.key(0), x)
  y0 = module.apply(variables, x)
  x1 = x.at[(0, *pos)].add(10.0)
  y1 = module.apply(variables, x1)
  return float(jnp.abs(y1 - y0)[(0, *out_pos)].max())


def test_kernel_masks():
  np.testing.assert_array_equal(kernel_mask(3, "A")[..., 0, 0], [[0, 1, 0], [1, 0, 1], [0, 1, 0]])
  np.testing.assert_array_equal(kernel_mask(3, "B")[..., 0, 0], [[1, 0, 1], [0, 1, 0], [1, 0, 1]])


@pytest.mark.parametrize("mask_type,hidden,visible", [
    ("A", [(4, 4), (3, 3), (5, 5), (6, 4)], [(3, 4), (4, 5)]),
    ("B", [(3, 4), (4, 5), (4, 6)], [(4, 4), (3, 3), (5, 5)]),
])
def test_masked_conv_cannot_see_masked_positions(mask_type, hidden, visible):
  conv = MaskedConv(4, 3, mask_type)
  x = jax.random.normal(jax.random.key(1), (1, 9, 9, 3))
  for pos in hidden:  # Perturbing what the mask hides leaves the centre's output alone.
    assert _perturbed_output_change(conv, x, pos, (4, 4)) == 0.0
  for pos in visible:
    assert _perturbed_output_change(conv, x, pos, (4, 4)) > 0.0


def test_checkerboard_parities_alternate_by_slice():
  m0 = phase_mask(0, ANCHOR, 4, 4)[0, :, :, 0]
  m1 = phase_mask(1, ANCHOR, 4, 4)[0, :, :, 0]
  assert anchor_parity(0) == 1 and anchor_parity(1) == 0
  assert not m0[0, 0] and m0[0, 1] and m1[0, 0] and not m1[0, 1]
  np.testing.assert_array_equal(m0, ~m1)
  np.testing.assert_array_equal(phase_mask(2, NON_ANCHOR, 4, 4), ~phase_mask(2, ANCHOR, 4, 4))


@pytest.mark.parametrize("k", [0, 1])
def test_spatial_context_at_non_anchors_sees_only_anchors(k):
  net = SpatialContext(8, 16)
  h = w = 8
  anchors = phase_mask(k, ANCHOR, h, w)
  y = jax.random.normal(jax.random.key(2), (1, h, w, 4)) * anchors
  variables = net.init(jax.random.key(3), y)
  out0 = net.apply(variables, y)
  non_anchor = ~anchors[0, :, :, 0]
  # Anything at non-anchor positions of the input: the non-anchor outputs do not move.
  noisy = y + jax.random.normal(jax.random.key(4), y.shape) * ~anchors
  out1 = net.apply(variables, noisy)
  np.testing.assert_array_equal(np.asarray(out1)[0][non_anchor], np.asarray(out0)[0][non_anchor])
  # An anchor does reach its non-anchor neighbours.
  r, c = np.argwhere(anchors[0, :, :, 0])[5]
  out2 = net.apply(variables, y.at[0, r, c].add(5.0))
  assert np.abs(np.asarray(out2 - out0)[0][non_anchor]).max() > 0


def test_gain_interpolation():
  table = jnp.exp(jax.random.normal(jax.random.key(0), (5, 7)))
  for i in range(5):
    np.testing.assert_array_equal(interpolate_gains(table, jnp.array([i]))[0], table[i])
  mid = interpolate_gains(table, jnp.array([1.5, 3.25]))
  np.testing.assert_allclose(mid[0], np.sqrt(table[1] * table[2]), rtol=1e-6)
  np.testing.assert_allclose(mid[1], table[3] ** 0.75 * table[4] ** 0.25, rtol=1e-6)
  # Continuous: approaching an anchor from below reaches it.
  np.testing.assert_allclose(interpolate_gains(table, jnp.array([2.9999]))[0], table[3],
                             rtol=1e-3)


def test_gain_units_give_the_named_table_of_a_slice():
  units, rate = GainUnits(anchor_num=3, channels=6), jnp.array([1.0, 2.0])
  variables = units.init(jax.random.key(0), "gain", rate, 0, 6)
  # Every table exists from the start, one row per anchor, whichever one is asked for.
  assert {n: t.shape for n, t in variables["params"].items()} == \
      {n: (3, 6) for n in GAIN_TABLES}
  tables = {n: jnp.arange(18.0).reshape(3, 6) + 10 * i for i, n in enumerate(GAIN_TABLES)}
  for name in GAIN_TABLES:
    v = units.apply({"params": tables}, name, rate, 2, 3)
    np.testing.assert_array_equal(v[:, 0, 0], tables[name][1:, 2:5])
  with pytest.raises(ValueError, match="no gain table"):
    units.apply({"params": tables}, "gains", rate, 0, 6)


def test_quantisers_and_bounds():
  x = jnp.array([-1.7, -0.5, 0.2, 2.5])
  np.testing.assert_array_equal(ste_round(x), jnp.round(x))
  np.testing.assert_array_equal(jax.grad(lambda v: ste_round(v).sum())(x), jnp.ones(4))
  g = jax.grad(lambda v: (lower_bound(v, 0.11) * jnp.array([1., 1., -1., -1.])).sum())
  # Below the bound the gradient passes only where it would push the value up.
  np.testing.assert_array_equal(g(jnp.array([0.05, 0.5, 0.05, 0.5])), [0., 1., -1., -1.])
  p = gaussian_likelihood(jnp.arange(-50, 51, dtype=jnp.float32), jnp.float32(3.0))
  assert abs(float(p.sum()) - 1.0) < 1e-5
  assert float(gaussian_likelihood(jnp.float32(1e4), jnp.float32(0.01))) == pytest.approx(1e-9)


@pytest.fixture(scope="module")
def model():
  config = small_config()
  x = image(5, 2, 64, 64)
  # Initialised on one image, as the other modules' models are: the same init program.
  m, variables = init_model(config, x[:1])
  return m, variables, x


@pytest.fixture(scope="module")
def forward(model):
  """The model's eval forward, one jitted function for this module's tests: each input
  signature (a float rate for the batch, or one per image) compiles once, some 20 s each
  on 2 CPU cores."""
  return jax.jit(model[0].apply)


def test_eval_is_deterministic_and_train_noise_only_affects_the_rate(model, forward):
  m, variables, x = model
  train = jax.jit(functools.partial(m.apply, train=True))
  e1, e2 = forward(variables, x, 1.0), forward(variables, x, 1.0)
  np.testing.assert_array_equal(e1["bits"], e2["bits"])
  t1 = train(variables, x, 1.0, rngs={"noise": jax.random.key(1)})
  t2 = train(variables, x, 1.0, rngs={"noise": jax.random.key(2)})
  assert not np.array_equal(t1["bits"], t2["bits"])
  # Straight-through rounding: the reconstruction path is the rounded one in both modes.
  np.testing.assert_allclose(t1["x_hat"], e1["x_hat"], atol=1e-5)
  # Eval likelihoods are of integer residuals: each is the mass of one unit bin.
  assert all(float(lik.max()) <= 1.0 for lik in e1["likelihoods"])


def test_rate_controls_bits_and_per_sample_rates(model, forward):
  _, variables, x = model
  outs = [forward(variables, x, r) for r in (0.0, 1.5, 3.0)]
  bits = [np.asarray(out["bits"]) for out in outs]
  assert np.all(bits[0] < bits[1]) and np.all(bits[1] < bits[2])
  # Per-image rates: each image is coded as if the whole batch had its rate.
  mixed = forward(variables, x, jnp.array([0.0, 3.0]))
  np.testing.assert_allclose(mixed["bits"], [bits[0][0], bits[2][1]], rtol=1e-5)
  np.testing.assert_allclose(mixed["x_hat"][0], outs[0]["x_hat"][0], atol=1e-5)
  np.testing.assert_allclose(mixed["x_hat"][1], outs[2]["x_hat"][1], atol=1e-5)


def test_anchor_rates_give_anchor_results(model, forward):
  _, variables, x = model
  np.testing.assert_array_equal(forward(variables, x, 2.0)["bits"],
                                forward(variables, x, jnp.array([2.0, 2.0]))["bits"])


def test_decoded_anchors_do_not_depend_on_non_anchors(model):
  """Causality of the schedule: the parameters of slice k's anchors depend only on
  earlier slices; those of its non-anchors only on earlier slices and its anchors."""
  m, variables, _ = model
  cfg = m.config
  k, shape = 2, (1, 8, 8, cfg.slice_channels[2])
  rate = jnp.array([1.0])
  support = jax.random.normal(jax.random.key(0), shape[:3] + (cfg.slice_channels[2],))
  cc = m.apply(variables, k, support, shape, method=MSINN.slice_prior)
  anchors = phase_mask(k, ANCHOR, 8, 8)
  y_hat = jax.random.normal(jax.random.key(1), shape) * anchors
  params = jax.jit(functools.partial(m.apply, method=MSINN.phase_params),
                   static_argnums=(1, 2))
  mu0, s0 = params(variables, k, NON_ANCHOR, cc, y_hat, rate)
  noisy = y_hat + 3.0 * jax.random.normal(jax.random.key(2), shape) * ~anchors
  mu1, s1 = params(variables, k, NON_ANCHOR, cc, noisy, rate)
  sel = ~anchors[0, :, :, 0]
  np.testing.assert_array_equal(np.asarray(mu1)[0][sel], np.asarray(mu0)[0][sel])
  np.testing.assert_array_equal(np.asarray(s1)[0][sel], np.asarray(s0)[0][sel])


def test_training_gradients_are_finite(model):
  m, variables, x = model

  def loss(params):
    out = m.apply({"params": params}, x, jnp.array([0.0, 2.0]), train=True,
                  rngs={"noise": jax.random.key(0)})
    return jnp.mean(out["bits"]) / x[0].size + jnp.mean((out["x_hat"] - x) ** 2)

  grads = jax.jit(jax.grad(loss))(variables["params"])
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
  assert np.abs(np.asarray(grads["gains"]["gain"])).sum() > 0
