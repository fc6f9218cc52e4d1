"""Arguments and set-up shared by the command-line tools."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
from typing import Any

import jax

from msinn_jax.errors import UserError


def add_model_args(parser: argparse.ArgumentParser) -> None:
  """Adds --checkpoint and --device, which every tool that runs the model takes."""
  parser.add_argument(
      "--checkpoint", default="default",
      help="a `msinn train` workdir or checkpoint directory, official .pth/.pth.tar, a "
           "weights .npz, 'default' (the model shipped in the package; its card says how "
           "far it is trained) or 'untrained' (default: %(default)s)")
  parser.add_argument("--device", choices=("cpu", "gpu", "tpu"), default=None,
                      help="device to run the networks on (default: JAX's default)")


def device_scope(name: str | None):
  """A context placing computations on the named platform."""
  if name is None:
    return contextlib.nullcontext()
  try:
    devices = jax.devices(name)
  except RuntimeError:
    raise UserError(f"no {name} device is available here") from None
  return jax.default_device(devices[0])


@functools.lru_cache(maxsize=2)
def cached_codec(spec: str | None):
  """(codec, description) for a checkpoint spec; reused within one process so that
  repeated calls (tests, sweeps) compile once."""
  from msinn_jax.codec import Codec
  from msinn_jax.weights import load_model
  loaded = load_model(spec)
  return Codec(loaded.config, loaded.variables), loaded.description


def finite_float(text: str) -> float:
  """argparse type: a finite number (NaN, which every comparison lets through, is not)."""
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
  if not math.isfinite(value):
    raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
  return value


def positive_float(text: str) -> float:
  """argparse type: a finite number > 0."""
  value = finite_float(text)
  if value <= 0:
    raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
  return value


def json_text(value: Any) -> str:
  """`value` as indented, strictly valid JSON text ending in a newline.

  JSON has no NaN or infinity; the tools' reports can hold both (an exact round trip has
  an infinite PSNR, a diverged one a NaN error), so every non-finite float, nested in
  dicts, lists or tuples, is written as null. The one JSON writer of the tools.
  """
  return json.dumps(_finite_or_none(value), indent=2, allow_nan=False) + "\n"


def _finite_or_none(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _finite_or_none(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_finite_or_none(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value
