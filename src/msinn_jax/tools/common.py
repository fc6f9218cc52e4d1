"""Arguments and set-up shared by the command-line tools."""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import math
import os
import pathlib
from collections.abc import Mapping

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


# XLA's CPU backend hands every convolution to YNNPACK. For the gradient convolutions of a
# training step those kernels were 2.5-3.4x slower than XLA's own on a 2-core AVX2 EPYC: the
# compact model's step took 9.1 s, 4.25 s without them (experiments/results/
# cpu_training_convolutions_avx2.json). Training opts out; the codec does not, because a
# bitstream must be decoded with the kernels that encoded it (docs/bitstream.md, section 7).
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
CPU_TRAINING_XLA_FLAG = f"{YNN_FLAG}=-individual_convolution"
# XLA aborts on a flag it does not know, and this one is experimental: only the jaxlib
# releases it was measured with get it.
YNN_FLAG_JAXLIB = ("0.10.2",)


def use_xla_convolutions_on_cpu(environ: dict[str, str] | None = None,
                                jaxlib_version: str | None = None) -> bool:
  """Adds `CPU_TRAINING_XLA_FLAG` to XLA_FLAGS; returns whether it did.

  Not when XLA_FLAGS sets the YNN option already (the user's choice stands) or jaxlib is
  not one of `YNN_FLAG_JAXLIB`. Only CPU compilations read the flag. Call it before JAX
  starts its backends (importing JAX is fine).
  """
  environ = os.environ if environ is None else environ
  if jaxlib_version is None:
    import jaxlib  # pylint: disable=import-outside-toplevel
    jaxlib_version = jaxlib.__version__
  flags = environ.get("XLA_FLAGS", "")
  if YNN_FLAG in flags or jaxlib_version not in YNN_FLAG_JAXLIB:
    return False
  environ["XLA_FLAGS"] = f"{flags} {CPU_TRAINING_XLA_FLAG}".strip()
  return True


CACHE_ENV = "MSINN_COMPILATION_CACHE"


def compilation_cache_dir(platform: str, environ: Mapping[str, str]) -> pathlib.Path | None:
  """Where a model-running command keeps its compiled programs between runs, or None.

  JAX's persistent compilation cache, so that a second run on the same image size loads
  the codec's programs instead of compiling them again. `MSINN_COMPILATION_CACHE=DIR`
  names the folder and `=off` turns it off. Otherwise it is on for GPU and TPU, in
  `$XDG_CACHE_HOME/msinn-jax/jax` (`~/.cache/msinn-jax/jax`), and off on the CPU, where
  XLA rejects the cached programs on some processors, logging an error line each time
  (jax-ml/jax#38445).
  """
  value = environ.get(CACHE_ENV, "")
  if value.lower() == "off":
    return None
  if value:
    return pathlib.Path(value).expanduser()
  if platform not in ("gpu", "tpu"):
    return None
  base = environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "msinn-jax" / "jax"


def enable_compilation_cache(device: str | None) -> pathlib.Path | None:
  """Points JAX's persistent compilation cache at `compilation_cache_dir` unless JAX has
  one already (`JAX_COMPILATION_CACHE_DIR` wins); returns the folder in use, or None.

  Every program is kept, however quickly it compiled: a command compiles some fifty
  per-slice programs, all but two in under JAX's default threshold of a second; together
  they took 18 s of a 33-s `msinn compress` on a 2-core CPU, and load in 1 s. The cache is capped
  at 1 GiB, least recently used programs evicted (JAX needs `filelock` for that; without
  it there is no cap). A folder that cannot be written leaves the cache off.
  """
  if jax.config.jax_compilation_cache_dir:
    return pathlib.Path(jax.config.jax_compilation_cache_dir)
  path = compilation_cache_dir(device or jax.default_backend(), os.environ)
  if path is None:
    return None
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError:
    return None
  if not os.access(path, os.W_OK):
    return None
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  if importlib.util.find_spec("filelock") is not None:
    jax.config.update("jax_compilation_cache_max_size", 2**30)
  return path


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
