"""`msinn convert OFFICIAL.pth.tar -o CKPT_DIR`: official weights -> a checkpoint directory.

The directory has the layout `msinn train` writes (an Orbax checkpoint with `params` and
the config as JSON), so every command's `--checkpoint` loads it without torch.
"""

from __future__ import annotations

import json

from msinn_jax.errors import UserError


def register(subparsers) -> None:
  p = subparsers.add_parser("convert", help="convert official PyTorch weights to a checkpoint")
  p.add_argument("input", help="official .pth/.pth.tar (needs torch) or parity .npz")
  p.add_argument("-o", "--output", required=True, help="new checkpoint directory")
  p.add_argument("--config", default=None,
                 help="JSON of constructor options overriding what is inferred from the "
                      "weights (e.g. '{\"spatial_context_num\": 3}')")
  p.set_defaults(func=run)


def run(args) -> int:
  import os

  from msinn_jax.config import ModelConfig
  from msinn_jax.convert import load_official
  from msinn_jax.train.checkpoint import Checkpointer

  config = None
  if args.config:
    try:
      overrides = json.loads(args.config)
    except json.JSONDecodeError as e:
      raise UserError(f"--config is not JSON: {e}") from None
    base, _ = load_official(args.input)
    config = ModelConfig.from_dict({**base.to_dict(), **overrides})
  if os.path.exists(args.output) and os.listdir(args.output):
    raise UserError(f"{args.output} exists and is not empty")
  config, variables = load_official(args.input, config)
  with Checkpointer(args.output, max_to_keep=1, async_save=False) as ckpt:
    ckpt.save(0, {"params": variables["params"]}, {"model": config.to_dict()}, force=True)
  print(f"{args.input} -> {args.output}: {config}")
  return 0
