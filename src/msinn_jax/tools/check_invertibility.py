"""`msinn check-invertibility IMAGES... [--dtype float64] [--precision highest] [--json]`.

For each image (padded as the codec pads it), the round-trip error of every invertible
piece of the flow on its actual input, of every unit and stage, and of the whole
g_s(g_a(x)), with the log-determinant consistency checks (`msinn_jax.invertibility`).
No quantisation is involved: this measures the transform alone.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

import numpy as np

from msinn_jax.errors import UserError
from msinn_jax.image_io import IMAGE_EXTENSIONS, list_images, read_rgb
from msinn_jax.invertibility import (DTYPES, InvertibilityChecker, InvertibilityReport,
                                     codec_input)
from msinn_jax.jsonio import json_text
from msinn_jax.tools.common import add_model_args, device_scope

PRECISIONS = ("default", "high", "highest")


def register(subparsers: argparse._SubParsersAction) -> None:
  """Adds the `check-invertibility` sub-command."""
  p = subparsers.add_parser(
      "check-invertibility", help="round-trip error of the flow, piece by piece",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("images", nargs="+", metavar="IMAGES",
                 help="image files, or folders (every image file under them, recursively)")
  p.add_argument("--dtype", choices=DTYPES, default="float32",
                 help="arithmetic of the check; float64 casts the weights (default: %(default)s)")
  p.add_argument("--precision", choices=PRECISIONS, default="default",
                 help="jax.default_matmul_precision of the check (default: %(default)s, as the "
                      "codec runs); the flow's own convolutions, channel mixing and coupling "
                      "conditioners, always run at HIGHEST, so that TF32 on GPUs cannot "
                      "break the round trip")
  p.add_argument("--json", action="store_true", help="print the results as JSON")
  add_model_args(p)
  p.set_defaults(func=run)


def expand_images(paths: list[str]) -> list[str]:
  """Files as given, folders replaced by the image files under them (the scan of `msinn
  eval`, `image_io.list_images`)."""
  out = []
  for path in paths:
    if os.path.isdir(path):
      found = [str(p) for p in list_images(path)]
      if not found:
        raise UserError(f"{path}: folder has no image files ({', '.join(IMAGE_EXTENSIONS)})")
      out += found
    elif os.path.isfile(path):
      out.append(path)
    else:
      raise UserError(f"no such image file or folder: {path}")
  return out


def run(args: argparse.Namespace) -> int:
  """Checks every image and prints the table (or JSON); returns the exit code."""
  from msinn_jax.weights import load_model
  # Every image read before the model runs: a bad file stops the command at once.
  images = [(path, read_rgb(path)) for path in expand_images(args.images)]
  with device_scope(args.device):
    loaded = load_model(args.checkpoint)
    checker = InvertibilityChecker(loaded.config, loaded.variables["params"], args.dtype,
                                   args.precision)
    entries = []
    for path, rgb in images:
      x = codec_input(rgb, loaded.config)
      entries.append(_entry(path, rgb.shape, x.shape, checker.check(x)))
  report = {
      "model": loaded.description,
      "dtype": args.dtype,
      "precision": args.precision,
      # np.max, unlike max(), propagates a NaN.
      "max_abs_error": float(np.max([e["round_trip"]["max_abs_error"] for e in entries])),
      "images": entries,
  }
  if args.json:
    print(json_text(report), end="")
  else:
    _print_report(report)
  if not math.isfinite(report["max_abs_error"]):
    print("error: the round trip produced non-finite values", file=sys.stderr)
    return 1
  return 0


def _entry(path: str, shape: tuple[int, ...], padded: tuple[int, ...],
           result: InvertibilityReport) -> dict[str, Any]:
  return {"path": path, "height": shape[0], "width": shape[1], "padded_height": padded[0],
          "padded_width": padded[1], **result.to_dict()}


def _print_report(report: dict[str, Any]) -> None:
  print(f"model: {report['model']}; {report['dtype']}, matmul precision {report['precision']}")
  for e in report["images"]:
    print(f"\n{e['path']}: {e['width']}x{e['height']} (padded {e['padded_width']}x"
          f"{e['padded_height']}); |inverse(forward(u)) - u| on each piece's own input")
    print(f"{'stage':>5} {'unit':>4}  {'piece':<9} {'max|u|':>9} {'max|err|':>10} "
          f"{'mean|err|':>10} {'logdet fwd':>13} {'fwd+inv':>10}")
    for p in e["pieces"]:
      unit = "-" if p["unit"] is None else p["unit"]
      print(f"{p['stage']:>5} {unit:>4}  {p['piece']:<9} {p['input_max_abs']:9.3g} "
            f"{p['max_abs_error']:10.3e} "
            f"{p['mean_abs_error']:10.3e} {p['logdet_forward']:13.6g} {p['logdet_sum']:10.2e}")
    rt, ld = e["round_trip"], e["logdet"]
    psnr = "inf (exact)" if math.isinf(rt["psnr_db"]) else f"{rt['psnr_db']:.2f} dB"
    print(f"round trip g_s(g_a(x)): max|err| {rt['max_abs_error']:.3e}, "
          f"mean|err| {rt['mean_abs_error']:.3e}, PSNR {psnr}")
    rel = abs(ld["analysis_minus_sum_of_units"]) / max(abs(ld["analysis"]), 1e-30)
    print(f"log-det: g_a {ld['analysis']:.8g}, g_a + g_s {ld['analysis_plus_synthesis']:.3e}, "
          f"g_a - sum(units) {ld['analysis_minus_sum_of_units']:.3e} (relative {rel:.1e}); "
          f"per-unit path vs g_a: max|diff| {e['path_mismatch']:.2e}")
  if len(report["images"]) > 1:
    worst = max(report["images"], key=lambda e: e["round_trip"]["max_abs_error"])
    print(f"\nworst round trip over {len(report['images'])} images: max|err| "
          f"{report['max_abs_error']:.3e} ({worst['path']})")
