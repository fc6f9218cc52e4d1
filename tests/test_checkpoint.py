"""Tests for the Orbax checkpoint wrapper (`msinn_jax.train.checkpoint`)."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from msinn_jax.errors import CheckpointError
from msinn_jax.train import checkpoint


@dataclasses.dataclass(frozen=True)
class _Config:
  lmbda: float = 0.0483
  depths: tuple[int, ...] = (4, 4, 4, 4)


def _state(step: int) -> dict:
  params = {"conv": {"kernel": jnp.full((3, 3, 2, 4), float(step)), "bias": jnp.arange(4.0)},
            "gain": jnp.ones((8, 12))}
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  _, opt_state = tx.update(grads, opt_state, params)  # Non-trivial moments and count.
  return {"params": params, "opt_state": opt_state, "step": step,
          "rng": jax.random.fold_in(jax.random.key(0), step),
          "data_state": {"step": step, "seed": 3, "global_batch_size": 8, "num_examples": 7}}


def _abstract(state: dict) -> dict:
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])

  def leaf(x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    return x

  return jax.tree.map(leaf, state)


def _assert_states_equal(actual: dict, expected: dict) -> None:
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  keys = lambda t: jax.random.key_data(t["rng"])  # noqa: E731
  np.testing.assert_array_equal(keys(actual), keys(expected))
  strip = lambda t: {k: v for k, v in t.items() if k != "rng"}  # noqa: E731
  chex.assert_trees_all_equal(strip(actual), strip(expected))


def test_round_trip_with_adam_state(tmp_path):
  state = _state(7)
  with checkpoint.Checkpointer(tmp_path / "ckpt") as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(7, state, _Config())
    ckpt.wait_until_finished()
    restored, config, step = ckpt.restore_latest(_abstract(state))
  assert step == 7
  assert config == {"lmbda": 0.0483, "depths": [4, 4, 4, 4]}
  _assert_states_equal(restored, state)
  assert isinstance(restored["opt_state"][0], optax.ScaleByAdamState)
  assert restored["params"]["gain"].sharding == jax.sharding.SingleDeviceSharding(
      jax.devices()[0])


def test_keeps_the_newest_n_and_restores_the_latest(tmp_path):
  with checkpoint.Checkpointer(tmp_path, max_to_keep=2) as ckpt:
    for step in (10, 20, 30, 40):
      ckpt.save(step, _state(step), {"step": step})
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [30, 40]
  # A new manager (a resumed process) sees the same checkpoints.
  with checkpoint.Checkpointer(tmp_path, max_to_keep=2) as ckpt:
    assert ckpt.latest_step() == 40
    restored, config, step = ckpt.restore_latest(_abstract(_state(0)))
    assert (step, config) == (40, {"step": 40})
    _assert_states_equal(restored, _state(40))
    earlier, _ = ckpt.restore(30, _abstract(_state(0)))
    assert earlier["data_state"]["step"] == 30
    with pytest.raises(CheckpointError, match="no checkpoint for step 10"):
      ckpt.restore(10, _abstract(_state(0)))


def test_load_params_reads_only_params(tmp_path, caplog):
  state = _state(5)
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(3, _state(3), {"a": 1})
    ckpt.save(5, state, {"a": 2})
  with caplog.at_level(logging.INFO):
    params, config = checkpoint.load_params(tmp_path)
  # Orbax's notice that a read-only reader was asked for is not the user's concern.
  assert not [r for r in caplog.records if "read only" in r.getMessage()]
  assert [r for r in caplog.records if r.name == "absl"]  # Orbax's other logs still pass.
  assert config == {"a": 2}
  chex.assert_trees_all_equal(params, state["params"])
  params3, config3 = checkpoint.load_params(tmp_path / "3")  # A step folder.
  assert config3 == {"a": 1}
  assert float(params3["conv"]["kernel"][0, 0, 0, 0]) == 3.0


def test_load_params_from_a_training_workdir(tmp_path):
  with checkpoint.Checkpointer(tmp_path / "run" / checkpoint.CHECKPOINT_DIR) as ckpt:
    ckpt.save(4, _state(4), {"a": 4})
  (tmp_path / "run" / "metrics.jsonl").write_text("")  # What else a workdir holds.
  params, config = checkpoint.load_params(tmp_path / "run")
  assert config == {"a": 4}
  assert float(params["conv"]["kernel"][0, 0, 0, 0]) == 4.0


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(CheckpointError, match="does not exist"):
    checkpoint.load_params(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(CheckpointError, match="not a checkpoint directory"):
    checkpoint.load_params(tmp_path / "empty")
  with checkpoint.Checkpointer(tmp_path / "fresh") as ckpt:
    with pytest.raises(CheckpointError, match="no checkpoint"):
      ckpt.restore_latest(_abstract(_state(0)))


@pytest.mark.parametrize("damage", ["garbled _METADATA", "lost data"])
def test_damaged_checkpoint_is_a_clear_error(tmp_path, damage):
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(2, _state(2), {"a": 1})
  state = tmp_path / "2" / "state"
  if damage == "lost data":
    shutil.rmtree(state / "d")
  else:
    (state / "_METADATA").write_text("garbage")
  with pytest.raises(CheckpointError, match="cannot read the checkpoint"):
    checkpoint.load_params(tmp_path)


def test_mismatched_target_is_a_checkpoint_error(tmp_path):
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, _state(1), {})
    ckpt.wait_until_finished()
    wrong = _abstract(_state(1))
    wrong["params"]["extra"] = jax.ShapeDtypeStruct((2,), jnp.float32)
    with pytest.raises(CheckpointError, match="does not match") as error:
      ckpt.restore(1, wrong)
    assert "1 entries missing (params/extra)" in str(error.value)
    # Weights only (what `msinn convert` writes) against a whole training state: said in
    # a few lines, with the way to start from weights, not Orbax's list of every leaf.
    ckpt.save(2, {"params": _state(2)["params"]}, {})
    ckpt.wait_until_finished()
    with pytest.raises(CheckpointError, match="train.init_from") as error:
      ckpt.restore(2, _abstract(_state(2)))
    assert "entries missing (data_state/global_batch_size" in str(error.value)
    assert len(str(error.value)) < 600


def test_config_to_json():
  assert checkpoint.config_to_json({"a": (1, 2), "b": {"c": None}}) == {
      "a": [1, 2], "b": {"c": None}}
  with pytest.raises(TypeError):
    checkpoint.config_to_json({"a": object()})
  with pytest.raises(TypeError):
    checkpoint.config_to_json([1, 2])
