"""Bjontegaard delta rate (BD-rate) and delta quality (BD-PSNR) between two RD curves.

BD-rate is the mean bit-rate difference of a test codec against an anchor at equal
quality: log-rate is modelled as a function of quality for each curve, both models are
averaged over the quality interval the two curves share, and the difference d of the
means gives 100 * (exp(d) - 1) percent. Negative = the test codec needs fewer bits.
BD-PSNR swaps the roles: quality (dB) as a function of log-rate, averaged over the shared
log-rate interval; positive = the test codec has higher quality. It applies to any
quality in dB, e.g. MS-SSIM in dB.

Two models of each curve are offered (`method`):

* "cubic": G. Bjontegaard, "Calculation of average PSNR differences between RD-curves",
  VCEG-M33, 2001: a least-squares cubic polynomial through all points, integrated
  analytically.
* "pchip": the shape-preserving piecewise cubic Hermite interpolation (slopes from the
  weighted harmonic mean of neighbouring secants, as MATLAB's pchip and
  `scipy.interpolate.PchipInterpolator`) that the JCT-VC/JVET common-test-condition
  sheets and JPEG AI use instead, because a cubic fit can oscillate; integrated exactly,
  piece by piece.

Both models are fitted to all points; the optional sub-range only narrows the interval
of integration (as in "BD-rate above 36 dB").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from msinn_jax.rd.results import RDError

Method = Literal["cubic", "pchip"]
MIN_POINTS = 4


def bd_rate(rate_anchor: np.ndarray, quality_anchor: np.ndarray,
            rate_test: np.ndarray, quality_test: np.ndarray, *,
            method: Method = "cubic",
            min_quality: float | None = None, max_quality: float | None = None) -> float:
  """BD-rate of a test curve against an anchor, in percent.

  Args:
    rate_anchor: [N] anchor rates (e.g. bpp), > 0, in any point order.
    quality_anchor: [N] anchor qualities in dB.
    rate_test: [M] test rates, same unit as the anchor's.
    quality_test: [M] test qualities in dB.
    method: "cubic" (VCEG-M33) or "pchip" (CTC piecewise cubic), see the module docstring.
    min_quality: optional lower end of the quality interval of integration.
    max_quality: optional upper end.

  Returns:
    100 * (exp(mean log-rate difference) - 1); negative = fewer bits than the anchor.

  Raises:
    RDError: fewer than 4 points, non-finite or non-positive values, repeated qualities,
      or no overlap of the quality ranges (within the optional sub-range).
  """
  fit = _fit_fn(method)
  q_a, lr_a = _points(quality_anchor, np.log(_rates(rate_anchor, "anchor")), "anchor quality")
  q_t, lr_t = _points(quality_test, np.log(_rates(rate_test, "test")), "test quality")
  lo, hi = overlap(q_a, q_t, min_quality, max_quality, "quality")
  diff = (fit(q_t, lr_t, lo, hi) - fit(q_a, lr_a, lo, hi)) / (hi - lo)
  return 100. * float(np.expm1(diff))


def bd_psnr(rate_anchor: np.ndarray, quality_anchor: np.ndarray,
            rate_test: np.ndarray, quality_test: np.ndarray, *,
            method: Method = "cubic",
            min_rate: float | None = None, max_rate: float | None = None) -> float:
  """BD-PSNR (or BD of any quality in dB) of a test curve against an anchor, in dB.

  Args:
    rate_anchor: [N] anchor rates (e.g. bpp), > 0, in any point order.
    quality_anchor: [N] anchor qualities in dB.
    rate_test: [M] test rates.
    quality_test: [M] test qualities in dB.
    method: "cubic" or "pchip", see the module docstring.
    min_rate: optional lower end of the rate interval of integration (same unit as rates).
    max_rate: optional upper end.

  Returns:
    Mean quality difference test - anchor over the shared log-rate interval; positive =
    better than the anchor.

  Raises:
    RDError: as for `bd_rate`, with rates in place of qualities.
  """
  fit = _fit_fn(method)
  lr_a, q_a = _points(np.log(_rates(rate_anchor, "anchor")), quality_anchor, "anchor rate",
                      shown=np.exp)
  lr_t, q_t = _points(np.log(_rates(rate_test, "test")), quality_test, "test rate",
                      shown=np.exp)
  log_min = None if min_rate is None else np.log(min_rate)
  log_max = None if max_rate is None else np.log(max_rate)
  lo, hi = overlap(lr_a, lr_t, log_min, log_max, "log-rate")
  return float((fit(lr_t, q_t, lo, hi) - fit(lr_a, q_a, lo, hi)) / (hi - lo))


def overlap(x_anchor: np.ndarray, x_test: np.ndarray, lower: float | None = None,
            upper: float | None = None, what: str = "quality") -> tuple[float, float]:
  """The interval both curves span, clipped to the optional [lower, upper].

  Raises:
    RDError: the interval is empty or a single point.
  """
  lo = max(np.min(x_anchor), np.min(x_test))
  hi = min(np.max(x_anchor), np.max(x_test))
  if lower is not None:
    lo = max(lo, lower)
  if upper is not None:
    hi = min(hi, upper)
  if not lo < hi:
    raise RDError(f"the two curves share no {what} interval"
                  + ("" if lower is None and upper is None else " within the requested sub-range")
                  + f" (anchor {np.min(x_anchor):.3f}..{np.max(x_anchor):.3f}, "
                  f"test {np.min(x_test):.3f}..{np.max(x_test):.3f})")
  return float(lo), float(hi)


def _cubic_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
  """Integral over [lo, hi] of the least-squares cubic through (x, y)."""
  antiderivative = np.polyint(np.polyfit(x, y, 3))
  return float(np.polyval(antiderivative, hi) - np.polyval(antiderivative, lo))


def _pchip_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
  """Exact integral over [lo, hi] of the piecewise cubic Hermite interpolant of (x, y)."""
  from scipy.interpolate import PchipInterpolator  # Here: a third of a second to import.

  return float(PchipInterpolator(x, y, extrapolate=False).integrate(lo, hi))


_FITS: dict[str, Callable[[np.ndarray, np.ndarray, float, float], float]] = {
    "cubic": _cubic_integral,
    "pchip": _pchip_integral,
}
METHODS = tuple(_FITS)


def _fit_fn(method: str) -> Callable[[np.ndarray, np.ndarray, float, float], float]:
  try:
    return _FITS[method]
  except KeyError:
    raise ValueError(f"Unknown BD method {method!r}; choose one of {METHODS}.") from None


def _rates(rate: np.ndarray, which: str) -> np.ndarray:
  rate = np.asarray(rate, np.float64)
  if np.any(~(rate > 0)):
    raise RDError(f"{which} rates must be positive and finite, got {rate.tolist()}")
  return rate


def _points(x: np.ndarray, y: np.ndarray, what: str, shown=lambda v: v
            ) -> tuple[np.ndarray, np.ndarray]:
  """Validated 1-D float64 points sorted by strictly increasing x; `shown(x)` is x as
  messages give it (the rates, where x is their logarithm)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 1 or x.shape != y.shape:
    raise RDError(f"{what}: rate and quality must be 1-D of equal length, "
                  f"got shapes {x.shape} and {y.shape}")
  if len(x) < MIN_POINTS:
    raise RDError(f"{what}: BD metrics need at least {MIN_POINTS} points, got {len(x)}")
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
    raise RDError(f"{what}: non-finite values")
  order = np.argsort(x, kind="stable")
  x, y = x[order], y[order]
  if np.any(np.diff(x) <= 0):
    values = ", ".join(f"{v:.6g}" for v in shown(x))
    raise RDError(f"{what}: repeated values [{values}]; each point needs its own value")
  return x, y
