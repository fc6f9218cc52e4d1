"""`compact.py` continued on a 2-core CPU: a warm restart from step 10 k to 12.5 k.

compact.py's 10 k-step schedule ended with two drops (2e-5 from step 7500, 2e-6 from
9500), and its last 766 steps moved the Kodak curve by only 0.4 BD-rate points. Until then,
at 2e-4, the curve had improved by some 6 points per thousand steps (slots 3 and 4,
experiments/results/README.md). So this run goes back up to 2e-4 for 2000 steps and drops
10x for the last 500: what one slot on a 2-core AVX-512 host (about 1.8 s per step on
128x128 crops) trains in about 80 minutes. Adam's moments carry over from the shipped
state; only the step size goes back up. A GPU continues from wherever this stops with
`compact_gpu.py` (40 k steps).

  python experiments/slot.py --config experiments/configs/compact_cpu_restart.py \
      --budget-s 5700 --workdir .slot/run8 --out .slot/export8
"""

import dataclasses
import pathlib

from msinn_jax.train.config import ExperimentConfig, load_config_file


def get_config() -> ExperimentConfig:
  base = load_config_file(pathlib.Path(__file__).with_name("compact.py"))
  return dataclasses.replace(
      base,
      data=dataclasses.replace(base.data, crop_size=128),
      optim=dataclasses.replace(base.optim, lr_drops=(0.96,)),  # At step 12 000.
      train=dataclasses.replace(base.train, num_steps=12_500, log_every_steps=25),
      checkpoint=dataclasses.replace(base.checkpoint, every_steps=200),
  )
