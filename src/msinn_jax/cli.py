"""The `msinn` command line: one sub-command per module of `msinn_jax.tools`.

Each tool module exposes `register(subparsers)`, which adds its sub-command and sets
`func` to a callable taking the parsed namespace and returning an exit code. Errors a
user can cause (bad files, bad arguments) are raised as `msinn_jax.errors.UserError`
and printed as one line, with exit status 2; a decoder that disagrees with its encoder
(`DecodeMismatchError`) is one line with exit status 1; nothing else is swallowed.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
import warnings

from msinn_jax.errors import DecodeMismatchError, UserError
from msinn_jax.tools.common import enable_compilation_cache

# Order is the order of `msinn --help`.
TOOLS = (
    "demo",
    "compress",
    "decompress",
    "eval",
    "bd_rate",
    "plot",
    "check_invertibility",
    "reencode",
    "train",
    "convert",
)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="msinn", description="MSINN variable-rate learned image codec (JAX/Flax).")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name in TOOLS:
    importlib.import_module(f"msinn_jax.tools.{name}").register(sub)
  return parser


def _show_warning(command, default, message, category, filename, lineno, file=None,
                  line=None):
  """Our own notices (an alpha channel dropped, an unreadable file skipped) as one line
  `msinn CMD: warning: ...`; other libraries' warnings as Python shows them."""
  if issubclass(category, UserWarning) and f"{os.sep}msinn_jax{os.sep}" in filename:
    print(f"msinn {command}: warning: {message}", file=sys.stderr if file is None else file)
  else:
    default(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if not getattr(args, "func", None):
    parser.print_help()
    return 1
  try:
    with warnings.catch_warnings():
      warnings.showwarning = functools.partial(_show_warning, args.command,
                                               warnings.showwarning)
      if hasattr(args, "device"):  # A command that runs the model (`add_model_args`).
        enable_compilation_cache(args.device)
      return int(args.func(args) or 0)
  except UserError as e:
    print(f"msinn {args.command}: error: {e}", file=sys.stderr)
    return 2
  except DecodeMismatchError as e:
    print(f"msinn {args.command}: failed: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print(f"msinn {args.command}: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
