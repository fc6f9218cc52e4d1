"""One training slot: resume the default model from the repository, train, export.

GPU time comes in slots of about 15 minutes, so the shipped model is trained a slot at
a time and its state lives in the repository between slots (see
`msinn_jax/train/portable.py`):

  src/msinn_jax/data/default_model.npz   the weights and their model card (shipped)
  experiments/state/default_state.npz    Adam's moments (bfloat16), step, RNG, config

A slot imports both into a fresh workdir (or resumes `--workdir` if it already holds
checkpoints), trains with `msinn train`'s loop until `--budget-s` seconds have passed
since this script started (compilation included), then exports the two files again,
with the slot appended to the card's `slots` list: device, steps, seconds, images/s.

    python experiments/make_train_pack.py                  # once: .pack/train/
    python experiments/slot.py --budget-s 420 --out $OUT   # on the device
    python experiments/slot.py --export-only --workdir .slot/run   # a finished workdir

Without `--out` the files are written in place, into the repository.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import pathlib
import sys
import tempfile
import time

from host import cpu_description

ROOT = pathlib.Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "msinn_jax" / "data" / "default_model.npz"
STATE = ROOT / "experiments" / "state" / "default_state.npz"
CONFIG = ROOT / "experiments" / "configs" / "compact.py"
EXPORT_RESERVE_S = 30.0  # Kept back from the budget for the final save and the export.
DATA_NOTE = ("the 45 photographs of the shared training set (Wikipedia photos, USC-SIPI "
             "colour, McMaster), downscaled to at most 262,144 pixels "
             "(experiments/make_train_pack.py); random square crops (each slot's `crop`)")


def _device() -> str:
  import jax  # pylint: disable=import-outside-toplevel
  devices = jax.devices()
  kind = devices[0].device_kind
  if devices[0].platform == "cpu":
    kind = f"CPU ({cpu_description()})"
  return f"{len(devices)} x {kind}" if len(devices) > 1 else kind


def _device_count() -> int:
  import jax  # pylint: disable=import-outside-toplevel
  return jax.device_count()


def _metrics(workdir: pathlib.Path, first_step: int) -> dict[str, float]:
  """Images/s and the last logged loss/bpp/psnr of the steps after `first_step`."""
  path = workdir / "metrics.jsonl"
  rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
  rows = [r for r in rows if r.get("step", 0) > first_step and "loss" in r]
  if not rows:
    return {}
  speeds = [r["images_per_sec"] for r in rows[1:]] or [rows[0]["images_per_sec"]]
  last = rows[-1]
  return {"images_per_sec": sorted(speeds)[len(speeds) // 2],
          **{k: last[k] for k in ("loss", "bpp", "psnr") if k in last}}


def main(argv: list[str] | None = None) -> int:
  started = time.time()
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--budget-s", type=float, default=480.0,
                 help="seconds from now until the exported files are written (default "
                 "%(default)s)")
  p.add_argument("--config", default=str(CONFIG), help="experiment config file")
  p.add_argument("--workdir", default=None,
                 help="training workdir (default: a fresh temporary one)")
  p.add_argument("--weights", default=str(WEIGHTS), help="weights to start from")
  p.add_argument("--state", default=str(STATE), help="optimizer state to start from")
  p.add_argument("--out", default=None,
                 help="folder for the exported files (default: in place, into the repo)")
  p.add_argument("--export-only", action="store_true",
                 help="only export the newest checkpoint of --workdir")
  p.add_argument("--set", nargs="+", action="extend", default=[], dest="overrides",
                 metavar="KEY=VALUE", help="config overrides, as for msinn train")
  args = p.parse_args(argv)

  from msinn_jax.errors import UserError  # pylint: disable=import-outside-toplevel
  from msinn_jax.tools.common import use_xla_convolutions_on_cpu
  from msinn_jax.train import checkpoint as checkpoint_lib
  from msinn_jax.train import config as config_lib
  from msinn_jax.train import portable, train_lib
  from msinn_jax.train.state import learning_rate_at
  from msinn_jax.weights import read_card

  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  log = logging.getLogger("slot")
  use_xla_convolutions_on_cpu()  # As `msinn train`; before JAX starts its backends.
  logging.getLogger("absl").setLevel(logging.WARNING)
  try:
    config = config_lib.apply_overrides(config_lib.load_config_file(args.config),
                                        args.overrides)
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="msinn-slot-"))
    out = pathlib.Path(args.out) if args.out else None
    weights_out = out / WEIGHTS.name if out else pathlib.Path(args.weights)
    state_out = out / STATE.name if out else pathlib.Path(args.state)
    card = read_card(args.weights)
    ckpt_dir = workdir / train_lib.CHECKPOINT_DIR
    with checkpoint_lib.Checkpointer(ckpt_dir, async_save=False) as ckpt:
      start_step = ckpt.latest_step()
    if args.export_only:
      if start_step is None:
        raise UserError(f"--export-only: {workdir} holds no checkpoint")
      start_step = int(card.get("step", 0))
      slot = {"device": "see the run's log", "note": "exported from " + workdir.name}
    else:
      if start_step is None and os.path.exists(args.weights):
        start_step, restored = portable.import_run(args.weights, args.state, workdir, config)
        log.info("imported step %d from %s (optimizer state %s)", start_step, args.weights,
                 "restored" if restored else "fresh")
      start_step = start_step or 0
      budget = args.budget_s - (time.time() - started) - EXPORT_RESERVE_S
      if budget <= 0:
        raise UserError(f"--budget-s {args.budget_s} leaves no time to train")
      t0 = time.time()
      train_lib.train(config, workdir, time_limit_s=budget)
      slot = {"device": _device(), "train_seconds": round(time.time() - t0, 1),
              **_metrics(workdir, start_step), "xla_flags": os.environ.get("XLA_FLAGS", "")}
    slot["date"] = datetime.date.today().isoformat()
    slot["crop"], slot["flip"] = config.data.crop_size, config.data.flip
    slot["global_batch"] = config.train.per_device_batch_size * _device_count()
    slot["start_step"] = start_step
    with checkpoint_lib.Checkpointer(ckpt_dir, async_save=False) as ckpt:
      slot["end_step"] = ckpt.latest_step()
    # The learning rate of the slot's first and last steps (a drop shows as two values).
    slot["learning_rate"] = [
        float(learning_rate_at(config.optim, config.train.num_steps, step))
        for step in (slot["start_step"], max(slot["end_step"] - 1, slot["start_step"]))]
    card = {k: v for k, v in card.items() if k not in ("step", "experiment")}
    card["data"] = DATA_NOTE
    card["slots"] = list(card.get("slots", [])) + [slot]
    step = portable.export_run(workdir, weights_out, state_out, card=card)
  except UserError as e:
    print(f"slot: error: {e}", file=sys.stderr)
    return 2
  log.info("exported step %d: %s, %s (%.0f s in all)", step, weights_out, state_out,
           time.time() - started)
  print(json.dumps(slot, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
