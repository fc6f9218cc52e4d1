"""Tests for data-parallel helpers (`msinn_jax.train.mesh`).

JAX fixes its device count when first imported, so each scenario runs in a fresh
interpreter with `XLA_FLAGS=--xla_force_host_platform_device_count=N`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

TIMEOUT_S = 90  # Per subprocess; a hang fails the test instead of blocking the suite.

SINGLE_PROCESS = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import PartitionSpec as P
from msinn_jax.train import mesh as mesh_lib

assert jax.device_count() == 8, jax.devices()
assert not mesh_lib.maybe_initialize_distributed()  # No arguments: single process.
mesh = mesh_lib.make_mesh()
batch = np.random.default_rng(0).integers(0, 256, (16, 4, 4, 3), dtype=np.uint8)
x = mesh_lib.host_to_global({"x": batch}, mesh)["x"]
assert x.sharding.spec == P("data") and x.shape == batch.shape
assert {s.data.shape for s in x.addressable_shards} == {(2, 4, 4, 3)}
w = jax.device_put(jnp.float32(2.0), mesh_lib.replicated(mesh))
total = jax.jit(lambda w, x: w * x.astype(jnp.float32).sum())(w, x)
try:
  mesh_lib.host_to_global(batch[:5], mesh)
  raise AssertionError("expected ValueError")
except ValueError:
  pass
print(json.dumps({"total": float(total), "expected": 2.0 * float(batch.sum(dtype=np.int64))}))
"""

TWO_PROCESSES = r"""
import json, sys
port, process_id = sys.argv[1], int(sys.argv[2])
from msinn_jax.train import mesh as mesh_lib
assert mesh_lib.maybe_initialize_distributed(
    f"127.0.0.1:{port}", num_processes=2, process_id=process_id, initialization_timeout=30)
import jax, jax.numpy as jnp, numpy as np

assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
mesh = mesh_lib.make_mesh()
global_batch = np.arange(8 * 3, dtype=np.float32).reshape(8, 3) ** 2
local = global_batch[4 * process_id:4 * (process_id + 1)]
x = mesh_lib.host_to_global(local, mesh)
assert x.shape == (8, 3)
mean = jax.jit(lambda x: x.mean(), out_shardings=mesh_lib.replicated(mesh))(x)
print(json.dumps({"process": jax.process_index(), "mean": float(mean),
                  "expected": float(global_batch.mean()),
                  "collectives": jax.config.jax_cpu_collectives_implementation}), flush=True)
jax.distributed.shutdown()
"""


def _env(device_count: int) -> dict[str, str]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={device_count}"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _last_json(stdout: str) -> dict:
  lines = [line for line in stdout.splitlines() if line.startswith("{")]
  assert lines, stdout
  return json.loads(lines[-1])


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_jitted_sum_over_sharded_global_batch():
  result = subprocess.run([sys.executable, "-c", SINGLE_PROCESS], env=_env(8),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
  assert result.returncode == 0, result.stderr[-3000:]
  out = _last_json(result.stdout)
  assert out["total"] == out["expected"]  # Integers below 2**24: exact in float32.


def test_two_processes_share_a_global_batch(tmp_path):
  port = _free_port()
  logs = [(tmp_path / f"out{i}.txt", tmp_path / f"err{i}.txt") for i in range(2)]
  procs = []
  try:
    for i, (out, err) in enumerate(logs):  # Files, not pipes: a full pipe cannot block.
      with open(out, "w") as stdout, open(err, "w") as stderr:
        procs.append(subprocess.Popen(
            [sys.executable, "-c", TWO_PROCESSES, str(port), str(i)], env=_env(2),
            stdout=stdout, stderr=stderr, text=True))
    for proc in procs:
      proc.wait(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    pytest.fail("two-process jax.distributed run timed out")
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  outputs = []
  for proc, (out, err) in zip(procs, logs):
    assert proc.returncode == 0, err.read_text()[-3000:]
    outputs.append(_last_json(out.read_text()))
  assert sorted(o["process"] for o in outputs) == [0, 1]
  for out in outputs:
    assert out["collectives"] == "gloo"  # The jax 0.10 default; nothing was configured.
    assert out["mean"] == pytest.approx(out["expected"], rel=1e-6)  # float32 reduction.
