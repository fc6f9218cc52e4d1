"""`msinn decompress IN.msinn -o OUT.png` (or .ppm, .bmp, .tif: lossless formats only)."""

from __future__ import annotations

import argparse

from msinn_jax.image_io import (OUTPUT_FORMATS, check_writable, output_format, read_bytes,
                                write_image)
from msinn_jax.tools.common import add_model_args, cached_codec, device_scope


def register(subparsers: argparse._SubParsersAction) -> None:
  """Adds the `decompress` sub-command."""
  p = subparsers.add_parser("decompress",
                            help="decode a .msinn file into a PNG (or another lossless format)")
  p.add_argument("input", help=".msinn file")
  p.add_argument("-o", "--output", required=True,
                 help="output image; its extension picks the (lossless) format: "
                      + ", ".join(OUTPUT_FORMATS))
  add_model_args(p)
  p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  """Runs `decompress`; returns the exit code."""
  output_format(args.output)  # Refuse a name we cannot write before decoding.
  check_writable(args.output, inputs=(args.input,))
  data = read_bytes(args.input)
  with device_scope(args.device):
    codec, description = cached_codec(args.checkpoint)
    result = codec.decompress(data)
  write_image(args.output, result.image)
  h, w, _ = result.image.shape
  print(f"{args.input} -> {args.output}: {w}x{h}, rate {result.rate:g}, "
        f"{8 * len(data) / (h * w):.4f} bpp, {1000 * result.seconds:.0f} ms "
        f"[{description}]")
  return 0
