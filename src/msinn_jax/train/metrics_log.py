"""Training metrics: JSON lines (+ TensorBoard if available) and a progress bar, process 0 only.

`MetricWriter` appends one JSON object per `write_scalars` call to
`<logdir>/metrics.jsonl`::

  {"step": 1000, "time": 1718000000.0, "loss": 0.61, "bpp": 0.42, "psnr": 31.2}

Non-finite values are written as JSON's common extensions `NaN` / `Infinity`, which
`json.loads` and pandas read back. The file is opened for appending, so a resumed run
continues it (steps after the resumed checkpoint then appear twice; keep the last).
If `tensorboardX` or `flax.metrics.tensorboard` (which needs TensorFlow) imports, the
same scalars go to TensorBoard event files in `logdir`; otherwise that is skipped
silently. On processes other than 0 both classes do nothing.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import tqdm

JSONL_NAME = "metrics.jsonl"


def _scalars_to_floats(scalars: Mapping[str, Any]) -> dict[str, float]:
  """Fetches device values once and converts each to a Python float."""
  host = jax.device_get(dict(scalars))
  out = {}
  for name, value in host.items():
    value = np.asarray(value)
    if value.size != 1:
      raise ValueError(f"metric {name!r} is not a scalar: shape {value.shape}")
    out[name] = float(value.reshape(()))
  return out


class _TensorBoard:
  """The first importable TensorBoard writer, behind one `scalar` method."""

  def __init__(self, logdir: pathlib.Path):
    try:
      import tensorboardX  # type: ignore[import-not-found]
      self._writer = tensorboardX.SummaryWriter(str(logdir))
      self._write = self._writer.add_scalar
    except ImportError:
      from flax.metrics import tensorboard  # Imports TensorFlow; may raise ImportError.
      self._writer = tensorboard.SummaryWriter(str(logdir))
      self._write = self._writer.scalar

  def scalar(self, name: str, value: float, step: int) -> None:
    self._write(name, value, step)

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class MetricWriter:
  """Writes scalar metrics from process 0; a no-op elsewhere."""

  def __init__(self,
               logdir: str | os.PathLike[str],
               *,
               process_index: int | None = None,
               tensorboard: bool = True):
    """Opens `<logdir>/metrics.jsonl` for appending (process 0 only).

    Args:
      logdir: output folder, created if needed.
      process_index: this process (default `jax.process_index()`); only 0 writes.
      tensorboard: also write TensorBoard events if a backend imports.
    """
    process_index = jax.process_index() if process_index is None else process_index
    self.enabled = process_index == 0
    self.logdir = pathlib.Path(logdir)
    self._file = None
    self._tensorboard: _TensorBoard | None = None
    if not self.enabled:
      return
    self.logdir.mkdir(parents=True, exist_ok=True)
    self._file = open(self.logdir / JSONL_NAME, "a", encoding="utf-8")
    if tensorboard:
      try:
        self._tensorboard = _TensorBoard(self.logdir)
      except ImportError:
        self._tensorboard = None

  @property
  def has_tensorboard(self) -> bool:
    """Whether TensorBoard events are written."""
    return self._tensorboard is not None

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Logs scalar metrics (floats, NumPy or jax scalars) at `step`.

    Raises:
      ValueError: a value is not a scalar, or a metric is named `step` or `time`.
    """
    if not self.enabled:
      return
    reserved = {"step", "time"} & set(scalars)
    if reserved:
      raise ValueError(f"metric names {sorted(reserved)} are reserved")
    values = _scalars_to_floats(scalars)
    record = {"step": int(step), "time": time.time(), **values}
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tensorboard is not None:
      for name, value in values.items():
        self._tensorboard.scalar(name, value, int(step))

  def flush(self) -> None:
    """Flushes the TensorBoard writer (the JSON file is flushed on every write)."""
    if self._tensorboard is not None:
      self._tensorboard.flush()

  def close(self) -> None:
    """Closes the files; later writes are errors."""
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tensorboard is not None:
      self._tensorboard.close()
      self._tensorboard = None
    self.enabled = False

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()


def read_metrics(logdir: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """Reads back `<logdir>/metrics.jsonl` as a list of records."""
  path = pathlib.Path(logdir) / JSONL_NAME
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


class ProgressBar:
  """A tqdm bar over training steps, shown on process 0 only."""

  def __init__(self,
               total: int,
               *,
               initial: int = 0,
               process_index: int | None = None,
               desc: str = "train"):
    """Creates the bar.

    Args:
      total: last step.
      initial: first step (a resumed run starts part-way).
      process_index: this process (default `jax.process_index()`); only 0 shows the bar.
      desc: label in front of the bar.
    """
    process_index = jax.process_index() if process_index is None else process_index
    self._bar = tqdm.tqdm(total=total, initial=initial, desc=desc, unit="step",
                          dynamic_ncols=True, disable=process_index != 0)

  def update(self, steps: int = 1, metrics: Mapping[str, Any] | None = None) -> None:
    """Advances by `steps` and shows `metrics` (scalars) after the bar."""
    if self._bar.disable:
      return
    if metrics:
      self._bar.set_postfix(_scalars_to_floats(metrics), refresh=False)
    self._bar.update(steps)

  def close(self) -> None:
    """Closes the bar."""
    self._bar.close()

  def __enter__(self) -> ProgressBar:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()
