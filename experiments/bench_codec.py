"""Encode/decode speed of the codec on one 768x512 image (Kodak kodim01 by default).

Reports compile time separately (first call per padded shape), then the median over
`--runs` timed calls of compress and decompress, and the part of each spent in host
entropy coding. Compress is timed as `msinn compress` and the official `compress` run it
(`reconstruct=False`: no decoded image), and also returning the decoder's image, which the
evaluation sweeps use. Writes a JSON next to the others in experiments/results/.

    python experiments/bench_codec.py                       # default device, parity weights
    python experiments/bench_codec.py --device cpu --checkpoint ckpt_dir
    python experiments/bench_codec.py --random paper --image .pack/kodim01.png   # GPU slot

`--random paper` times the paper configuration with deterministic random weights (the
speed of the networks does not depend on the weights; the entropy coder's a little, on
the bit rate, which is reported). The decoder is checked to reproduce the encoder's
reconstruction on every run, and both encoders to write the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import jax
import numpy as np

from host import cpu_description
from msinn_jax.codec import Codec
from msinn_jax.config import PAPER
from msinn_jax.image_io import read_rgb
from msinn_jax.tools.common import device_scope
from msinn_jax.weights import LoadedModel, load_model, untrained_params

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURE = SHARED / "reference" / "parity" / "msinn_kodim01_256_seed0.npz"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--image", default=str(SHARED / "datasets" / "kodak" / "kodim01.png"))
  p.add_argument("--checkpoint", default=str(FIXTURE) if FIXTURE.exists() else None,
                 help="weights (default: the paper-size parity fixture, else built-in)")
  p.add_argument("--random", choices=("paper",), default=None,
                 help="time the paper configuration with random weights instead")
  p.add_argument("--precision", choices=("default", "high", "highest"), default="default",
                 help="jax.default_matmul_precision of the networks (default: %(default)s)")
  p.add_argument("--rate", type=float, default=3.0)
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--device", default=None)
  p.add_argument("--out", default=None, help="JSON path (default experiments/results/...)")
  args = p.parse_args(argv)

  with device_scope(args.device), jax.default_matmul_precision(args.precision):
    device = jax.devices(args.device)[0] if args.device else jax.devices()[0]
    if args.random == "paper":
      loaded = LoadedModel(PAPER, {"params": untrained_params(PAPER)},
                           "paper configuration, random weights (weights.untrained_params)")
    else:
      loaded = load_model(args.checkpoint)
    codec = Codec(loaded.config, loaded.variables)
    img = read_rgb(args.image)
    t = time.perf_counter()
    enc = codec.compress(img, args.rate)
    codec.decompress(enc.data)
    first = time.perf_counter() - t
    enc_t, rec_t, dec_t, enc_c, dec_c, matches = [], [], [], [], [], []
    for _ in range(args.runs):
      e = codec.compress(img, args.rate, reconstruct=False)
      t = time.perf_counter()  # The whole call: `r.seconds` stops when the bytes are ready.
      r = codec.compress(img, args.rate)
      rec_t.append(time.perf_counter() - t)
      d = codec.decompress(e.data)
      matches.append(r.data == e.data and bool(np.array_equal(d.image, r.reconstruction)))
      enc_t.append(e.seconds), enc_c.append(e.coding_seconds)
      dec_t.append(d.seconds), dec_c.append(d.coding_seconds)
  h, w, _ = img.shape
  result = {
      "device": f"{device.platform}: {device.device_kind}",
      "host": cpu_description(),
      "model": loaded.description,
      "config": loaded.config.to_dict(),
      "image": f"{os.path.basename(args.image)} {w}x{h}",
      "rate": args.rate,
      "bpp": 8 * len(enc.data) / (h * w),
      "runs": args.runs,
      "precision": args.precision,
      "decoder_matches_encoder": all(matches),
      "peak_device_memory_bytes": (device.memory_stats() or {}).get("peak_bytes_in_use"),
      "first_call_s_incl_compile": first,
      "encode_ms_median": 1000 * statistics.median(enc_t),
      "encode_with_reconstruction_ms_median": 1000 * statistics.median(rec_t),
      "decode_ms_median": 1000 * statistics.median(dec_t),
      "entropy_encode_ms_median": 1000 * statistics.median(enc_c),
      "entropy_decode_ms_median": 1000 * statistics.median(dec_c),
      "jax": jax.__version__,
      "command": "python experiments/bench_codec.py " + " ".join(argv or sys.argv[1:]),
  }
  out = args.out or ROOT / "experiments" / "results" / f"bench_codec_{device.platform}.json"
  pathlib.Path(out).write_text(json.dumps(result, indent=2) + "\n")
  print(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
