"""Rate-distortion plots: quality (dB) against bits per pixel, one panel per metric."""

from __future__ import annotations

import io
import pathlib
import warnings
from collections.abc import Sequence

import numpy as np

from msinn_jax.image_io import write_bytes
from msinn_jax.rd.results import RDCurve, RDError

# Results key -> (quality metric of `RDCurve.quality_db`, axis label).
_PANELS = {
    "psnr-rgb": ("psnr", "PSNR-RGB (dB)"),
    "psnr": ("psnr", "PSNR-RGB (dB)"),
    "ms-ssim-rgb": ("ms-ssim", "MS-SSIM-RGB (dB)"),
    "ms-ssim": ("ms-ssim", "MS-SSIM-RGB (dB)"),
}
# After the ten colours of matplotlib's cycle, curves repeat a colour with another line
# style and marker, so that every curve of a plot is told apart (4 x 10 = 40 styles).
_LINES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))


def curve_style(index: int) -> dict[str, str]:
  """Colour, line style and marker of the `index`-th curve of a plot."""
  linestyle, marker = _LINES[index // 10 % len(_LINES)]
  return {"color": f"C{index % 10}", "linestyle": linestyle, "marker": marker}


def plot_rd(curves: Sequence[RDCurve], out_path: str | pathlib.Path,
            metrics: Sequence[str] = ("psnr-rgb", "ms-ssim-rgb"),
            title: str | None = None) -> list[str]:
  """Draws RD curves side by side, one panel per quality metric, and saves the figure.

  Uses matplotlib's object API (no pyplot, no global backend switch); the format
  follows the file extension (.png, .pdf, .svg, ...). MS-SSIM is drawn in dB,
  -10 log10(1 - MS-SSIM). A curve without a metric is left out of that panel, and a
  panel no curve can fill is dropped.

  Args:
    curves: the curves, drawn in this order (lines with markers, points sorted by rate;
      a point with a NaN or infinite value is left out, with a warning).
    out_path: where to write the figure.
    metrics: panels, as results keys: "psnr-rgb" and/or "ms-ssim-rgb".
    title: optional figure title.

  Returns:
    The metrics actually drawn.

  Raises:
    RDError: no curves, or no curve has a rate and any of the requested metrics.
    ValueError: an unknown metric name.
  """
  if not curves:
    raise RDError("nothing to plot: no curves given")
  for metric in metrics:
    if metric not in _PANELS:
      raise ValueError(f"Unknown plot metric {metric!r}; choose from {tuple(_PANELS)}.")
  drawable = [c for c in curves if "bpp" in c.results]
  panels = [m for m in metrics if any(c.has_quality(_PANELS[m][0]) for c in drawable)]
  if not panels:
    raise RDError(f"none of the curves has 'bpp' together with any of {', '.join(metrics)}")

  # Imported here: matplotlib costs most of a second, and every `msinn` command imports
  # this module (the demo draws a plot), most of them without drawing one.
  from matplotlib.figure import Figure

  fig = Figure(figsize=(6.4 * len(panels), 4.8), layout="constrained")
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  for ax, metric in zip(axes, panels):
    quality, label = _PANELS[metric]
    for i, curve in enumerate(drawable):
      if not curve.has_quality(quality):
        continue
      rate, q = curve.rate(), curve.quality_db(quality)
      bad = curve.non_finite(quality)
      if bad.size:  # A gap in the line would hide which points are missing.
        warnings.warn(f"curve {curve.name!r}: {bad.size} of {len(rate)} points have no "
                      f"finite bpp and {quality}; drawn without them", stacklevel=2)
        rate, q = np.delete(rate, bad), np.delete(q, bad)
      order = np.argsort(rate)
      # Styled by curve, not by line drawn, so a curve keeps its look in every panel.
      ax.plot(rate[order], q[order], markersize=3.5, linewidth=1.3, label=curve.name,
              **curve_style(i))
    ax.set_xlabel("Rate (bpp)")
    ax.set_ylabel(label)
    ax.grid(True, which="major", alpha=0.4)
    ax.minorticks_on()
    ax.grid(True, which="minor", alpha=0.15)
    ax.legend(loc="lower right", fontsize="small")
  if title:
    fig.suptitle(title)
  buffer = io.BytesIO()  # Rendered first, then written atomically.
  fig.savefig(buffer, dpi=120, format=pathlib.Path(out_path).suffix.lstrip(".") or "png")
  write_bytes(out_path, buffer.getvalue())
  return panels
