"""A pytest plugin: how much of each test's time is JAX tracing, lowering and XLA compiling.

  PYTHONPATH=experiments python -m pytest -n 0 -p pytest_compile_times tests/test_codec.py

It listens to `jax.monitoring`'s duration events of the compile pipeline in the pytest
process (not in the training subprocesses some tests start), so it needs one: `-n 0`
turns off the pytest-xdist workers that pyproject.toml's addopts start. At the end it
prints the totals and the slowest tests; with `COMPILE_TIMES_OUT=path.tsv` it also writes one row per
test, slowest first: wall seconds, then the seconds of each event.
"""

from __future__ import annotations

import collections
import os
import time

import jax
import pytest

_EVENTS = ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration",
           "backend_compile_duration")
_totals: dict[str, float] = collections.defaultdict(float)
_rows: list[tuple[float, dict[str, float], str]] = []


def _listen(event: str, duration: float, **_) -> None:
  name = event.rsplit("/", 1)[-1]
  if name in _EVENTS:
    _totals[name] += duration


jax.monitoring.register_event_duration_secs_listener(_listen)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):  # pylint: disable=unused-argument
  before, start = dict(_totals), time.perf_counter()
  yield
  spent = {name: _totals[name] - before.get(name, 0.0) for name in _EVENTS}
  _rows.append((time.perf_counter() - start, spent, item.nodeid))


def pytest_terminal_summary(terminalreporter):
  rows = sorted(_rows, key=lambda row: -row[0])
  header = "wall_s\t" + "\t".join(_EVENTS) + "\ttest"
  lines = [f"{wall_s:.1f}\t" + "\t".join(f"{spent[n]:.3f}" for n in _EVENTS) + f"\t{nodeid}"
           for wall_s, spent, nodeid in rows]
  parts = ", ".join(f"{name} {_totals[name]:.0f} s" for name in _EVENTS)
  terminalreporter.write_line(f"compile times: {sum(r[0] for r in rows):.0f} s in tests; "
                              f"{parts}")
  for line in [header, *lines[:15]]:
    terminalreporter.write_line(line)
  path = os.environ.get("COMPILE_TIMES_OUT")
  if path:
    with open(path, "w") as f:
      f.write("\n".join([header, *lines]) + "\n")
    terminalreporter.write_line(f"compile times per test: {path}")
