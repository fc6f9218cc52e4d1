"""Speed of the official PyTorch MSINN (hytu99/MSINN-VRLIC) on this machine, for comparison.

Runs the official code as it is, imported at run time from `.official/` (filled by
`experiments/prepare_official.sh`; nothing of it is copied into this repository, and nothing of
`msinn_jax` is used), so its numbers and ours come from the same card:

  (a) training: the official `train.train_one_epoch` (its per-sample random rate indexes,
      `RateDistortionLoss`, Adam from `configure_optimizers`, gradient clipping at
      `--clip_max_norm` 1.0), fed batches of random crops through a stand-in for its
      DataLoader that timestamps each step; images/s from the median step, and peak memory;
  (b) codec: `compress` and `decompress` of one image as `eval.py`'s `inference` calls them
      (zero padding to a multiple of 64, cuDNN deterministic, one CPU thread), median ms each,
      bitstream size, and how far the decoded image is from the model's own reconstruction
      (its eval-mode `forward`; `compress` returns no image).

The model is the paper configuration (README: `--use_act_norm --lrp --post_process`, N=128,
M=192, depths 4,4,4,4, invconv, affine, multi_ckbd, 5 spatial-context slices). Weights are not
trained: speed does not depend on them, except entropy coding, which depends on the symbol
statistics. So the codec uses the weights of `shared/reference/parity` (anchor_num=12, rebuilt
here from their recipe, equal to the stored ones to ~3e-6) that `bench_codec.py` times, on the
same image (kodim01, carried in `.official/`). Training uses the from-scratch model (8 anchors).

CompressAI 1.2.6 exists on PyPI only as an sdist with two small pybind11 extensions (the rANS
coder and `pmf_to_quantized_cdf`); it is built here with pip, offline, into `--site`. If that
build fails, the Python part is installed with stand-ins for the two extensions: training is
still measured, the codec is reported as failed. Packages that `import compressai` pulls in but
this benchmark never calls (torchvision, torch_geometric, tqdm; scipy, for `norm.ppf`) are
stubbed only where missing.

    bash experiments/prepare_official.sh          # here, once: fills .official/ (1.4 MB)
    python3 experiments/bench_official.py --device cuda --out $OUT/bench_official.json
                                                  # on the GPU machine, carrying .official
    python3 experiments/bench_official.py --device cpu --batch 2 --crop 64 --train-steps 2 \\
        --codec-size 192x128 --codec-runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shlex
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

from host import cpu_description
from official_env import import_compressai, install_official_deps, load_official

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The paper configuration, as the official README trains (`--use_act_norm --lrp --post_process`;
# the rest are train.py's defaults).
PAPER_FLAGS = ["--use_act_norm", "--lrp", "--post_process"]

# ---------------------------------------------------------------- models and data


def paper_kwargs(train, anchor_num: int) -> tuple[dict, argparse.Namespace]:
  """The constructor's keyword arguments as train.py's `main` passes them for the README's
  command, and train.py's parsed arguments."""
  a = train.parse_args([*PAPER_FLAGS, "--anchor_num", str(anchor_num)])
  kwargs = dict(
      M=a.M, N=a.N, depths=list(a.depth), flow_permutation=a.flow_permutation,
      flow_coupling=a.flow_coupling, use_act_norm=a.use_act_norm, post_process=a.post_process,
      lrp=a.lrp, sc_type=a.sc_type, spatial_context_num=a.spatial_context_num,
      anchor_num=a.anchor_num)
  return kwargs, a


def paper_model(msinn, train, anchor_num: int):
  """The model as train.py's `main` builds it for the README's command."""
  kwargs, a = paper_kwargs(train, anchor_num)
  return msinn.MSINNCompression(**kwargs), a


def parity_model(msinn, train):
  """The untrained weights of shared/reference/parity, rebuilt from their `recipe` on CPU.

  seed 0, construct (anchor_num=12); ActNorm data-init on torch.rand(2,3,256,256) at qp 0 in
  train mode; then seed 1234: every InvUnit's `block[1].conv` weight and bias ~ N(0, 0.02), in
  order g_a0..g_a3; gain, inv_gain, scale_gain = exp(+-linspace(-1,1,A) + 0.1 randn); and
  initial_scale = 0.5 + rand.
  """
  torch.manual_seed(0)
  net, _ = paper_model(msinn, train, anchor_num=12)
  net.train()
  with torch.no_grad():
    net(torch.rand(2, 3, 256, 256), 0)
    torch.manual_seed(1234)
    for stage in (net.g_a0, net.g_a1, net.g_a2, net.g_a3):
      for unit in stage:
        unit.block[1].conv.weight.normal_(0, 0.02)
        unit.block[1].conv.bias.normal_(0, 0.02)
    c, a = sum(net.channel_split), net.anchor_num
    base = torch.linspace(-1.0, 1.0, a).view(a, 1, 1, 1)
    net.gain.copy_(torch.exp(base + 0.1 * torch.randn(a, c, 1, 1)))
    net.inv_gain.copy_(torch.exp(-base + 0.1 * torch.randn(a, c, 1, 1)))
    net.scale_gain.copy_(torch.exp(base + 0.1 * torch.randn(a, c, 1, 1)))
    net.initial_scale.copy_(0.5 + torch.rand(1, 48, 1, 1))
  return net


def save_weights(net, train, path: str) -> None:
  """The model's state_dict as `param/<key>` float32 arrays plus `config_json` (the
  constructor's keyword arguments): the layout of shared/reference/parity."""
  kwargs, _ = paper_kwargs(train, net.anchor_num)
  arrays = {f"param/{k}": v.detach().cpu().float().numpy()
            for k, v in net.state_dict().items() if v.is_floating_point()}
  np.savez(path, config_json=np.asarray(json.dumps(kwargs)), **arrays)


def load_image(path: str | None, size: tuple[int, int] | None) -> tuple[torch.Tensor, str]:
  """An RGB image as `[1, 3, H, W]` float32 in [0, 1] (8-bit values), and its description.

  Args:
    path: a PNG (or any PIL image); None gives a smooth synthetic image with mild noise.
    size: (width, height): a centre crop of the image, or the synthetic image's size.
  """
  if path:
    from PIL import Image
    rgb = np.asarray(Image.open(path).convert("RGB"))
    name = os.path.basename(path)
  else:
    w, h = size or (768, 512)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    rgb = np.stack([0.5 + 0.4 * np.sin(6 * xx + 2 * yy), 0.5 + 0.4 * np.cos(5 * yy - 3 * xx),
                    0.5 * (xx + yy)], axis=-1)
    rgb += np.random.default_rng(0).normal(0.0, 0.02, rgb.shape)
    rgb = np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
    name = "synthetic"
  if size:
    w, h = size
    top, left = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
    if top < 0 or left < 0:
      raise ValueError(f"{name} is {rgb.shape[1]}x{rgb.shape[0]}, smaller than {w}x{h}")
    rgb = rgb[top:top + h, left:left + w]
  x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
  return x, f"{name} {x.shape[3]}x{x.shape[2]}"


class TimedBatches:
  """Stands in for train.py's DataLoader: yields host batches, timestamps every step.

  `train_one_epoch` asks for the next batch right after finishing a step (whose `.item()` calls
  already synchronise); the device is synchronised again before each timestamp, so consecutive
  stamps bound exactly one step.
  """

  def __init__(self, batches: list[torch.Tensor], num_steps: int, sync):
    self.batches, self.num_steps, self.sync = batches, num_steps, sync
    self.dataset = range(num_steps * batches[0].shape[0])  # train_one_epoch logs its length
    self.stamps: list[float] = []

  def __len__(self):
    return self.num_steps

  def __iter__(self):
    for i in range(self.num_steps + 1):
      self.sync()
      self.stamps.append(time.perf_counter())
      if i < self.num_steps:
        yield self.batches[i % len(self.batches)]


# ---------------------------------------------------------------- the two measurements


def bench_train(msinn, train, device: torch.device, image: torch.Tensor,
                args: argparse.Namespace) -> dict:
  """Times the official training step; see the module docstring."""
  torch.manual_seed(args.seed)
  np.random.seed(args.seed)  # train.py draws each sample's rate index with np.random
  net, targs = paper_model(msinn, train, args.anchor_num)
  net = net.to(device)
  optimizer = train.configure_optimizers(net, targs)
  criterion = train.RateDistortionLoss()
  gen = torch.Generator().manual_seed(args.seed)
  _, _, h, w = image.shape
  batches = []
  for _ in range(min(args.train_steps, 4)):
    tops = torch.randint(0, h - args.crop + 1, (args.batch,), generator=gen).tolist()
    lefts = torch.randint(0, w - args.crop + 1, (args.batch,), generator=gen).tolist()
    crops = torch.cat([image[:, :, t:t + args.crop, l:l + args.crop]
                       for t, l in zip(tops, lefts, strict=True)])
    batches.append(crops.pin_memory() if device.type == "cuda" else crops)  # DataLoader pins
  sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
  if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(device)
  for num_steps in (args.train_warmup, args.train_steps):
    loader = TimedBatches(batches, num_steps, sync)
    train.train_one_epoch(net, criterion, loader, optimizer, 0, targs.clip_max_norm,
                          targs.anchor_num)
  steps = np.diff(loader.stamps).tolist()
  median = statistics.median(steps)
  return {
      "batch": args.batch, "crop": args.crop, "anchor_num": targs.anchor_num,
      "lr": targs.learning_rate, "clip_max_norm": targs.clip_max_norm,
      "warmup_steps": args.train_warmup, "timed_steps": args.train_steps,
      "step_ms": [1000 * s for s in steps], "step_ms_median": 1000 * median,
      "step_ms_mean": 1000 * statistics.mean(steps), "images_per_s": args.batch / median,
      "peak_memory_allocated_bytes":
          torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
      "peak_memory_reserved_bytes":
          torch.cuda.max_memory_reserved(device) if device.type == "cuda" else None,
      "params_finite_after": all(bool(torch.isfinite(p).all()) for p in net.parameters()),
      "num_params": sum(p.numel() for p in net.parameters()),
  }


def bench_codec(msinn, train, compressai, device: torch.device, image: torch.Tensor,
                args: argparse.Namespace) -> dict:
  """Times the official compress and decompress; see the module docstring."""
  torch.backends.cudnn.deterministic = True  # eval.py sets this, and one thread, at import
  if args.codec_threads:
    torch.set_num_threads(args.codec_threads)
  if args.codec_weights == "parity":
    net = parity_model(msinn, train)
  else:
    torch.manual_seed(args.seed)
    net, _ = paper_model(msinn, train, args.anchor_num)
    with torch.no_grad():
      net.train()(image, 0)  # ActNorm's data-dependent init
  net.update(force=True)  # as eval.py's load_checkpoint, before moving the model
  if args.save_weights:
    save_weights(net, train, args.save_weights)
  net = net.to(device).eval()
  x = image.to(device)
  _, _, h, w = x.shape
  pad, unpad = compressai.ops.compute_padding(h, w, min_div=2**6)
  sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
  if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(device)
  enc_s, dec_s, decoded = [], [], []
  with torch.no_grad():
    for i in range(args.codec_warmup + args.codec_runs):
      sync()
      t0 = time.perf_counter()
      enc = net.compress(F.pad(x, pad, mode="constant", value=0), qp_index=args.qp)
      sync()
      t1 = time.perf_counter()
      dec = net.decompress(enc["strings"], enc["shape"], qp_index=args.qp)
      x_hat = F.pad(dec["x_hat"], unpad)
      sync()
      t2 = time.perf_counter()
      if i >= args.codec_warmup:
        enc_s.append(t1 - t0)
        dec_s.append(t2 - t1)
      decoded.append(x_hat)
    forward = F.pad(net(F.pad(x, pad, mode="constant", value=0), args.qp)["x_hat"], unpad)
  x_hat, forward = decoded[-1], forward.clamp(0, 1)
  num_bytes = sum(len(s[0]) for s in enc["strings"])  # as eval.py counts them
  mse = ((x * 255).round() - (x_hat * 255).clamp(0, 255).round()).pow(2).mean().item()
  return {
      "weights": args.codec_weights, "anchor_num": net.anchor_num, "qp_index": args.qp,
      "padded_shape": [h + pad[2] + pad[3], w + pad[0] + pad[1]],
      "torch_threads": torch.get_num_threads(), "warmup_runs": args.codec_warmup,
      "timed_runs": args.codec_runs,
      "encode_ms": [1000 * s for s in enc_s], "decode_ms": [1000 * s for s in dec_s],
      "encode_ms_median": 1000 * statistics.median(enc_s),
      "decode_ms_median": 1000 * statistics.median(dec_s),
      "bytes": num_bytes, "bpp": 8 * num_bytes / (h * w),
      "psnr_rgb": 10 * np.log10(255**2 / mse) if mse else float("inf"),
      "max_abs_diff_decoded_vs_forward": (x_hat - forward).abs().max().item(),
      "mean_abs_diff_decoded_vs_forward": (x_hat - forward).abs().mean().item(),
      "max_abs_diff_between_decodes": max((d - x_hat).abs().max().item() for d in decoded),
      "peak_memory_allocated_bytes":
          torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
  }


# ---------------------------------------------------------------- main


def _size(text: str) -> tuple[int, int]:
  w, h = text.lower().split("x")
  return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
  """Installs, imports, measures, writes the JSON; returns 1 if a measurement failed."""
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--official", default=str(ROOT / ".official"),
                 help="folder filled by experiments/prepare_official.sh")
  p.add_argument("--site", default=None, help="install folder for compressai (default: a "
                 "per-Python folder under the system temp dir, reused when complete)")
  p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
  p.add_argument("--out", default=None, help="JSON path (printed either way)")
  p.add_argument("--image", default=None, help="PNG to code and crop from (default: "
                 "OFFICIAL/kodim01.png if present, else a synthetic image)")
  p.add_argument("--codec-size", type=_size, default=None, metavar="WxH",
                 help="centre crop of the image (or the synthetic size; default 768x512)")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--crop", type=int, default=256)
  p.add_argument("--anchor-num", type=int, default=8, help="training model's rate anchors")
  p.add_argument("--train-warmup", type=int, default=3)
  p.add_argument("--train-steps", type=int, default=20, help="timed steps; 0 skips training")
  p.add_argument("--codec-weights", choices=("parity", "init"), default="parity")
  p.add_argument("--qp", type=int, default=3, help="rate index for the codec")
  p.add_argument("--codec-warmup", type=int, default=2)
  p.add_argument("--codec-runs", type=int, default=5, help="timed runs; 0 skips the codec")
  p.add_argument("--codec-threads", type=int, default=1, help="torch CPU threads for the "
                 "codec, as eval.py sets (0: leave as is)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--save-weights", default=None, metavar="NPZ",
                 help="also write the codec's weights in the parity-fixture layout, so that "
                 "experiments/bench_codec.py --checkpoint NPZ times ours on the same weights")
  args = p.parse_args(argv)

  start = time.perf_counter()
  official = pathlib.Path(args.official).resolve()
  tag = f"{sys.implementation.cache_tag}-{platform.machine()}"
  site = pathlib.Path(args.site or pathlib.Path(tempfile.gettempdir()) / "msinn_official" / tag)
  print(f"installing compressai into {site} ...", flush=True)
  install = install_official_deps(official, site)
  compressai, stubbed = import_compressai(site)
  msinn, train = load_official(official)
  device = torch.device(args.device)
  image_path = args.image or (str(official / "kodim01.png")
                              if (official / "kodim01.png").exists() else None)
  full_image, _ = load_image(image_path, None)
  codec_image, image_desc = load_image(image_path, args.codec_size)

  result = {
      "what": "official PyTorch MSINN (hytu99/MSINN-VRLIC) training and codec speed",
      "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
                f"cpu: {cpu_description()}",
      "official_commit": (official / "COMMIT").read_text().strip(),
      "python": platform.python_version(), "torch": torch.__version__,
      "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
      "compressai": {"version": compressai.__version__, "path": compressai.__file__,
                     "install": install, "stubbed_packages": stubbed},
      "backend_flags": {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                        "cudnn.benchmark": torch.backends.cudnn.benchmark},
      "image": image_desc,
      "command": shlex.join(["python3", "experiments/bench_official.py",
                             *(sys.argv[1:] if argv is None else argv)]),
  }
  failed = False
  for name, run, wanted in (
      ("train", lambda: bench_train(msinn, train, device, full_image, args), args.train_steps),
      ("codec", lambda: bench_codec(msinn, train, compressai, device, codec_image, args),
       args.codec_runs)):
    if not wanted:
      continue
    print(f"{name} ...", flush=True)
    try:
      result[name] = run()
    except Exception:  # noqa: BLE001 - record it, and still run the other measurement
      failed = True
      result[name] = {"error": traceback.format_exc()[-3000:]}
  result["total_s"] = time.perf_counter() - start
  text = json.dumps(result, indent=2)
  if args.out:
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(text + "\n")
  print(text)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
