"""The training experiment's configuration: a tree of frozen dataclasses.

Why not `ml_collections.ConfigDict` (the Flax examples' convention)? It is not a
dependency of this project, and a frozen dataclass tree gives the same three things we
want from it, with the types checked:

* one typed source per experiment: `experiments/configs/<name>.py` defines
  `get_config() -> ExperimentConfig`, variants import a base file with
  `load_config_file` and change a few fields with `dataclasses.replace`;
* a locked config (`lock_config=True`): the dataclasses are frozen, unknown keys raise,
  each section checks its own fields and `ExperimentConfig.validate` the ones that
  depend on each other;
* command-line overrides: `apply_overrides(config, ["train.num_steps=20",
  "optim.lr_drops=(0.5,)"])` parses each value against the field's type hint.

The schema (this file) holds no training values: every field of the data, optim,
train and checkpoint sections is required, so those numbers live only in the config
files (the paper's in `experiments/configs/default.py`). Two sections have defaults:
`distributed` ("one process") and `model` (`msinn_jax.config.ModelConfig`, whose
defaults are the paper's architecture). The resolved config is written as JSON next to
every checkpoint (`to_dict`) and can be read back with `from_dict`.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import pathlib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from msinn_jax.config import ModelConfig
from msinn_jax.errors import UserError

DATA_SOURCES = ("folder", "tfds")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where training crops come from (see `train/data.py`).

  Attributes:
    source: "folder" (every image under `folder`, recursively) or "tfds".
    folder: image folder for source "folder".
    tfds_name: TFDS dataset for source "tfds", e.g. "clic"; must be prepared in
      array_record format (nothing is downloaded).
    tfds_split: TFDS split.
    tfds_data_dir: TFDS data directory (None: TFDS's default).
    image_key: TFDS image feature (None: "image", "hr", or the only image feature).
    crop_size: side of the random square crops (paper: 256).
    flip: random horizontal flips (the official code uses none).
    seed: data seed: with the step it fixes every batch.
    prefetch: batches prepared ahead on a background thread.
    num_workers: decoding threads.
  """

  source: str
  folder: str | None
  tfds_name: str | None
  tfds_split: str
  tfds_data_dir: str | None
  image_key: str | None
  crop_size: int
  flip: bool
  seed: int
  prefetch: int
  num_workers: int

  def __post_init__(self):
    if self.source not in DATA_SOURCES:
      raise UserError(f"data.source={self.source!r}; choose one of {DATA_SOURCES}")
    if self.crop_size <= 0:
      raise UserError(f"data.crop_size must be positive, got {self.crop_size}")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Adam with global-norm clipping and step drops of the learning rate.

  Attributes:
    learning_rate: Adam's initial learning rate.
    lr_drops: fractions of `train.num_steps` after which the learning rate is multiplied
      by `lr_drop_factor` (the official MultiStepLR milestones 675 and 720 of 750
      epochs are 0.9 and 0.96).
    lr_drop_factor: multiplier at each drop.
    clip_norm: maximum global gradient norm; 0 disables clipping.
  """

  learning_rate: float
  lr_drops: tuple[float, ...]
  lr_drop_factor: float
  clip_norm: float

  def __post_init__(self):
    object.__setattr__(self, "lr_drops", tuple(float(f) for f in self.lr_drops))
    if any(not 0 < f < 1 for f in self.lr_drops):
      raise UserError(f"optim.lr_drops must lie in (0, 1), got {self.lr_drops}")
    if self.learning_rate <= 0 or self.clip_norm < 0:
      raise UserError("optim.learning_rate must be positive and optim.clip_norm >= 0")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The loop and the objective.

  Attributes:
    num_steps: optimizer steps in total (a resumed run continues up to it).
    per_device_batch_size: crops per device per step; the global batch is this times
      `jax.device_count()`.
    lambdas: lambda of each anchor, lowest rate first; the first `model.anchor_num` are
      used (`objective.PAPER_LAMBDAS`).
    seed: seed of the parameter init, the rate indexes and the quantisation noise.
    log_every_steps: steps between metric records (averages over the interval).
    init_from: checkpoint to fine-tune from when the workdir holds none: its parameters
      are loaded and its gain tables widened to `model.anchor_num` by repeating their
      last anchor; the optimizer starts afresh. None trains from scratch.
    gain_init: how a run from scratch starts the gain tables: "ones" (the official
      initialisation: every anchor at the same rate) or "lambda" (spaced for the
      anchors' lambdas, `gain.lambda_spaced_tables`; for short runs).
  """

  num_steps: int
  per_device_batch_size: int
  lambdas: tuple[float, ...]
  seed: int
  log_every_steps: int
  init_from: str | None
  gain_init: str

  def __post_init__(self):
    object.__setattr__(self, "lambdas", tuple(float(v) for v in self.lambdas))
    if self.gain_init not in ("ones", "lambda"):
      raise UserError(f"train.gain_init={self.gain_init!r}; choose 'ones' or 'lambda'")
    if self.num_steps < 1 or self.per_device_batch_size < 1 or self.log_every_steps < 1:
      raise UserError("train.num_steps, per_device_batch_size and log_every_steps must be >= 1")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """Orbax checkpoints in `<workdir>/checkpoints`.

  Attributes:
    every_steps: steps between checkpoints (the last step is always saved).
    max_to_keep: newest checkpoints kept.
    async_save: write in a background thread while training goes on.
  """

  every_steps: int
  max_to_keep: int
  async_save: bool

  def __post_init__(self):
    if self.every_steps < 1 or self.max_to_keep < 1:
      raise UserError("checkpoint.every_steps and max_to_keep must be >= 1")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """Multi-process start-up (`jax.distributed.initialize`); the defaults mean one process.

  Attributes:
    coordinator_address: `host:port` of process 0.
    num_processes: number of processes.
    process_id: this process's index (differs per process: pass it with `--set`).
    auto_detect: let JAX find the cluster (TPU pods, SLURM, Open MPI).
    initialization_timeout: seconds to wait for every process to join.
  """

  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  auto_detect: bool = False
  initialization_timeout: int = 300


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """A whole training run."""

  model: ModelConfig
  data: DataConfig
  optim: OptimConfig
  train: TrainConfig
  checkpoint: CheckpointConfig
  distributed: DistributedConfig = DistributedConfig()

  def validate(self) -> ExperimentConfig:
    """Checks what involves several fields; returns the config.

    Not done at construction, so that overrides can change related fields one at a
    time (`data.source=tfds data.tfds_name=clic`).

    Raises:
      UserError: an inconsistent config.
    """
    if self.data.source == "folder" and not self.data.folder:
      raise UserError("data.source='folder' needs data.folder")
    if self.data.source == "tfds" and not self.data.tfds_name:
      raise UserError("data.source='tfds' needs data.tfds_name")
    if len(self.train.lambdas) < self.model.anchor_num:
      raise UserError(f"train.lambdas has {len(self.train.lambdas)} values for "
                      f"model.anchor_num={self.model.anchor_num}")
    return self

  @property
  def lambdas(self) -> tuple[float, ...]:
    """The lambda of each of the model's anchors."""
    return self.train.lambdas[:self.model.anchor_num]


# --- Serialisation ---------------------------------------------------------------------


def to_dict(config: ExperimentConfig) -> dict[str, Any]:
  """The config as nested JSON-compatible dicts (tuples become lists)."""
  out = {}
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if dataclasses.is_dataclass(value):
      value = to_dict(value)
    elif isinstance(value, tuple):
      value = list(value)
    out[field.name] = value
  return out


def from_dict(d: Mapping[str, Any], cls: type = ExperimentConfig) -> Any:
  """Inverse of `to_dict`; unknown or missing keys raise `UserError`."""
  hints = typing.get_type_hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = set(d) - names
  if unknown:
    raise UserError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
  kwargs = {}
  for name, value in d.items():
    if dataclasses.is_dataclass(hints[name]):
      value = from_dict(value, hints[name])
    kwargs[name] = _coerce(value, hints[name], name)
  try:
    config = cls(**kwargs)
  except TypeError as e:  # Missing required fields.
    raise UserError(f"{cls.__name__}: {e}") from None
  except ValueError as e:  # ModelConfig validation.
    raise UserError(str(e)) from None
  return config.validate() if isinstance(config, ExperimentConfig) else config


# --- Overrides -------------------------------------------------------------------------


def _coerce(value: Any, hint: Any, key: str) -> Any:
  """Checks `value` against a type hint, converting int -> float and list -> tuple."""
  if dataclasses.is_dataclass(hint):
    if not isinstance(value, hint):
      raise UserError(f"{key} is a section; set its fields ({key}.<name>=...)")
    return value
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (typing.Union, types.UnionType):
    if value is None and type(None) in args:
      return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
      try:
        return _coerce(value, arg, key)
      except UserError as e:
        errors.append(str(e))
    raise UserError(errors[0])
  if origin is tuple:
    if not isinstance(value, (list, tuple)):
      raise UserError(f"{key} expects a tuple, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_coerce(v, args[0], key) for v in value)
    return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
  if hint is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if hint is bool and isinstance(value, str) and value.lower() in ("true", "false"):
    return value.lower() == "true"
  if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
    raise UserError(f"{key} expects {hint.__name__}, got {value!r}")
  return value


def _accepts_str(hint: Any) -> bool:
  return hint is str or str in typing.get_args(hint)


def _parse(text: str, hint: Any) -> Any:
  """A value from the command line: a Python literal, or the bare text for strings.

  For a string field, text that parses as a non-string literal (`data.folder=2024`) is
  kept as text; `None` still means None.
  """
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # E.g. paths and names; `_coerce` rejects it where a number is needed.
  if _accepts_str(hint) and value is not None and not isinstance(value, str):
    return text
  return value


def apply_overrides(config: Any, assignments: Iterable[str]) -> Any:
  """Returns `config` with `section.field=value` assignments applied, in order.

  Values are Python literals (`20`, `1e-4`, `(0.9, 0.96)`, `None`, `True`); a value
  that is not a literal is taken as a string (`data.folder=/data/flickr`).

  Raises:
    UserError: an assignment without `=`, an unknown key, a value of the wrong type, or
      an inconsistent result (`ExperimentConfig.validate`).
  """
  for assignment in assignments:
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
      raise UserError(f"override {assignment!r} is not of the form section.field=value")
    config = _replace_path(config, key.strip().split("."), text.strip(), key.strip())
  return config.validate() if isinstance(config, ExperimentConfig) else config


def _replace_path(node: Any, path: list[str], text: str, key: str) -> Any:
  names = [f.name for f in dataclasses.fields(node)]
  if path[0] not in names:
    raise UserError(f"unknown config key {key!r}; {type(node).__name__} has {names}")
  hint = typing.get_type_hints(type(node))[path[0]]
  if len(path) > 1:
    child = getattr(node, path[0])
    if not dataclasses.is_dataclass(child):
      raise UserError(f"unknown config key {key!r}: {path[0]!r} is not a section")
    value = _replace_path(child, path[1:], text, key)
  else:
    value = _coerce(_parse(text, hint), hint, key)
  try:
    return dataclasses.replace(node, **{path[0]: value})
  except ValueError as e:  # ModelConfig validation.
    raise UserError(f"{key}={text}: {e}") from None


# --- Config files ----------------------------------------------------------------------


def load_config_file(path: str | os.PathLike[str]) -> ExperimentConfig:
  """Runs `get_config()` of a Python config file, e.g. `experiments/configs/smoke.py`.

  Raises:
    UserError: the file is missing, has no `get_config`, or returns something else.
  """
  path = pathlib.Path(path)
  if path.is_dir():
    raise UserError(f"config file {str(path)!r} is a folder; give a .py file")
  if not path.is_file():
    raise UserError(f"config file {str(path)!r} does not exist")
  spec = importlib.util.spec_from_file_location(f"_msinn_config_{path.stem}", path)
  if spec is None:
    raise UserError(f"config file {str(path)!r} is not a Python file (.py)")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  get_config = getattr(module, "get_config", None)
  if get_config is None:
    raise UserError(f"config file {str(path)!r} defines no get_config()")
  config = get_config()
  if not isinstance(config, ExperimentConfig):
    raise UserError(f"{str(path)!r}: get_config() returned {type(config).__name__}, "
                    f"not ExperimentConfig")
  return config.validate()
