"""Training state, optimizer, and the fine-tune path that widens the anchors.

Optimizer (official `train.py`): Adam (PyTorch defaults b1=0.9, b2=0.999, eps=1e-8) after
clipping the global gradient norm, with a step-wise learning rate that drops by a factor
at fixed fractions of the run (official `MultiStepLR(milestones=[675, 720], gamma=0.1)`
over 750 epochs, i.e. at 90 % and 96 %).

Fine-tuning to a wider rate range (the paper's 12-anchor models; official `train.py
--finetune`): a model trained with 8 anchors is loaded into one with 12 by keeping the 8
trained rows of each gain table (`gain`, `inv_gain`, `scale_gain`, shape
[anchor_num, C]) and filling the new rows with copies of the last trained row;
everything else is loaded unchanged and training restarts with a fresh optimizer
(official README: `-lr 1e-5`, 400 epochs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from msinn_jax.gain import GAIN_TABLES, lambda_spaced_tables
from msinn_jax.model import MSINN
from msinn_jax.train.config import OptimConfig


@flax.struct.dataclass
class TrainState:
  """What one optimizer step reads and writes.

  Attributes:
    step: int32 scalar, optimizer steps done.
    params: the model parameters.
    opt_state: the optax state.
  """

  step: jax.Array
  params: Any
  opt_state: Any


def _drops(optim: OptimConfig, num_steps: int) -> dict[int, float]:
  """Step -> factor of each learning-rate drop (drops on one step multiply)."""
  boundaries: dict[int, float] = {}
  for fraction in optim.lr_drops:
    step = round(fraction * num_steps)
    boundaries[step] = boundaries.get(step, 1.0) * optim.lr_drop_factor
  return boundaries


def learning_rate_schedule(optim: OptimConfig, num_steps: int) -> optax.Schedule:
  """Piecewise-constant learning rate: `learning_rate`, times `lr_drop_factor` from step
  `round(f * num_steps)` on for each fraction f of `lr_drops` (steps counted from 0)."""
  return optax.piecewise_constant_schedule(optim.learning_rate, _drops(optim, num_steps))


def learning_rate_at(optim: OptimConfig, num_steps: int, step: int) -> np.float32:
  """`learning_rate_schedule(optim, num_steps)(step)`, bit for bit, computed on the host.

  This is the value the compiled step is given (see `make_optimizer`); numpy, so that
  asking for it never waits on the device.
  """
  lr = np.float32(optim.learning_rate)
  for boundary, factor in sorted(_drops(optim, num_steps).items()):
    if step >= boundary:
      lr = np.float32(lr * np.float32(factor))
  return lr


def _unit_step_size(count: jax.Array) -> float:
  del count
  return 1.0


def make_optimizer(optim: OptimConfig) -> optax.GradientTransformation:
  """Global-norm clipping (unless `clip_norm` is 0), then Adam with a unit step size.

  The learning rate is not in it: the compiled step takes the step's rate as an input
  and multiplies Adam's update by it (`step.train_step`), so a run resumed with another
  length, base rate or drops (a warm restart, a fine-tune) runs the same program, with no
  recompile. The unit step size is a schedule, not a constant, so that the state keeps the
  step counter that `optax.adam(schedule)` keeps: the same layout as checkpoints and
  `default_state.npz` written before, and the same update, bit for bit.
  """
  adam = optax.adam(_unit_step_size, b1=0.9, b2=0.999, eps=1e-8)
  if optim.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(optim.clip_norm), adam)
  return adam


def init_params(model: MSINN, rng: jax.Array, batch: jax.Array,
                gain_lambdas: Sequence[float] | None = None) -> Any:
  """Fresh parameters; ActNorm is initialised from the statistics of `batch`.

  Args:
    model: the model.
    rng: PRNG key.
    batch: [B, H, W, 3] uint8 images (the first training batch).
    gain_lambdas: if given, the gain tables start spaced for these lambdas
      (`gain.lambda_spaced_tables`) instead of at ones.
  """
  x = batch.astype(jnp.float32) / 255.0
  params_rng, noise_rng = jax.random.split(rng)
  params = model.init({"params": params_rng, "noise": noise_rng}, x, 0.0)["params"]
  if gain_lambdas is not None:
    tables = lambda_spaced_tables(gain_lambdas, model.config.total_latent_channels)
    params = {**params, "gains": {k: jnp.asarray(v) for k, v in tables.items()}}
  return params


def state_from_params(params: Any, tx: optax.GradientTransformation) -> TrainState:
  """A state at step 0 around `params`, with a fresh optimizer state."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def create_train_state(rng: jax.Array, batch: jax.Array, *, model: MSINN,
                       tx: optax.GradientTransformation,
                       gain_lambdas: Sequence[float] | None = None) -> TrainState:
  """Initialises the parameters on `batch` and the optimizer; pure, jit it with the
  state's `out_shardings` (see `train_lib`). `gain_lambdas`: see `init_params`."""
  return state_from_params(init_params(model, rng, batch, gain_lambdas), tx)


def widen_anchors(params: Any, anchor_num: int) -> Any:
  """Extends the gain tables to `anchor_num` rows by repeating their last row.

  Args:
    params: model parameters whose `params["gains"]` tables have A <= anchor_num rows.
    anchor_num: rows wanted.

  Returns:
    The parameters with widened gain tables (others are the same objects).

  Raises:
    ValueError: the tables have more rows than `anchor_num`.
  """
  gains = dict(params["gains"])
  for name in GAIN_TABLES:
    table = gains[name]
    extra = anchor_num - table.shape[0]
    if extra < 0:
      raise ValueError(f"cannot narrow the {name} table from {table.shape[0]} to "
                       f"{anchor_num} anchors")
    gains[name] = jnp.concatenate([table, jnp.repeat(table[-1:], extra, axis=0)], axis=0)
  return {**params, "gains": gains}
