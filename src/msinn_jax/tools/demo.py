"""`msinn demo [--out DIR] [--rates R ...]`: a first run, offline, in a few minutes on a CPU.

Compresses and decompresses sample photographs bundled with scikit-image (centre crops)
at several rates with the default model, prints the rate, quality and timing of each,
checks that the flow inverts on one of them, and writes an RD plot, the curve as
CompressAI results JSON, and the original and decoded PNGs into --out.
"""

from __future__ import annotations

import argparse
import os
import time

from msinn_jax import demo
from msinn_jax.errors import DecodeMismatchError, UserError
from msinn_jax.image_io import write_image
from msinn_jax.invertibility import InvertibilityChecker, codec_input
from msinn_jax.rd.plot import plot_rd
from msinn_jax.tools.common import add_model_args, cached_codec, device_scope, finite_float


def register(subparsers: argparse._SubParsersAction) -> None:
  """Adds the `demo` sub-command."""
  p = subparsers.add_parser(
      "demo", help="code sample images at several rates (start here)", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", default="msinn-demo",
                 help="folder for the plot, results JSON and PNGs (default: %(default)s)")
  p.add_argument("--rates", type=finite_float, nargs="+", default=None, metavar="R",
                 help="rates to code at (default: four anchors from lowest to highest)")
  p.add_argument("--size", type=int, default=256,
                 help="side of the centre crops of the samples (default: %(default)s)")
  add_model_args(p)
  p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  """Runs the demo; returns the exit code."""
  start = time.perf_counter()
  if args.size < 16:
    raise UserError(f"--size {args.size} is too small; use 16 or more")
  try:
    os.makedirs(args.out, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create {args.out}: {e}") from None
  with device_scope(args.device):
    codec, description = cached_codec(args.checkpoint)
    untrained = "UNTRAINED" in description
    _banner(description, untrained, time.perf_counter() - start)
    rates = tuple(args.rates) if args.rates else demo.default_rates(codec.config.anchor_num)
    images, note = demo.sample_images(args.size)
    if note:
      print(f"note: {note}")
    sizes = ", ".join(f"{s.name} {s.pixels.shape[1]}x{s.pixels.shape[0]}" for s in images)
    print(f"images: {sizes} (from {', '.join(dict.fromkeys(s.source for s in images))}); "
          f"rates {', '.join(f'{r:g}' for r in rates)}")

    tick = time.perf_counter()
    warm = codec.compress(images[0].pixels, rates[0])  # Compiles for this image size.
    codec.decompress(warm.data)
    print(f"compiled the codec for {images[0].pixels.shape[1]}x{images[0].pixels.shape[0]} in "
          f"{time.perf_counter() - tick:.1f} s (once per padded size)\n")
    points = demo.code_samples(codec, images, rates)
    _print_table(points)

    first = images[0]
    trip = InvertibilityChecker(codec.config, codec.variables["params"]).round_trip(
        codec_input(first.pixels, codec.config))
    print(f"\ninvertibility on {first.name} (float32, no quantisation): g_s(g_a(x)) max|err| "
          f"{trip.max_abs_error:.2e}, mean|err| {trip.mean_abs_error:.2e}, PSNR "
          f"{trip.psnr_db:.1f} dB; log-det g_a + g_s {trip.logdet_sum:.1e} (relative "
          f"{abs(trip.logdet_sum) / max(abs(trip.logdet_analysis), 1e-30):.0e})")
    print("  (run 'msinn check-invertibility IMAGE' for the per-unit report)")

  written = _write_outputs(args.out, images, points, description, untrained)
  print(f"\nwrote {len(written)} files to {args.out}/: {', '.join(written[:3])}, ...")
  if untrained:
    print("reminder: these numbers come from an UNTRAINED model; pass --checkpoint for a "
          "trained one.")
  print(f"done in {time.perf_counter() - start:.0f} s")
  mismatched = [f"{p.image} at rate {p.rate:g}" for p in points if not p.matches_encoder]
  if mismatched:  # After the table and files, so that what went wrong can be seen.
    raise DecodeMismatchError(
        f"the decoder disagreed with the encoder for {', '.join(mismatched)}")
  return 0


def _banner(description: str, untrained: bool, seconds: float) -> None:
  print(f"msinn demo: model = {description} (loaded in {seconds:.0f} s)")
  if untrained:
    rule = "!" * 78
    print(rule)
    print("!! This is the UNTRAINED model: its weights are random. The rates and")
    print("!! PSNRs below show that the codec pipeline works end to end, NOT the quality")
    print("!! MSINN reaches. Use --checkpoint with trained or converted official weights.")
    print(rule)


def _print_table(points: list[demo.DemoPoint]) -> None:
  print(f"{'image':<12} {'rate':>5} {'bpp':>9} {'est. bpp':>9} {'PSNR dB':>8} "
        f"{'enc ms':>8} {'dec ms':>8}")
  for p in points:
    flag = "" if p.matches_encoder else "  decoder != encoder!"
    print(f"{p.image:<12} {p.rate:>5g} {p.bpp:9.4f} {p.estimated_bpp:9.4f} {p.psnr:8.2f} "
          f"{p.encode_ms:8.0f} {p.decode_ms:8.0f}{flag}")


def _write_outputs(out: str, images: list[demo.SampleImage], points: list[demo.DemoPoint],
                   description: str, untrained: bool) -> list[str]:
  """Writes the plot, the mean curve and the PNGs; returns the file names written."""
  written = []

  def save_png(name, pixels):
    write_image(os.path.join(out, name), pixels)
    written.append(name)

  title = "msinn demo" + (" - UNTRAINED model (random weights)" if untrained else "")
  plot_rd(demo.rd_curves(points), os.path.join(out, "rd.png"), metrics=("psnr-rgb",),
          title=title)
  written.append("rd.png")
  name = "msinn-jax (untrained)" if untrained else "msinn-jax"
  demo.mean_curve(points, name, f"msinn demo, mean over {len(images)} images; {description}"
                  ).save(os.path.join(out, "rd.json"))
  written.append("rd.json")
  for sample in images:
    save_png(f"{sample.name}.png", sample.pixels)
  for p in points:
    save_png(f"{p.image}_rate{p.rate:g}.png", p.decoded)
  return written
