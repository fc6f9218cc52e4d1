"""The training loop: `train(config, workdir)`.

One loop for one CPU, one GPU, a multi-GPU host or a multi-host pod:

  distributed  `jax.distributed.initialize` when `config.distributed` asks for it
  mesh         one "data" axis over every device of every process
  input        each process crops its rows of the global batch (`CropLoader`), and
               `host_to_global` assembles the global batch sharded over "data"
  state        `jax.eval_shape` for the shapes, then either a restore of the newest
               checkpoint in `<workdir>/checkpoints`, a fine-tune start from
               `train.init_from`, or a jitted init (ActNorm sees the first batch)
  loop         the compiled `train_step` (state donated); metrics are fetched one step
               late, so the host never waits for the step it just queued
  checkpoints  every `checkpoint.every_steps` and at the end: params, opt_state, step,
               rng, the data position and the resolved config (async Orbax)
  guard        a non-finite loss stops the run with `NonFiniteLossError` before any
               state computed from it is saved; the newest checkpoint stays intact
  time limit   `time_limit_s` ends the run early (a preemptible slot, a job with a
               wall-clock limit): it stops before a step would cross the limit, saves
               that step and returns; the next call resumes from it
  logging      process 0: `<workdir>/metrics.jsonl` (and TensorBoard if available)
               with loss, bpp, mse, psnr and bpp/psnr per rate index, plus a tqdm bar

Resume is exact: the batches, the rate indexes and the noise of step k depend only on
the seeds and k, so a run killed after checkpoint k and restarted continues as if it
had never stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import Mesh

from msinn_jax import convert
from msinn_jax.errors import CheckpointError
from msinn_jax.model import MSINN
from msinn_jax.train import checkpoint as checkpoint_lib
from msinn_jax.train import data as data_lib
from msinn_jax.train import mesh as mesh_lib
from msinn_jax.train import step as step_lib
from msinn_jax.train.config import DataConfig, ExperimentConfig, to_dict
from msinn_jax.train.metrics_log import MetricWriter, ProgressBar
from msinn_jax.train.state import (TrainState, learning_rate_at, make_optimizer,
                                   state_from_params, widen_anchors)

CHECKPOINT_DIR = checkpoint_lib.CHECKPOINT_DIR  # <workdir>/checkpoints

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; the run stopped without saving that state."""


def make_source(data: DataConfig) -> data_lib.ImageSource:
  """The image collection `data` names (folder or TFDS)."""
  if data.source == "folder":
    return data_lib.ImageFolderSource(data.folder, lenient=True)
  return data_lib.TfdsSource(data.tfds_name, split=data.tfds_split, image_key=data.image_key,
                             data_dir=data.tfds_data_dir)


def initialize_distributed(config: ExperimentConfig) -> bool:
  """`jax.distributed.initialize` as `config.distributed` asks, before anything touches
  JAX's backends; a second call does nothing. Returns whether this call initialised."""
  dist = config.validate().distributed
  return mesh_lib.maybe_initialize_distributed(
      dist.coordinator_address, dist.num_processes, dist.process_id,
      auto_detect=dist.auto_detect, initialization_timeout=dist.initialization_timeout)


@dataclasses.dataclass(frozen=True)
class Trainer:
  """The compiled pieces of a run on one mesh.

  Attributes:
    model: the model.
    tx: the optimizer (unit step size; see `state.make_optimizer`).
    schedule: step -> its learning rate, a host-side float32 (`state.learning_rate_at`).
    mesh: the device mesh.
    init: `(rng, global_batch) -> TrainState`, replicated.
    step: `(state, global_batch, rng, learning_rate) -> (state, metrics)`, state donated;
      `learning_rate` a replicated float32 scalar (`replicated_scalar`).
  """

  model: MSINN
  tx: optax.GradientTransformation
  schedule: Callable[[int], np.float32]
  mesh: Mesh
  init: Callable[[jax.Array, jax.Array], TrainState]
  step: step_lib.StepFn

  def abstract_state(self, batch_shape: tuple[int, ...]) -> TrainState:
    """Shapes, dtypes and shardings of the state for global batches of `batch_shape`."""
    return step_lib.abstract_state(self.model, self.tx, self.mesh, batch_shape)


def build_trainer(config: ExperimentConfig, mesh: Mesh) -> Trainer:
  """Model, optimizer and the jitted init and step for `mesh`."""
  model = MSINN(config.model)
  tx = make_optimizer(config.optim)
  return Trainer(
      model=model,
      tx=tx,
      schedule=functools.partial(learning_rate_at, config.optim, config.train.num_steps),
      mesh=mesh,
      init=step_lib.compile_init(
          model, tx, mesh, config.lambdas if config.train.gain_init == "lambda" else None),
      step=step_lib.compile_train_step(model, tx, config.lambdas, mesh))


def replicated_scalar(value: float, mesh: Mesh) -> jax.Array:
  """A float32 scalar created replicated on every device of `mesh` (any process count)."""
  value = np.float32(value)
  return jax.jit(lambda: jnp.asarray(value), out_shardings=mesh_lib.replicated(mesh))()


def replicated_key(seed: int, stream: int, mesh: Mesh) -> jax.Array:
  """`fold_in(key(seed), stream)`, created replicated on every device of `mesh`."""
  return jax.jit(lambda: jax.random.fold_in(jax.random.key(seed), stream),
                 out_shardings=mesh_lib.replicated(mesh))()


class _MetricsBuffer:
  """Step metrics fetched from the device lazily, checked for NaN, averaged per interval."""

  def __init__(self, num_anchors: int):
    self.num_anchors = num_anchors
    self._pending: list[tuple[int, Any]] = []
    self._reset()

  def _reset(self) -> None:
    self._steps = 0
    self._sums: dict[str, float] = {}
    self._per_rate: dict[str, np.ndarray] = {}

  def add(self, step: int, metrics: Any) -> None:
    self._pending.append((step, metrics))

  def fetch(self, keep: int = 0) -> None:
    """Fetches all but the newest `keep` pending steps.

    Raises:
      NonFiniteLossError: a fetched step's loss or gradient norm is NaN or infinite.
    """
    while len(self._pending) > keep:
      step, metrics = self._pending.pop(0)
      metrics = jax.device_get(metrics)
      loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
      if not np.isfinite(loss) or not np.isfinite(grad_norm):
        raise NonFiniteLossError(
            f"the loss is {loss} (gradient norm {grad_norm}) at step {step}")
      self._steps += 1
      for name, value in metrics.items():
        if name == "per_rate":
          for k, v in value.items():
            self._per_rate[k] = self._per_rate.get(k, 0.0) + np.asarray(v, np.float64)
        else:
          self._sums[name] = self._sums.get(name, 0.0) + float(value)

  def summary(self) -> dict[str, float]:
    """Means over the steps fetched since the last summary; per-rate means of bpp, psnr
    and loss over the samples drawn at each rate ("bpp/rate_3"); then resets."""
    out = {name: total / max(self._steps, 1) for name, total in self._sums.items()}
    count = self._per_rate.get("count", np.zeros(self.num_anchors))
    for name, totals in self._per_rate.items():
      if name == "count":
        continue
      for r in np.flatnonzero(count):
        out[f"{name}/rate_{r}"] = float(totals[r] / count[r])
    self._reset()
    return out


def _checkpoint_item(state: TrainState, rng: jax.Array,
                     data_state: dict[str, int]) -> dict[str, Any]:
  return {"params": state.params, "opt_state": state.opt_state, "step": state.step,
          "rng": rng, "data_state": data_state}


def _log_config_changes(saved: dict[str, Any], current: dict[str, Any]) -> None:
  saved_flat = traverse_util.flatten_dict(saved, sep=".")
  current_flat = traverse_util.flatten_dict(current, sep=".")
  for key in sorted(set(saved_flat) | set(current_flat)):
    if saved_flat.get(key) != current_flat.get(key):
      log.warning("config %s: checkpoint has %r, this run uses %r", key,
                      saved_flat.get(key), current_flat.get(key))


def fine_tune_params(path: str, config: ExperimentConfig, abstract: TrainState,
                      mesh: Mesh) -> Any:
  """Parameters of checkpoint `path` with the gain tables widened to this model."""
  replicated = mesh_lib.replicated(mesh)
  params, saved = checkpoint_lib.load_params(path, sharding=replicated)
  saved_anchors = saved.get("model", {}).get("anchor_num")
  params = jax.jit(lambda p: widen_anchors(p, config.model.anchor_num),
                   out_shardings=replicated)(params)
  convert.check_fit(params, abstract.params,
                    f"checkpoint {path} (anchor_num={saved_anchors})")
  log.info("fine-tuning from %s: anchors %s -> %d", path, saved_anchors,
               config.model.anchor_num)
  return params


def _start(config: ExperimentConfig, trainer: Trainer, loader: data_lib.CropLoader,
           ckpt: checkpoint_lib.Checkpointer) -> tuple[TrainState, jax.Array, int]:
  """The state to start from: restored, fine-tune or fresh; returns (state, rng, step)."""
  mesh = trainer.mesh
  batch_shape = (loader.global_batch_size, loader.crop_size, loader.crop_size, 3)
  # The shapes cost a trace of the whole init (seconds): only a restore and a fine-tune
  # need them, a fresh start traces the init once, to compile it.
  if ckpt.latest_step() is not None:
    abstract = trainer.abstract_state(batch_shape)
    rng_shape = jax.eval_shape(lambda: jax.random.key(0))
    target = _checkpoint_item(
        abstract,
        jax.ShapeDtypeStruct(rng_shape.shape, rng_shape.dtype,
                             sharding=mesh_lib.replicated(mesh)),
        loader.state(0))
    item, saved_config, step = ckpt.restore_latest(target)
    _log_config_changes(saved_config, to_dict(config))
    if loader.check_state(item["data_state"]) != step:
      raise CheckpointError(f"checkpoint {step}: data position {item['data_state']} "
                            f"does not match its step")
    log.info("resuming from step %d in %s", step, ckpt.directory)
    state = TrainState(step=item["step"], params=item["params"], opt_state=item["opt_state"])
    return state, item["rng"], step
  rng = replicated_key(config.train.seed, 1, mesh)
  if config.train.init_from:
    params = fine_tune_params(config.train.init_from, config,
                              trainer.abstract_state(batch_shape), mesh)
    state = jax.jit(lambda p: state_from_params(p, trainer.tx),
                    out_shardings=mesh_lib.replicated(mesh))(params)
    return state, rng, 0
  first_batch = mesh_lib.host_to_global(loader.batch_at(0), mesh)  # ActNorm's data init.
  state = trainer.init(replicated_key(config.train.seed, 0, mesh), first_batch)
  return state, rng, 0


class _Clock:
  """Decides when a time-limited run stops: before a step would end past the limit.

  The next step is assumed to take as long as the slowest of the last few (the first,
  which compiles, is not counted). With several processes, process 0's decision is
  broadcast every `sync_every` steps so that all of them stop after the same step.
  """

  def __init__(self, limit_s: float | None, start: float, sync_every: int = 10):
    self.limit_s, self.start, self.sync_every = limit_s, start, sync_every
    self._last: float | None = None
    self._recent: list[float] = []

  def tick(self, done: int) -> bool:
    """Records that step `done` was queued; returns whether to stop after it."""
    now = time.time()
    if self._last is not None:
      self._recent = (self._recent + [now - self._last])[-5:]
    self._last = now
    if self.limit_s is None:
      return False
    next_step = max(self._recent, default=0.0)
    stop = now - self.start + 2 * next_step >= self.limit_s
    if jax.process_count() == 1:
      return stop
    if done % self.sync_every:
      return False
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return bool(multihost_utils.broadcast_one_to_all(np.int32(stop)))


def train(config: ExperimentConfig,
          workdir: str | os.PathLike[str],
          *,
          time_limit_s: float | None = None) -> TrainState:
  """Trains `config` in `workdir`, resuming from its newest checkpoint if any.

  Training only: evaluation is `msinn eval` (`eval_lib`) on a checkpoint.

  Call on every process of a multi-process run, each with its own
  `config.distributed.process_id`.

  Args:
    config: the experiment (see `train/config.py` and `experiments/configs/`).
    workdir: output folder: `checkpoints/`, `metrics.jsonl`.
    time_limit_s: wall-clock seconds this call may take, counted from its start
      (compilation and restore included, the final checkpoint's write not): the loop
      stops early, saves and returns. None runs to `train.num_steps`.

  Returns:
    The final state (replicated over all devices).

  Raises:
    NonFiniteLossError: the loss became NaN or infinite (nothing of it was saved).
    UserError: bad data, config or checkpoint.
  """
  started = time.time()
  initialize_distributed(config)
  workdir = pathlib.Path(workdir)
  mesh = mesh_lib.make_mesh()
  global_batch = data_lib.global_batch_size_for(config.train.per_device_batch_size)
  loader = data_lib.CropLoader(make_source(config.data), global_batch_size=global_batch,
                               crop_size=config.data.crop_size, seed=config.data.seed,
                               flip=config.data.flip)
  trainer = build_trainer(config, mesh)
  num_steps, every = config.train.num_steps, config.checkpoint.every_steps
  log.info("training on %d devices (%d processes), global batch %d, %d steps",
               jax.device_count(), jax.process_count(), global_batch, num_steps)

  ckpt = checkpoint_lib.Checkpointer(workdir / CHECKPOINT_DIR,
                                     max_to_keep=config.checkpoint.max_to_keep,
                                     async_save=config.checkpoint.async_save)
  writer = MetricWriter(workdir)
  try:
    state, rng, start = _start(config, trainer, loader, ckpt)
    metrics = _MetricsBuffer(config.model.anchor_num)
    bar = ProgressBar(num_steps, initial=start)
    tick, tick_step = time.time(), start
    clock = _Clock(time_limit_s, started)
    rates: dict[np.float32, jax.Array] = {}  # A piecewise-constant schedule: a few values.
    try:
      with loader.iterator(start, prefetch=config.data.prefetch,
                           num_workers=config.data.num_workers) as batches:
        for step in range(start, num_steps):
          batch = mesh_lib.host_to_global(next(batches), mesh)
          lr = trainer.schedule(step)
          if lr not in rates:
            rates[lr] = replicated_scalar(lr, mesh)
          state, step_metrics = trainer.step(state, batch, rng, rates[lr])
          done = step + 1
          metrics.add(done, step_metrics)
          out_of_time = clock.tick(done)
          last = done == num_steps or out_of_time
          save_now = done % every == 0 or last
          log_now = done % config.train.log_every_steps == 0 or last
          # Waits for the previous step only, unless this one is saved or logged.
          metrics.fetch(keep=0 if save_now or log_now else 1)
          if save_now:
            ckpt.save(done, _checkpoint_item(state, rng, loader.state(done)), to_dict(config),
                      force=True)
          if log_now:
            now = time.time()
            summary = metrics.summary()
            summary["learning_rate"] = float(lr)
            summary["images_per_sec"] = (done - tick_step) * global_batch / (now - tick)
            tick, tick_step = now, done
            writer.write_scalars(done, summary)
            bar.update(1, {k: summary[k] for k in ("loss", "bpp", "psnr")})
          else:
            bar.update(1)
          if out_of_time:
            log.info("time limit of %.0f s reached: stopped and saved at step %d",
                     time_limit_s, done)
            break
    except NonFiniteLossError as e:
      ckpt.wait_until_finished()
      latest = ckpt.latest_step()
      kept = (f"the newest checkpoint, step {latest} in {ckpt.directory}, is intact"
              if latest is not None else "no checkpoint was written")
      raise NonFiniteLossError(f"training diverged: {e}; stopped without saving it, and "
                               f"{kept}. Lower optim.learning_rate or check the data, "
                               f"then resume.") from None
    finally:
      bar.close()
  finally:
    writer.close()
    ckpt.close()
  return state
