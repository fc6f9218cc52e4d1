"""experiments/profile_train.py: its HLO parsing and trace reading, on a tiny jitted program."""

from __future__ import annotations

import glob
import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from train_runs import REPO

sys.path.insert(0, str(REPO / "experiments"))
import profile_train  # noqa: E402


class _Net(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), name="first")(x))
    return nn.Conv(8, (3, 3), name="second")(x)


@pytest.fixture(scope="module")
def program():
  net = _Net()
  x = jnp.ones((2, 32, 32, 4))
  params = net.init(jax.random.PRNGKey(0), x)

  def loss(p, x):
    return jnp.sum(jnp.square(net.apply(p, x)))

  step = jax.jit(jax.grad(loss)).lower(params, x).compile()
  return step, params, x


def test_component_splits_module_path_and_direction():
  name = "jit(step)/transpose(jvp(MSINN))/MSINN.flow/stage_1/unit_0/Conv_0/conv_general_dilated"
  assert profile_train.component(name, 2) == ("MSINN.flow/stage_1", "backward")
  assert profile_train.component(name.replace("transpose(jvp(MSINN))", "jvp(MSINN)"), 1) == (
      "MSINN.flow", "forward")
  assert profile_train.component("jit(step)/add", 2) == ("(outside modules)", "forward")
  assert profile_train.component("", 2)[1] == "?"


def test_every_instruction_is_parsed_and_convolutions_land_in_their_module(program):
  step, _, _ = program
  text = step.as_text()
  hlo = profile_train.parse_hlo(text)
  names = set(re.findall(r"^\s*(?:ROOT\s+)?%([\w.\-]+) = ", text, re.M))
  assert names == set(hlo)
  convs = {n: v for n, v in hlo.items() if v[0] == "convolution"}
  assert len(convs) >= 3  # Forward of both, and the backward ones.
  parts = {profile_train.component(op_name, 1) for _, op_name, _ in convs.values()}
  assert ("first", "forward") in parts and ("second", "forward") in parts
  assert ("second", "backward") in parts


def test_trace_times_are_found_for_the_program_ops(program, tmp_path):
  step, params, x = program
  jax.block_until_ready(step(params, x))
  with jax.profiler.trace(str(tmp_path)):
    for _ in range(2):
      jax.block_until_ready(step(params, x))
  xplane = glob.glob(f"{tmp_path}/**/*.xplane.pb", recursive=True)[0]
  module = re.search(r"HloModule\s+([\w.\-]+)", step.as_text()).group(1)
  times = profile_train.op_times(xplane, module)
  hlo = profile_train.parse_hlo(step.as_text())
  assert times and set(times) <= set(hlo)
  assert any(hlo[op][0] == "convolution" for op in times)
  assert all(t > 0 for t in times.values())
  assert profile_train.op_times(xplane, "no_such_module") == {}
