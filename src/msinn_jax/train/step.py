"""One optimizer step, and its compilation over a data-parallel mesh.

`train_step` is a pure function; `compile_train_step` jits it once with the state
replicated (`P()`), the batch split over the mesh's "data" axis (`P("data")`) and the
state donated, so the whole step (rate draw, forward, loss, backward, gradient
all-reduce, clipping, Adam) is one XLA program. The learning rate is an input, not a
constant of the program: one compiled step serves every schedule. The per-step randomness is
`fold_in(rng, state.step)`: a run resumed at step k draws exactly the numbers an
uninterrupted run draws at step k, on any number of devices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from msinn_jax.model import MSINN
from msinn_jax.train import mesh as mesh_lib
from msinn_jax.train import objective
from msinn_jax.train.state import TrainState, create_train_state

StepFn = Callable[[TrainState, jax.Array, jax.Array, jax.Array],
                  tuple[TrainState, dict[str, Any]]]


def train_step(state: TrainState, batch: jax.Array, rng: jax.Array, learning_rate: jax.Array,
               *, model: MSINN, tx: optax.GradientTransformation,
               lambdas: Sequence[float]) -> tuple[TrainState, dict[str, Any]]:
  """One Adam step on the variable-rate loss (`objective`).

  Args:
    state: current state.
    batch: [B, H, W, 3] uint8 crops.
    rng: the run's base PRNG key (the same every step).
    learning_rate: float32 scalar, this step's rate (`state.learning_rate_at`).
    model: the model.
    tx: the optimizer, with a unit step size (`state.make_optimizer`).
    lambdas: lambda of each anchor (length = the model's anchor_num).

  Returns:
    `(new_state, metrics)`. Metrics: batch means "loss", "bpp", "mse", "psnr",
    "grad_norm" (before clipping) as scalars, and "per_rate": sums over the batch per
    anchor ([A] arrays "bpp", "psnr", "loss", "count"; see `objective.sums_per_rate`).
  """
  num_anchors = len(lambdas)
  rate_rng, noise_rng = jax.random.split(jax.random.fold_in(rng, state.step))
  x = batch.astype(jnp.float32) / 255.0
  rate_index = objective.sample_rate_indexes(rate_rng, x.shape[0], num_anchors)
  lmbda = jnp.asarray(np.asarray(lambdas, np.float32))[rate_index]

  def loss_fn(params):
    out = model.apply({"params": params}, x, rate_index.astype(jnp.float32), train=True,
                      rngs={"noise": noise_rng})
    terms = objective.rate_distortion(x, out["x_hat"], out["bits"], lmbda)
    return jnp.mean(terms["loss"]), terms

  (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  updates = jax.tree.map(lambda u: (learning_rate * u).astype(u.dtype), updates)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      "loss": loss,
      "bpp": jnp.mean(terms["bpp"]),
      "mse": jnp.mean(terms["mse"]),
      "psnr": jnp.mean(terms["psnr"]),
      "grad_norm": optax.tree.norm(grads),
      "per_rate": objective.sums_per_rate(
          {k: terms[k] for k in ("bpp", "psnr", "loss")}, rate_index, num_anchors),
  }
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def compile_train_step(model: MSINN, tx: optax.GradientTransformation,
                       lambdas: Sequence[float], mesh: Mesh) -> StepFn:
  """`train_step` jitted for `mesh`: state replicated and donated, batch on "data"."""
  replicated = mesh_lib.replicated(mesh)
  step = functools.partial(train_step, model=model, tx=tx, lambdas=tuple(lambdas))
  return jax.jit(step,
                 in_shardings=(replicated, mesh_lib.batch_sharding(mesh), replicated,
                               replicated),
                 out_shardings=(replicated, replicated),
                 donate_argnums=0)


def compile_init(model: MSINN, tx: optax.GradientTransformation, mesh: Mesh,
                 gain_lambdas: Sequence[float] | None = None
                 ) -> Callable[[jax.Array, jax.Array], TrainState]:
  """`create_train_state(rng, batch)` jitted to produce a replicated state.

  The state is created by the compiled program on every device at once (out_shardings),
  which also works with several processes, where `jax.device_put` onto a global
  sharding does not.
  """
  init = functools.partial(create_train_state, model=model, tx=tx,
                           gain_lambdas=None if gain_lambdas is None else tuple(gain_lambdas))
  replicated = mesh_lib.replicated(mesh)
  return jax.jit(init, in_shardings=(replicated, mesh_lib.batch_sharding(mesh)),
                 out_shardings=replicated)


def abstract_state(model: MSINN, tx: optax.GradientTransformation, mesh: Mesh,
                   batch_shape: tuple[int, ...]) -> TrainState:
  """The state's shapes and dtypes (no computation), with the replicated sharding."""
  replicated = mesh_lib.replicated(mesh)
  shapes = jax.eval_shape(
      functools.partial(create_train_state, model=model, tx=tx),
      jax.eval_shape(lambda: jax.random.key(0)),
      jax.ShapeDtypeStruct(batch_shape, jnp.uint8))
  return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)
