"""Tests for the metric writer and progress bar (`msinn_jax.train.metrics_log`)."""

from __future__ import annotations

import math
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

from msinn_jax.train import metrics_log


def test_jsonl_records_on_process_zero(tmp_path, monkeypatch):
  for backend in ("tensorboardX", "flax.metrics.tensorboard"):
    monkeypatch.setitem(sys.modules, backend, None)  # Import fails: JSON only.
  with metrics_log.MetricWriter(tmp_path / "logs", process_index=0) as writer:
    assert not writer.has_tensorboard
    writer.write_scalars(10, {"loss": jnp.float32(0.5), "bpp": np.float64(0.25), "n": 3})
    writer.write_scalars(20, {"loss": float("nan")})
    with pytest.raises(ValueError, match="not a scalar"):
      writer.write_scalars(30, {"bits": jnp.ones(2)})
    with pytest.raises(ValueError, match="reserved"):
      writer.write_scalars(30, {"step": 1})
  # Appends across writers (a resumed run).
  with metrics_log.MetricWriter(tmp_path / "logs", process_index=0) as writer:
    writer.write_scalars(30, {"loss": 0.125})
  records = metrics_log.read_metrics(tmp_path / "logs")
  assert [r["step"] for r in records] == [10, 20, 30]
  assert records[0]["loss"] == 0.5 and records[0]["bpp"] == 0.25 and records[0]["n"] == 3.0
  assert math.isnan(records[1]["loss"])
  assert all(isinstance(r["time"], float) for r in records)


def test_other_processes_write_nothing(tmp_path):
  with metrics_log.MetricWriter(tmp_path / "logs", process_index=1) as writer:
    writer.write_scalars(1, {"loss": 1.0})
  assert not (tmp_path / "logs").exists()


def test_tensorboard_backend_when_importable(tmp_path, monkeypatch):
  written = []

  class FakeSummaryWriter:

    def __init__(self, logdir):
      self.logdir = logdir

    def add_scalar(self, name, value, step):
      written.append((name, value, step))

    def flush(self):
      pass

    def close(self):
      written.append("closed")

  fake = types.ModuleType("tensorboardX")
  fake.SummaryWriter = FakeSummaryWriter
  monkeypatch.setitem(sys.modules, "tensorboardX", fake)
  with metrics_log.MetricWriter(tmp_path, process_index=0) as writer:
    assert writer.has_tensorboard
    writer.write_scalars(5, {"psnr": 30.0})
  assert written == [("psnr", 30.0, 5), "closed"]


def test_progress_bar_only_on_process_zero(capsys):
  with metrics_log.ProgressBar(10, initial=4, process_index=0, desc="t") as bar:
    bar.update(2, {"loss": jnp.float32(0.75)})
  err = capsys.readouterr().err
  assert "6/10" in err and "loss=0.75" in err
  with metrics_log.ProgressBar(10, process_index=1) as bar:
    bar.update(1, {"loss": 1.0})
  assert capsys.readouterr().err == ""
