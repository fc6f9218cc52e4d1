"""Helpers for the training tests: a small image folder and `msinn train` subprocesses.

Training runs go through subprocesses because JAX fixes the device count (XLA_FLAGS)
and the process topology when it starts, and so that a run can really be killed. All of
a session's runs share one persistent compilation cache, so the same program is
compiled once per session (a cold compile of the smoke model's init and step takes
about a minute on 2 CPU cores, a cache hit seconds).
"""

from __future__ import annotations

import os
import shutil
import pathlib
import signal
import socket
import subprocess
import sys
import time

import filelock
import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE_CONFIG = REPO / "experiments" / "configs" / "smoke.py"
TRAIN_IMAGES = REPO.parent / "shared" / "datasets" / "train"  # Beside the checkout.
RUN_TIMEOUT_S = 480  # Per training process (a cold compile on a busy 2-core machine).

# The reference run: the smoke config's flow and gain units without the post-filter, LRP
# and spatial context, global batch 8 of 32 x 32 crops, 12 steps, a checkpoint every 4
# steps; other runs change only what their test is about. These runs test the training
# machinery (resuming, time limits, export, data parallelism), which is the same whatever
# the networks; every distinct program costs a cold compile, and the three parts left out
# make up most of the smoke step's (2 AVX2 cores: init + step 19 + 72 s with them, 7 + 23 s
# without). Training gradients through every part, those three included, are checked
# in-process on the small test model (test_context.py). A step on 32 x 32 costs about a quarter of one on the smoke config's
# 64 x 64.
MODEL = ["model.post_process=False", "model.lrp=False", "model.spatial_context_num=0"]
NUM_STEPS = 12
GLOBAL_BATCH = 8
CKPT_EVERY = 4
CROP = 32


def make_image_folder(root: pathlib.Path, count: int = 8) -> pathlib.Path:
  """`count` small RGB PNGs: real photographs shrunk to a 96-pixel short side if the
  shared training set is there, else smooth random images."""
  root.mkdir(parents=True, exist_ok=True)
  sources = sorted(TRAIN_IMAGES.glob("*.png"))[:count] if TRAIN_IMAGES.is_dir() else []
  for i, path in enumerate(sources):
    with Image.open(path) as image:
      image = image.convert("RGB")
      scale = 96 / min(image.size)
      size = (max(96, round(image.size[0] * scale)), max(96, round(image.size[1] * scale)))
      image.resize(size, Image.BICUBIC).save(root / f"real_{i:02d}.png")
  rng = np.random.default_rng(0)
  for i in range(len(sources), count):
    low = rng.random((12, 16, 3)) * 255
    image = Image.fromarray(low.astype(np.uint8)).resize((128, 96), Image.BICUBIC)
    image.save(root / f"generated_{i:02d}.png")
  return root


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env(cache_dir: pathlib.Path, devices: int = 1) -> dict[str, str]:
  """Environment of a CPU training process with `devices` devices and the shared cache."""
  out = dict(os.environ)
  out.update({
      "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
      "JAX_PLATFORMS": "cpu",
      # As tests/conftest.py: the counter-based default PRNG triples compile times.
      "JAX_DEFAULT_PRNG_IMPL": "unsafe_rbg",
      "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
  })
  return out


def overrides(folder: pathlib.Path, *extra: str, devices: int = 1,
              processes: int = 1) -> list[str]:
  """`--set` values of the reference run, for `devices` devices in each of `processes`."""
  per_device = GLOBAL_BATCH // (devices * processes)
  return [*MODEL, f"data.folder={folder}", f"train.num_steps={NUM_STEPS}",
          f"train.per_device_batch_size={per_device}", f"checkpoint.every_steps={CKPT_EVERY}",
          f"data.crop_size={CROP}",
          "train.log_every_steps=1", "data.prefetch=1", "data.num_workers=1", *extra]


def command(workdir: pathlib.Path, sets: list[str]) -> list[str]:
  return [sys.executable, "-m", "msinn_jax.cli", "train", "--config", str(SMOKE_CONFIG),
          "--workdir", str(workdir), "--set", *sets]


def start(workdir: pathlib.Path, sets: list[str], cache_dir: pathlib.Path, devices: int = 1,
          name: str = "run") -> tuple[subprocess.Popen, pathlib.Path]:
  """Starts `msinn train` in the background; output goes to `<workdir>.<name>.log`."""
  workdir.parent.mkdir(parents=True, exist_ok=True)
  log = workdir.parent / f"{workdir.name}.{name}.log"
  with open(log, "w") as f:  # A file, not a pipe: a full pipe cannot block the child.
    proc = subprocess.Popen(command(workdir, sets), env=env(cache_dir, devices), cwd=REPO,
                            stdout=f, stderr=subprocess.STDOUT, text=True)
  return proc, log


def wait(procs: list[subprocess.Popen], timeout: float = RUN_TIMEOUT_S) -> None:
  """Waits for all `procs`; kills them all if one is still running after `timeout`."""
  deadline = time.monotonic() + timeout
  try:
    for proc in procs:
      proc.wait(timeout=max(deadline - time.monotonic(), 1))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()


def train(workdir: pathlib.Path, sets: list[str], cache_dir: pathlib.Path,
          devices: int = 1) -> tuple[int, str]:
  """Runs `msinn train` to the end; returns (exit code, output)."""
  proc, log = start(workdir, sets, cache_dir, devices)
  wait([proc])
  return proc.returncode, log.read_text()


def kill_after_checkpoint(workdir: pathlib.Path, sets: list[str], cache_dir: pathlib.Path,
                          step: int) -> tuple[int, str]:
  """Starts a run and SIGKILLs it as soon as checkpoint `step` is committed.

  Orbax writes a step into a temporary folder and renames it when complete, so the
  folder `checkpoints/<step>` appearing means the checkpoint is complete.

  Returns:
    (exit code, output); the code is -SIGKILL unless the run ended first.
  """
  proc, log = start(workdir, sets, cache_dir, name="killed")
  target = workdir / "checkpoints" / str(step)
  deadline = time.monotonic() + RUN_TIMEOUT_S
  try:
    while proc.poll() is None and not target.is_dir() and time.monotonic() < deadline:
      time.sleep(0.02)
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  return proc.returncode, log.read_text()


def session_dir(tmp_path_factory, name: str) -> pathlib.Path:
  """`<session basetemp>/<name>` (not created), the same path from every test module of the
  session, and from every worker under pytest-xdist (the workers' basetemps share a parent)."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent
  return base / name


def once(folder: pathlib.Path, make) -> pathlib.Path:
  """Calls `make(folder)` unless a process of this session (an xdist worker) has already
  made it; the others wait for it. Returns the folder."""
  done = folder / "DONE"
  with filelock.FileLock(f"{folder}.lock"):
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir(parents=True)
      make(folder)
      done.write_text("ok")
  return folder


def image_folder(tmp_path_factory) -> pathlib.Path:
  """The session's folder of training images (`make_image_folder`)."""
  return once(session_dir(tmp_path_factory, "images"), make_image_folder)


def reference_run(tmp_path_factory, folder: pathlib.Path,
                  cache_dir: pathlib.Path) -> pathlib.Path:
  """The workdir of the reference run (one device), trained once per session."""
  def train_reference(workdir):
    code, log = train(workdir, overrides(folder), cache_dir)
    assert code == 0, log[-3000:]
  return once(session_dir(tmp_path_factory, "reference"), train_reference)
