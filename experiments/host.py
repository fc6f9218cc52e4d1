"""One line naming the host's CPU, for the records that benchmarks and training slots write.

The vector instruction set is part of it because XLA's CPU kernels depend on it: the same
test suite took 16 minutes on one 2-core machine with AVX-512 and 35-37 on another with only
AVX2, and the smoke training step 6.8 s against 40 s (`experiments/results/`).
"""

from __future__ import annotations

import os
import platform

# The widest x86 vector extension present, by its /proc/cpuinfo flag.
_VECTOR_ISAS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"))


def cpu_description() -> str:
  """E.g. "AMD EPYC, 2 cores, AVX2": the CPU model, its core count, its vector ISA."""
  name, flags = "", set()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
          name = value.strip()
        elif key.strip() == "flags" and not flags:
          flags = set(value.split())
  except OSError:  # Not Linux: the platform module's answer is all there is.
    pass
  parts = [name or platform.processor() or platform.machine(), f"{os.cpu_count()} cores"]
  parts += [label for flag, label in _VECTOR_ISAS if flag in flags][:1]
  return ", ".join(parts)


if __name__ == "__main__":
  print(cpu_description())
