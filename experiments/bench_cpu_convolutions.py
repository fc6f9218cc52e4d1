"""Which XLA CPU convolution kernels train fastest: one process per XLA_FLAGS setting.

Times, in each setting, one 3x3 convolution (128 -> 64 channels on [8, 64, 64, 128]) and
the U-Net post-filter (on [8, 128, 128, 3]), forward and both gradients: median of
`--runs` after one warm-up. `msinn train` uses the setting `CPU_TRAINING_XLA_FLAG`
(msinn_jax/tools/common.py); this script is how it was chosen.

    python experiments/bench_cpu_convolutions.py --out experiments/results/cpu_convolutions_avx2.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import statistics
import subprocess
import sys
import time

from host import cpu_description

SETTINGS = {
    "XLA default (YNNPACK convolutions)": "",
    "msinn train (XLA's own convolutions)":
        "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
    "oneDNN": "--xla_cpu_use_onednn=true",
    "no XNNPACK": "--xla_cpu_use_xnnpack=false",
}


def _measure(runs: int) -> dict[str, float]:
  """Milliseconds per call of each timed function, in this process's XLA setting."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from msinn_jax.postfilter import UNetPost  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  image = rng.random((8, 128, 128, 3), np.float32)
  post = UNetPost()
  params = post.init(jax.random.key(0), image)
  features = rng.random((8, 64, 64, 128), np.float32)
  kernel = rng.standard_normal((3, 3, 128, 64), np.float32) * 0.05

  def conv(w, x):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return (y ** 2).sum()

  def post_loss(p, x):
    return (post.apply(p, x) ** 2).mean()

  cases = {
      "conv_forward": (jax.jit(conv), (kernel, features)),
      "conv_gradients": (jax.jit(jax.grad(conv, (0, 1))), (kernel, features)),
      "postfilter_forward": (jax.jit(post.apply), (params, image)),
      "postfilter_gradients": (jax.jit(jax.grad(post_loss)), (params, image)),
  }
  out = {}
  for name, (fn, args) in cases.items():
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(runs):
      t = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times.append(time.perf_counter() - t)
    out[name] = round(1e3 * statistics.median(times), 1)
  return out


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--out", default=None, help="JSON path (default: print only)")
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:  # One setting, in the XLA_FLAGS this process was started with.
    print(json.dumps(_measure(args.runs)))
    return 0
  result = {"host": cpu_description(), "runs": args.runs, "ms_median": {}, "xla_flags": {}}
  for name, flags in SETTINGS.items():
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, __file__, "--child", "--runs", str(args.runs)],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode:
      print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
      return 1
    result["ms_median"][name] = json.loads(done.stdout.strip().splitlines()[-1])
    result["xla_flags"][name] = flags
    print(name, result["ms_median"][name], flush=True)
  import jax  # pylint: disable=import-outside-toplevel
  result["jax"] = jax.__version__
  result["command"] = shlex.join(["python", "experiments/bench_cpu_convolutions.py",
                                *(argv if argv is not None else sys.argv[1:])])
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
