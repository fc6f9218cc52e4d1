"""Successive re-encoding at a fixed rate (the paper's re-encoding study, Sec. IV).

Generation 1 compresses the original image and decodes it; generation g + 1 compresses
the decoded image of generation g, always at the same rate. A codec whose transform is
invertible should be stable under re-encoding: after the first generation the image
changes little, so the quality against the original levels off instead of decaying
generation after generation as it does for lossy transforms that are not invertible.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from msinn_jax import metrics
from msinn_jax.codec import Codec
from msinn_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Generation:
  """One compress/decompress generation.

  Attributes:
    index: 1 for the first coding of the original, then 2, 3, ...
    num_bytes: size of the `.msinn` stream.
    bpp: 8 * num_bytes / (H * W), the actual rate.
    estimated_bpp: the model's rate estimate (-log2 likelihood of the symbols) per pixel.
    psnr: PSNR (dB, peak 255) of this generation's decoded image against the original.
    psnr_vs_previous: PSNR of the decoded image against this generation's input (the
      original for generation 1); inf when re-encoding left the image unchanged.
    encode_seconds: `EncodeResult.seconds`, until the bytes were ready (the encoder's
      reconstruction is not counted).
    decode_seconds: wall time of `Codec.decompress`.
  """

  index: int
  num_bytes: int
  bpp: float
  estimated_bpp: float
  psnr: float
  psnr_vs_previous: float
  encode_seconds: float
  decode_seconds: float

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR (dB, peak 255) of two [H, W, 3] uint8 images; inf when they are equal."""
  return float(metrics.psnr(a[None], b[None])[0])


def reencode(codec: Codec, image: np.ndarray, rate: float,
             generations: int) -> tuple[list[Generation], np.ndarray]:
  """Codes an image `generations` times in a row at one rate.

  Every generation decodes its own stream (as a user re-encoding a decoded file would),
  so the next one starts from what the decoder produced.

  Args:
    codec: the codec.
    image: [H, W, 3] uint8, the original.
    rate: the fixed rate (anchor index or continuous value).
    generations: number of generations, >= 1.

  Returns:
    One `Generation` per generation, and the last decoded image [H, W, 3] uint8.
  """
  if generations < 1:
    raise UserError(f"need at least one generation, got {generations}")
  original = np.asarray(image)
  current, out = original, []
  for g in range(1, generations + 1):
    coded = codec.round_trip(current, rate).check()
    out.append(Generation(
        index=g,
        num_bytes=len(coded.encoded.data),
        bpp=coded.bpp,
        estimated_bpp=coded.estimated_bpp,
        psnr=_psnr(coded.decoded.image, original),
        psnr_vs_previous=_psnr(coded.decoded.image, current),
        encode_seconds=coded.encoded.seconds,
        decode_seconds=coded.decoded.seconds,
    ))
    current = coded.decoded.image
  return out, current
