"""Where a model's weights come from: a checkpoint spec -> (config, variables).

A spec is one of
  * None or "default": the default model, `msinn_jax/data/default_model.npz` when the
    package ships it (trained in short slots by `experiments/slot.py`, so far on CPU
    only; its model card, in the file, says how far), else the untrained model;
  * "untrained": a clearly labelled *untrained* model (deterministic random weights with
    the gain tables spread over a range of rates), good for exercising the tools, not for
    quality;
  * a directory: a `msinn train` workdir or checkpoint directory (Orbax), latest step;
  * a `.pth` / `.pth.tar` file: an official PyTorch checkpoint (needs torch);
  * a `.npz` file: the parity-fixture layout.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
from typing import Any

import jax.numpy as jnp
import numpy as np

from msinn_jax.config import ModelConfig
from msinn_jax.convert import (NPZ_ERRORS, TORCH_EXTENSIONS, abstract_params, check_fit,
                               load_official)
from msinn_jax.errors import CheckpointError

DEFAULT_WEIGHTS = pathlib.Path(__file__).with_name("data") / "default_model.npz"
UNTRAINED = ModelConfig(N=32, M=48, depths=(2, 2, 2, 2), context_width=32, anchor_num=8)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  config: ModelConfig
  variables: dict[str, Any]
  description: str


def untrained_params(config: ModelConfig, seed: int = 0) -> dict[str, Any]:
  """Deterministic random weights, made on the host with numpy only (no compilation, and
  the same bytes on every machine, so streams of the untrained model decode anywhere).

  Convolutions get PyTorch's default U(+-1/sqrt(fan_in)) kernels; every coupling gets
  small random output weights instead of zeros, and every invertible 1x1 conv a
  Householder reflection (exactly orthogonal, computed elementwise); ActNorm starts as
  the identity; the gain tables span rates as in the parity fixtures' recipe (anchor a:
  gain ~ exp(-1 + 2a / (A - 1)), inverse gain its reciprocal, noise 0.1); the official
  initialisation would make every anchor identical.
  """
  from flax import traverse_util

  rng = np.random.default_rng(seed)
  out = {}
  for path, leaf in sorted(traverse_util.flatten_dict(abstract_params(config)).items()):
    shape, name = tuple(leaf.shape), path[-1]
    if name in ("gain", "inv_gain", "scale_gain"):
      base = np.linspace(-1.0, 1.0, shape[0])[:, None]
      sign = -1.0 if name == "inv_gain" else 1.0
      v = np.exp(sign * base + 0.1 * rng.normal(size=shape))
    elif name == "initial_scale":
      v = 0.5 + rng.random(shape)
    elif "conditioner" in path and "out" in path:
      v = rng.normal(0.0, 0.02, shape)
    elif path[-2:-1] == ("permute",) and name == "kernel":
      u = rng.normal(size=shape[0])
      v = np.eye(shape[0]) - 2.0 * np.multiply.outer(u, u) / np.sum(u * u)
    elif name == "kernel":
      bound = 1.0 / np.sqrt(np.prod(shape[:-1]))
      v = rng.uniform(-bound, bound, shape)
    else:  # Biases, ActNorm, LU factors: zeros (LU: filled below).
      v = np.zeros(shape)
    out[path] = np.asarray(v, np.float32)
  for path in [p for p in out if p[-1] == "p"]:  # invconv_lu: the identity factorisation.
    n = out[path].shape[0]
    out[path] = np.eye(n, dtype=np.float32)
    out[path[:-1] + ("sign_s",)] = np.ones(n, np.float32)
  return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in out.items()})


@functools.lru_cache(maxsize=1)
def untrained_model(seed: int = 0) -> LoadedModel:
  """The labelled untrained default model."""
  return LoadedModel(UNTRAINED, {"params": untrained_params(UNTRAINED, seed)},
                     "UNTRAINED model (random weights)")


def describe_card(card: dict[str, Any]) -> str:
  """One line on how a shipped model was trained, from its card."""
  slots = card.get("slots", [])
  devices = sorted({s.get("device", "?") for s in slots})
  seconds = sum(float(s.get("train_seconds", 0.0)) for s in slots)
  return (f"trained {card.get('step', '?')} steps in {len(slots)} slot(s), "
          f"{seconds / 60:.0f} min on {', '.join(devices) or '?'}")


def read_card(path: str | os.PathLike) -> dict[str, Any]:
  """The model card (`card_json`) of a weights `.npz`; {} if it has none or cannot be
  read (`convert.load_official` then says what is wrong with the file)."""
  try:
    with np.load(path, allow_pickle=False) as z:
      return json.loads(str(z["card_json"])) if "card_json" in z.files else {}
  except NPZ_ERRORS:
    return {}


@functools.lru_cache(maxsize=4)
def shipped_model(path: str) -> LoadedModel:
  """The default model shipped in the package (`DEFAULT_WEIGHTS`)."""
  config, variables = load_official(path)
  return LoadedModel(config, variables,
                     f"default model ({describe_card(read_card(path))})")


def load_model(spec: str | os.PathLike | None) -> LoadedModel:
  """Resolves a checkpoint spec (see the module docstring)."""
  if spec is None or str(spec) == "default":
    if DEFAULT_WEIGHTS.is_file():
      return shipped_model(str(DEFAULT_WEIGHTS))
    return untrained_model()
  if str(spec) == "untrained":
    return untrained_model()
  path = os.fspath(spec)
  if os.path.isdir(path):
    from msinn_jax.train.checkpoint import load_params
    params, saved = load_params(path)
    model_cfg = saved.get("model", saved) if isinstance(saved, dict) else None
    try:
      config = ModelConfig.from_dict(dict(model_cfg))
    except (TypeError, ValueError) as e:
      raise CheckpointError(f"{path}: checkpoint has no usable model config ({e})") from None
    check_fit(params, abstract_params(config), f"checkpoint {path} (with its saved config)")
    return LoadedModel(config, {"params": params}, f"checkpoint {path}")
  if path.endswith((*TORCH_EXTENSIONS, ".npz")):
    config, variables = load_official(path)
    card = read_card(path) if path.endswith(".npz") else {}
    if card:  # Written by `msinn_jax.train.portable`.
      return LoadedModel(config, variables,
                         f"weights {os.path.basename(path)} ({describe_card(card)})")
    return LoadedModel(config, variables, f"official weights {os.path.basename(path)}")
  if not os.path.exists(path):
    raise CheckpointError(f"no such checkpoint: {path}")
  raise CheckpointError(f"{path}: not a checkpoint directory, .pth/.pth.tar or .npz file")
