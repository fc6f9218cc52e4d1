"""Wall time of whole `msinn compress` / `msinn decompress` (and `msinn train`) commands,
with and without the persistent compilation cache (`MSINN_COMPILATION_CACHE`, see
`msinn_jax.tools.common`).

Each command is a fresh process, as a user runs it: import, weights, compile (or load the
compiled programs from the cache), work. Per command: `--runs` runs with the cache off,
then one run that fills an empty cache (one per command) and `--runs` that read it;
medians of each.

  python experiments/bench_cli.py --image ../shared/datasets/kodak/kodim01.png \
      --out experiments/results/bench_cli_cpu_avx2.json

`--commands train --train-folder DIR` times a short `msinn train` of the smoke
configuration the same way (12 steps of 32x32 crops, a checkpoint every 4, each run in a
new workdir so that none resumes):

  python experiments/bench_cli.py --commands train --train-folder .pack/train --runs 1 \
      --out experiments/results/bench_cli_train_cpu.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from host import cpu_description


TRAIN_SETTINGS = ("train.num_steps=12", "train.per_device_batch_size=8",
                  "checkpoint.every_steps=4", "data.crop_size=32", "train.log_every_steps=1",
                  "data.prefetch=1", "data.num_workers=1")


def _time(argv: list[str], env: dict[str, str]) -> float:
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "msinn_jax.cli", *argv], env=env, check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--image", help="the image to compress (compress, decompress)")
  parser.add_argument("--commands", default="compress,decompress",
                      help="comma-separated, from compress, decompress, train")
  parser.add_argument("--rate", default="5")
  parser.add_argument("--checkpoint", default="default")
  parser.add_argument("--device", default="cpu", help="compress and decompress's --device "
                      "(train takes JAX's default backend; set JAX_PLATFORMS to choose)")
  parser.add_argument("--runs", type=int, default=2)
  parser.add_argument("--train-folder", help="training images (train)")
  parser.add_argument("--out", type=pathlib.Path)
  args = parser.parse_args()
  known = ("compress", "decompress", "train")  # In the order they run.
  requested = set(args.commands.split(","))
  if unknown := requested - set(known):
    parser.error(f"unknown commands: {sorted(unknown)}")
  names = [name for name in known if name in requested]
  if "decompress" in names and "compress" not in names:
    parser.error("decompress needs compress before it (it decodes compress's file)")
  if "compress" in names and not args.image:
    parser.error("compress needs --image")
  if "train" in names and not args.train_folder:
    parser.error("train needs --train-folder")

  work = pathlib.Path(tempfile.mkdtemp(prefix="bench-cli-"))
  stream, decoded = work / "a.msinn", work / "a.png"
  common = ["--checkpoint", args.checkpoint, "--device", args.device]
  runs = itertools.count()  # A new workdir for every training run, so that none resumes.
  config = pathlib.Path(__file__).with_name("configs") / "smoke.py"
  argvs = {
      "compress": lambda: ["compress", args.image, "-o", str(stream), "-q", args.rate, *common],
      "decompress": lambda: ["decompress", str(stream), "-o", str(decoded), *common],
      "train": lambda: ["train", "--config", str(config), "--workdir",
                        str(work / f"train-{next(runs)}"),
                        "--set", f"data.folder={args.train_folder}", *TRAIN_SETTINGS],
  }
  commands = {name: argvs[name] for name in names}
  base = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  off = {**base, "MSINN_COMPILATION_CACHE": "off"}
  times: dict[str, dict[str, list[float]]] = {}
  for name, argv in commands.items():
    times[name] = {"off": [_time(argv(), off) for _ in range(args.runs)]}
    on = {**base, "MSINN_COMPILATION_CACHE": str(work / f"cache-{name}")}
    times[name]["first_with_empty_cache"] = [_time(argv(), on)]
    times[name]["cached"] = [_time(argv(), on) for _ in range(args.runs)]
  result = {
      "device": args.device,
      "host": cpu_description(),
      "image": pathlib.Path(args.image).name if args.image else None,
      "rate": args.rate,
      "checkpoint": args.checkpoint,
      "train": ({"config": "experiments/configs/smoke.py", "folder": args.train_folder,
                 "settings": list(TRAIN_SETTINGS)} if "train" in names else None),
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
