"""experiments/pytest_compile_times.py charges each test the compiling it did itself."""

from __future__ import annotations

import os
import subprocess
import sys

from train_runs import REPO

_TESTS = '''
import jax, jax.numpy as jnp

def test_compiles():
  assert float(jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).sum()) > 0

def test_plain_python():
  assert sum(range(4)) == 6
'''


def test_plugin_times_only_the_test_that_compiles(tmp_path):
  (tmp_path / "test_sample.py").write_text(_TESTS)
  out = tmp_path / "times.tsv"
  env = {**os.environ, "PYTHONPATH": str(REPO / "experiments"), "COMPILE_TIMES_OUT": str(out),
         "JAX_PLATFORMS": "cpu"}
  run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-p", "pytest_compile_times", "test_sample.py"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stdout[-2000:]
  assert "compile times:" in run.stdout
  header, *rows = out.read_text().splitlines()
  assert header.split("\t")[1:4] == ["jaxpr_trace_duration", "jaxpr_to_mlir_module_duration",
                                     "backend_compile_duration"]
  spent = {row.split("\t")[-1]: [float(v) for v in row.split("\t")[1:4]] for row in rows}
  assert set(spent) == {"test_sample.py::test_compiles", "test_sample.py::test_plain_python"}
  assert spent["test_sample.py::test_plain_python"] == [0.0, 0.0, 0.0]
  trace, lower, compile_s = spent["test_sample.py::test_compiles"]
  assert trace > 0 and lower > 0 and compile_s > 0
