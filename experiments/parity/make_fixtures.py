"""Small parity fixtures: outputs of the official PyTorch MSINN on known weights.

Writes `tests/fixtures/parity/*.npz` in the layout of the shared paper-size fixture
(`../shared/reference/README.md`): `config_json`, `recipe`, `param/<official key>`,
`input/x` (NCHW), `case/<name>/qp`, `case/<name>/<f32|f64>/{x_hat,y/i,y_hat/i,
likelihood/i}` and `roundtrip/g_s_g_a_x`. `tests/test_parity.py` reads them without torch.

Not run by the tests. It needs PyTorch and CompressAI, which the project does not depend
on, and the official code (hytu99/MSINN-VRLIC at ed78e39) unpacked outside the checkout:

  python3 -m venv .torchenv
  .torchenv/bin/pip install torch compressai numpy
  mkdir -p ../MSINN-VRLIC-ed78e39
  git --git-dir=<mirror of MSINN-VRLIC> archive ed78e39 | tar -x -C ../MSINN-VRLIC-ed78e39
  .torchenv/bin/python experiments/parity/make_fixtures.py \
      --official ../MSINN-VRLIC-ed78e39 --out tests/fixtures/parity

Two departures from the released model keep the files small; each file's `recipe`
records them:

* Context width. The official `__init__` hard-codes `internal_channel = 128` for the
  channel-context, spatial-context and LRP networks (about 6.9M parameters, 27 MB, even
  for N=16). The official module source is compiled here with that one literal replaced
  (checked to occur exactly once); `forward` is untouched. `config_json` then carries
  this project's extra key `context_width` next to the official keyword arguments.
* Parameters rounded to float16 values (stored as float32), so that the npz deflates,
  and the parameters that `forward` never reads (spatial-context and entropy-parameter
  networks of slices coded without spatial context) zeroed. Both implementations run on
  exactly the stored values.

Inputs are synthetic (smooth colour fields and hard-edged shapes, quantised to 8 bits),
chosen from `--max-tries` seeds as the first whose float64 quantiser inputs all lie at
least `--margin` from a rounding boundary: with so few latents (6144 per 32x64 image) one
float32 rounding flip would otherwise exceed the test's flip budget.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import importlib
import json
import pathlib
import sys
import types
from typing import Any

import numpy as np
import torch

_WIDTH_LITERAL = "internal_channel = 128"
_SLICES = 5  # The official `num_iters`.


@dataclasses.dataclass(frozen=True)
class Spec:
  """One fixture file.

  Attributes:
    name: file stem.
    kwargs: official `MSINNCompression` keyword arguments.
    context_width: the official `internal_channel` (128 in the released code).
    shape: input (B, H, W); H and W multiples of 16 (four squeezes). The official
      forward needs no more; an odd coarsest grid (H or W = 16 * odd) tests the
      checkerboard at a ragged edge.
    cases: case name -> qp as given to the official forward (int, float, list of ints).
    seed: torch seed of the weights; the input seed search starts here too.
    coupling_std: std of the perturbed coupling output convolutions.
    scale_shift: added to the scale half of the last bias of each cc_transforms and
      entropy_parameters network.
  """

  name: str
  kwargs: dict[str, Any]
  context_width: int
  shape: tuple[int, int, int]
  cases: dict[str, Any]
  seed: int = 0
  coupling_std: float = 0.05
  scale_shift: float = 0.5


_BASE = dict(N=16, M=24, depths=[1, 1, 1, 1], flow_permutation="invconv",
             flow_coupling="affine", use_act_norm=True, post_process=False, lrp=True,
             sc_type="multi_ckbd", spatial_context_num=5, anchor_num=8)

SPECS = (
    Spec("per_sample_rates_b2_32x64",
         {**_BASE, "depths": [2, 1, 1, 1]}, 16, (2, 32, 64),
         {"qps7_2": [7, 2], "qp2.5": 2.5}, seed=1),
    Spec("ckbd_k5_scn4_32x48",
         {**_BASE, "sc_type": "ckbd_k5", "spatial_context_num": 4, "anchor_num": 12},
         16, (1, 32, 48), {"qp4": 4, "qp10.5": 10.5}, seed=2),
    Spec("additive_cross_nolrp_scn2_32x64",
         {**_BASE, "flow_coupling": "additive", "flow_permutation": "cross", "lrp": False,
          "spatial_context_num": 2}, 16, (1, 32, 64), {"qp5": 5, "qp0.75": 0.75}, seed=3),
    Spec("reverse_noactnorm_48x32",
         {**_BASE, "flow_permutation": "reverse", "use_act_norm": False,
          "depths": [1, 1, 2, 1], "anchor_num": 12}, 16, (1, 48, 32),
         {"qp11": 11, "qp0": 0}, seed=4),
)


# --- The official model -----------------------------------------------------------------


def official_class(root: pathlib.Path, context_width: int):
  """`MSINNCompression` from the official tree, with its context width set."""
  sys.path.insert(0, str(root))
  module = importlib.import_module("models.msinn")
  if context_width == 128:
    return module.MSINNCompression
  source = pathlib.Path(module.__file__).read_text()
  if source.count(_WIDTH_LITERAL) != 1:
    raise RuntimeError(f"{module.__file__}: expected one {_WIDTH_LITERAL!r}")
  patched = types.ModuleType(f"models.msinn_w{context_width}")
  patched.__package__ = "models"
  patched.__file__ = module.__file__
  code = source.replace(_WIDTH_LITERAL, f"internal_channel = {context_width}")
  exec(compile(code, module.__file__, "exec"), patched.__dict__)  # pylint: disable=exec-used
  return patched.MSINNCompression


def source_digest(root: pathlib.Path) -> str:
  h = hashlib.sha256()
  for name in ("msinn.py", "layers.py", "model_utils.py", "post_process.py"):
    h.update((root / "models" / name).read_bytes())
  return h.hexdigest()[:16]


def make_weights(spec: Spec, cls) -> tuple[torch.nn.Module, str]:
  """Builds the official model with non-trivial weights; returns it and its recipe."""
  _, h, w = spec.shape
  torch.manual_seed(spec.seed)
  model = cls(**spec.kwargs)
  model.train()
  with torch.no_grad():
    model(torch.rand(2, 3, h, w), 0)  # ActNorm data-init (and masks applied).
  torch.manual_seed(spec.seed + 1234)
  with torch.no_grad():
    for s in range(4):
      for unit in getattr(model, f"g_a{s}"):
        unit.block[1].conv.weight.normal_(0, spec.coupling_std)
        unit.block[1].conv.bias.normal_(0, spec.coupling_std)
    a, c = model.gain.shape[:2]
    base = torch.linspace(-1.0, 1.0, a).view(a, 1, 1, 1)
    model.gain.copy_(torch.exp(base + 0.1 * torch.randn(a, c, 1, 1)))
    model.inv_gain.copy_(torch.exp(-base + 0.1 * torch.randn(a, c, 1, 1)))
    model.scale_gain.copy_(torch.exp(base + 0.1 * torch.randn(a, c, 1, 1)))
    model.initial_scale.copy_(0.5 + torch.rand(1, model.initial_scale.shape[1], 1, 1))
    # Untrained conditioners predict scales around 0, below the 0.11 bound: shift the
    # scale half of their last bias so that the likelihoods depend on them.
    for last in [seq[-1] for seq in (*model.cc_transforms, *model.entropy_parameters)]:
      last.bias[:last.out_channels // 2] += spec.scale_shift
    # The forward never reads these (slices coded without spatial context); zeros deflate.
    for k in range(_SLICES):
      if _SLICES - k > model.spatial_context_num:
        for net in (model.sc_transforms[k], model.entropy_parameters[k]):
          for p in net.parameters():
            p.zero_()
    for p in model.parameters():
      p.copy_(p.half().float())
  model.eval()
  recipe = (
      f"seed={spec.seed}; official MSINNCompression(**config without context_width) built "
      f"after torch.manual_seed({spec.seed}), its models/msinn.py compiled with "
      f"internal_channel = {spec.context_width} instead of 128; ActNorm "
      f"data-init on torch.rand(2,3,{h},{w}) at qp 0 in train mode; then "
      f"torch.manual_seed({spec.seed + 1234}); for every InvUnit u in g_a0..g_a3 in order: "
      f"u.block[1].conv.weight.normal_(0, {spec.coupling_std}); "
      f"u.block[1].conv.bias.normal_(0, {spec.coupling_std}). Then C=138, A=anchor_num, "
      "base = torch.linspace(-1.0, 1.0, A).view(A,1,1,1); gain = exp(base + "
      "0.1*randn(A,C,1,1)); inv_gain = exp(-base + 0.1*randn(A,C,1,1)); scale_gain = "
      "exp(base + 0.1*randn(A,C,1,1)); initial_scale = 0.5 + rand(1,48,1,1); for seq in "
      f"(*cc_transforms, *entropy_parameters): seq[-1].bias[:out_channels // 2] += "
      f"{spec.scale_shift}; sc_transforms[k] and entropy_parameters[k] of the slices "
      "without spatial context (unused by forward) zeroed; finally every parameter rounded "
      "to float16 and back (p.half().float()).")
  return model, recipe


# --- Inputs -----------------------------------------------------------------------------


def synthetic_images(seed: int, b: int, h: int, w: int) -> np.ndarray:
  """[B, 3, H, W] float32 in [0, 1]: low-pass colour noise plus shapes, 8-bit values."""
  rng = np.random.default_rng(seed)
  fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
  lowpass = np.exp(-(fy**2 + fx**2) / (2 * 0.06**2))
  out = np.empty((b, 3, h, w), np.float64)
  yy, xx = np.mgrid[:h, :w]
  for i in range(b):
    noise = rng.standard_normal((3, h, w))
    field = np.fft.irfft2(np.fft.rfft2(noise) * lowpass, s=(h, w))
    field = 0.5 + 0.25 * field / field.std()
    for _ in range(3):
      colour = rng.uniform(0, 1, (3, 1))
      if rng.uniform() < 0.5:
        y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
        sel = ((yy >= y0) & (yy < y0 + rng.integers(4, h // 2))
               & (xx >= x0) & (xx < x0 + rng.integers(4, w // 2)))
      else:
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, min(h, w) / 3)
        sel = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
      field[:, sel] = colour
    out[i] = field
  return (np.round(np.clip(out, 0, 1) * 255) / 255).astype(np.float32)


def rounding_margin(model, x: torch.Tensor, qp) -> float:
  """Smallest distance of a float64 quantiser input to a rounding boundary (x.5).

  Records every `quantize_ste` call of the official forward; a slice with spatial
  context calls it twice, and the first call's values count only at the anchors (the
  non-anchors are discarded), which by the official parity rule are the positions
  (i + j) % 2 == 1 for even slice indices and (i + j) % 2 == 0 for odd ones.
  """
  calls = []
  namespace = type(model).forward.__globals__  # The (possibly patched) module's globals.
  original = namespace["quantize_ste"]

  def recording(t):
    calls.append(t.detach().clone())
    return original(t)

  namespace["quantize_ste"] = recording
  try:
    with torch.no_grad():
      model(x, qp)
  finally:
    namespace["quantize_ste"] = original
  spatial = [_SLICES - k <= model.spatial_context_num for k in range(_SLICES)]
  if len(calls) != _SLICES + sum(spatial):
    raise RuntimeError(f"expected {_SLICES + sum(spatial)} quantiser calls, got {len(calls)}")
  margin, it = np.inf, iter(calls)
  for k in range(_SLICES):
    values = []
    if spatial[k]:
      first = next(it).numpy()
      ii, jj = np.indices(first.shape[-2:])
      anchors = (ii + jj) % 2 == (1 if k % 2 == 0 else 0)
      values.append(first[..., anchors])
    values.append(next(it).numpy())
    for v in values:
      margin = min(margin, float(np.min(np.abs(np.abs(v - np.floor(v)) - 0.5))))
  return margin


# --- One fixture ------------------------------------------------------------------------


def _outputs(model, x, qp) -> dict[str, np.ndarray]:
  with torch.no_grad():
    out = model(x, qp)
  res = {"x_hat": out["x_hat"].numpy()}
  for i in range(_SLICES):
    res[f"y/{i}"] = out["y"][i].numpy()
    res[f"y_hat/{i}"] = out["y_hat"][i].numpy()
    res[f"likelihood/{i}"] = out["likelihoods"][f"y{i}"].numpy()
  return res


def build(spec: Spec, root: pathlib.Path, margin: float, max_tries: int
          ) -> tuple[dict[str, np.ndarray], list[str]]:
  """All arrays of one fixture, and a human-readable log."""
  cls = official_class(root, spec.context_width)
  model, recipe = make_weights(spec, cls)
  model64 = copy.deepcopy(model).double()
  b, h, w = spec.shape
  for image_seed in range(spec.seed * 1000, spec.seed * 1000 + max_tries):
    x = torch.from_numpy(synthetic_images(image_seed, b, h, w))
    worst = min(rounding_margin(model64, x.double(), qp) for qp in spec.cases.values())
    if worst >= margin:
      break
  else:
    raise RuntimeError(f"{spec.name}: no input seed with rounding margin >= {margin}")
  recipe += (f" Input: synthetic_images(seed={image_seed}) of experiments/parity/"
             f"make_fixtures.py ({b}x3x{h}x{w}, low-pass colour noise and shapes, 8-bit "
             f"values), the first seed from {spec.seed * 1000} whose float64 quantiser "
             f"inputs are all >= {margin} from a rounding boundary (min {worst:.2e}). "
             f"Official code: models/*.py sha256 {source_digest(root)} (ed78e39); "
             f"torch {torch.__version__}, compressai {_version('compressai')}.")
  config = {**spec.kwargs}
  if spec.context_width != 128:
    config["context_width"] = spec.context_width
  arrays = {"config_json": np.asarray(json.dumps(config)), "recipe": np.asarray(recipe),
            "input/x": x.numpy()}
  log = [f"{spec.name}: image seed {image_seed}, rounding margin {worst:.2e}"]
  for name, qp in spec.cases.items():
    arrays[f"case/{name}/qp"] = np.asarray(qp)
    o32 = _outputs(model, x, qp)
    o64 = _outputs(model64, x.double(), qp)
    for k, v in o32.items():
      arrays[f"case/{name}/f32/{k}"] = v
    for k, v in o64.items():
      arrays[f"case/{name}/f64/{k}"] = v
    flips = sum(int(np.sum(np.abs(o32[f"y_hat/{i}"] - o64[f"y_hat/{i}"]) > 0.25))
                for i in range(_SLICES))
    dy = max(float(np.abs(o32[f"y/{i}"] - o64[f"y/{i}"]).max()) for i in range(_SLICES))
    dx = float(np.abs(o32["x_hat"] - o64["x_hat"]).max())
    bits = sum(-np.log2(o64[f"likelihood/{i}"]).sum() for i in range(_SLICES))
    log.append(f"  case {name}: qp={qp!r} bits(f64)={bits:.1f} official f32 vs f64: "
               f"y {dy:.1e}, x_hat {dx:.1e}, {flips} quantised flips")
  with torch.no_grad():
    arrays["roundtrip/g_s_g_a_x"] = model.g_s(model.g_a(x)).numpy()
  for key, value in model.state_dict().items():
    arrays[f"param/{key}"] = value.numpy()
  return arrays, log


def _version(dist: str) -> str:
  import importlib.metadata  # pylint: disable=import-outside-toplevel
  return importlib.metadata.version(dist)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--official", required=True, type=pathlib.Path,
                 help="work tree of hytu99/MSINN-VRLIC (holds models/msinn.py)")
  p.add_argument("--out", default="tests/fixtures/parity", type=pathlib.Path)
  p.add_argument("--only", nargs="*", help="fixture names to (re)write; default all")
  p.add_argument("--margin", type=float, default=1e-4,
                 help="least distance of any float64 quantiser input to a rounding boundary")
  p.add_argument("--max-tries", type=int, default=500)
  args = p.parse_args(argv)
  torch.set_num_threads(1)
  args.out.mkdir(parents=True, exist_ok=True)
  for spec in SPECS:
    if args.only and spec.name not in args.only:
      continue
    arrays, log = build(spec, args.official.resolve(), args.margin, args.max_tries)
    path = args.out / f"{spec.name}.npz"
    np.savez_compressed(path, **arrays)
    print("\n".join(log) + f"\n  -> {path} ({path.stat().st_size / 1e6:.2f} MB)", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
