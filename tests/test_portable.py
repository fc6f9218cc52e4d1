"""Short-slot training: the time limit, and a run carried as two files (train/portable.py)."""

import json
import shutil
import subprocess

import jax
import numpy as np
import pytest

import train_runs
from msinn_jax.errors import CheckpointError
from msinn_jax.train import checkpoint as checkpoint_lib
from msinn_jax.train import config as config_lib
from msinn_jax.train import portable, train_lib
from msinn_jax.weights import load_model


def _losses(workdir):
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def _config(folder, *extra):
  return config_lib.apply_overrides(config_lib.load_config_file(train_runs.SMOKE_CONFIG),
                                    train_runs.overrides(folder, *extra))


def test_clock_stops_before_a_step_would_cross_the_limit(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(train_lib.time, "time", lambda: now[0])
  clock = train_lib._Clock(10.0, start=100.0)
  stops = []
  for step in range(1, 20):
    now[0] += 30.0 if step == 1 else 1.0  # The first step compiles.
    stops.append(clock.tick(step))
  # Step 1 ends at 130 s: already past. A fresh clock with a later limit:
  assert stops[0]
  clock, now[0] = train_lib._Clock(40.0, start=100.0), 100.0
  ticks = []
  for step in range(1, 20):
    now[0] += 30.0 if step == 1 else 1.0
    ticks.append((now[0] - 100.0, clock.tick(step)))
  first_stop = next(t for t, stop in ticks if stop)
  assert 37.0 <= first_stop <= 39.0  # Stops with room for one more 1-s step (x2).
  assert not train_lib._Clock(None, start=0.0).tick(5)


def test_time_limit_saves_and_the_same_command_resumes(tmp_path, image_folder, cache_dir):
  workdir = tmp_path / "run"
  sets = train_runs.overrides(image_folder)
  # A limit already passed when the first step ends: stop after it, save, exit 0.
  command = train_runs.command(workdir, sets) + ["--time-limit", "0.001"]
  out = subprocess.run(command, env=train_runs.env(cache_dir), cwd=train_runs.REPO,
                       capture_output=True, text=True, timeout=train_runs.RUN_TIMEOUT_S)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "time limit" in out.stderr
  steps = checkpoint_lib.Checkpointer(workdir / "checkpoints").all_steps()
  assert steps == [1]
  code, text = train_runs.train(workdir, sets, cache_dir)
  assert code == 0, text[-2000:]
  assert "resuming from step 1" in text
  assert max(checkpoint_lib.Checkpointer(workdir / "checkpoints").all_steps()) == \
      train_runs.NUM_STEPS


def test_exported_run_resumes_where_it_stopped(tmp_path, reference, image_folder, cache_dir):
  weights, state = tmp_path / "w.npz", tmp_path / "s.npz"
  step = portable.export_run(reference, weights, state, card={"data": "test images"})
  assert step == train_runs.NUM_STEPS
  card = portable.read_card(weights)
  assert card["step"] == step and card["data"] == "test images"
  assert card["experiment"]["model"]["N"] == 16

  # The weights file is a checkpoint every tool takes, bit for bit the trained params.
  loaded = load_model(str(weights))
  params, _ = checkpoint_lib.load_params(reference / "checkpoints")
  same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                      loaded.variables["params"], params)
  assert all(jax.tree.leaves(same))

  # Moments as bfloat16: half the bytes of float32.
  with np.load(state) as z:
    half = [k for k in z.files if k.startswith("opt_bf16/")]
    assert half and all(z[k].dtype == np.uint16 for k in half)
    assert int(z["step"]) == step

  # Both the original workdir and the imported copy continue to step 16.
  more = train_runs.NUM_STEPS + 4
  original = tmp_path / "original"
  shutil.copytree(reference, original)
  imported = tmp_path / "imported"
  got_step, restored = portable.import_run(
      weights, state, imported, _config(image_folder, f"train.num_steps={more}"))
  assert (got_step, restored) == (step, True)
  for workdir in (original, imported):
    code, text = train_runs.train(workdir, train_runs.overrides(
        image_folder, f"train.num_steps={more}"), cache_dir)
    assert code == 0, text[-2000:]
    assert f"resuming from step {step}" in text
  a, b = _losses(original), _losses(imported)
  # The first resumed step sees the same params, batch and noise: the same loss; later
  # steps differ only by the rounding of Adam's moments to bfloat16.
  assert b[step + 1] == pytest.approx(a[step + 1], rel=1e-6)
  for s in range(step + 2, more + 1):
    assert b[s] == pytest.approx(a[s], rel=2e-2)

  with pytest.raises(CheckpointError, match="already holds"):
    portable.import_run(weights, state, imported, _config(image_folder))


def test_import_without_optimizer_keeps_the_step_and_starts_adam_afresh(tmp_path, reference,
                                                                       image_folder):
  weights = tmp_path / "w.npz"
  portable.export_run(reference, weights)
  config = _config(image_folder)
  step, restored = portable.import_run(weights, tmp_path / "missing.npz", tmp_path / "run",
                                       config)
  assert (step, restored) == (train_runs.NUM_STEPS, False)
  with checkpoint_lib.Checkpointer(tmp_path / "run" / "checkpoints") as ckpt:
    target = portable._restore_target(portable._abstract(config))
    item, _ = ckpt.restore(step, target)
  leaves = jax.tree_util.tree_flatten_with_path(item["opt_state"])[0]
  counts = [leaf for path, leaf in leaves if checkpoint_lib.path_key(path).endswith("count")]
  moments = [leaf for path, leaf in leaves
             if {"mu", "nu"} & set(checkpoint_lib.path_key(path).split("/"))]
  # Fresh: a counter at `step` beside zero moments would skip the bias correction that the
  # zero moments need, and the first updates would be some 3x the learning rate.
  assert counts and all(int(c) == 0 for c in counts)
  assert moments and all(not np.any(m) for m in moments)
  assert int(item["step"]) == step and item["data_state"]["step"] == step

  other = _config(image_folder, "model.N=8")
  with pytest.raises(CheckpointError, match="different model"):
    portable.import_run(weights, None, tmp_path / "other", other)


def test_shipped_weights_become_every_tool_default(monkeypatch, tmp_path, reference):
  from msinn_jax import weights
  path = tmp_path / "default_model.npz"
  portable.export_run(reference, path, card={"slots": [
      {"device": "NVIDIA H200", "train_seconds": 120.0}]})
  monkeypatch.setattr(weights, "DEFAULT_WEIGHTS", tmp_path / "absent.npz")
  assert "UNTRAINED" in load_model(None).description
  monkeypatch.setattr(weights, "DEFAULT_WEIGHTS", path)
  for spec in (None, "default"):
    loaded = load_model(spec)
    assert loaded.config.N == 16 and "UNTRAINED" not in loaded.description
    assert f"trained {train_runs.NUM_STEPS} steps in 1 slot(s), 2 min on NVIDIA H200" in \
        loaded.description
  assert "UNTRAINED" in load_model("untrained").description
