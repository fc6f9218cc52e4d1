"""Training throughput (images/s) and peak memory of one optimizer step.

Builds the run's compiled init and step exactly as `msinn train` does (same mesh over
all devices, state replicated and donated, batch on "data"), feeds random uint8 crops
(the data pipeline is not measured), and reports the compile time separately, then the
median over `--steps` timed steps after `--warmup` untimed ones. Peak memory is the
device allocator's `peak_bytes_in_use` where the backend reports it (GPU, TPU), else the
peak resident memory of this process (CPU). Writes a JSON into experiments/results/.

    python experiments/bench_train.py                        # paper model, batch 8, 256x256
    python experiments/bench_train.py --config smoke         # tiny model, for CPUs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import resource
import shlex
import statistics
import sys
import time

import jax
import numpy as np

from host import cpu_description
from msinn_jax.tools.common import use_xla_convolutions_on_cpu
from msinn_jax.train import config as config_lib
from msinn_jax.train import mesh as mesh_lib
from msinn_jax.train import train_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"


def _config_path(name: str) -> pathlib.Path:
  path = pathlib.Path(name)
  return path if path.suffix == ".py" else CONFIGS / f"{name}.py"


def _peak_memory(devices: list[jax.Device]) -> tuple[int, str]:
  stats = [d.memory_stats() for d in devices]
  if all(s and "peak_bytes_in_use" in s for s in stats):
    return max(s["peak_bytes_in_use"] for s in stats), "device peak_bytes_in_use (max over devices)"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host peak RSS (ru_maxrss)"


# Dense peak throughput (TFLOP/s) and memory bandwidth (TB/s) of the cards we run on,
# from NVIDIA's data sheets (SXM parts; the H200 has the H100's compute, more and faster
# memory). TF32 is what float32 convolutions run at under the "default" precision.
CARDS = {
    "H100": {"tf32_tflops": 494.7, "bf16_tflops": 989.4, "fp32_tflops": 66.9, "hbm_tbps": 3.35},
    "H200": {"tf32_tflops": 494.7, "bf16_tflops": 989.4, "fp32_tflops": 66.9, "hbm_tbps": 4.8},
}


def _roofline(compiled, device: jax.Device, step_s: float, num_devices: int,
              precision: str) -> dict:
  """XLA's FLOP and byte counts of the step, and how far the step is from the card's
  compute- and memory-bound limits (a roofline lower bound on the step time)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
  flops, nbytes = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
  out = {"xla_flops_per_step": flops, "xla_bytes_per_step": nbytes,
         "achieved_tflops": flops * num_devices / step_s / 1e12 if flops else None}
  card = next((v for k, v in CARDS.items() if k in device.device_kind), None)
  if card and flops:
    peak = card["fp32_tflops"] if precision == "highest" else card["tf32_tflops"]
    compute_s = flops / (peak * 1e12)
    memory_s = nbytes / (card["hbm_tbps"] * 1e12)
    out.update({"card": card, "compute_bound_s": compute_s, "memory_bound_s": memory_s,
                "roofline_s": max(compute_s, memory_s),
                "step_over_roofline": step_s / max(compute_s, memory_s)})
  return out


def compiled_step(config_name: str, overrides: list[str], batch_size: int, crop: int):
  """The run's compiled step as `msinn train` builds it, a state and its other inputs.

  Returns:
    (config, step, state, inputs, init_s, compile_s): `step(state, *inputs)` compiled for
    exactly these arguments (call it under the same `jax.default_matmul_precision` as
    this); `inputs` a random batch, the run's key and the first step's learning rate;
    `init_s` the state's init including its compile, `compile_s` the step's compile.
  """
  config = config_lib.apply_overrides(config_lib.load_config_file(_config_path(config_name)),
                                      overrides)
  num_devices = len(jax.devices())
  config = dataclasses.replace(
      config, data=dataclasses.replace(config.data, crop_size=crop),
      train=dataclasses.replace(config.train, per_device_batch_size=batch_size // num_devices))
  mesh = mesh_lib.make_mesh()
  trainer = train_lib.build_trainer(config, mesh)
  batch_np = np.random.default_rng(0).integers(0, 256, (batch_size, crop, crop, 3),
                                               dtype=np.uint8)
  batch = mesh_lib.host_to_global(batch_np, mesh)
  inputs = (batch, train_lib.replicated_key(0, 1, mesh),
            train_lib.replicated_scalar(trainer.schedule(0), mesh))
  t = time.perf_counter()
  init = trainer.init.lower(train_lib.replicated_key(0, 0, mesh), batch).compile()
  state = jax.block_until_ready(init(train_lib.replicated_key(0, 0, mesh), batch))
  init_s = time.perf_counter() - t
  t = time.perf_counter()
  step = trainer.step.lower(state, *inputs).compile()
  return config, step, state, inputs, init_s, time.perf_counter() - t


def add_step_arguments(p: argparse.ArgumentParser) -> None:
  """The arguments of `compiled_step` (--config, --batch, --crop, --set, --precision)."""
  p.add_argument("--config", default="default",
                 help="config name in experiments/configs or a .py path (default: %(default)s)")
  p.add_argument("--batch", type=int, default=8, help="global batch (default: %(default)s)")
  p.add_argument("--crop", type=int, default=256, help="crop side (default: %(default)s)")
  p.add_argument("--set", nargs="+", action="extend", default=[], dest="overrides",
                 metavar="KEY=VALUE", help="config overrides, as for msinn train")
  p.add_argument("--precision", choices=("default", "high", "highest"), default="default",
                 help="jax.default_matmul_precision of the step: on NVIDIA GPUs 'default' "
                 "lets float32 convolutions use TF32, 'highest' does not (default: "
                 "%(default)s)")
  p.add_argument("--ynn-convolutions", action="store_true",
                 help="on CPU, keep XLA's default YNNPACK convolution kernels, which msinn "
                 "train turns off (msinn_jax.tools.common.use_xla_convolutions_on_cpu)")


def use_training_flags(args: argparse.Namespace) -> None:
  """The XLA flags `msinn train` sets (before JAX starts its backends), unless opted out."""
  if not args.ynn_convolutions:
    use_xla_convolutions_on_cpu()


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_step_arguments(p)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--steps", type=int, default=5, help="timed steps")
  p.add_argument("--note", default="", help="free text stored in the JSON")
  p.add_argument("--out", default=None, help="JSON path (default experiments/results/...)")
  args = p.parse_args(argv)
  use_training_flags(args)

  devices = jax.devices()
  if args.batch % len(devices):
    p.error(f"--batch {args.batch} does not split over {len(devices)} devices")
  with jax.default_matmul_precision(args.precision):  # Traced, hence compiled, in it.
    config, step, state, inputs, init_s, compile_s = compiled_step(
        args.config, args.overrides, args.batch, args.crop)
    times = []
    for i in range(args.warmup + args.steps):
      t = time.perf_counter()
      state, metrics = step(state, *inputs)
      jax.block_until_ready((state, metrics))
      if i >= args.warmup:
        times.append(time.perf_counter() - t)
  assert np.isfinite(float(metrics["loss"])), "the benchmark step diverged"
  peak, peak_source = _peak_memory(devices)
  median = statistics.median(times)
  device = devices[0]
  roofline = _roofline(step, device, median, len(devices), args.precision)
  result = {
      "device": f"{device.platform}: {device.device_kind}",
      "num_devices": len(devices),
      "host": cpu_description(),
      "config": str(_config_path(args.config).relative_to(ROOT))
                if _config_path(args.config).is_relative_to(ROOT) else args.config,
      "overrides": args.overrides,
      "model": config.model.to_dict(),
      "global_batch": args.batch,
      "crop": args.crop,
      "init_s_incl_compile": init_s,
      "step_compile_s": compile_s,
      "warmup_steps": args.warmup,
      "timed_steps": args.steps,
      "step_s_median": median,
      "step_s_all": times,
      "images_per_sec": args.batch / median,
      "peak_memory_bytes": peak,
      "peak_memory_source": peak_source,
      "precision": args.precision,
      **roofline,
      "jax": jax.__version__,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "note": args.note,
      "command": shlex.join(["python", "experiments/bench_train.py", *(argv or sys.argv[1:])]),
  }
  name = pathlib.Path(args.config).stem
  out = args.out or ROOT / "experiments" / "results" / f"bench_train_{name}_{device.platform}.json"
  pathlib.Path(out).write_text(json.dumps(result, indent=2) + "\n")
  print(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
