"""Where the training step's time goes: a trace of a few steps, summed per part of the model.

Builds the same compiled step as `bench_train.py` (same config, batch, crop, precision),
runs `--warmup` untimed steps, then traces `--steps` steps with `jax.profiler`. Every HLO op
the trace shows is attributed, through the `op_name` metadata of the compiled HLO, to the
Flax module it came from, cut to `--depth` levels ("flow/stage_1"), and to its direction
(forward, or backward: the transpose of the forward). Also totals per HLO opcode
(convolution, fusion, copy...), and the slowest single ops. On a GPU an op's time is the sum
of its kernels on the device; on a CPU, where XLA splits an op over threads, it is the span
from the op's first to its last event, so ops that run concurrently can add up to more than
the step. Writes a JSON into experiments/results/ and prints the tables.

    python experiments/profile_train.py --config compact --crop 128     # the CPU slot's step
    python experiments/profile_train.py --config default                # paper model, on a GPU
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import pathlib
import re
import shlex
import statistics
import sys
import tempfile
import time

import jax

from bench_train import ROOT, add_step_arguments, compiled_step, use_training_flags
from host import cpu_description

# An HLO instruction line: `[ROOT] %name = <shape> opcode(...)`, the shape possibly a tuple.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_CALLED = re.compile(r"(?:calls|to_apply|condition|body)=%?[\w.\-]+")
_OPERAND = re.compile(r"%([\w.\-]+)")


def _opcode(rest: str) -> str:
  """The opcode of an instruction, from the text after `=` (shape, then `opcode(`)."""
  depth, i = 0, 0
  if rest.startswith("("):  # Tuple shape: skip to its closing parenthesis.
    for i, ch in enumerate(rest):
      depth += ch == "("
      depth -= ch == ")"
      if depth == 0:
        break
    rest = rest[i + 1:]
  match = re.match(r"\s*\S*\s+([\w\-]+)\(", rest) or re.match(r"\s*([\w\-]+)\(", rest)
  return match.group(1) if match else "?"


def parse_hlo(text: str) -> dict[str, tuple[str, str, bool]]:
  """Instruction name -> (opcode, op_name, inferred) for every instruction of a module.

  An instruction without metadata of its own (XLA makes many: layout copies, fusions of
  them) takes the most common op_name of the computation it calls, else that of its first
  consumer that has one (the op it prepares an operand for), else that of its first
  operand that has one; `inferred` says so.
  """
  ops, computations, consumers, current = {}, collections.defaultdict(list), {}, None
  for line in text.splitlines():
    comp = _COMPUTATION.match(line)
    if comp and "=" not in line.split("{")[0]:
      current = comp.group(1)
      continue
    inst = _INSTRUCTION.match(line)
    if not inst:
      continue
    name, rest = inst.groups()
    op_name = _OP_NAME.search(rest)
    calls = _CALLS.search(rest)
    operands = [o for o in _OPERAND.findall(_CALLED.sub("", rest)) if o != name]
    ops[name] = (_opcode(rest), op_name.group(1) if op_name else "",
                 calls.group(1) if calls else None, operands)
    for o in operands:
      consumers.setdefault(o, []).append(name)
    if op_name and current:
      computations[current].append(op_name.group(1))
  out = {}
  for name, (opcode, op_name, calls, operands) in ops.items():
    inferred = not op_name
    if not op_name and calls and computations.get(calls):
      op_name = collections.Counter(computations[calls]).most_common(1)[0][0]
    for neighbour in (*consumers.get(name, ()), *operands):
      if op_name:
        break
      op_name = ops[neighbour][1] if neighbour in ops else ""
    out[name] = (opcode, op_name, inferred)
  return out


def component(op_name: str, depth: int) -> tuple[str, str]:
  """(module path cut to `depth` levels, "forward" or "backward") of an op_name.

  "jit(step)/transpose(jvp(MSINN))/flow/stage_1/unit_0/Conv_0/conv_general_dilated" ->
  ("flow/stage_1", "backward"): tokens with parentheses are transformations, the last
  token is the primitive.
  """
  if not op_name:
    return "(no metadata: XLA-made)", "?"
  direction = "backward" if "transpose(" in op_name else "forward"
  tokens = [t for t in op_name.split("/")[:-1] if "(" not in t]
  return "/".join(tokens[:depth]) or "(outside modules)", direction


def op_times(xplane: str, module: str) -> dict[str, float]:
  """HLO op name -> total seconds in a trace, for the ops of one compiled module."""
  data = jax.profiler.ProfileData.from_file(xplane)
  device_sum = collections.defaultdict(float)
  host_spans = collections.defaultdict(lambda: [float("inf"), float("-inf")])
  for plane in data.planes:
    on_device = plane.name.startswith("/device:")
    for line in plane.lines:
      for event in line.events:
        stats = dict(event.stats)
        if "hlo_op" not in stats or not str(stats.get("hlo_module", "")).startswith(module):
          continue
        if on_device:
          device_sum[stats["hlo_op"]] += event.duration_ns * 1e-9
        else:
          span = host_spans[(stats.get("run_id"), stats["hlo_op"])]
          span[0] = min(span[0], event.start_ns)
          span[1] = max(span[1], event.start_ns + event.duration_ns)
  if device_sum:
    return dict(device_sum)
  host = collections.defaultdict(float)
  for (_, op), (start, end) in host_spans.items():
    host[op] += (end - start) * 1e-9
  return dict(host)


def _table(rows: dict, steps: int, total: float, limit: int) -> list[dict]:
  ordered = sorted(rows.items(), key=lambda kv: -kv[1])[:limit]
  return [{"what": k, "ms_per_step": 1e3 * v / steps, "share": v / total} for k, v in ordered]


def _print(title: str, rows: list[dict]) -> None:
  print(f"\n{title}")
  for r in rows:
    print(f"  {r['ms_per_step']:10.1f} ms  {100 * r['share']:5.1f}%  {r['what']}")


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_step_arguments(p)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--steps", type=int, default=2, help="traced steps")
  p.add_argument("--depth", type=int, default=2, help="module path levels kept (default: 2)")
  p.add_argument("--top", type=int, default=15, help="rows per table (default: 15)")
  p.add_argument("--out", default=None, help="JSON path (default experiments/results/...)")
  p.add_argument("--hlo-out", default=None, help="also write the compiled step's HLO text here")
  args = p.parse_args(argv)
  use_training_flags(args)

  with jax.default_matmul_precision(args.precision):
    config, step, state, inputs, _, compile_s = compiled_step(
        args.config, args.overrides, args.batch, args.crop)
    for _ in range(args.warmup):
      state, metrics = jax.block_until_ready(step(state, *inputs))
    with tempfile.TemporaryDirectory() as trace_dir:
      wall = []
      with jax.profiler.trace(trace_dir):
        for _ in range(args.steps):
          t = time.perf_counter()
          state, metrics = jax.block_until_ready(step(state, *inputs))
          wall.append(time.perf_counter() - t)
      xplane = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0]
      hlo_text = step.as_text()
      if args.hlo_out:
        pathlib.Path(args.hlo_out).write_text(hlo_text)
      module = re.search(r"HloModule\s+([\w.\-]+)", hlo_text).group(1)
      times = op_times(xplane, module)
  if not times:
    p.error(f"the trace holds no op of module {module}: this backend's profiler does not "
            "report HLO ops")
  hlo = parse_hlo(hlo_text)
  by_part, by_opcode, by_op = (collections.defaultdict(float) for _ in range(3))
  inferred_seconds = 0.0
  for op, seconds in times.items():
    opcode, op_name, inferred = hlo.get(op, ("?", "", True))
    inferred_seconds += seconds * inferred
    part, direction = component(op_name, args.depth)
    by_part[f"{part} [{direction}]"] += seconds
    by_opcode[opcode] += seconds
    by_op[f"{op} ({opcode}) {op_name}"] += seconds
  total = sum(times.values())
  device = jax.devices()[0]
  result = {
      "device": f"{device.platform}: {device.device_kind}",
      "host": cpu_description(),
      "config": args.config, "overrides": args.overrides, "model": config.model.to_dict(),
      "global_batch": args.batch, "crop": args.crop, "precision": args.precision,
      "step_compile_s": compile_s,
      "traced_steps": args.steps,
      "step_s_median_while_tracing": statistics.median(wall),
      "op_seconds_per_step": total / args.steps,
      "ops_over_wall": total / sum(wall),
      "share_attributed_by_neighbour": inferred_seconds / total,
      "by_part": _table(by_part, args.steps, total, 10**6),
      "by_opcode": _table(by_opcode, args.steps, total, 10**6),
      "slowest_ops": _table(by_op, args.steps, total, args.top),
      "jax": jax.__version__,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "command": shlex.join(["python", "experiments/profile_train.py", *(argv or sys.argv[1:])]),
  }
  print(f"{result['device']} ({result['host']}): step {1e3 * statistics.median(wall):.0f} ms "
        f"while tracing; ops sum to {1e3 * total / args.steps:.0f} ms per step, "
        f"{100 * inferred_seconds / total:.0f}% of it in ops without metadata, attributed "
        "by the op they feed or are fed by")
  _print(f"by part (depth {args.depth}) and direction", result["by_part"][:args.top])
  _print("by HLO opcode", result["by_opcode"][:args.top])
  _print("slowest ops", result["slowest_ops"])
  name = pathlib.Path(args.config).stem
  out = args.out or ROOT / "experiments" / "results" / f"profile_train_{name}_{device.platform}.json"
  pathlib.Path(out).write_text(json.dumps(result, indent=2) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
