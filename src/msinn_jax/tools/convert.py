"""`msinn convert OFFICIAL.pth.tar -o CKPT_DIR`: official weights -> a checkpoint directory.

The directory is a weights-only Orbax checkpoint (step 0: `params` and the model config
as JSON, as in `msinn train`'s checkpoints but without optimizer or data state): every
command's `--checkpoint` loads it without torch, and `msinn train --set
train.init_from=DIR` starts a run from it; it is no workdir to resume.
"""

from __future__ import annotations

import argparse
import json
import os

from msinn_jax.convert import load_official
from msinn_jax.errors import UserError
from msinn_jax.train.checkpoint import Checkpointer


def register(subparsers: argparse._SubParsersAction) -> None:
  """Adds the `convert` sub-command."""
  p = subparsers.add_parser("convert", help="convert official PyTorch weights to a checkpoint")
  p.add_argument("input", help="official .pth/.pth.tar (needs torch) or parity .npz")
  p.add_argument("-o", "--output", required=True, help="new checkpoint directory")
  p.add_argument("--config", default=None,
                 help="JSON of constructor options overriding what is inferred from the "
                      "weights (e.g. '{\"spatial_context_num\": 3}')")
  p.set_defaults(func=run)


def _overrides(text: str | None) -> dict:
  """The --config JSON object (empty without one)."""
  if not text:
    return {}
  try:
    overrides = json.loads(text)
  except json.JSONDecodeError as e:
    raise UserError(f"--config is not JSON: {e}") from None
  if not isinstance(overrides, dict):
    raise UserError("--config must be a JSON object of constructor options")
  return overrides


def run(args: argparse.Namespace) -> int:
  """Converts the weights and writes the checkpoint; returns the exit code."""
  if os.path.exists(args.output) and (not os.path.isdir(args.output) or os.listdir(args.output)):
    raise UserError(f"{args.output} exists and is not an empty directory")
  overrides = _overrides(args.config)
  config, variables = load_official(args.input, overrides=overrides)
  with Checkpointer(args.output, max_to_keep=1, async_save=False) as ckpt:
    ckpt.save(0, {"params": variables["params"]}, {"model": config.to_dict()}, force=True)
  print(f"{args.input} -> {args.output}: {config}")
  return 0
