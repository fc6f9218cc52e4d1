"""Where re-encoding drift comes from: `reencode` with and without the U-Net post-filter.

The flow is invertible, so re-encoding its own output should land on the same symbols;
the post-filter, which refines the decoded image after the inverse flow, is not. This runs
the same generations twice on one image and rate: with the model as shipped, then with the
post-filter switched off (same weights, `post_process=False`).

    python experiments/reencode_postfilter.py ../shared/datasets/kodak/kodim01.png \
        --rate 3 -k 5 --out experiments/results/cpu_slot4/reencode_postfilter_kodim01_q3.json
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

from msinn_jax.codec import Codec
from msinn_jax.image_io import read_rgb
from msinn_jax.reencode import reencode
from msinn_jax.jsonio import json_text
from msinn_jax.weights import load_model


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("image")
  parser.add_argument("--rate", type=float, default=3.)
  parser.add_argument("-k", "--generations", type=int, default=5)
  parser.add_argument("--checkpoint", default="default")
  parser.add_argument("--out", default=None, help="JSON file for the results")
  args = parser.parse_args(argv)

  loaded = load_model(args.checkpoint)
  if not loaded.config.post_process:
    raise SystemExit("error: this model has no post-filter")
  image = read_rgb(args.image)
  params = loaded.variables["params"]
  variants = {
      "with_post_filter": Codec(loaded.config, loaded.variables),
      "without_post_filter": Codec(
          dataclasses.replace(loaded.config, post_process=False),
          {"params": {k: v for k, v in params.items() if k != "post_net"}}),
  }
  result = {"image": args.image, "rate": args.rate, "model": loaded.description}
  for name, codec in variants.items():
    generations, _ = reencode(codec, image, args.rate, args.generations)
    result[name] = [g.to_dict() for g in generations]
    print(name + ":")
    for g in generations:
      print(f"  gen {g.index}: {g.bpp:.4f} bpp, {g.psnr:.3f} dB vs original, "
            f"{g.psnr_vs_previous:.2f} dB vs previous")
  if args.out:
    pathlib.Path(args.out).write_text(json_text(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
