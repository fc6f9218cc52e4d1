"""Orbax checkpoints of the training state, with the resolved config as JSON.

Each step directory holds two items::

  <directory>/<step>/state   pytree {params, opt_state, step, rng, data_state}
  <directory>/<step>/config  the resolved experiment config, JSON

Saves are asynchronous (the arrays are copied off the device, then written on a
background thread); call `wait_until_finished()` or `close()` before the process exits.
Restores go onto the shardings of an abstract target (a pytree of
`jax.ShapeDtypeStruct` carrying `sharding`, e.g. from `jax.eval_shape` plus the mesh
shardings), so a checkpoint written on one topology can be read on another.

All Orbax specifics live in this file, so a move to Orbax's v1 API
(`orbax.checkpoint.experimental.v1`) touches nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from msinn_jax.errors import CheckpointError

STATE = "state"
CONFIG = "config"
CHECKPOINT_DIR = "checkpoints"  # Inside a `msinn train` workdir.


def config_to_json(config: Any) -> dict[str, Any]:
  """Turns a config (a dataclass instance or a mapping) into a JSON-compatible dict.

  Tuples become lists; anything JSON cannot represent raises `TypeError`.
  """
  if dataclasses.is_dataclass(config) and not isinstance(config, type):
    config = dataclasses.asdict(config)
  if not isinstance(config, Mapping):
    raise TypeError(f"config must be a mapping or a dataclass instance, got {type(config)}")
  return json.loads(json.dumps(dict(config)))


def _as_path(directory: str | os.PathLike[str]) -> epath.Path:
  path = os.fspath(directory)
  return epath.Path(path if "://" in path else os.path.abspath(path))


def _handlers() -> dict[str, ocp.CheckpointHandler]:
  return {STATE: ocp.StandardCheckpointHandler(), CONFIG: ocp.JsonCheckpointHandler()}


class Checkpointer:
  """Saves and restores `{params, opt_state, step, rng, data_state}` plus the config.

  Example::

    with Checkpointer(workdir / CHECKPOINT_DIR, max_to_keep=3) as ckpt:
      if ckpt.latest_step() is not None:
        state, config_json, step = ckpt.restore_latest(abstract_state)
      ...
      ckpt.save(step, state, config)
  """

  def __init__(self,
               directory: str | os.PathLike[str],
               *,
               max_to_keep: int | None = 3,
               save_interval_steps: int = 1,
               async_save: bool = True):
    """Opens (creating if needed) a checkpoint directory.

    Args:
      directory: root folder; one sub-folder per saved step.
      max_to_keep: how many most recent checkpoints to keep (None: all).
      save_interval_steps: `save` only writes steps that are multiples of this (unless
        forced).
      async_save: write in a background thread.
    """
    self.directory = _as_path(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        save_interval_steps=save_interval_steps,
        enable_async_checkpointing=async_save,
    )
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_handlers=_handlers())

  def save(self, step: int, state: Any, config: Any, *, force: bool = False) -> bool:
    """Starts saving `state` and `config` as checkpoint `step`; returns whether it saves.

    Must be called on every process. `state` may hold jax arrays (sharded or not),
    NumPy arrays, Python scalars and typed PRNG keys.

    Args:
      step: training step; names the checkpoint.
      state: the pytree to save.
      config: the resolved config (see `config_to_json`).
      force: save even if `step` is off the save interval.
    """
    args = ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(state),
        CONFIG: ocp.args.JsonSave(config_to_json(config)),
    })
    return self._manager.save(step, args=args, force=force)

  def latest_step(self) -> int | None:
    """The newest finished checkpoint's step, or None if there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Steps of all finished checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Restores checkpoint `step` onto the shapes, dtypes and shardings of `abstract_state`.

    Args:
      step: a step from `all_steps()`.
      abstract_state: pytree matching the saved state, with `jax.ShapeDtypeStruct`
        leaves (carrying `sharding`) for arrays and Python scalars for scalars.

    Returns:
      `(state, config)`: the restored pytree and the config dict saved with it.

    Raises:
      CheckpointError: no such step, or the saved tree does not match `abstract_state`.
    """
    if step not in self._manager.all_steps():
      raise CheckpointError(
          f"no checkpoint for step {step} in {self.directory} (have {self.all_steps()})")
    args = ocp.args.Composite(**{
        STATE: ocp.args.StandardRestore(abstract_state),
        CONFIG: ocp.args.JsonRestore(),
    })
    try:
      restored = self._manager.restore(step, args=args)
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(
          f"checkpoint {self.directory / str(step)} does not match the expected state: "
          f"{self._difference(step, abstract_state, e)}") from e
    return restored[STATE], restored[CONFIG]

  def _difference(self, step: int, abstract_state: Any, error: Exception) -> str:
    """What differs between checkpoint `step` and `abstract_state`, in a line or two (Orbax
    lists every leaf: some 100 KB for a weights-only checkpoint against a training state)."""
    wanted = _leaf_paths(abstract_state)
    try:
      saved = _leaf_paths(self._manager.item_metadata(step)[STATE])
    except (OSError, ValueError, KeyError, TypeError):
      saved = None
    if saved is None or saved == wanted:
      # No metadata, or the same entries with other shapes or dtypes: Orbax's words, shortened.
      text = " ".join(str(error).split())
      return text if len(text) <= 400 else text[:400] + " ..."
    parts = []
    for label, paths in (("missing", wanted - saved), ("unexpected", saved - wanted)):
      if paths:
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        parts.append(f"{len(paths)} entries {label} ({', '.join(sorted(paths)[:3])}{more})")
    if any(p.startswith("opt_state/") for p in wanted) and \
        all(p.startswith("params/") for p in saved):
      parts.append("a weights-only checkpoint (`msinn convert`, an exported .npz) starts a "
                   "run through `--set train.init_from=PATH`, not as its workdir")
    return "; ".join(parts)

  def saved_config(self, step: int) -> dict[str, Any]:
    """The config saved with checkpoint `step`, reading nothing else.

    Raises:
      CheckpointError: no such step.
    """
    if step not in self._manager.all_steps():
      raise CheckpointError(
          f"no checkpoint for step {step} in {self.directory} (have {self.all_steps()})")
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        CONFIG: ocp.args.JsonRestore()}))
    return restored[CONFIG]

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict[str, Any], int]:
    """Restores the newest checkpoint; see `restore`.

    Returns:
      `(state, config, step)`.

    Raises:
      CheckpointError: the directory holds no checkpoint, or it does not match.
    """
    step = self.latest_step()
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    state, config = self.restore(step, abstract_state)
    return state, config, step

  def wait_until_finished(self) -> None:
    """Blocks until pending asynchronous saves are written."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager's resources."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()


def _resolve_checkpoint(path: str | os.PathLike[str]) -> tuple[epath.Path, int | None]:
  """Splits `path` into (checkpoint root, step); step None means the latest one.

  `path` is a checkpoint root, one of its step folders, or a `msinn train` workdir
  (whose checkpoints are in `<workdir>/checkpoints`).
  """
  path = _as_path(path)
  if not path.is_dir():
    raise CheckpointError(f"checkpoint directory {path} does not exist")
  if path.name.isdigit() and (path / STATE).is_dir():  # A step folder was given.
    return path.parent, int(path.name)
  if (path / CHECKPOINT_DIR).is_dir() and not any(
      p.name.isdigit() for p in path.iterdir()):  # A training workdir was given.
    return path / CHECKPOINT_DIR, None
  return path, None


def load_params(path: str | os.PathLike[str],
                *,
                sharding: jax.sharding.Sharding | None = None) -> tuple[Any, dict[str, Any]]:
  """Reads only `params` (no optimizer state) and the config from a checkpoint.

  For inference tools. Reads the latest step of a checkpoint root or of a `msinn train`
  workdir (its `checkpoints/`), or the step folder itself if `path` is one
  (`.../checkpoints/12000`).

  Args:
    path: checkpoint root (as given to `Checkpointer`), workdir, or step folder.
    sharding: where to put every parameter (default: this process's first device).

  Returns:
    `(params, config)`: the parameter pytree (jax arrays) and the saved config dict.

  Raises:
    CheckpointError: `path` is not a checkpoint or has no `params`.
  """
  root, step = _resolve_checkpoint(path)
  handlers = {STATE: ocp.PyTreeCheckpointHandler(), CONFIG: ocp.JsonCheckpointHandler()}
  with _without_read_only_notice():
    manager = ocp.CheckpointManager(
        root,
        options=ocp.CheckpointManagerOptions(read_only=True, create=False,
                                             save_interval_steps=0),
        item_handlers=handlers)
  try:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"{root} is not a checkpoint directory (no saved step)")
    metadata = manager.item_metadata(step)[STATE]
    if metadata is None or "params" not in metadata:
      raise CheckpointError(f"checkpoint {root / str(step)} has no params")
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {"params": jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
        metadata["params"])}
    args = ocp.args.Composite(**{
        STATE: ocp.args.PyTreeRestore(
            item=target,
            restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True),
        CONFIG: ocp.args.JsonRestore(),
    })
    restored = manager.restore(step, args=args)
  except CheckpointError:
    raise
  except (OSError, ValueError, KeyError, TypeError) as e:  # A damaged step folder.
    raise CheckpointError(f"cannot read the checkpoint in {root}: "
                          f"{e.__class__.__name__}: {e}") from e
  finally:
    manager.close()
  return restored[STATE]["params"], restored[CONFIG]


def path_key(path: tuple[Any, ...]) -> str:
  """A pytree key path as "a/b/c" (`jax.tree_util.tree_flatten_with_path`'s paths)."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def _leaf_paths(tree: Any) -> set[str]:
  """The leaves of a pytree as `path_key`s."""
  return {path_key(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}


@contextlib.contextmanager
def _without_read_only_notice():
  """Drops Orbax's "Given directory is read only" warning, which every reader that asks
  for `read_only` gets (each `msinn compress --checkpoint DIR` printed it), and only it."""
  def keep(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Given directory is read only")
  logger = logging.getLogger("absl")
  logger.addFilter(keep)
  try:
    yield
  finally:
    logger.removeFilter(keep)
