"""Where a model's weights come from: a checkpoint spec -> (config, variables).

A spec is one of
  * None or "untrained": the default model. No trained weights ship yet, so this is a
    clearly labelled *untrained* model (deterministic random weights with the gain tables
    spread over a range of rates), good for exercising the tools, not for quality;
  * a directory: a checkpoint written by `msinn train` (Orbax), latest step;
  * a `.pth` / `.pth.tar` file: an official PyTorch checkpoint (needs torch);
  * a `.npz` file: the parity-fixture layout.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from msinn_jax.config import ModelConfig
from msinn_jax.errors import CheckpointError

UNTRAINED = ModelConfig(N=32, M=48, depths=(2, 2, 2, 2), context_width=32, anchor_num=8)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  config: ModelConfig
  variables: dict[str, Any]
  description: str


def spread_gains(params: dict[str, Any], seed: int = 0) -> dict[str, Any]:
  """Gain tables that span rates (anchor a gets gain ~ exp(-1 + 2a/(A-1))), and small
  random coupling outputs, as the parity fixtures' recipe; the official initialisation
  makes every anchor identical and every coupling the identity."""
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(np.asarray, params)

  def visit(tree, path=()):
    out = {}
    for name, v in tree.items():
      p = path + (name,)
      if isinstance(v, dict):
        out[name] = visit(v, p)
      elif name in ("gain", "inv_gain", "scale_gain"):
        base = np.linspace(-1.0, 1.0, v.shape[0])[:, None]
        sign = -1.0 if name == "inv_gain" else 1.0
        out[name] = np.exp(sign * base + 0.1 * rng.normal(size=v.shape)).astype(np.float32)
      elif "out" in path[-1:] and "conditioner" in path:
        out[name] = rng.normal(0, 0.02, v.shape).astype(np.float32)
      else:
        out[name] = v
    return out

  return jax.tree_util.tree_map(jnp.asarray, visit(params))


@functools.lru_cache(maxsize=1)
def untrained_model(seed: int = 0) -> LoadedModel:
  """The labelled untrained default (ActNorm initialised on a fixed synthetic batch)."""
  from msinn_jax.model import MSINN
  x = jax.random.uniform(jax.random.key(seed), (2, 64, 64, 3))
  model = MSINN(UNTRAINED)
  variables = jax.jit(model.init)({"params": jax.random.key(seed),
                                   "noise": jax.random.key(seed + 1)}, x, 0)
  params = spread_gains(variables["params"], seed)
  return LoadedModel(UNTRAINED, {"params": params},
                     "UNTRAINED default model (random weights; no trained weights ship yet)")


def load_model(spec: str | os.PathLike | None) -> LoadedModel:
  """Resolves a checkpoint spec (see the module docstring)."""
  if spec is None or str(spec) == "untrained":
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
    return LoadedModel(config, {"params": params}, f"checkpoint {path}")
  if path.endswith((".pth", ".pth.tar", ".tar", ".pt", ".npz")):
    from msinn_jax.convert import load_official
    config, variables = load_official(path)
    return LoadedModel(config, variables, f"official weights {os.path.basename(path)}")
  if not os.path.exists(path):
    raise CheckpointError(f"no such checkpoint: {path}")
  raise CheckpointError(f"{path}: not a checkpoint directory, .pth/.pth.tar or .npz file")
