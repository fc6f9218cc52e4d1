"""Wall time of whole `msinn compress` / `msinn decompress` commands, with and without the
persistent compilation cache (`MSINN_COMPILATION_CACHE`, see `msinn_jax.tools.common`).

Each command is a fresh process, as a user runs it: import, weights, compile (or load the
compiled programs from the cache), code. Per command: `--runs` runs with the cache off,
then one run that fills an empty cache (one per command) and `--runs` that read it;
medians of each.

  python experiments/bench_cli.py --image ../shared/datasets/kodak/kodim01.png \
      --out experiments/results/bench_cli_cpu_avx2.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from host import cpu_description


def _time(argv: list[str], env: dict[str, str]) -> float:
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "msinn_jax.cli", *argv], env=env, check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--image", required=True)
  parser.add_argument("--rate", default="5")
  parser.add_argument("--checkpoint", default="default")
  parser.add_argument("--device", default="cpu")
  parser.add_argument("--runs", type=int, default=2)
  parser.add_argument("--out", type=pathlib.Path)
  args = parser.parse_args()

  work = pathlib.Path(tempfile.mkdtemp(prefix="bench-cli-"))
  stream, decoded = work / "a.msinn", work / "a.png"
  commands = {
      "compress": ["compress", args.image, "-o", str(stream), "-q", args.rate],
      "decompress": ["decompress", str(stream), "-o", str(decoded)],
  }
  base = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  off = {**base, "MSINN_COMPILATION_CACHE": "off"}
  common = ["--checkpoint", args.checkpoint, "--device", args.device]
  times: dict[str, dict[str, list[float]]] = {}
  for name, argv in commands.items():
    argv = argv + common
    times[name] = {"off": [_time(argv, off) for _ in range(args.runs)]}
    on = {**base, "MSINN_COMPILATION_CACHE": str(work / f"cache-{name}")}
    times[name]["first_with_empty_cache"] = [_time(argv, on)]
    times[name]["cached"] = [_time(argv, on) for _ in range(args.runs)]
  result = {
      "device": args.device,
      "host": cpu_description(),
      "image": pathlib.Path(args.image).name,
      "rate": args.rate,
      "checkpoint": args.checkpoint,
      "runs": args.runs,
      "seconds": times,
      "median_s": {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()},
      "cache_entries": {n: len(list((work / f"cache-{n}").glob("*-cache"))) for n in commands},
      "command": " ".join(["python", "experiments/bench_cli.py", *sys.argv[1:]]),
  }
  text = json.dumps(result, indent=2) + "\n"
  print(text)
  if args.out:
    args.out.write_text(text)


if __name__ == "__main__":
  main()
