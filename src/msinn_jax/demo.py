"""The first-run demo: code a few sample images at several rates, offline.

The samples are photographs that scikit-image ships inside its wheel (`skimage.data`
loads them from the installed package, without the network), centre-cropped so the demo
stays quick on a CPU. Without scikit-image the demo codes one generated image instead and
says so. `msinn_jax.tools.demo` prints and saves what `code_samples` measures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from msinn_jax import metrics
from msinn_jax.codec import Codec
from msinn_jax.rd.results import RDCurve

# Bundled in the scikit-image wheel (no download): RGB photographs of varied content.
SAMPLE_NAMES = ("astronaut", "coffee", "chelsea")


@dataclasses.dataclass(frozen=True)
class SampleImage:
  """A demo image: a name (used in file names), [H, W, 3] uint8 pixels, and its origin."""

  name: str
  pixels: np.ndarray
  source: str


def centre_crop(rgb: np.ndarray, size: int) -> np.ndarray:
  """The central size x size window (or less along a side shorter than size)."""
  h, w = rgb.shape[:2]
  ch, cw = min(size, h), min(size, w)
  top, left = (h - ch) // 2, (w - cw) // 2
  return rgb[top:top + ch, left:left + cw]


def generated_image(size: int, seed: int = 0) -> np.ndarray:
  """A deterministic synthetic photo-like image, [size, size, 3] uint8: smooth colour
  gradients, a soft disc, fine stripes and a little noise."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
  r = 0.5 + 0.4 * np.sin(2.5 * xx + 1.0) * np.cos(1.5 * yy)
  g = 0.3 + 0.5 * yy
  b = 0.6 - 0.4 * xx * yy
  disc = np.exp(-(((xx - 0.6)**2 + (yy - 0.4)**2) / 0.02))
  stripes = 0.08 * np.sin(60 * xx) * (yy > 0.7)
  img = np.stack([r + 0.3 * disc, g + stripes, b - 0.2 * disc], axis=-1)
  img += 0.01 * rng.normal(size=img.shape)
  return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def _as_rgb(img: np.ndarray) -> np.ndarray:
  img = np.asarray(img)
  if img.ndim == 2:
    img = np.stack([img] * 3, axis=-1)
  return img[..., :3].astype(np.uint8)


def sample_images(size: int = 256, names: Sequence[str] = SAMPLE_NAMES
                  ) -> tuple[list[SampleImage], str | None]:
  """The demo images, centre-cropped to size x size.

  Args:
    size: side of the crops.
    names: `skimage.data` images to use.

  Returns:
    The images, and a note when some or all of them could not be loaded (then a
    generated image stands in if nothing loaded), else None.
  """
  try:
    import skimage.data
  except ImportError:
    return ([SampleImage("generated", generated_image(size), "generated (numpy)")],
            "scikit-image is not installed (pip install 'msinn-jax[demo]'), so the demo "
            "codes a generated image instead of photographs")
  images, failed = [], []
  for name in names:
    try:
      pixels = _as_rgb(getattr(skimage.data, name)())
    except Exception as e:  # A missing or unreadable bundled file: use the others.
      failed.append(f"{name} ({e.__class__.__name__})")
      continue
    images.append(SampleImage(name, centre_crop(pixels, size), f"skimage.data.{name}"))
  note = f"could not load {', '.join(failed)} from scikit-image" if failed else None
  if not images:
    images = [SampleImage("generated", generated_image(size), "generated (numpy)")]
    note += "; coding a generated image instead"
  return images, note


def default_rates(anchor_num: int, count: int = 4) -> tuple[float, ...]:
  """`count` anchor indices spread over [0, anchor_num - 1], lowest and highest included."""
  return tuple(sorted({float(round(r)) for r in np.linspace(0, anchor_num - 1, count)}))


@dataclasses.dataclass(frozen=True)
class DemoPoint:
  """One image coded at one rate.

  Attributes:
    image: the sample's name.
    rate: the rate it was coded at.
    bpp: actual bits per pixel of the `.msinn` stream (header included).
    estimated_bpp: the model's estimate (-log2 likelihood of the symbols) per pixel.
    psnr: PSNR (dB, peak 255) of the decoded image.
    encode_ms: wall time of `Codec.compress` until the bytes were ready.
    decode_ms: wall time of `Codec.decompress`.
    decoded: the decoded image, [H, W, 3] uint8.
    matches_encoder: whether the decoder reproduced the encoder's reconstruction bit
      for bit (it must on one machine).
  """

  image: str
  rate: float
  bpp: float
  estimated_bpp: float
  psnr: float
  encode_ms: float
  decode_ms: float
  decoded: np.ndarray = dataclasses.field(repr=False, compare=False)
  matches_encoder: bool = True


def code_samples(codec: Codec, images: Sequence[SampleImage],
                 rates: Sequence[float]) -> list[DemoPoint]:
  """Compresses and decompresses every image at every rate (image-major order)."""
  points = []
  for sample in images:
    for rate in rates:
      coded = codec.round_trip(sample.pixels, rate)
      psnr = float(metrics.psnr(coded.decoded.image[None], sample.pixels[None])[0])
      points.append(DemoPoint(
          image=sample.name, rate=float(rate), bpp=coded.bpp,
          estimated_bpp=coded.estimated_bpp, psnr=psnr,
          encode_ms=1000 * coded.encoded.seconds, decode_ms=1000 * coded.decoded.seconds,
          decoded=coded.decoded.image, matches_encoder=coded.mismatches == 0))
  return points


def rd_curves(points: Sequence[DemoPoint]) -> list[RDCurve]:
  """One RD curve per image, points in rate order."""
  curves = []
  for name in dict.fromkeys(p.image for p in points):
    mine = sorted((p for p in points if p.image == name), key=lambda p: p.rate)
    curves.append(RDCurve(name, {
        "bpp": [p.bpp for p in mine],
        "psnr-rgb": [p.psnr for p in mine],
        "bpp-estimated": [p.estimated_bpp for p in mine],
    }))
  return curves


def mean_curve(points: Sequence[DemoPoint], name: str, description: str) -> RDCurve:
  """The average over images at each rate, in CompressAI's results layout."""
  rates = sorted({p.rate for p in points})
  results: dict[str, list[float]] = {k: [] for k in (
      "bpp", "psnr-rgb", "bpp-estimated", "encoding_time", "decoding_time")}
  for rate in rates:
    at = [p for p in points if p.rate == rate]
    results["bpp"].append(float(np.mean([p.bpp for p in at])))
    results["psnr-rgb"].append(float(np.mean([p.psnr for p in at])))
    results["bpp-estimated"].append(float(np.mean([p.estimated_bpp for p in at])))
    results["encoding_time"].append(float(np.mean([p.encode_ms for p in at])) / 1000)
    results["decoding_time"].append(float(np.mean([p.decode_ms for p in at])) / 1000)
  return RDCurve(name, results, description, {"settings": {"rates": rates}})
