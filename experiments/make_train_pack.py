"""Builds the compact training-data pack that GPU slots carry (`.pack/train/`).

The device machine is reached only through a 64 MiB working tree, so the 45 training
photographs of `../shared/datasets/train/` (59.8 MB of PNG) travel downscaled: every
image larger than 512x512 = 262,144 pixels (two thirds of a Kodak image) is resized with
an antialiasing (Lanczos) filter to about that many pixels, never below `--crop` on its
shorter side, and stored again as PNG: 19.4 MiB in all. (At Kodak's 393,216 pixels the
pack is 25.5 MiB, too much beside the shipped weights and optimizer state.) Downscaling
the 30 large photographs by about 2x (the 15 McMaster and USC-SIPI images are already this
small) also thins what is left of the photographs' JPEG past, a common step in preparing
training data for learned codecs. Deterministic: the same input gives the same bytes; the
shipped model was trained on the default pack.

    python experiments/make_train_pack.py                 # ../shared/datasets/train -> .pack/train
    python experiments/make_train_pack.py --src DIR --out DIR --max-pixels 200000
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys

from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_PIXELS = 512 * 512  # 262,144


def pack_image(src: pathlib.Path, dst: pathlib.Path, max_pixels: int, crop: int) -> tuple[int, int]:
  """Writes `src` downscaled to at most `max_pixels` (shorter side >= `crop`) as PNG."""
  with Image.open(src) as im:
    im = im.convert("RGB")
    w, h = im.size
    scale = min(1.0, math.sqrt(max_pixels / (w * h)))
    scale = max(scale, min(1.0, crop / min(w, h)))
    if scale < 1.0:
      im = im.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
    im.save(dst, format="PNG", optimize=True)
    return im.size


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--src", type=pathlib.Path, default=ROOT.parent / "shared" / "datasets" / "train")
  p.add_argument("--out", type=pathlib.Path, default=ROOT / ".pack" / "train")
  p.add_argument("--max-pixels", type=int, default=MAX_PIXELS)
  p.add_argument("--crop", type=int, default=256, help="training crop side (minimum side kept)")
  args = p.parse_args(argv)
  files = sorted(f for f in args.src.iterdir() if f.suffix.lower() == ".png")
  if not files:
    print(f"make_train_pack: error: no PNG images in {args.src}", file=sys.stderr)
    return 2
  args.out.mkdir(parents=True, exist_ok=True)
  total = 0
  for f in files:
    size = pack_image(f, args.out / f.name, args.max_pixels, args.crop)
    total += (args.out / f.name).stat().st_size
    print(f"{f.name}: {size[0]}x{size[1]}")
  print(f"{len(files)} images, {total / 2**20:.1f} MiB in {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
