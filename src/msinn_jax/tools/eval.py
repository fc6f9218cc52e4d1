"""`msinn eval`: rate-distortion sweep of a model over a dataset, as CompressAI JSON.

  msinn eval data/kodak --checkpoint runs/anchor8 --rates all -o kodak.json
  msinn eval tfds:clic:test --rates 0,3.5,7 --estimate-only --per-image -o clic.json

DATASET is an image folder (searched recursively) or a prepared TFDS dataset
`tfds:NAME[:SPLIT]` (split "test" by default; nothing is downloaded). Every image is
read before any is coded, and one that cannot be read (damaged, 16-bit) stops the sweep
there, the error counting all such files and naming the first five. Each image is
coded whole (zero-padded to the model's multiple) at every rate: real `.msinn`
bitstreams by default (bpp from the file size, header included; the decoder's output is
checked against the encoder's), or with --estimate-only the jitted evaluation forward
(bpp from the model's likelihoods). PSNR and MS-SSIM are measured on 8-bit RGB. See
`msinn_jax.eval_lib` for the JSON layout; `msinn plot` and `msinn bd-rate` read it.
"""

from __future__ import annotations

import argparse
import functools
import pathlib

from msinn_jax import eval_lib
from msinn_jax.image_io import check_writable, write_bytes
from msinn_jax.jsonio import json_text
from msinn_jax.tools.common import add_model_args, cached_codec, device_scope


def register(subparsers: argparse._SubParsersAction) -> None:
  """Adds the `eval` sub-command."""
  p = subparsers.add_parser(
      "eval", help="RD sweep over a dataset (bpp, PSNR, MS-SSIM, times) as CompressAI JSON",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("dataset", metavar="DATASET",
                 help="image folder, or tfds:NAME[:SPLIT] (a prepared TFDS dataset)")
  p.add_argument("--rates", default="all",
                 help="'all' (every anchor), numbers like 0,3.5,7, or both: 'all,0.5' "
                      "(default: %(default)s)")
  p.add_argument("--estimate-only", action="store_true",
                 help="estimate bits with the jitted forward instead of coding bitstreams")
  p.add_argument("--per-image", action="store_true",
                 help="also write each image's values (under 'per_image')")
  p.add_argument("--name", default=None,
                 help="curve name in the JSON (default: msinn-jax, or msinn-jax-estimate)")
  p.add_argument("-o", "--output", default=None, metavar="FILE",
                 help="results JSON to write (default: print the table only)")
  p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  add_model_args(p)
  p.set_defaults(func=run)


@functools.lru_cache(maxsize=2)
def _cached_evaluator(spec: str | None) -> tuple[eval_lib.Evaluator, str]:
  """(evaluator, model description), reused within one process so that its compiled
  forward is too."""
  codec, description = cached_codec(spec)
  return eval_lib.Evaluator(codec), description


def run(args: argparse.Namespace) -> int:
  """Runs the sweep, prints the table, writes the JSON; returns the exit code."""
  output = pathlib.Path(args.output) if args.output else None
  if output is not None:  # Before the sweep, which can take an hour.
    check_writable(output)
  images, names = eval_lib.open_dataset(args.dataset)
  with device_scope(args.device):
    evaluator, model_description = _cached_evaluator(args.checkpoint)
    rates = eval_lib.parse_rates(args.rates, evaluator.codec.config.anchor_num)
    name = args.name or ("msinn-jax-estimate" if args.estimate_only else "msinn-jax")
    results = evaluator.evaluate(
        images, rates, names=names, estimate_only=args.estimate_only,
        per_image=args.per_image, progress=not args.no_progress, name=name,
        description=f"Model: {model_description}. Dataset: {args.dataset}.")
  results["settings"]["dataset"] = args.dataset
  print(eval_lib.format_table(results))
  if output is not None:
    write_bytes(output, json_text(results).encode())
    print(f"wrote {output}")
  return 0
