"""Compression and decompression of images into `.msinn` bitstreams.

The codec runs the model's decoding schedule (`msinn_jax.schedule.run`) with the model's
per-slice pieces jitted separately, and entropy codes each (slice, phase) step on the host
between them (`msinn_jax.coding`). The encoder runs exactly the decoder's computations
(same compiled functions, same inputs), plus the analysis transform and the rounding, so
on the same machine the decoder reproduces the encoder's reconstruction bit for bit. An
encoder that needs no reconstruction (`compress(reconstruct=False)`) stops where the
last slice's symbols are known, which changes no byte.

The coder only ever sees integers: symbols q = round((y - mu) * g) and scale indexes of
sigma in the 64-level scale table (CompressAI's indexed scheme); each step's CRC of its
indexes is stored, so a decoder whose network disagrees with the encoder's (other
hardware) reports an error instead of decoding garbage.

Compiled functions are cached per padded image shape; the rate is a traced argument, so
changing it never recompiles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from msinn_jax import coding, gain, schedule
from msinn_jax.coding.container import MAX_DIM
from msinn_jax.config import ModelConfig
from msinn_jax.entropy import gaussian_likelihood
from msinn_jax.errors import BitstreamError, DecodeMismatchError, UserError
from msinn_jax.model import MSINN

MAX_SIDE = MAX_DIM  # Largest side a `.msinn` header can declare.
# Largest padded image the codec runs its networks on (8192 x 8192): a header claiming
# more is refused before any allocation, however valid its checksums.
MAX_PIXELS = 2**26


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
  """(Hp, Wp): the sides rounded up to the multiple, the size the model codes."""
  return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def padding(height: int, width: int, multiple: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """Centred padding to `padded_size`, as CompressAI's `compute_padding` (top/left get the
  smaller half)."""
  ph, pw = padded_size(height, width, multiple)
  top, left = (ph - height) // 2, (pw - width) // 2
  return (top, ph - height - top), (left, pw - width - left)


def pad_image(image: np.ndarray, multiple: int
              ) -> tuple[np.ndarray, tuple[tuple[int, int], tuple[int, int]]]:
  """[H, W, 3] uint8 -> ([1, Hp, Wp, 3] float32 in [0, 1] zero-padded by `padding`, the
  padding); what the model codes."""
  pad = padding(image.shape[0], image.shape[1], multiple)
  return np.pad(np.asarray(image).astype(np.float32) / 255.0, (*pad, (0, 0)))[None], pad


def crop(x: np.ndarray | jax.Array, pad: tuple[tuple[int, int], tuple[int, int]]
         ) -> np.ndarray:
  """Undoes `pad_image`'s padding of a [1, Hp, Wp, C] batch -> [H, W, C]."""
  (top, bottom), (left, right) = pad
  x = np.asarray(x)[0]
  return x[top:x.shape[0] - bottom, left:x.shape[1] - right]


@dataclasses.dataclass
class EncodeResult:
  """What `Codec.compress` returns besides the bytes."""

  data: bytes
  # [H, W, 3] uint8, what the decoder will output; None from `compress(reconstruct=False)`.
  reconstruction: np.ndarray | None
  estimated_bits: float  # -log2 likelihood of the coded symbols (the model's R).
  payload_bits: int  # Bits of the stage payloads.
  header_bytes: int  # Bytes of everything else in the file.
  seconds: float  # Wall time until the bytes were ready, without the reconstruction.
  coding_seconds: float  # Of which host entropy coding.


@dataclasses.dataclass
class DecodeResult:
  """What `Codec.decompress` returns."""

  image: np.ndarray  # [H, W, 3] uint8.
  rate: float
  seconds: float
  coding_seconds: float  # Of which host entropy decoding.


@dataclasses.dataclass
class RoundTrip:
  """One image through `Codec.compress` and `Codec.decompress` (`Codec.round_trip`)."""

  encoded: EncodeResult
  decoded: DecodeResult

  @property
  def num_pixels(self) -> int:
    return self.decoded.image.shape[0] * self.decoded.image.shape[1]

  @property
  def bpp(self) -> float:
    """The file's size (header included) per pixel."""
    return 8 * len(self.encoded.data) / self.num_pixels

  @property
  def estimated_bpp(self) -> float:
    """The model's rate (-log2 likelihood of the coded symbols) per pixel."""
    return self.encoded.estimated_bits / self.num_pixels

  @property
  def mismatches(self) -> int:
    """How many values of the decoded image differ from the encoder's reconstruction."""
    return int(np.count_nonzero(self.decoded.image != self.encoded.reconstruction))

  def check(self) -> RoundTrip:
    """Returns self if the decoder reproduced the encoder's reconstruction.

    Raises:
      DecodeMismatchError: it did not.
    """
    mismatches = self.mismatches
    if mismatches:
      raise DecodeMismatchError(
          f"rate {self.decoded.rate:g}: the decoded image differs from the encoder's "
          f"reconstruction in {mismatches} values")
    return self


class Codec:
  """An MSINN model ready to code images.

  Args:
    config: model configuration.
    variables: `{"params": ...}` of the model.
  """

  def __init__(self, config: ModelConfig, variables: dict[str, Any]):
    self.config = config
    self.variables = {"params": variables["params"]}
    self.model = MSINN(config)
    self.tables = coding.build_tables(coding.scale_table())
    self.model_id = self._fingerprint()
    apply = self.model.apply

    def jit(fn):
      names = fn.__code__.co_varnames[:fn.__code__.co_argcount]
      return jax.jit(fn, static_argnames=[n for n in ("k", "phase", "shape") if n in names])

    self._analysis = jax.jit(lambda v, x: apply(v, x, method=MSINN.analysis)[0])
    self._prior = jit(lambda v, k, support, shape: apply(v, k, support, shape,
                                                         method=MSINN.slice_prior))
    self._params = jit(lambda v, k, phase, cc, y_hat, rate: apply(
        v, k, phase, cc, y_hat, rate, method=MSINN.phase_params))
    self._finish = jit(lambda v, k, y_hat, support, rate: apply(
        v, k, y_hat, support, rate, method=MSINN.finish_slice))
    self._symbols = jit(lambda v, k, y, mu, rate: jnp.round(
        apply(v, k, y, mu, rate, method=MSINN.residual)).astype(jnp.int32))
    self._dequantize = jit(lambda v, k, q, mu, rate: apply(v, k, q, mu, rate,
                                                          method=MSINN.dequantize))
    table = self.tables.scale_table
    self._indexes = jax.jit(lambda sigma: coding.scales_to_indexes(sigma, table))
    self._likelihood = jax.jit(lambda q, sigma: gaussian_likelihood(q.astype(sigma.dtype),
                                                                     sigma))
    self._output = jax.jit(lambda v, x: jnp.round(
        jnp.clip(apply(v, x, method=MSINN.postfilter), 0, 1) * 255).astype(jnp.uint8))

  def _fingerprint(self) -> bytes:
    """8 bytes identifying config, weights and tables (the header's model id)."""
    h = hashlib.sha256(self.config.to_json().encode())
    for path, v in sorted(traverse_util.flatten_dict(self.variables["params"]).items()):
      h.update("/".join(path).encode())
      h.update(np.ascontiguousarray(np.asarray(v, "<f4")).tobytes())  # Little-endian.
    h.update(self.tables.fingerprint())
    return h.digest()[:8]

  # --- Shared machinery ----------------------------------------------------------------

  def _ops(self, rate: jax.Array, last_finish: bool = True) -> schedule.SliceOps:
    """The jitted per-slice networks at `rate`. Without `last_finish`, the last slice's
    LRP and inverse flow are skipped (no slice follows it; only the image needs them)."""
    v = self.variables
    codec = self
    last = self.config.num_slices - 1

    class Ops:
      def prior(self, k, support, shape):
        return codec._prior(v, k=k, support=support, shape=tuple(shape))

      def params(self, k, phase, cc, y_hat):
        return codec._params(v, k=k, phase=phase, cc=cc, y_hat=y_hat, rate=rate)

      def finish(self, k, y_hat, support):
        if k == last and not last_finish:
          return y_hat, None
        return codec._finish(v, k=k, y_hat=y_hat, support=support, rate=rate)

    return Ops()

  def _check_rate(self, rate: float) -> jax.Array:
    return jnp.full((1,), np.float32(gain.check_rate(rate, self.config.anchor_num)))

  # --- Encoder -------------------------------------------------------------------------

  def compress(self, image: np.ndarray, rate: float, *, reconstruct: bool = True
               ) -> EncodeResult:
    """Compresses [H, W, 3] uint8 at `rate` (anchor index or continuous value).

    With `reconstruct=False` the encoder skips what only the decoded image needs (the last
    slice's LRP and inverse flow, the post-filter; as the official `compress`) and returns
    no reconstruction; the bytes are the same.

    Raises:
      UserError: not an [H, W, 3] uint8 image, a size outside the codec's limits, or a
        rate outside [0, anchor_num - 1].
    """
    start = time.perf_counter()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
      raise UserError(f"expected an [H, W, 3] uint8 image, got {image.shape} {image.dtype}")
    h, w, _ = image.shape
    rate_arr = self._check_rate(rate)
    ph, pw = padded_size(h, w, self.config.pad_multiple)
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE) or ph * pw > MAX_PIXELS:
      raise UserError(f"image size {h}x{w} is outside what the codec takes "
                      f"(sides 1..{MAX_SIDE}, at most {MAX_PIXELS} padded pixels)")
    x, pad = pad_image(image, self.config.pad_multiple)
    stages, estimated, x_tilde, coding_seconds = self._encode(jnp.asarray(x), rate_arr,
                                                              reconstruct)
    header = coding.Header(self.model_id, float(np.float32(rate)), h, w, x.shape[1], x.shape[2],
                           len(stages))
    data = coding.pack(header, stages)
    # The bytes are final here. The reconstruction's networks (the last slice's LRP and
    # inverse flow, the post-filter) were only dispatched, so the time so far is the
    # encoder's, with or without `reconstruct`; the image is computed after it.
    seconds = time.perf_counter() - start
    recon = crop(self._output(self.variables, x_tilde), pad) if reconstruct else None
    payload_bits = 8 * sum(len(s.payload) for s in stages)
    return EncodeResult(data, recon, estimated, payload_bits, len(data) - payload_bits // 8,
                        seconds, coding_seconds)

  def round_trip(self, image: np.ndarray, rate: float) -> RoundTrip:
    """Compresses [H, W, 3] uint8 at `rate` and decodes the bytes again (as a receiver
    would); `RoundTrip.check` tells whether the decoder agreed with the encoder."""
    encoded = self.compress(image, rate)
    return RoundTrip(encoded, self.decompress(encoded.data))

  def encode_padded(self, x: jax.Array, rate: jax.Array
                    ) -> tuple[list[coding.Stage], float, jax.Array]:
    """Entropy codes an image already padded to the model's multiple.

    Args:
      x: [1, Hp, Wp, 3] float32 in model space ([0, 1] for images).
      rate: [1] float32 rate.

    Returns:
      The coded stages (decoding order), the model's estimate of their size in bits
      (-log2 likelihood of the coded symbols), and the reconstruction before the
      post-filter, [1, Hp, Wp, 3].
    """
    return self._encode(x, rate)[:3]

  def _encode(self, x, rate, reconstruct=True):
    y_slices = self._analysis(self.variables, x)[::-1]
    stages, estimated, coding_seconds = [], 0.0, 0.0

    def code(k, phase, mask, mu, sigma):
      nonlocal estimated, coding_seconds
      q = self._symbols(self.variables, k=k, y=y_slices[k], mu=mu, rate=rate)
      idx = self._indexes(sigma)
      sel = mask[0, :, :, 0]
      q_np, idx_np = np.asarray(q)[0][sel], np.asarray(idx)[0][sel]
      t = time.perf_counter()
      stages.append(coding.Stage(coding.encode(q_np, idx_np, self.tables),
                                 coding.index_crc(idx_np)))
      coding_seconds += time.perf_counter() - t
      lik = np.asarray(self._likelihood(q, sigma), np.float64)[0][sel]
      estimated += float(-np.log2(lik).sum())
      return self._dequantize(self.variables, k=k, q=q, mu=mu, rate=rate)

    shapes = schedule.slice_shapes(self.config, 1, x.shape[1], x.shape[2])
    _, x_tilde = schedule.run(self.config, self._ops(rate, last_finish=reconstruct), shapes,
                              code)
    return stages, estimated, x_tilde, coding_seconds

  # --- Decoder -------------------------------------------------------------------------

  def decompress(self, data: bytes) -> DecodeResult:
    """Decodes a `.msinn` stream made by this model; `.image` is [H, W, 3] uint8.

    Raises:
      BitstreamError: a damaged, truncated or foreign stream (another model's id).
    """
    start = time.perf_counter()
    header, stages = coding.unpack(data, expected_model_id=self.model_id)
    cfg = self.config
    ph, pw = header.padded_height, header.padded_width
    if (ph, pw) != padded_size(header.height, header.width, cfg.pad_multiple):
      raise BitstreamError(f"header sizes {header.height}x{header.width} padded to {ph}x{pw} "
                           f"do not match this model's padding to {cfg.pad_multiple}")
    if ph * pw > MAX_PIXELS:
      raise BitstreamError(f"header declares a {ph}x{pw} image, more than the codec's limit "
                           f"of {MAX_PIXELS} pixels")
    if len(stages) != len(schedule.steps(cfg)):
      raise BitstreamError(f"stream has {len(stages)} stages; this model codes "
                           f"{len(schedule.steps(cfg))}")
    rate_arr = self._check_stream_rate(header.rate)
    remaining = iter(stages)
    coding_seconds = 0.0

    def code(k, phase, mask, mu, sigma):
      nonlocal coding_seconds
      stage = next(remaining)
      sel = mask[0, :, :, 0]
      idx_np = np.asarray(self._indexes(sigma))[0][sel]
      if coding.index_crc(idx_np) != stage.index_crc:
        raise BitstreamError(
            f"slice {k} ({phase}): the decoder's probability model differs from the "
            "encoder's (index checksum mismatch): decode on the kind of device that "
            "encoded it (GPU model, or for CPUs the same vector instruction set, e.g. "
            "AVX-512 or AVX2), with the same JAX version")
      q_np = np.zeros(mu.shape, np.int32)
      t = time.perf_counter()
      q_np[0][sel] = coding.decode(stage.payload, idx_np, self.tables)
      coding_seconds += time.perf_counter() - t
      return self._dequantize(self.variables, k=k, q=jnp.asarray(q_np), mu=mu, rate=rate_arr)

    shapes = schedule.slice_shapes(cfg, 1, ph, pw)
    _, x_tilde = schedule.run(cfg, self._ops(rate_arr), shapes, code)
    image = crop(self._output(self.variables, x_tilde),
                 padding(header.height, header.width, cfg.pad_multiple))
    return DecodeResult(image, header.rate, time.perf_counter() - start, coding_seconds)

  def _check_stream_rate(self, rate: float) -> jax.Array:
    try:
      return self._check_rate(rate)
    except UserError as e:
      raise BitstreamError(f"bad rate in header: {e}") from None

