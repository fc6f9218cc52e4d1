"""Parity with the official PyTorch MSINN on the same weights.

Every `*.npz` in tests/fixtures/parity (small configurations, committed, always run) and
in $MSINN_PARITY_DIR (default ../shared/reference/parity beside the checkout: the paper
configuration) is converted and run through the evaluation forward for each of its
cases; outputs are compared with the official float64 results. The committed fixtures
are made by experiments/parity/make_fixtures.py (see tests/fixtures/parity/README.md).
"""

from __future__ import annotations

import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msinn_jax.convert import load_official
from msinn_jax.model import MSINN

COMMITTED_DIR = pathlib.Path(__file__).resolve().parent / "fixtures" / "parity"
_DEFAULT = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "parity"
_ENV = os.environ.get("MSINN_PARITY_DIR")
PARITY_DIR = pathlib.Path(_ENV) if _ENV else _DEFAULT


def _folder_cases(folder):
  out = []
  for f in sorted(folder.glob("*.npz")):
    with np.load(f) as z:
      names = sorted({k.split("/")[1] for k in z.files if k.startswith("case/")})
    out += [pytest.param(f, name, id=f"{f.stem}:{name}") for name in names]
  return out or [pytest.param(None, folder, id=f"empty:{folder.name}")]


def _cases():
  committed = _folder_cases(COMMITTED_DIR)
  if not PARITY_DIR.exists():
    if _ENV:
      raise FileNotFoundError(f"MSINN_PARITY_DIR={_ENV} does not exist")
    return committed + [pytest.param(None, None, marks=pytest.mark.skip(
        reason=f"no parity fixtures: MSINN_PARITY_DIR is unset and {_DEFAULT} is absent"))]
  if PARITY_DIR.resolve() == COMMITTED_DIR:
    return committed
  return committed + _folder_cases(PARITY_DIR)


@functools.lru_cache(maxsize=2)
def _load(path):
  config, variables = load_official(path)
  model = MSINN(config)
  forward = jax.jit(lambda v, x, r: model.apply(v, x, r))
  return variables, forward


def _nhwc(a):
  return np.asarray(a).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("path,case", _cases())
def test_forward_matches_official(path, case):
  if path is None:
    pytest.fail(f"{case} exists but holds no fixture (*.npz) with cases")
  variables, forward = _load(path)
  with np.load(path) as z:
    x = jnp.asarray(_nhwc(z["input/x"]))
    qp = np.asarray(z[f"case/{case}/qp"])
    ref = {k[len(f"case/{case}/f64/"):]: z[k] for k in z.files
           if k.startswith(f"case/{case}/f64/")}
  out = forward(variables, x, jnp.broadcast_to(jnp.asarray(qp, jnp.float32), (x.shape[0],)))
  num = 5
  # The analysis transform: float32 vs the official float64.
  for i in range(num):
    err = np.abs(np.asarray(out["y"][i]) - _nhwc(ref[f"y/{i}"])).max()
    assert err <= 2e-5, f"g_a output {i}: max abs error {err}"
  # Quantised latents: a value on a rounding boundary may flip; count such flips.
  flips = total = 0
  max_err = 0.0
  for i in range(num):
    d = np.abs(np.asarray(out["y_hat"][i]) - _nhwc(ref[f"y_hat/{i}"]))
    flips += int(np.sum(d > 0.25))
    total += d.size
    max_err = max(max_err, float(d.max()))
  assert flips <= 1e-4 * total, f"{flips} of {total} quantised latents differ"
  ref_bits = sum(-np.log2(ref[f"likelihood/{i}"].astype(np.float64)).sum() for i in range(num))
  bits = float(np.sum(np.asarray(out["bits"], np.float64)))
  assert abs(bits - ref_bits) <= 1e-4 * ref_bits, (bits, ref_bits)
  mse = np.mean((np.asarray(out["x_hat"], np.float64) - _nhwc(ref["x_hat"])) ** 2)
  psnr = 10 * np.log10(1.0 / max(mse, 1e-30))
  assert psnr >= 70, f"reconstruction PSNR against the official model {psnr:.1f} dB"
  if flips == 0:
    # Without a rounding flip nothing but float32 round-off separates the two models
    # (measured: y_hat 4e-7, bits 1e-7 relative, 134 dB), so a small systematic error
    # (an approximate GELU, a wrong LRP factor) cannot hide under the bounds above.
    assert max_err <= 1e-4, f"quantised latents differ by up to {max_err}"
    assert abs(bits - ref_bits) <= 1e-6 * ref_bits, (bits, ref_bits)
    assert psnr >= 100, f"reconstruction PSNR against the official model {psnr:.1f} dB"


def test_reports_how_many_fixtures_it_checks(capsys):
  cases = [c for c in _cases() if c.values[0] is not None]
  with capsys.disabled():
    for folder in dict.fromkeys((COMMITTED_DIR, PARITY_DIR.resolve())):
      mine = [c for c in cases if c.values[0].parent.resolve() == folder]
      print(f"\n[parity] {len(mine)} case(s) from "
            f"{len({c.values[0] for c in mine})} fixture(s) in {folder}")
