"""`msinn plot`: draw RD curves (PSNR and MS-SSIM in dB against bpp) into one figure.

  msinn plot results.json ref:kodak/vtm ref:kodak/msinn-anchor12 -o rd.png --title Kodak

Curves are CompressAI results JSON files or shipped references `ref:<dataset>/<name>`
(see `msinn bd-rate --list-references`). A curve without MS-SSIM is left out of that
panel; a panel no curve can fill is dropped.
"""

from __future__ import annotations

import argparse

from msinn_jax.errors import UserError
from msinn_jax.image_io import check_writable
from msinn_jax.rd.plot import plot_rd
from msinn_jax.rd.reference import load_curve

_METRICS = {"psnr": ("psnr-rgb",), "ms-ssim": ("ms-ssim-rgb",),
            "both": ("psnr-rgb", "ms-ssim-rgb")}


def register(subparsers: argparse._SubParsersAction) -> None:
  """Adds the `plot` sub-command."""
  p = subparsers.add_parser(
      "plot", help="plot RD curves (PSNR / MS-SSIM vs bpp)", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("curves", nargs="+", metavar="CURVE",
                 help="results JSON files and/or ref:<dataset>/<name>")
  p.add_argument("-o", "--output", required=True, metavar="FILE",
                 help="output image; the format follows the extension (.png, .pdf, .svg)")
  p.add_argument("--title", help="figure title")
  p.add_argument("--metric", choices=tuple(_METRICS), default="both",
                 help="panels to draw (default: %(default)s)")
  p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  """Writes the figure; returns the exit code."""
  check_writable(args.output, inputs=tuple(args.curves))  # `ref:` specs are no files.
  curves = [load_curve(spec) for spec in args.curves]
  try:
    panels = plot_rd(curves, args.output, metrics=_METRICS[args.metric], title=args.title)
  except OSError as e:
    raise UserError(f"cannot write {args.output}: {e.strerror or e}") from None
  except ValueError as e:  # E.g. an extension matplotlib has no writer for.
    raise UserError(f"cannot write {args.output}: {e}") from None
  print(f"wrote {args.output} ({', '.join(panels)}; {len(curves)} curves)")
  return 0
