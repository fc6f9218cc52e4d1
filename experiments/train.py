"""Thin launcher: the same as `msinn train` (see `msinn_jax/tools/train.py`).

  python experiments/train.py --config experiments/configs/smoke.py --workdir /tmp/smoke \
      --set data.folder=/path/to/images
"""

import argparse
import sys

from msinn_jax.errors import UserError
from msinn_jax.tools import train


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  train.add_arguments(parser)
  args = parser.parse_args(argv)
  try:
    return train.run(args)
  except UserError as e:
    print(f"train: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
