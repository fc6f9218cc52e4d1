"""Fine-tuning the 8-anchor model to 12 anchors (lambda up to 1.8), official README:

  python train.py -d flickr --e 400 -lr 1e-5 -b 8 --anchor_num 12 \
      --use_act_norm --lrp --post_process --finetune

  -> msinn train --config experiments/configs/finetune.py --workdir runs/anchor12 \
         --set data.folder=/data/flickr2w/train train.init_from=runs/anchor8/checkpoints

The gain tables of the `init_from` checkpoint are widened from 8 to 12 rows by copying
the last row (`train/state.py`); the optimizer starts afresh. 400 epochs are about
1.04 M steps. The official milestones (675, 720 epochs) are never reached in a 400-epoch
run, so the learning rate stays at 1e-5: no drops here.
"""

import dataclasses
import pathlib

from msinn_jax.train.config import ExperimentConfig, load_config_file


def get_config() -> ExperimentConfig:
  base = load_config_file(pathlib.Path(__file__).with_name("default.py"))
  return dataclasses.replace(
      base,
      model=dataclasses.replace(base.model, anchor_num=12),
      optim=dataclasses.replace(base.optim, learning_rate=1e-5, lr_drops=()),
      train=dataclasses.replace(base.train, num_steps=1_040_000,
                                init_from="runs/anchor8/checkpoints"),
  )
