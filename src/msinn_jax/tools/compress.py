"""`msinn compress IN.png -o OUT.msinn --quality Q`."""

from __future__ import annotations

import argparse
import os

from msinn_jax.image_io import check_writable, read_rgb, write_bytes
from msinn_jax.tools.common import add_model_args, cached_codec, device_scope, finite_float


def register(subparsers: argparse._SubParsersAction) -> None:
  """Adds the `compress` sub-command."""
  p = subparsers.add_parser("compress", help="compress an image into a .msinn file")
  p.add_argument("input", help="image file (RGB; grayscale/palette converted, alpha dropped)")
  p.add_argument("-o", "--output", required=True, help="output .msinn file")
  p.add_argument("-q", "--quality", type=finite_float, required=True,
                 help="rate: an anchor index 0..anchor_num-1, or any value in between")
  add_model_args(p)
  p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  """Runs `compress`; returns the exit code."""
  check_writable(args.output, inputs=(args.input,))
  image = read_rgb(args.input)
  with device_scope(args.device):
    codec, description = cached_codec(args.checkpoint)
    result = codec.compress(image, args.quality, reconstruct=False)
  write_bytes(args.output, result.data)
  h, w, _ = image.shape
  bits = 8 * len(result.data)
  gap = 100 * (result.payload_bits / max(result.estimated_bits, 1e-9) - 1)
  print(f"{os.path.basename(args.input)} -> {args.output}: {w}x{h}, rate {args.quality:g}, "
        f"{bits / (h * w):.4f} bpp ({len(result.data)} bytes, header {result.header_bytes} B); "
        f"estimated {result.estimated_bits / (h * w):.4f} bpp, payload {gap:+.2f}% vs "
        f"estimate; {1000 * result.seconds:.0f} ms [{description}]")
  return 0
