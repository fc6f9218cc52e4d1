"""Tests of `msinn_jax.metrics`: PSNR and MS-SSIM against pytorch_msssim golden values."""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msinn_jax import metrics

_FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "msssim_reference.npz"


def _cases() -> list[str]:
  with np.load(_FIXTURE) as data:
    return sorted({key.split("/")[1] for key in data.files if key.startswith("case/")})


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
  with np.load(_FIXTURE) as data:
    return {key: data[key] for key in data.files}


@pytest.mark.parametrize("case", _cases())
def test_ms_ssim_matches_pytorch_msssim(reference, case):
  a = reference[f"case/{case}/a"]
  b = reference[f"case/{case}/b"]
  got = np.asarray(metrics.ms_ssim(np.broadcast_to(a, b.shape), b))
  assert got.shape == (b.shape[0],)
  # The reference itself moves by up to ~6e-7 between float32 and float64 tensors, and its
  # float32-normalised window adds ~1e-6 (see the module docstring); 1e-4 is the contract.
  np.testing.assert_allclose(got, reference[f"case/{case}/torch_f32"], rtol=0, atol=1e-4)
  np.testing.assert_allclose(got, reference[f"case/{case}/torch_f64"], rtol=0, atol=1e-4)
  # What we actually achieve; a regression beyond this means the algorithm changed.
  np.testing.assert_allclose(got, reference[f"case/{case}/torch_f64"], rtol=0, atol=3e-6)


def test_ms_ssim_batch_is_per_image(reference):
  a = reference["case/rgb_168x200/a"]
  b = reference["case/rgb_168x200/b"]
  batch = np.asarray(metrics.ms_ssim(np.broadcast_to(a, b.shape), b))
  single = np.asarray(metrics.ms_ssim(a, b[2:3]))
  # Same computation on a sub-batch: identical up to float32 summation order.
  np.testing.assert_allclose(single, batch[2:3], rtol=0, atol=1e-7)


def test_ms_ssim_under_jit_and_uint8(reference):
  a = reference["case/rgb_96x128_four_scales/a"]
  b = reference["case/rgb_96x128_four_scales/b"]
  eager = np.asarray(metrics.ms_ssim(a, b))
  jitted = np.asarray(jax.jit(metrics.ms_ssim)(a.astype(np.float32), b.astype(np.float32)))
  np.testing.assert_allclose(jitted, eager, rtol=0, atol=1e-7)  # Same float32 graph.


@pytest.mark.parametrize("shape", [(1, 161, 170, 3), (2, 40, 33, 3), (1, 12, 15, 1), (1, 5, 8, 3),
                                   (1, 1, 1, 3)])
def test_ms_ssim_identity_is_one(shape):
  x = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
  # Numerator and denominator are the same float expression for identical inputs.
  np.testing.assert_allclose(np.asarray(metrics.ms_ssim(x, x)), 1., rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 100, 90, 3), (1, 7, 30, 3), (1, 2, 2, 1)])
def test_ms_ssim_small_images_are_finite_and_ordered(shape):
  rng = np.random.default_rng(1)
  x = rng.integers(0, 256, shape).astype(np.float32)
  mild = np.clip(x + rng.normal(0., 2., shape), 0, 255)
  strong = np.clip(x + rng.normal(0., 40., shape), 0, 255)
  v_mild = float(metrics.ms_ssim(x, mild)[0])
  v_strong = float(metrics.ms_ssim(x, strong)[0])
  assert 0. <= v_strong < v_mild <= 1.


def test_ms_ssim_rejects_bad_shapes():
  with pytest.raises(ValueError, match="B, H, W, C"):
    metrics.ms_ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
  with pytest.raises(ValueError, match="equal shape"):
    metrics.psnr(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 9, 3)))


def test_psnr_of_known_mse():
  x = np.full((2, 4, 6, 3), 100., np.float32)
  y = x.copy()
  y[0] += 5.                           # MSE 25 everywhere.
  y[1, ::2] -= 2.                      # MSE 4 on half the rows -> 2.
  want = 10. * np.log10(255.**2 / np.array([25., 2.]))
  np.testing.assert_allclose(np.asarray(metrics.psnr(x, y)), want, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(metrics.psnr(x / 255., y / 255., max_val=1.)), want, rtol=1e-5)
  assert np.isinf(np.asarray(metrics.psnr(x, x))).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.5, 80.))
def test_psnr_is_symmetric(seed, noise):
  rng = np.random.default_rng(seed)
  a = rng.integers(0, 256, (2, 5, 7, 3)).astype(np.float32)  # One shape: one compilation.
  b = np.clip(np.round(a + rng.normal(0., noise, a.shape)), 0, 255).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(metrics.psnr(a, b)), np.asarray(metrics.psnr(b, a)))


def test_ms_ssim_db():
  np.testing.assert_allclose(np.asarray(metrics.ms_ssim_db(np.array([0.9, 0.99, 0.999]))),
                             [10., 20., 30.], rtol=1e-5)  # float32 1 - 0.999.
  assert np.isinf(float(metrics.ms_ssim_db(1.)))


@pytest.mark.parametrize("a,b", [(100., 120.), (30., 200.), (0., 255.)])
def test_ms_ssim_of_flat_images_follows_the_definition(a, b):
  """Wang et al. (2003): for flat images every contrast-structure term is (C2)/(C2) = 1 and
  only the coarsest scale's luminance term remains, l = (2ab + C1) / (a^2 + b^2 + C1),
  raised to that scale's weight 0.1333, with C1 = (0.01 * 255)^2."""
  c1 = (0.01 * 255) ** 2
  expected = ((2 * a * b + c1) / (a * a + b * b + c1)) ** 0.1333
  x = np.full((1, 176, 176, 3), a, np.float32)
  y = np.full((1, 176, 176, 3), b, np.float32)
  np.testing.assert_allclose(np.asarray(metrics.ms_ssim(x, y))[0], expected, rtol=1e-5)
