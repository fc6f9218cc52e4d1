"""`msinn bd-rate`: Bjontegaard deltas of one RD curve against an anchor.

  msinn bd-rate results.json --anchor ref:kodak/vtm
  msinn bd-rate ref:kodak/msinn-anchor12 --anchor ref:kodak/vtm --min-quality 36 --json
  msinn bd-rate --list-references

Curves are CompressAI results JSON files or shipped references `ref:<dataset>/<name>`.
BD-rate (percent, negative = fewer bits than the anchor) is computed over the shared
quality interval, optionally clipped by --min-quality/--max-quality; BD-PSNR (dB,
positive = better) over the shared rate interval, optionally clipped by
--min-rate/--max-rate. Both with the VCEG-M33 cubic fit and the CTC piecewise cubic.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from msinn_jax.errors import UserError
from msinn_jax.jsonio import json_text
from msinn_jax.rd import bd
from msinn_jax.rd.reference import list_references, load_curve, load_reference
from msinn_jax.rd.results import RDCurve
from msinn_jax.tools.common import finite_float, positive_float

_LABELS = {"psnr": ("PSNR-RGB", "BD-PSNR"), "ms-ssim": ("MS-SSIM-RGB (dB)", "BD-MS-SSIM")}


def register(subparsers: argparse._SubParsersAction) -> None:
  """Adds the `bd-rate` sub-command."""
  p = subparsers.add_parser(
      "bd-rate", help="BD-rate and BD-PSNR of an RD curve against an anchor",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("test", nargs="?", metavar="TEST",
                 help="results JSON of the codec under test, or ref:<dataset>/<name>")
  p.add_argument("--anchor", metavar="ANCHOR",
                 help="results JSON of the anchor, or ref:<dataset>/<name> (e.g. ref:kodak/vtm)")
  p.add_argument("--metric", choices=("psnr", "ms-ssim", "both"), default="psnr",
                 help="quality metric (default: %(default)s); 'both' skips a metric a curve lacks")
  p.add_argument("--min-quality", type=finite_float, metavar="DB",
                 help="BD-rate: lower end of the quality interval (dB)")
  p.add_argument("--max-quality", type=finite_float, metavar="DB",
                 help="BD-rate: upper end of the quality interval (dB)")
  p.add_argument("--min-rate", type=positive_float, metavar="BPP",
                 help="BD-PSNR: lower end of the rate interval (bpp)")
  p.add_argument("--max-rate", type=positive_float, metavar="BPP",
                 help="BD-PSNR: upper end of the rate interval (bpp)")
  p.add_argument("--json", action="store_true", help="print the results as JSON")
  p.add_argument("--list-references", action="store_true",
                 help="list the shipped reference curves and exit")
  p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  """Prints the BD figures; returns the exit code."""
  if args.list_references:
    for key in list_references():
      dataset, name = key.split("/", 1)
      print(f"ref:{key:36s} {load_reference(dataset, name).name}")
    return 0
  if not args.test or not args.anchor:
    raise UserError("give the curve under test and --anchor (or --list-references)")
  if args.metric == "both" and (args.min_quality is not None or args.max_quality is not None):
    raise UserError("--min-quality/--max-quality are in the units of one metric: "
                    "use them with --metric psnr or --metric ms-ssim")
  test, anchor = load_curve(args.test), load_curve(args.anchor)
  report = {"test": _describe(args.test, test), "anchor": _describe(args.anchor, anchor),
            "results": {}}
  metrics = ("psnr", "ms-ssim") if args.metric == "both" else (args.metric,)
  for metric in metrics:
    missing = [c.name for c in (test, anchor) if not c.has_quality(metric)]
    if missing and args.metric == "both":
      report["results"][metric] = {"skipped": f"no {metric} values in {', '.join(missing)}"}
      continue
    report["results"][metric] = _bd_figures(test, anchor, metric, args)
  if all("skipped" in r for r in report["results"].values()):
    raise UserError("no quality metric is present in both curves")

  if args.json:
    print(json_text(report), end="")
  else:
    _print_report(report)
  return 0


def _describe(spec: str, curve: RDCurve) -> dict[str, Any]:
  return {"spec": spec, "name": curve.name, "num_points": curve.num_points}


def _bd_figures(test: RDCurve, anchor: RDCurve, metric: str,
                args: argparse.Namespace) -> dict[str, Any]:
  """BD-rate and BD-quality with both methods, and the intervals they cover."""
  r_a, q_a = _finite_points(anchor, metric)
  r_t, q_t = _finite_points(test, metric)
  quality_interval = bd.overlap(q_a, q_t, args.min_quality, args.max_quality, f"{metric} quality")
  rate_interval = bd.overlap(r_a, r_t, args.min_rate, args.max_rate, "rate")
  return {
      "quality_interval_db": list(quality_interval),
      "rate_interval_bpp": list(rate_interval),
      "bd_rate_percent": {
          m: bd.bd_rate(r_a, q_a, r_t, q_t, method=m, min_quality=args.min_quality,
                        max_quality=args.max_quality) for m in bd.METHODS},
      "bd_quality_db": {
          m: bd.bd_psnr(r_a, q_a, r_t, q_t, method=m, min_rate=args.min_rate,
                        max_rate=args.max_rate) for m in bd.METHODS},
  }


def _finite_points(curve: RDCurve, metric: str) -> tuple[np.ndarray, np.ndarray]:
  """The curve's rates and qualities, refused if any is NaN or infinite (a null in the
  file): a BD figure over fewer points than the curve has would misreport it."""
  rate, quality = curve.rate(), curve.quality_db(metric)
  bad = curve.non_finite(metric)
  if bad.size:
    raise UserError(f"curve {curve.name!r}: point{'s' * (bad.size > 1)} "
                    f"{', '.join(str(i + 1) for i in bad)} of {len(rate)} "
                    f"{'have' if bad.size > 1 else 'has'} no finite bpp and {metric}; "
                    f"BD figures need every point finite")
  return rate, quality


def _print_report(report: dict[str, Any]) -> None:
  for role in ("test", "anchor"):
    d = report[role]
    print(f"{role + ':':8s}{d['name']}  [{d['spec']}, {d['num_points']} points]")
  for metric, r in report["results"].items():
    quality_label, delta_label = _LABELS[metric]
    if "skipped" in r:
      print(f"{quality_label}: skipped ({r['skipped']})")
      continue
    q_lo, q_hi = r["quality_interval_db"]
    r_lo, r_hi = r["rate_interval_bpp"]
    rate, quality = r["bd_rate_percent"], r["bd_quality_db"]
    print(f"{quality_label}:")
    print(f"  BD-rate  cubic {rate['cubic']:+8.2f} %   pchip {rate['pchip']:+8.2f} %"
          f"   over {q_lo:.2f}-{q_hi:.2f} dB")
    print(f"  {delta_label:8s} cubic {quality['cubic']:+8.3f} dB  pchip {quality['pchip']:+8.3f} dB"
          f"  over {r_lo:.3f}-{r_hi:.3f} bpp")
