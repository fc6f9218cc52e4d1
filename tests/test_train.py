"""Tests for training (`msinn_jax.train.{config,objective,state,step,train_lib}`, `msinn train`).

Fast tests check the pieces in this process. The training runs (marked slow, except the
TFDS smoke run) are `msinn train` subprocesses on the smoke config; see `train_runs.py`.
The multi-device and multi-process runs are in `test_train_parallel.py`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train_runs
from msinn_jax import cli
from msinn_jax.errors import UserError
from msinn_jax.model import MSINN
from msinn_jax.tools import common
from msinn_jax.tools import train as train_tool
from msinn_jax.train import checkpoint, objective, train_lib
from msinn_jax.train import config as config_lib
from msinn_jax.train import mesh as mesh_lib
from msinn_jax.train.metrics_log import read_metrics
from msinn_jax.gain import GAIN_TABLES, lambda_spaced_tables
from msinn_jax.train.state import (init_params, learning_rate_at,
                                   learning_rate_schedule, make_optimizer, widen_anchors)

CONFIGS = train_runs.REPO / "experiments" / "configs"


def _params(workdir: pathlib.Path, step: int | None = None):
  path = workdir / "checkpoints" / (str(step) if step is not None else "")
  return checkpoint.load_params(path)[0]


# --- Config ----------------------------------------------------------------------------


def test_config_files_hold_the_paper_setup():
  paper = config_lib.load_config_file(CONFIGS / "default.py")
  assert (paper.optim.learning_rate, paper.optim.lr_drops, paper.optim.lr_drop_factor,
          paper.optim.clip_norm) == (1e-4, (0.9, 0.96), 0.1, 1.0)
  assert (paper.train.per_device_batch_size, paper.data.crop_size) == (8, 256)
  assert paper.model.anchor_num == 8 and paper.lambdas == objective.PAPER_LAMBDAS[:8]
  assert paper.lambdas[-1] == 0.18
  fine = config_lib.load_config_file(CONFIGS / "finetune.py")
  assert fine.model.anchor_num == 12 and fine.lambdas[-1] == 1.8
  assert (fine.optim.learning_rate, fine.optim.lr_drops) == (1e-5, ())
  assert fine.train.init_from and dataclasses.replace(fine.model, anchor_num=8) == paper.model
  smoke = config_lib.load_config_file(CONFIGS / "smoke.py")
  for config in (paper, fine, smoke):
    as_json = json.loads(json.dumps(config_lib.to_dict(config)))
    assert config_lib.from_dict(as_json) == config


def test_the_shipped_model_configs_share_a_model_and_differ_in_schedule():
  """compact.py (CPU slots, 10 k steps) and compact_gpu.py (its 40 k-step continuation):
  one model and data, so a GPU slot resumes the shipped state; drops where they say."""
  cpu = config_lib.load_config_file(CONFIGS / "compact.py")
  gpu = config_lib.load_config_file(CONFIGS / "compact_gpu.py")
  assert gpu.model == cpu.model and gpu.data == cpu.data
  assert cpu.model.anchor_num == 8 and cpu.train.gain_init == "lambda"

  def drops(config):
    schedule = learning_rate_schedule(config.optim, config.train.num_steps)
    rates = np.array([schedule(i) for i in range(0, config.train.num_steps, 250)])
    return [250 * i for i in np.flatnonzero(rates[1:] < rates[:-1]) + 1]

  assert drops(cpu) == [7500, 9500] and drops(gpu) == [32_000, 38_000]


def test_overrides_are_typed_and_checked():
  base = config_lib.load_config_file(CONFIGS / "smoke.py")
  config = config_lib.apply_overrides(base, [
      "train.num_steps=7", "optim.learning_rate=1", "optim.lr_drops=(0.5,)",
      "data.folder=/data/2024", "data.image_key=None", "model.depths=[2, 2, 2, 2]",
      "distributed.process_id=1", "checkpoint.async_save=false"])
  assert config.train.num_steps == 7
  assert config.optim.learning_rate == 1.0 and isinstance(config.optim.learning_rate, float)
  assert config.optim.lr_drops == (0.5,) and config.model.depths == (2, 2, 2, 2)
  assert config.data.folder == "/data/2024" and config.data.image_key is None
  assert config.distributed.process_id == 1 and config.checkpoint.async_save is False
  assert base.train.num_steps != 7  # Frozen: the base is unchanged.
  for bad, message in [("train.num_steps=abc", "expects int"),
                       ("train.num_step=3", "unknown config key"),
                       ("train=3", "is a section"),
                       ("train.num_steps", "form section.field=value"),
                       ("optim.lr_drops=(1.5,)", "lr_drops"),
                       ("model.anchor_num=13", "lambdas"),
                       ("model.flow_coupling=nope", "flow_coupling")]:
    with pytest.raises(UserError, match=message):
      config_lib.apply_overrides(base, [bad])


def test_cli_prints_the_resolved_config_and_reports_bad_overrides(capsys):
  argv = ["train", "--config", str(CONFIGS / "smoke.py"), "--workdir", "unused"]
  assert cli.main(argv + ["--print-config", "--set", "train.num_steps=3"]) == 0
  assert json.loads(capsys.readouterr().out)["train"]["num_steps"] == 3
  assert cli.main(argv + ["--set", "train.num_steps=x"]) == 2
  assert "train.num_steps expects int" in capsys.readouterr().err
  assert cli.main(["train", "--config", "missing.py", "--workdir", "unused"]) == 2
  not_python = CONFIGS.parent / "results" / "README.md"
  for config, message in ((not_python, "not a Python file"), (CONFIGS, "is a folder")):
    assert cli.main(["train", "--config", str(config), "--workdir", "unused"]) == 2
    assert message in capsys.readouterr().err
  assert cli.main(["train", "--config", str(CONFIGS / "smoke.py"), "--workdir",
                   str(not_python)]) == 2
  assert "is a file; give a folder" in capsys.readouterr().err
  for limit in ("nan", "0", "-5"):  # NaN would pass a `<= 0` test and never stop the run.
    with pytest.raises(SystemExit) as exit_info:
      cli.main(argv + ["--time-limit", limit])
    assert exit_info.value.code == 2 and "--time-limit" in capsys.readouterr().err


def test_cli_starts_the_processes_then_the_compile_cache_then_trains(monkeypatch, tmp_path):
  logger = logging.getLogger("msinn_jax")  # `run` sets up its handler; undone at the end.
  monkeypatch.setattr(logger, "handlers", list(logger.handlers))
  monkeypatch.setattr(logger, "level", logger.level)
  monkeypatch.setattr(logger, "propagate", logger.propagate)
  calls = []
  monkeypatch.setattr(train_tool, "use_xla_convolutions_on_cpu",
                      lambda: calls.append(("cpu kernels",)))
  monkeypatch.setattr(train_lib.mesh_lib, "maybe_initialize_distributed",
                      lambda *a, **k: calls.append(("distributed", a[1], a[2])))
  monkeypatch.setattr(train_tool, "enable_compilation_cache",
                      lambda device: calls.append(("cache", device)))
  monkeypatch.setattr(train_lib, "train",
                      lambda config, workdir, time_limit_s: calls.append(("train", workdir)))
  argv = ["train", "--config", str(CONFIGS / "smoke.py"), "--workdir", str(tmp_path),
          "--set", "distributed.num_processes=2", "distributed.process_id=1",
          "distributed.coordinator_address=127.0.0.1:1"]
  assert cli.main(argv) == 0
  # XLA reads its flags, and the cache asks JAX for its platform (which fixes the process
  # topology), when the backends start: flags first, then start-up, then the cache.
  assert calls == [("cpu kernels",), ("distributed", 2, 1), ("cache", None),
                   ("train", str(tmp_path))]


def test_training_flag_joins_xla_flags_unless_the_user_chose():
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert common.use_xla_convolutions_on_cpu(environ, "0.10.2")
  assert environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=4",
                                          common.CPU_TRAINING_XLA_FLAG]
  assert not common.use_xla_convolutions_on_cpu(environ, "0.10.2")  # Once only.
  assert environ["XLA_FLAGS"].count(common.YNN_FLAG) == 1
  mine = {"XLA_FLAGS": f"{common.YNN_FLAG}=dot"}
  assert not common.use_xla_convolutions_on_cpu(mine, "0.10.2")
  assert mine == {"XLA_FLAGS": f"{common.YNN_FLAG}=dot"}
  # A jaxlib it was not measured with might not know the flag, and XLA aborts on those.
  empty = {}
  assert not common.use_xla_convolutions_on_cpu(empty, "9.9.9") and empty == {}
  assert common.use_xla_convolutions_on_cpu(empty, "0.10.2")
  assert empty == {"XLA_FLAGS": common.CPU_TRAINING_XLA_FLAG}


def test_training_flag_is_known_to_this_jaxlib_and_keeps_gradients(tmp_path):
  """With the flag, XLA compiles convolutions without YNNPACK, to the same gradients."""
  if jax.lib.__version__ not in common.YNN_FLAG_JAXLIB:
    pytest.skip(f"jaxlib {jax.lib.__version__}: the flag is only set with "
                f"{common.YNN_FLAG_JAXLIB}")
  script = tmp_path / "grads.py"
  script.write_text(
      "import sys, jax, numpy as np\n"
      "from msinn_jax.tools import common\n"
      "assert common.use_xla_convolutions_on_cpu() == (sys.argv[1] == 'on')\n"
      "r = np.random.default_rng(0)\n"
      "x = r.standard_normal((2, 16, 16, 24), np.float32)\n"
      "w = r.standard_normal((3, 3, 24, 8), np.float32)\n"
      "f = lambda w, x: (jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers="
      "('NHWC', 'HWIO', 'NHWC')) ** 2).sum()\n"
      "g = jax.jit(jax.grad(f, (0, 1))).lower(w, x).compile()\n"
      "gw, gx = g(w, x)\n"
      "np.savez(sys.argv[2], gw=gw, gx=gx, ynn='ynn_fusion' in g.as_text())\n")
  outputs = {}
  for mode in ("on", "off"):
    env = {k: v for k, v in train_runs.env(tmp_path).items() if k != "XLA_FLAGS"}
    if mode == "off":
      # The YNN option set (to its default, convolutions included): left alone.
      env["XLA_FLAGS"] = f"{common.YNN_FLAG}=+individual_convolution"
    outputs[mode] = tmp_path / f"{mode}.npz"
    done = subprocess.run([sys.executable, str(script), mode, str(outputs[mode])], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
  on, off = np.load(outputs["on"]), np.load(outputs["off"])
  assert not on["ynn"] and off["ynn"]
  for name in ("gw", "gx"):
    np.testing.assert_allclose(on[name], off[name], rtol=1e-4, atol=1e-3)


# --- Objective and optimizer -----------------------------------------------------------


def test_loss_averages_over_the_batch_as_the_official_code():
  rng = np.random.default_rng(0)
  b, h, w = 3, 8, 16
  x, x_hat = rng.random((b, h, w, 3)), rng.random((b, h, w, 3))
  bits = rng.random(b) * 1000
  lmbda = np.array(objective.PAPER_LAMBDAS)[[0, 7, 3]]
  terms = objective.rate_distortion(x, x_hat, bits, lmbda)
  # Official RateDistortionLoss with a list of lambdas: sum_b lambda_b MSE_b / N for the
  # distortion, the total bits over N H W pixels for the rate.
  mse = ((x_hat - x) ** 2).reshape(b, -1).mean(1)
  official = 255**2 * np.sum(lmbda * mse) / b + bits.sum() / (b * h * w)
  np.testing.assert_allclose(float(np.mean(terms["loss"])), official, rtol=1e-6)  # float32.
  sums = objective.sums_per_rate({"bpp": terms["bpp"]}, np.array([1, 1, 3]), 4)
  np.testing.assert_array_equal(sums["count"], [0, 2, 0, 1])
  np.testing.assert_allclose(sums["bpp"][1], bits[:2].sum() / (h * w), rtol=1e-6)


def test_rate_indexes_are_uniform_over_the_anchors():
  index = np.asarray(objective.sample_rate_indexes(jax.random.key(0), 80_000, 8))
  assert index.min() == 0 and index.max() == 7
  # 10_000 expected per anchor; 5 standard deviations is about 470.
  assert np.abs(np.bincount(index) - 10_000).max() < 500


def test_learning_rate_drops_at_fractions_of_the_run():
  paper = config_lib.load_config_file(CONFIGS / "default.py").optim
  schedule = learning_rate_schedule(paper, 1000)
  lr = [float(schedule(s)) for s in (0, 899, 900, 959, 960, 999)]
  np.testing.assert_allclose(lr, [1e-4, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6], rtol=1e-6)


def test_host_learning_rate_is_the_schedule_bit_for_bit():
  paper = config_lib.load_config_file(CONFIGS / "default.py").optim
  merged = dataclasses.replace(paper, learning_rate=3e-4, lr_drops=(0.5, 0.5, 0.75))
  flat = dataclasses.replace(paper, lr_drops=())
  for optim, num_steps in ((paper, 1000), (merged, 37), (flat, 5)):
    schedule = learning_rate_schedule(optim, num_steps)
    for step in range(num_steps + 2):
      host = learning_rate_at(optim, num_steps, step)
      assert host.dtype == np.float32
      assert host.tobytes() == np.float32(schedule(step)).tobytes(), (optim, step)


def test_learning_rate_as_an_input_gives_optax_adam_with_its_schedule_exactly():
  """The step multiplies the unit-step optimizer's update by the rate it is given; that
  is `optax.adam(schedule)` (same state layout, same parameters, bit for bit)."""
  import optax
  optim = dataclasses.replace(config_lib.load_config_file(CONFIGS / "default.py").optim,
                              learning_rate=3e-3, clip_norm=0.5)
  num_steps = 10
  old = optax.chain(optax.clip_by_global_norm(0.5),
                    optax.adam(learning_rate_schedule(optim, num_steps), eps=1e-8))
  new = make_optimizer(optim)
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(7, 5)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}
  assert jax.tree.structure(old.init(params)) == jax.tree.structure(new.init(params))
  p_old, s_old, p_new, s_new = params, old.init(params), params, new.init(params)
  for step in range(num_steps):
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
    u_old, s_old = old.update(grads, s_old, p_old)
    p_old = optax.apply_updates(p_old, u_old)
    u_new, s_new = new.update(grads, s_new, p_new)
    lr = jnp.asarray(learning_rate_at(optim, num_steps, step))
    p_new = optax.apply_updates(p_new, jax.tree.map(lambda u: lr * u, u_new))
  jax.tree.map(np.testing.assert_array_equal, p_new, p_old)
  jax.tree.map(np.testing.assert_array_equal, s_new, s_old)


def test_one_compiled_step_serves_every_schedule(image_folder):
  """Length, base rate and drops leave the step's program unchanged (a resumed or
  warm-restarted run reuses the compiled step); what the program computes does not."""
  def lowered(*sets):
    config = config_lib.apply_overrides(config_lib.load_config_file(train_runs.SMOKE_CONFIG),
                                        train_runs.overrides(image_folder, *sets))
    mesh = mesh_lib.make_mesh()
    trainer = train_lib.build_trainer(config, mesh)
    shape = (train_runs.GLOBAL_BATCH, train_runs.CROP, train_runs.CROP, 3)
    abstract = trainer.abstract_state(shape)
    batch = jax.ShapeDtypeStruct(shape, jnp.uint8, sharding=mesh_lib.batch_sharding(mesh))
    rng = jax.eval_shape(lambda: jax.random.key(0))
    return trainer.step.lower(abstract, batch, rng, jnp.float32(1e-3)).as_text()

  reference = lowered()
  assert lowered("train.num_steps=40000", "optim.learning_rate=1e30",
                 "optim.lr_drops=(0.2,0.3)") == reference
  assert lowered("optim.clip_norm=0.5") != reference


def test_lambda_gain_init_starts_each_anchor_at_its_own_rate():
  lambdas = objective.PAPER_LAMBDAS[:4]
  tables = lambda_spaced_tables(lambdas, 5)
  g = tables["gain"][:, 0]
  np.testing.assert_allclose(g[1:] / g[:-1], np.sqrt(np.array(lambdas[1:]) / lambdas[:-1]),
                             rtol=1e-6)
  np.testing.assert_allclose(np.exp(np.mean(np.log(g))), 1.0, rtol=1e-6)
  np.testing.assert_allclose(tables["inv_gain"] * tables["gain"], 1.0, rtol=1e-6)
  np.testing.assert_array_equal(tables["scale_gain"], tables["gain"])

  from helpers import image, small_config  # pylint: disable=import-outside-toplevel
  cfg = small_config(anchor_num=4)
  model = MSINN(cfg)
  batch = (np.asarray(image(0, 2, 64, 64)) * 255).astype(np.uint8)
  # One program for both inits (XLA shares all but the tables) and one for both rates.
  params, ones = jax.jit(lambda key: (init_params(model, key, batch, tuple(lambdas)),
                                      init_params(model, key, batch)))(jax.random.key(0))
  for name in GAIN_TABLES:
    np.testing.assert_allclose(params["gains"][name],
                               lambda_spaced_tables(lambdas, cfg.total_latent_channels)[name])
    np.testing.assert_array_equal(ones["gains"][name], 1.0)
  # Untrained, the spaced tables already order the anchors' rates; ones do not.
  x = batch.astype(np.float32) / 255
  bits_at = jax.jit(lambda p, rate: sum(jnp.sum(-jnp.log2(lik)) for lik in
                                        model.apply({"params": p}, x, rate)["likelihoods"]))
  bits = [float(bits_at(params, r)) for r in (0, 3)]
  assert bits[1] > 1.5 * bits[0]


def test_widen_anchors_copies_the_last_gain_vectors():
  config = config_lib.load_config_file(CONFIGS / "smoke.py").model
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32)
  shapes = jax.eval_shape(lambda x: MSINN(config).init(
      {"params": jax.random.key(0), "noise": jax.random.key(1)}, x, 0.0), x)["params"]
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
  wide = widen_anchors(params, 6)
  for name in GAIN_TABLES:
    old, new = params["gains"][name], np.asarray(wide["gains"][name])
    assert old.shape[0] == config.anchor_num and new.shape == (6, old.shape[1])
    np.testing.assert_array_equal(new[:4], old)
    np.testing.assert_array_equal(new[4:], np.broadcast_to(old[-1], (2, old.shape[1])))
  assert wide["flow"] is params["flow"]  # Everything else is untouched.
  with pytest.raises(ValueError, match="narrow"):
    widen_anchors(params, 3)


# --- Training runs ---------------------------------------------------------------------

TFDS_RUN = r"""
import sys
import tensorflow_datasets as tfds
from msinn_jax.train import config as config_lib, train_lib
config = config_lib.apply_overrides(config_lib.load_config_file(sys.argv[1]), sys.argv[3:])
with tfds.testing.mock_data(num_examples=6):  # Never downloads.
  state = train_lib.train(config, sys.argv[2])
print("final step", int(state.step))
"""


def test_tfds_mock_data_trains(tmp_path, image_folder, cache_dir):
  pytest.importorskip("tensorflow_datasets")
  workdir = tmp_path / "tfds"
  # The reference run's settings (so the compiled program is shared), on TFDS's "clic".
  sets = train_runs.overrides(image_folder, "data.source=tfds", "data.tfds_name=clic")
  result = subprocess.run(
      [sys.executable, "-c", TFDS_RUN, str(train_runs.SMOKE_CONFIG), str(workdir), *sets],
      env=train_runs.env(cache_dir), capture_output=True, text=True,
      timeout=train_runs.RUN_TIMEOUT_S)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"final step {train_runs.NUM_STEPS}" in result.stdout
  records = read_metrics(workdir)
  assert len(records) == train_runs.NUM_STEPS
  assert all(np.isfinite(r["loss"]) and r["bpp"] > 0 for r in records)
  assert checkpoint.Checkpointer(workdir / "checkpoints").latest_step() == train_runs.NUM_STEPS


@pytest.mark.slow
def test_loss_falls_on_real_images(reference):
  records = read_metrics(reference)
  loss = [r["loss"] for r in records]
  assert len(loss) == train_runs.NUM_STEPS and np.all(np.isfinite(loss))
  assert np.mean(loss[-3:]) < 0.85 * np.mean(loss[:3]), loss  # Measured: 0.70 (32x32 crops).
  # Bits and PSNR are logged per rate index, for the rates drawn in each step.
  assert any(k.startswith("bpp/rate_") for k in records[0])
  assert all(k.startswith(("psnr/rate_", "bpp/rate_", "loss/rate_")) or k in {
      "step", "time", "loss", "bpp", "mse", "psnr", "grad_norm", "learning_rate",
      "images_per_sec"} for r in records for k in r)


@pytest.mark.slow
def test_resume_after_sigkill_is_exact(tmp_path, reference, image_folder, cache_dir):
  workdir = tmp_path / "killed"
  sets = train_runs.overrides(image_folder)
  code, log = train_runs.kill_after_checkpoint(workdir, sets, cache_dir,
                                               step=train_runs.CKPT_EVERY)
  assert code == -signal.SIGKILL, log[-3000:]
  steps = checkpoint.Checkpointer(workdir / "checkpoints").all_steps()
  assert steps and max(steps) < train_runs.NUM_STEPS
  code, log = train_runs.train(workdir, sets, cache_dir)
  assert code == 0, log[-3000:]
  assert f"resuming from step {max(steps)}" in log
  # The same program on the same batches, rates and noise: bit-identical parameters.
  jax.tree.map(np.testing.assert_array_equal, _params(workdir), _params(reference))


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, reference,
                                                             image_folder, cache_dir):
  workdir = tmp_path / "diverged"
  shutil.copytree(reference, workdir)
  last = train_runs.NUM_STEPS
  # Continue the finished reference run with an absurd learning rate: the first step
  # throws the parameters to ~1e30, the next loss is not finite.
  sets = train_runs.overrides(image_folder, f"train.num_steps={last + 2 * train_runs.CKPT_EVERY}",
                              "optim.learning_rate=1e30")
  code, log = train_runs.train(workdir, sets, cache_dir)
  assert code == 2, log[-3000:]
  assert "msinn train: error: training diverged: the loss is" in log
  assert f"the newest checkpoint, step {last} in" in log
  assert checkpoint.Checkpointer(workdir / "checkpoints").latest_step() == last
  jax.tree.map(np.testing.assert_array_equal, _params(workdir), _params(reference, last))


@pytest.mark.slow
def test_fine_tune_start_widens_a_trained_checkpoint(reference):
  config = config_lib.apply_overrides(
      config_lib.load_config_file(CONFIGS / "smoke.py"),
      [*train_runs.MODEL, "model.anchor_num=6", f"train.init_from={reference / 'checkpoints'}"])
  mesh = mesh_lib.make_mesh()
  trainer = train_lib.build_trainer(config, mesh)
  abstract = trainer.abstract_state((1, 64, 64, 3))
  params = train_lib.fine_tune_params(config.train.init_from, config, abstract, mesh)
  trained = _params(reference)
  for name in GAIN_TABLES:
    table, old = np.asarray(params["gains"][name]), np.asarray(trained["gains"][name])
    np.testing.assert_array_equal(table, np.concatenate([old, old[-1:], old[-1:]]))
  jax.tree.map(np.testing.assert_array_equal, params["flow"], trained["flow"])
  with pytest.raises(UserError, match="does not fit"):
    narrow = dataclasses.replace(config, model=dataclasses.replace(config.model, N=8))
    train_lib.fine_tune_params(config.train.init_from, narrow,
                               train_lib.build_trainer(narrow, mesh).abstract_state(
                                   (1, 64, 64, 3)), mesh)
