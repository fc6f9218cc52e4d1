"""A training run as two portable files: the weights, and the rest of its state.

Orbax checkpoints are folders of many files, sized for the cluster's disk. A run that
hops between short GPU slots (see `experiments/slot.py`) keeps its state in the
repository instead, and crosses to the device inside a 64 MiB working tree, so it is
written as two `.npz` files:

  weights   `param/<official key>` float32 arrays in the official PyTorch layout (the
            parity fixtures' layout, so `weights.load_model` and `convert.load_official`
            read it; the official code can load it too when its hard-coded context width,
            128, is the model's), `config_json` (the model) and `card_json` (what it is:
            steps, data, slots; see `weights.describe_card`). This is what the package
            ships.
  state     everything else a resume needs: the optimizer state by tree path (Adam's
            moments as bfloat16, half the bytes, which costs them nothing that matters:
            they are running averages), `step`, the RNG key's data and the experiment
            config (`experiment_json`); the data position follows from the step and
            is rebuilt by `import_run`.

`export_run` writes both from the newest checkpoint of a workdir; `import_run` turns
them back into a checkpoint of a fresh workdir, which `train` then resumes
as if it had never left. Without the state file (or if it does not fit the config) the
run continues from the weights with a fresh optimizer, its step and learning-rate
schedule kept.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from msinn_jax import convert
from msinn_jax.errors import CheckpointError
from msinn_jax.train import checkpoint as checkpoint_lib
from msinn_jax.train import data as data_lib
from msinn_jax.train import mesh as mesh_lib
from msinn_jax.train import step as step_lib
from msinn_jax.train.config import ExperimentConfig, from_dict, to_dict
from msinn_jax.train.state import TrainState, make_optimizer, state_from_params
from msinn_jax.weights import read_card  # The card's one reader; re-exported here.

_HALF = ("mu", "nu")  # Optimizer leaves stored as bfloat16.


def _abstract(config: ExperimentConfig) -> TrainState:
  from msinn_jax.model import MSINN  # pylint: disable=import-outside-toplevel
  mesh = mesh_lib.make_mesh()
  tx = make_optimizer(config.optim)
  crop = config.data.crop_size
  return step_lib.abstract_state(MSINN(config.model), tx, mesh, (1, crop, crop, 3))


def _restore_target(abstract: TrainState) -> dict[str, Any]:
  rng = jax.eval_shape(lambda: jax.random.key(0))
  return {"params": abstract.params, "opt_state": abstract.opt_state, "step": abstract.step,
          "rng": jax.ShapeDtypeStruct(rng.shape, rng.dtype, sharding=abstract.step.sharding),
          "data_state": {"step": 0, "seed": 0, "global_batch_size": 0, "num_examples": 0}}


def _checkpoint_dir(workdir: str | os.PathLike[str]) -> pathlib.Path:
  return pathlib.Path(workdir) / checkpoint_lib.CHECKPOINT_DIR


def export_run(workdir: str | os.PathLike[str], weights_path: str | os.PathLike[str],
               state_path: str | os.PathLike[str] | None = None,
               card: Mapping[str, Any] | None = None) -> int:
  """Writes the newest checkpoint of `workdir` as the two files; returns its step.

  Args:
    workdir: a `msinn train` workdir (holding `checkpoints/`).
    weights_path: where the weights go.
    state_path: where the rest of the state goes (None: not written).
    card: model-card entries for `card_json` (`step` and `experiment` are added).

  Raises:
    CheckpointError: the workdir holds no checkpoint.
  """
  with checkpoint_lib.Checkpointer(_checkpoint_dir(workdir), async_save=False) as ckpt:
    step = ckpt.latest_step()
    if step is None:
      raise CheckpointError(f"{workdir}: no checkpoint to export")
    config = from_dict(ckpt.saved_config(step))
    item, _ = ckpt.restore(step, _restore_target(_abstract(config)))
  save_weights(weights_path, item["params"], config,
               dict(card or {}, step=step, experiment=to_dict(config)))
  if state_path is not None:
    arrays = {"step": np.asarray(step, np.int64),
              "rng_key_data": np.asarray(jax.random.key_data(item["rng"])),
              "experiment_json": np.asarray(json.dumps(to_dict(config)))}
    for path, leaf in jax.tree_util.tree_flatten_with_path(item["opt_state"])[0]:
      key, leaf = checkpoint_lib.path_key(path), np.asarray(leaf)
      if any(part in _HALF for part in key.split("/")):
        arrays[f"opt_bf16/{key}"] = leaf.astype(ml_dtypes.bfloat16).view(np.uint16)
      else:
        arrays[f"opt/{key}"] = leaf
    _atomic_savez(state_path, arrays)
  return step


def save_weights(path: str | os.PathLike[str], params: Any, config: Any,
                 card: Mapping[str, Any]) -> None:
  """Writes `params` in the official layout with the model config and card (atomically)."""
  model = config.model if isinstance(config, ExperimentConfig) else config
  sd = convert.export_state_dict(jax.device_get(params), model)
  arrays = {f"param/{k}": v for k, v in sd.items()}
  arrays["config_json"] = np.asarray(model.to_json())
  arrays["card_json"] = np.asarray(json.dumps(dict(card), sort_keys=True))
  _atomic_savez(path, arrays)


def _atomic_savez(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def import_run(weights_path: str | os.PathLike[str], state_path: str | os.PathLike[str] | None,
               workdir: str | os.PathLike[str], config: ExperimentConfig) -> tuple[int, bool]:
  """Writes the two files as the first checkpoint of `workdir`, ready for `config` to resume.

  The data position is set for this run's loader (its batch size and data set), at the
  saved step, which also keeps the learning-rate schedule where the run was (the loop
  computes each step's rate from its index). The optimizer state is taken from
  `state_path` when it exists and fits `config`; otherwise Adam starts afresh: zero moments
  and zero counters, so that its bias correction scales the first updates as for any
  fresh Adam (zero moments with a counter at the saved step would make them about
  sqrt(1 / (1 - b2)) * (1 - b1) = 3.2 times the learning rate).

  Returns:
    (step, whether the optimizer state was restored).

  Raises:
    CheckpointError: `workdir` already holds checkpoints, or the weights do not fit the
      model of `config`.
  """
  model_config, variables = convert.load_official(weights_path)
  if model_config != config.model:
    raise CheckpointError(f"{weights_path} holds a different model: {model_config} vs "
                          f"{config.model}")
  abstract = _abstract(config)
  params = jax.tree.map(lambda a, s: jnp.asarray(a, s.dtype), variables["params"],
                        abstract.params)
  step = int(read_card(weights_path).get("step", 0))
  opt_state, restored = None, False
  if state_path is not None and os.path.exists(state_path):
    opt_state, saved_step = _read_opt_state(state_path, abstract.opt_state)
    restored = opt_state is not None and saved_step == step
  if not restored:
    opt_state = state_from_params(params, make_optimizer(config.optim)).opt_state
  source = _num_examples(config)
  global_batch = data_lib.global_batch_size_for(config.train.per_device_batch_size)
  item = {"params": params, "opt_state": opt_state, "step": jnp.asarray(step, jnp.int32),
          "rng": _rng(state_path, config, restored),
          "data_state": {"step": step, "seed": config.data.seed,
                         "global_batch_size": global_batch, "num_examples": source}}
  with checkpoint_lib.Checkpointer(_checkpoint_dir(workdir), async_save=False) as ckpt:
    if ckpt.latest_step() is not None:
      raise CheckpointError(f"{workdir} already holds checkpoints; import into a fresh one")
    ckpt.save(step, item, to_dict(config), force=True)
  return step, restored


def _read_opt_state(path: str | os.PathLike[str], abstract: Any) -> tuple[Any | None, int]:
  """The optimizer state of a state file on the tree of `abstract` (None if it differs)."""
  with np.load(path, allow_pickle=False) as z:
    saved_step = int(z["step"])
    leaves = []
    for p, a in jax.tree_util.tree_flatten_with_path(abstract)[0]:
      key = checkpoint_lib.path_key(p)
      if f"opt/{key}" in z.files:
        v = z[f"opt/{key}"]
      elif f"opt_bf16/{key}" in z.files:
        v = z[f"opt_bf16/{key}"].view(ml_dtypes.bfloat16)
      else:
        return None, saved_step
      if v.shape != a.shape:
        return None, saved_step
      leaves.append(jnp.asarray(v, a.dtype))
  return jax.tree.unflatten(jax.tree.structure(abstract), leaves), saved_step


def _rng(state_path: str | os.PathLike[str] | None, config: ExperimentConfig,
         restored: bool) -> jax.Array:
  if restored:
    with np.load(state_path, allow_pickle=False) as z:
      return jax.random.wrap_key_data(jnp.asarray(z["rng_key_data"]))
  return jax.random.fold_in(jax.random.key(config.train.seed), 1)


def _num_examples(config: ExperimentConfig) -> int:
  from msinn_jax.train.train_lib import make_source  # pylint: disable=import-outside-toplevel
  return len(make_source(config.data))
