"""`msinn train`: train (or resume, or fine-tune) a model from a config file.

  msinn train --config experiments/configs/smoke.py --workdir /tmp/smoke
  msinn train --config experiments/configs/default.py --workdir runs/anchor8 \\
      --set data.folder=/data/flickr2w/train
  msinn train --config experiments/configs/finetune.py --workdir runs/anchor12 \\
      --set train.init_from=runs/anchor8/checkpoints --set data.folder=/data/flickr2w/train

A workdir that already holds checkpoints is resumed from the newest one; with
`--time-limit SECONDS` the run stops in time, saves and exits 0, to be resumed by the
same command (preemptible jobs, short GPU slots). Several
processes (one per host) run the same command with
`--set distributed.coordinator_address=HOST:PORT distributed.num_processes=N
distributed.process_id=I`, or `distributed.auto_detect=True` on TPU pods and SLURM.
Compiled programs go to the same persistent cache as the other commands' (README), so a
restarted run on GPU or TPU loads its training step instead of compiling it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from msinn_jax.errors import UserError
from msinn_jax.tools.common import (enable_compilation_cache, positive_float,
                                    use_xla_convolutions_on_cpu)
from msinn_jax.train import config as config_lib


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The options shared by `msinn train` and `experiments/train.py`."""
  parser.add_argument("--config", required=True, metavar="FILE",
                      help="Python config file defining get_config() "
                      "(e.g. experiments/configs/smoke.py)")
  parser.add_argument("--workdir", required=True, metavar="DIR",
                      help="output folder: checkpoints/ and metrics.jsonl; resumed if it "
                      "holds checkpoints")
  parser.add_argument("--set", nargs="+", action="extend", default=[], dest="overrides",
                      metavar="KEY=VALUE",
                      help="override config fields, e.g. train.num_steps=20 "
                      "optim.lr_drops='(0.9, 0.96)' (repeatable)")
  parser.add_argument("--time-limit", type=positive_float, default=None, metavar="SECONDS",
                      help="stop (and save) before this many seconds have passed; "
                      "the same command resumes")
  parser.add_argument("--print-config", action="store_true",
                      help="print the resolved config as JSON and exit")


def register(subparsers: argparse._SubParsersAction) -> None:
  """Adds the `train` sub-command."""
  p = subparsers.add_parser(
      "train", help="train a model (R + lambda D, data-parallel, resumable)",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  add_arguments(p)
  p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> config_lib.ExperimentConfig:
  """The config file with the command-line overrides applied."""
  return config_lib.apply_overrides(config_lib.load_config_file(args.config), args.overrides)


def run(args: argparse.Namespace) -> int:
  """Trains; returns the exit code."""
  config = resolve_config(args)
  if args.print_config:
    print(json.dumps(config_lib.to_dict(config), indent=2))
    return 0
  if os.path.exists(args.workdir) and not os.path.isdir(args.workdir):
    raise UserError(f"--workdir {args.workdir} is a file; give a folder (new or a run's)")
  # Imported late: `--print-config` needs no model, optimizer or Orbax.
  from msinn_jax.train import train_lib
  # The library's own messages (start, resume, fine-tune) on stderr; not Orbax's.
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
  logger = logging.getLogger("msinn_jax")
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False
  # Both before anything asks JAX for its backends: the CPU kernels' flag, and a
  # multi-process start-up (the compile cache picks its folder by platform).
  use_xla_convolutions_on_cpu()
  train_lib.initialize_distributed(config)
  enable_compilation_cache(None)
  try:
    train_lib.train(config, args.workdir, time_limit_s=args.time_limit)
  except train_lib.NonFiniteLossError as e:
    raise UserError(str(e)) from None
  return 0
