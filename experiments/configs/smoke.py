"""A tiny run for CPUs and CI: every part of the model, a few steps on small crops.

  msinn train --config experiments/configs/smoke.py --workdir /tmp/smoke \
      --set data.folder=/path/to/a/few/images

One unit per stage and narrow conditioners, but ActNorm, LRP, the post-filter and the
multistage checkerboard context are all on, so it compiles the same kinds of program as
the paper model. The learning rate is 10x the paper's so that the loss visibly falls
within a few dozen steps.
"""

import dataclasses
import pathlib

from msinn_jax.config import ModelConfig
from msinn_jax.train.config import ExperimentConfig, load_config_file


def get_config() -> ExperimentConfig:
  base = load_config_file(pathlib.Path(__file__).with_name("default.py"))
  return dataclasses.replace(
      base,
      model=ModelConfig(N=16, M=24, depths=(1, 1, 1, 1), context_width=16, anchor_num=4),
      data=dataclasses.replace(base.data, folder="data/train", crop_size=64, num_workers=2),
      optim=dataclasses.replace(base.optim, learning_rate=1e-3),
      train=dataclasses.replace(base.train, num_steps=20, per_device_batch_size=4,
                                log_every_steps=5),
      checkpoint=dataclasses.replace(base.checkpoint, every_steps=10),
  )
