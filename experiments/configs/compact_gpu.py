"""`compact.py` continued on a GPU: the same model and data, the run extended to 40 k steps.

compact.py plans 10 k steps, which suits 2-core CPU slots (about 1.9 k steps each). A GPU
slot trains that many in minutes, so `experiments/gpu_session.sh` resumes the shipped
state with this config: a warm restart (Adam's moments stay valid; the step size goes back
to 2e-4 if the run had passed compact's first drop), then drops at 80% and 95% of 40 k
steps, at 32 k and 38 k.

  python experiments/slot.py --config experiments/configs/compact_gpu.py --budget-s 480
"""

import dataclasses
import pathlib

from msinn_jax.train.config import ExperimentConfig, load_config_file


def get_config() -> ExperimentConfig:
  base = load_config_file(pathlib.Path(__file__).with_name("compact.py"))
  return dataclasses.replace(
      base,
      optim=dataclasses.replace(base.optim, lr_drops=(0.8, 0.95)),
      train=dataclasses.replace(base.train, num_steps=40_000),
  )
