"""Rate-distortion evaluation sweeps over an image dataset, as CompressAI results JSON.

The protocol of the paper (Tu et al., IEEE TMM 2025, Sec. V-A) and of the official
`eval.py` (itself CompressAI's `eval_model`): every full image, zero-padded (centred) to
a multiple of `config.pad_multiple`, is coded at each rate (the official estimate mode
alone feeds the image unpadded, which works only for sizes that are already multiples,
as Kodak's are; here both modes pad, so any size works); PSNR and MS-SSIM are measured
on 8-bit RGB (reconstruction clamped and rounded to [0, 255]) over the original pixels;
bpp counts the original pixels; each metric is averaged over the images of a rate.

Two modes:

* bitstreams (default): `Codec.compress` then `Codec.decompress`; bpp is the size of the
  whole `.msinn` file (header included), 8 * len(bytes) / (H * W). The decoded image
  must equal the encoder's reconstruction (else `codec.DecodeMismatchError`). "bpp-estimated"
  is the model's -log2 likelihood of the coded symbols.
* estimate only: one jitted evaluation forward (`MSINN.__call__` with rounding), whose
  "bits" give "bpp" and "bpp-estimated" alike; as in the official `eval.py`, half the
  forward time is reported as encoding time and half as decoding time.

Compilation. Images are grouped by padded shape, and each group is swept at every rate
before the next group starts. The jitted pieces (the codec's, or the forward here) take
the rate as a traced [1] float32 array, so each padded shape compiles exactly once,
whatever the number of rates. Before timing a group, its first image is run once at the
first rate and the result discarded (`warmup`), so that reported times exclude
compilation.

Output (`evaluate`): a CompressAI results object (`msinn_jax.rd.RDCurve.from_json`
accepts it) with one point per rate:

  {"name": ..., "description": ...,
   "results": {"rate": [...], "bpp": [...], "bpp-estimated": [...], "psnr-rgb": [...],
               "ms-ssim-rgb": [...], "ms-ssim-rgb-db": [...],
               "encoding_time": [...], "decoding_time": [...]},
   "settings": {"mode": "bitstream" | "estimate", "num_images": N, "device": ...},
   "per_image": {"images": [N names], "<metric>": [[N values] per rate], ...}}

"ms-ssim-rgb-db" is -10 log10(1 - mean MS-SSIM), the dB value of the averaged MS-SSIM
(the conversion `RDCurve.quality_db` applies to "ms-ssim-rgb"); per image it is the
image's own value. Times are seconds. "per_image" is present only with `per_image=True`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from msinn_jax import gain, metrics
from msinn_jax.codec import Codec, crop, pad_image, padded_size
from msinn_jax.errors import UserError

TFDS_PREFIX = "tfds:"
DEFAULT_TFDS_SPLIT = "test"
# How many unreadable images an error message names.
_MAX_PROBLEMS_SHOWN = 5

# Results keys, in output order, and the `ImageResult` field behind each.
METRIC_FIELDS = {
    "bpp": "bpp",
    "bpp-estimated": "bpp_estimated",
    "psnr-rgb": "psnr",
    "ms-ssim-rgb": "ms_ssim",
    "ms-ssim-rgb-db": "ms_ssim_db",
    "encoding_time": "encoding_time",
    "decoding_time": "decoding_time",
}


class Images(Protocol):
  """Random access to [H, W, 3] uint8 images (a list, or a `train.data` source)."""

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> np.ndarray:
    ...


@dataclasses.dataclass(frozen=True)
class ImageResult:
  """Measurements of one image coded at one rate.

  Attributes:
    bpp: bits per pixel of the file (bitstream mode) or of the estimate.
    bpp_estimated: the model's estimate, -log2 likelihood of the symbols per pixel.
    psnr: PSNR-RGB in dB on 8-bit values.
    ms_ssim: MS-SSIM-RGB on 8-bit values, in [0, 1].
    encoding_time: seconds until the bytes were ready (`EncodeResult.seconds`).
    decoding_time: seconds.
  """
  bpp: float
  bpp_estimated: float
  psnr: float
  ms_ssim: float
  encoding_time: float
  decoding_time: float

  @property
  def ms_ssim_db(self) -> float:
    return float(metrics.ms_ssim_db(self.ms_ssim))


def parse_rates(spec: str, anchor_num: int) -> list[float]:
  """Parses a rate list: "all" (every anchor), numbers ("0,3.5,11"), or both ("all,0.5").

  Args:
    spec: comma-separated tokens, each "all" or a number.
    anchor_num: the model's number of anchors; rates must lie in [0, anchor_num - 1].

  Returns:
    The distinct rates, ascending.

  Raises:
    UserError: an empty list, a token that is not a number, or a rate out of range.
  """
  top = anchor_num - 1
  rates = set()
  for token in (t.strip() for t in spec.split(",")):
    if token.lower() == "all":
      rates.update(float(a) for a in range(anchor_num))
      continue
    try:
      rates.add(gain.check_rate(token, anchor_num))
    except UserError as e:
      raise UserError(f"bad rate {token!r} in {spec!r} ({e}): expected 'all' or numbers "
                      f"like 0,3.5,{top}") from None
  return sorted(rates)


def open_dataset(spec: str) -> tuple[Images, list[str]]:
  """Opens an evaluation dataset: an image folder, or `tfds:NAME[:SPLIT]`.

  A folder is scanned recursively (`train.data.ImageFolderSource`); a TFDS dataset must
  already be prepared in a random-access format (`train.data.TfdsSource`; nothing is
  downloaded), and its split defaults to "test". Images are read whole, never cropped.

  Args:
    spec: folder path, or e.g. "tfds:kodak" / "tfds:clic:validation".

  Returns:
    The images and one name per image (relative path, or "NAME[index]").

  Raises:
    UserError: the folder or dataset does not exist or holds no image.
  """
  from msinn_jax.train.data import ImageFolderSource, TfdsSource
  if spec.startswith(TFDS_PREFIX):
    name, _, split = spec[len(TFDS_PREFIX):].partition(":")
    if not name:
      raise UserError(f"bad dataset {spec!r}: expected {TFDS_PREFIX}NAME[:SPLIT]")
    source = TfdsSource(name, split=split or DEFAULT_TFDS_SPLIT)
    return source, [source.describe(i) for i in range(len(source))]
  source = ImageFolderSource(spec)
  return source, [os.path.relpath(p, source.root) for p in source.paths]


class Evaluator:
  """Measures a model on images, by real bitstreams or by the jitted estimate forward.

  Holds the compiled estimate forward, so that sweeps with the same evaluator reuse it.

  Args:
    codec: the model to evaluate, with its coding tables.
  """

  def __init__(self, codec: Codec):
    self.codec = codec
    model = codec.model

    def forward(variables, x, rate):
      out = model.apply(variables, x, rate)
      x_hat = jnp.round(jnp.clip(out["x_hat"], 0., 1.) * 255.).astype(jnp.uint8)
      return x_hat, out["bits"]

    self._forward = jax.jit(forward)

  @property
  def num_compiled_forwards(self) -> int:
    """How many shapes the estimate forward has been compiled for."""
    return self._forward._cache_size()  # pylint: disable=protected-access

  def padded_shape(self, image: np.ndarray) -> tuple[int, int]:
    """(Hp, Wp) the model codes an [H, W, 3] image at."""
    return padded_size(*image.shape[:2], self.codec.config.pad_multiple)

  # --- One image at one rate -------------------------------------------------------------

  def code(self, image: np.ndarray, rate: float) -> ImageResult:
    """Compresses and decompresses one [H, W, 3] uint8 image; metrics of the decoded one.

    Raises:
      codec.DecodeMismatchError: the decoded image is not the encoder's reconstruction.
    """
    coded = self.codec.round_trip(image, rate).check()
    return ImageResult(
        bpp=coded.bpp, bpp_estimated=coded.estimated_bpp, **_quality(image, coded.decoded.image),
        encoding_time=coded.encoded.seconds, decoding_time=coded.decoded.seconds)

  def estimate(self, image: np.ndarray, rate: float) -> ImageResult:
    """Runs the jitted evaluation forward on one [H, W, 3] uint8 image."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
      raise UserError(f"expected an [H, W, 3] uint8 image, got {image.shape} {image.dtype}")
    h, w, _ = image.shape
    x, pad = pad_image(image, self.codec.config.pad_multiple)
    rate_arr = jnp.full((1,), np.float32(rate))
    start = time.perf_counter()
    x_hat, bits = jax.block_until_ready(self._forward(self.codec.variables, x, rate_arr))
    seconds = time.perf_counter() - start
    recon = crop(x_hat, pad)
    bpp = float(bits[0]) / (h * w)
    return ImageResult(bpp=bpp, bpp_estimated=bpp, **_quality(image, recon),
                       encoding_time=seconds / 2, decoding_time=seconds / 2)

  # --- Sweeps ----------------------------------------------------------------------------

  def evaluate(self,
               images: Images,
               rates: Sequence[float],
               *,
               names: Sequence[str] | None = None,
               estimate_only: bool = False,
               per_image: bool = False,
               progress: bool = True,
               warmup: bool = True,
               name: str = "msinn-jax",
               description: str = "") -> dict[str, Any]:
    """Sweeps every image at every rate; see the module docstring for the output.

    Args:
      images: the dataset, [H, W, 3] uint8 per item; each is read twice (once to find
        its shape, once to code it).
      rates: rate values in [0, anchor_num - 1] (integers are the anchors).
      names: one name per image for "per_image" (default: the indexes as strings).
      estimate_only: use the estimate forward instead of real bitstreams.
      per_image: add the per-image values under "per_image".
      progress: show a tqdm bar over images x rates.
      warmup: run each shape group's first image once, untimed, before measuring.
      name: the curve's name (legend label).
      description: the curve's description; the mode is prepended.

    Returns:
      The CompressAI results object, as a dict.

    Raises:
      UserError: no images, no rates, a rate out of range, or a malformed image.
      codec.DecodeMismatchError: see `code`.
    """
    rates = [float(r) for r in rates]
    if not rates:
      raise UserError("no rates to evaluate")
    if len(images) == 0:
      raise UserError("no images to evaluate")
    for rate in rates:
      gain.check_rate(rate, self.codec.config.anchor_num)
    names = [str(i) for i in range(len(images))] if names is None else list(names)
    if len(names) != len(images):
      raise ValueError(f"{len(names)} names for {len(images)} images")
    measure: Callable[[np.ndarray, float], ImageResult] = (
        self.estimate if estimate_only else self.code)

    table: list[list[ImageResult | None]] = [[None] * len(images) for _ in rates]
    with tqdm.tqdm(total=len(images) * len(rates), desc="eval", unit="img",
                   disable=not progress, dynamic_ncols=True) as bar:
      for shape, indexes in self._groups(images).items():
        bar.set_postfix_str(f"{shape[0]}x{shape[1]}")
        if warmup:
          measure(images[indexes[0]], rates[0])
        for i in indexes:
          image = images[i]
          for j, rate in enumerate(rates):
            table[j][i] = measure(image, rate)
            bar.update()

    mode = "estimate" if estimate_only else "bitstream"
    how = ("entropy estimation, jitted forward" if estimate_only
           else "range-coded .msinn bitstreams")
    out = {
        "name": name,
        "description": f"Inference ({how}). {description}".strip(),
        "results": {"rate": rates, **{key: [_average(row, key) for row in table]
                                      for key in METRIC_FIELDS}},
        "settings": {"mode": mode, "num_images": len(images), "device": _device_name(),
                     "pad_multiple": self.codec.config.pad_multiple},
    }
    if per_image:
      out["per_image"] = {"images": names, **{
          key: [[getattr(r, field) for r in row] for row in table]
          for key, field in METRIC_FIELDS.items()}}
    return out

  def _groups(self, images: Images) -> dict[tuple[int, int], list[int]]:
    """Image indexes by padded shape, shapes in order of first appearance.

    Reads every image, before any is coded.

    Raises:
      UserError: some images cannot be read or are not [H, W, 3] (all counted, the first
        `_MAX_PROBLEMS_SHOWN` named).
    """
    groups: dict[tuple[int, int], list[int]] = {}
    problems = []
    for i in range(len(images)):
      try:
        image = np.asarray(images[i])
      except UserError as e:  # Strict sources: unreadable, truncated, 16-bit, ...
        problems.append(str(e))
        continue
      if image.ndim != 3 or image.shape[-1] != 3:
        problems.append(f"image {i} has shape {image.shape}; expected [H, W, 3]")
        continue
      groups.setdefault(self.padded_shape(image), []).append(i)
    if problems:
      shown = "; ".join(problems[:_MAX_PROBLEMS_SHOWN])
      more = len(problems) - _MAX_PROBLEMS_SHOWN
      raise UserError(f"{len(problems)} of {len(images)} images cannot be evaluated "
                      f"(nothing was coded): {shown}" + (f"; and {more} more" if more > 0 else ""))
    return groups


def evaluate(codec: Codec | Evaluator, images: Images, rates: Sequence[float],
             **kwargs: Any) -> dict[str, Any]:
  """`Evaluator(codec).evaluate(images, rates, **kwargs)`; see `Evaluator.evaluate`."""
  evaluator = codec if isinstance(codec, Evaluator) else Evaluator(codec)
  return evaluator.evaluate(images, rates, **kwargs)


def format_table(results: dict) -> str:
  """A small text table of a results object: one row per rate."""
  r = results["results"]
  settings = results.get("settings", {})
  lines = [f"{results['name']}: {settings.get('num_images', '?')} images, "
           f"{settings.get('mode', '?')}, {settings.get('device', '?')}",
           f"{'rate':>6} {'bpp':>8} {'est.bpp':>8} {'PSNR':>7} {'MS-SSIM':>8} "
           f"{'enc ms':>8} {'dec ms':>8}"]
  for i, rate in enumerate(r["rate"]):
    lines.append(f"{rate:6.2f} {r['bpp'][i]:8.4f} {r['bpp-estimated'][i]:8.4f} "
                 f"{r['psnr-rgb'][i]:7.3f} {r['ms-ssim-rgb'][i]:8.5f} "
                 f"{1000 * r['encoding_time'][i]:8.1f} {1000 * r['decoding_time'][i]:8.1f}")
  return "\n".join(lines)


def _quality(original: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
  """PSNR-RGB and MS-SSIM-RGB of two [H, W, 3] uint8 images (8-bit values)."""
  a, b = jnp.asarray(original)[None], jnp.asarray(decoded)[None]
  return {"psnr": float(metrics.psnr(a, b)[0]), "ms_ssim": float(metrics.ms_ssim(a, b)[0])}


def _average(row: Sequence[ImageResult], key: str) -> float:
  """The mean over images of one metric; for "ms-ssim-rgb-db", the dB of the mean MS-SSIM
  (not the mean of per-image dB; see the module docstring)."""
  if key == "ms-ssim-rgb-db":
    return float(metrics.ms_ssim_db(_average(row, "ms-ssim-rgb")))
  return float(np.mean([getattr(r, METRIC_FIELDS[key]) for r in row]))


def _device_name() -> str:
  """The default device (as set by `jax.default_device`), e.g. "gpu (NVIDIA H100 ...)"."""
  device = next(iter(jnp.zeros(()).devices()))
  return f"{device.platform} ({device.device_kind})"
