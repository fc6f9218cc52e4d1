"""Kodak RD sweep: CompressAI results JSON and an RD plot against reference curves.

  python experiments/eval_kodak.py                       # built-in model, every anchor
                                                         # and the midpoints 0.5, 2.5, ...
  python experiments/eval_kodak.py --checkpoint runs/anchor8 --name anchor8
  python experiments/eval_kodak.py --rates 0,3.5,7 --max-images 6 --estimate-only

Reads the 24 Kodak images from `../shared/datasets/kodak/` (relative to the repository
root) or --kodak, runs `msinn_jax.eval_lib` (real bitstreams unless --estimate-only), and
writes `kodak_<name>.json` and `kodak_<name>.png` (PSNR and MS-SSIM panels with the
reference curves) into --out-dir (default `experiments/results/`). The JSON's
"settings" records the command line, the device and the wall time.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax

from msinn_jax import eval_lib
from msinn_jax.jsonio import json_text
from msinn_jax.rd import RDCurve, bd, load_curve
from msinn_jax.rd.results import RDError
from msinn_jax.rd.plot import plot_rd
from msinn_jax.tools.common import cached_codec, device_scope

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_KODAK = REPO.parent / "shared" / "datasets" / "kodak"
# Plotted, and the anchors of the BD-rate table (classical codecs measured on these
# images, ../shared/reference/rd_kodak/, and VTM and MSINN as published).
REFERENCES = ("ref:kodak/vtm", "ref:kodak/hevc444-x265", "ref:kodak/jpeg2000-openjpeg",
              "ref:kodak/webp-libwebp", "ref:kodak/jpeg444-libjpeg-turbo",
              "ref:kodak/msinn-anchor8", "ref:kodak/msinn-anchor12")


def bd_table(curve: RDCurve) -> dict[str, dict[str, float | str]]:
  """BD-rate (PSNR, cubic and pchip) of `curve` against every reference; an error
  message where a BD-rate cannot be computed (e.g. no shared quality range)."""
  out = {}
  for ref in REFERENCES:
    anchor = load_curve(ref)
    try:
      out[ref] = {m: bd.bd_rate(anchor.rate(), anchor.quality_db("psnr"), curve.rate(),
                                curve.quality_db("psnr"), method=m) for m in bd.METHODS}
    except RDError as e:
      out[ref] = {"error": str(e)}
  return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--kodak", default=str(DEFAULT_KODAK), help="Kodak folder (%(default)s)")
  p.add_argument("--checkpoint", default=None,
                 help="checkpoint spec as for `msinn eval` (default: the built-in model)")
  p.add_argument("--rates", default=None,
                 help="rates as for `msinn eval --rates` (default: every anchor and the "
                      "midpoints a + 0.5 of every other anchor)")
  p.add_argument("--max-images", type=int, default=None,
                 help="evaluate only the first N images (sorted by name)")
  p.add_argument("--estimate-only", action="store_true",
                 help="the jitted estimate forward instead of real bitstreams")
  p.add_argument("--name", default=None, help="curve name and file stem (default: derived)")
  p.add_argument("--out-dir", default=str(REPO / "experiments" / "results"))
  p.add_argument("--device", choices=("cpu", "gpu", "tpu"), default=None)
  return p.parse_args(argv)


def default_rates(anchor_num: int) -> str:
  """Every anchor, plus a + 0.5 for every other anchor a (continuous rates)."""
  midpoints = [a + 0.5 for a in range(0, anchor_num - 1, 2)]
  return ",".join(["all"] + [f"{r:g}" for r in midpoints])


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  start = time.perf_counter()
  source, names = eval_lib.open_dataset(args.kodak)
  count = len(names) if args.max_images is None else min(args.max_images, len(names))
  images = [source[i] for i in range(count)]
  with device_scope(args.device):
    codec, model_description = cached_codec(args.checkpoint)
    rates = eval_lib.parse_rates(args.rates or default_rates(codec.config.anchor_num),
                                 codec.config.anchor_num)
    mode = "estimate" if args.estimate_only else "bitstream"
    default = args.checkpoint in (None, "default", "untrained")
    label = ("untrained" if "UNTRAINED" in model_description else "default") if default else "ckpt"
    name = args.name or f"msinn-jax-{label}-{mode}"
    results = eval_lib.evaluate(
        codec, images, rates, names=names[:count], estimate_only=args.estimate_only,
        per_image=True, name=name,
        description=f"Model: {model_description}. Kodak, {count} images.")
  wall = time.perf_counter() - start
  results["settings"].update({
      "dataset": "kodak", "command": " ".join(["python", *sys.argv]),
      "wall_seconds": round(wall, 1), "jax_version": jax.__version__,
      "default_backend": jax.default_backend()})

  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  json_path, png_path = out_dir / f"kodak_{name}.json", out_dir / f"kodak_{name}.png"
  json_path.write_text(json_text(results))
  curve = RDCurve.from_json(results)
  plot_rd([curve] + [load_curve(ref) for ref in REFERENCES], png_path,
          title=f"Kodak ({count} images): {name}")
  table = bd_table(curve)
  bd_path = out_dir / f"kodak_{name}_bdrate.json"
  bd_path.write_text(json_text({"test": name, "metric": "psnr-rgb", "bd_rate_percent": table}))

  print(eval_lib.format_table(results))
  print("BD-rate (PSNR-RGB; negative = fewer bits than the reference):")
  for ref, r in table.items():
    text = r["error"] if "error" in r else f"cubic {r['cubic']:+7.2f} %  pchip {r['pchip']:+7.2f} %"
    print(f"  vs {ref:34s} {text}")
  print(f"wrote {json_path}, {bd_path} and {png_path}")
  print(f"wall time {wall:.1f} s (including model loading and compilation) on "
        f"{results['settings']['device']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
