"""Tests of `msinn_jax.rd.bd` (Bjontegaard deltas) and the shipped reference curves."""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest

from msinn_jax.rd import bd, reference
from msinn_jax.rd.results import RDError

# A VTM-like curve: 8 points over 0.05-3.6 bpp and 26-47 dB.
_RATE = np.array([0.048, 0.112, 0.246, 0.491, 0.875, 1.431, 2.325, 3.633])
_PSNR = np.array([26.14, 28.49, 31.20, 34.26, 37.42, 40.42, 43.51, 46.59])

# BD-rate vs VTM on Kodak, from ../shared/reference/rd_kodak/SUMMARY.md (percent,
# whole interval, then PSNR >= 36 dB), for curves shipped in reference_curves.json.
_SUMMARY = {
    # name: (cubic, pchip, cubic >= 36 dB, pchip >= 36 dB)
    "msinn-anchor12": (-4.8, -4.9, -7.6, -7.9),
    "msinn-anchor8": (-5.1, -4.8, -7.9, -6.9),
    "bpg": (22.1, 22.0, 14.9, 14.8),
    "hevc444-x265": (21.0, 20.8, 14.4, 14.1),
    "jpeg2000-openjpeg": (45.4, 45.4, 28.7, 28.7),
    "elic2022": (-7.2, -7.0, -6.9, -5.3),
}
_SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"  # Beside the checkout.
_SHARED_TABLE = _SHARED / "reference" / "rd_kodak" / "bdrate_vs_vtm.json"


@pytest.mark.parametrize("method", bd.METHODS)
def test_identical_curves_give_zero(method):
  assert bd.bd_rate(_RATE, _PSNR, _RATE, _PSNR, method=method) == pytest.approx(0., abs=1e-12)
  assert bd.bd_psnr(_RATE, _PSNR, _RATE, _PSNR, method=method) == pytest.approx(0., abs=1e-12)


@pytest.mark.parametrize("method", bd.METHODS)
@pytest.mark.parametrize("factor", [0.9, 1.25])
def test_scaled_rates_give_exact_bd_rate(method, factor):
  # log(rate) moves by a constant, which both models reproduce exactly.
  got = bd.bd_rate(_RATE, _PSNR, factor * _RATE, _PSNR, method=method)
  assert got == pytest.approx(100. * (factor - 1.), abs=1e-9)


@pytest.mark.parametrize("method", bd.METHODS)
def test_shifted_quality_gives_exact_bd_psnr(method):
  assert bd.bd_psnr(_RATE, _PSNR, _RATE, _PSNR + 0.5, method=method) == pytest.approx(0.5, abs=1e-9)
  assert bd.bd_psnr(_RATE, _PSNR, _RATE, _PSNR - 1.2, method=method) == pytest.approx(-1.2, abs=1e-9)


@pytest.mark.parametrize("method", bd.METHODS)
def test_point_order_and_sub_range(method):
  order = np.random.default_rng(0).permutation(len(_RATE))
  test_rate = 0.8 * _RATE * (1. + 0.01 * np.arange(len(_RATE)))
  want = bd.bd_rate(_RATE, _PSNR, test_rate, _PSNR, method=method)
  assert bd.bd_rate(_RATE[order], _PSNR[order], test_rate[order], _PSNR[order],
                    method=method) == pytest.approx(want, abs=1e-9)
  # The rate gap grows with quality, so the high-quality half shows a smaller saving.
  high = bd.bd_rate(_RATE, _PSNR, test_rate, _PSNR, method=method, min_quality=36.)
  low = bd.bd_rate(_RATE, _PSNR, test_rate, _PSNR, method=method, max_quality=36.)
  assert low < want < high < 0.


def test_errors():
  with pytest.raises(RDError, match="at least 4 points"):
    bd.bd_rate(_RATE[:3], _PSNR[:3], _RATE, _PSNR)
  with pytest.raises(RDError, match="share no quality interval"):
    bd.bd_rate(_RATE, _PSNR, _RATE, _PSNR + 30.)
  with pytest.raises(RDError, match="sub-range"):
    bd.bd_rate(_RATE, _PSNR, _RATE, _PSNR, min_quality=50.)
  with pytest.raises(RDError, match="positive"):
    bd.bd_rate(_RATE, _PSNR, -_RATE, _PSNR)
  with pytest.raises(RDError, match="repeated"):
    bd.bd_rate(_RATE, _PSNR, _RATE, np.full_like(_PSNR, 30.))
  repeated = np.r_[_RATE[0], _RATE[:-1]]  # Named in bpp, as given, not as log rates.
  message = f"test rate: repeated values [{repeated[0]:.6g}, {repeated[0]:.6g},"
  with pytest.raises(RDError, match=re.escape(message)):
    bd.bd_psnr(_RATE, _PSNR, repeated, _PSNR)
  with pytest.raises(ValueError, match="cubic"):
    bd.bd_rate(_RATE, _PSNR, _RATE, _PSNR, method="linear")


def test_msinn_anchor12_vs_vtm_matches_the_paper_check():
  vtm = reference.load_reference("kodak", "vtm")
  msinn = reference.load_reference("kodak", "msinn-anchor12")
  args = (vtm.rate(), vtm.quality_db("psnr"), msinn.rate(), msinn.quality_db("psnr"))
  assert bd.bd_rate(*args, method="cubic") == pytest.approx(-4.77, abs=0.01)
  assert bd.bd_rate(*args, method="pchip") == pytest.approx(-4.95, abs=0.01)


@pytest.mark.parametrize("name", sorted(_SUMMARY))
def test_shipped_curves_reproduce_summary_table(name):
  vtm = reference.load_reference("kodak", "vtm")
  curve = reference.load_reference("kodak", name)
  args = (vtm.rate(), vtm.quality_db("psnr"), curve.rate(), curve.quality_db("psnr"))
  got = (bd.bd_rate(*args, method="cubic"), bd.bd_rate(*args, method="pchip"),
         bd.bd_rate(*args, method="cubic", min_quality=36.),
         bd.bd_rate(*args, method="pchip", min_quality=36.))
  # SUMMARY.md rounds to 0.1 percentage point.
  np.testing.assert_allclose(got, _SUMMARY[name], rtol=0, atol=0.051)


@pytest.mark.skipif(not _SHARED_TABLE.exists(), reason="shared reference table not available")
def test_agrees_with_shared_bdrate_table():
  table = json.loads(_SHARED_TABLE.read_text())
  anchor = table["published/vtm"]["curve"]
  for key, row in table.items():
    for method in bd.METHODS:
      for suffix, sub_range in (("", {}), ("_high", {"min_quality": 36.}),
                                ("_low", {"max_quality": 36.})):
        got = bd.bd_rate(anchor["bpp"], anchor["psnr-rgb"], row["curve"]["bpp"],
                         row["curve"]["psnr-rgb"], method=method, **sub_range)
        # Same definitions, so only float rounding separates the two implementations.
        assert got == pytest.approx(row[method + suffix], abs=1e-6), (key, method, suffix)


def test_reference_catalogue():
  names = reference.list_references()
  for dataset in ("kodak", "clic", "tecnick"):
    for anchors in (8, 12):
      curve = reference.load_reference(dataset, f"msinn-anchor{anchors}")
      assert curve.num_points == anchors
      assert "RD_data.md" in curve.description
      assert f"{dataset}/msinn-anchor{anchors}" in names
  for name in ("vtm", "bpg", "jpeg", "hevc444-x265", "jpeg2000-openjpeg", "webp-libwebp",
               "jpegxl-libjxl", "avif444-aom", "jpeg444-libjpeg-turbo"):
    curve = reference.load_reference("kodak", name)
    assert curve.description and np.all(np.diff(np.sort(curve.rate())) > 0)
  # The paper's Kodak "Our" numbers, RD_data.md of hytu99/MSINN-VRLIC.
  msinn = reference.load_reference("kodak", "msinn-anchor12")
  assert msinn.results["psnr-rgb"][0] == 28.98 and msinn.results["bpp"][-1] == 3.378
  assert reference.load_curve("ref:KODAK/VTM").name == "VTM"
  with pytest.raises(RDError, match="kodak has"):
    reference.load_reference("kodak", "nope")
  with pytest.raises(RDError, match="choose one of"):
    reference.load_curve("ref:imagenet/vtm")
  with pytest.raises(RDError, match="ref:<dataset>/<name>"):
    reference.load_curve("ref:vtm")
