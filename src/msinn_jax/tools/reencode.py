"""`msinn reencode IMAGE --quality Q [-k 10] [--json]`: quality over successive generations.

Compresses and decompresses the image k times in a row at one rate, each generation
starting from the previous generation's decoded image, and prints the PSNR against the
original and the rate of every generation (`msinn_jax.reencode`). An invertible transform
should be stable: the PSNR levels off after the first generation.
"""

from __future__ import annotations

import argparse
import os

from msinn_jax.image_io import check_writable, output_format, read_rgb, write_image
from msinn_jax.jsonio import json_text
from msinn_jax.reencode import reencode
from msinn_jax.tools.common import add_model_args, cached_codec, device_scope, finite_float


def register(subparsers: argparse._SubParsersAction) -> None:
  """Adds the `reencode` sub-command."""
  p = subparsers.add_parser(
      "reencode", help="PSNR and bpp over k successive compress/decompress generations",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("input", metavar="IMAGE", help="image file")
  p.add_argument("-q", "--quality", type=finite_float, required=True,
                 help="rate: an anchor index 0..anchor_num-1, or any value in between")
  p.add_argument("-k", "--generations", type=int, default=10,
                 help="number of generations (default: %(default)s)")
  p.add_argument("-o", "--output", default=None,
                 help="optional image file (.png, .ppm, .bmp, .tif) for the last generation's "
                      "decoded image")
  p.add_argument("--json", action="store_true", help="print the results as JSON")
  add_model_args(p)
  p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  """Runs the generations and prints the table (or JSON); returns the exit code."""
  if args.output:
    output_format(args.output)  # Refuse a name we cannot write before the generations.
    check_writable(args.output, inputs=(args.input,))
  image = read_rgb(args.input)
  with device_scope(args.device):
    codec, description = cached_codec(args.checkpoint)
    generations, last = reencode(codec, image, args.quality, args.generations)
  if args.output:
    write_image(args.output, last)
  h, w, _ = image.shape
  if args.json:
    print(json_text({
        "image": args.input, "height": h, "width": w, "rate": args.quality,
        "model": description, "generations": [g.to_dict() for g in generations],
    }), end="")
    return 0
  print(f"{os.path.basename(args.input)}: {w}x{h}, rate {args.quality:g}, "
        f"{len(generations)} generations [{description}]")
  print(f"{'gen':>4} {'bpp':>9} {'est. bpp':>9} {'PSNR':>8} {'vs prev':>8} "
        f"{'enc ms':>8} {'dec ms':>8}")
  for g in generations:
    print(f"{g.index:>4} {g.bpp:9.4f} {g.estimated_bpp:9.4f} {g.psnr:8.3f} "
          f"{g.psnr_vs_previous:8.3f} {1000 * g.encode_seconds:8.0f} "
          f"{1000 * g.decode_seconds:8.0f}")
  print("(generation 1's times include JIT compilation for a new image size)")
  first, last_gen = generations[0], generations[-1]
  print(f"PSNR (dB, vs the original) generation 1 -> {last_gen.index}: "
        f"{first.psnr:.3f} -> {last_gen.psnr:.3f} ({last_gen.psnr - first.psnr:+.3f})")
  return 0
