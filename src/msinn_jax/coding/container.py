"""The `.msinn` file format: a checked header, a stage table, the stage payloads, a CRC.

Layout (big-endian, byte by byte in `docs/bitstream.md`):

    fixed header  34 bytes   magic "MSNN", version, model id, rate, sizes, number of stages
    stage table   12 bytes   per stage: payload length, CRC32 of its indexes, CRC32 of payload
    payloads      sum of the stage payload lengths, in stage order
    trailer        4 bytes   CRC32 of everything above

`unpack` checks the structure (magic, version, sizes, lengths adding up to the file size)
before it copies any payload, then the trailing CRC, then the model id, then each payload's
CRC, and reports every problem as a one-line `BitstreamError`.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np

from msinn_jax.errors import BitstreamError

MAGIC = b"MSNN"
FORMAT_VERSION = 1
MAX_DIM = 65536  # Largest height/width (original or padded) a stream may declare.
MAX_STAGES = 64  # Largest number of stages a stream may declare.
MODEL_ID_BYTES = 8

# magic, version, model id, rate, height, width, padded height, padded width, stages.
_HEADER = struct.Struct(">4sB8sfIIIIB")
# payload length, CRC32 of the stage's int32 indexes, CRC32 of the payload.
_STAGE = struct.Struct(">III")
_TRAILER = struct.Struct(">I")
HEADER_BYTES = _HEADER.size


@dataclasses.dataclass(frozen=True)
class Header:
  """Everything a decoder needs besides the payloads.

  Attributes:
    model_id: 8 bytes identifying model config, weights and entropy tables (caller's hash).
    rate: rate parameter: an integer anchor index or a continuous value (stored float32).
    height: original image height in pixels, in [1, MAX_DIM].
    width: original image width in pixels, in [1, MAX_DIM].
    padded_height: height the image was padded to before analysis, in [height, MAX_DIM].
    padded_width: width the image was padded to before analysis, in [width, MAX_DIM].
    num_stages: number of coded stages, in [0, MAX_STAGES].
    version: format version; always `FORMAT_VERSION` for headers this module writes.
  """

  model_id: bytes
  rate: float
  height: int
  width: int
  padded_height: int
  padded_width: int
  num_stages: int
  version: int = FORMAT_VERSION

  def __post_init__(self):
    problem = _header_problem(**dataclasses.asdict(self))
    if problem:
      raise ValueError(problem)
    # Store what a reader will see: the rate rounded to float32.
    object.__setattr__(self, "rate", float(np.float32(self.rate)))


@dataclasses.dataclass(frozen=True)
class Stage:
  """One entropy-coded stage.

  Attributes:
    payload: the range-coder payload (see `range_coder.encode`).
    index_crc: CRC32 of the stage's int32 index array (`index_crc`), a uint32.
  """

  payload: bytes
  index_crc: int

  def __post_init__(self):
    if not isinstance(self.payload, bytes):
      raise ValueError(f"payload must be bytes, got {type(self.payload).__name__}")
    if len(self.payload) >= 1 << 32:
      raise ValueError("payload longer than 2**32 - 1 bytes")
    if not 0 <= self.index_crc < 1 << 32:
      raise ValueError(f"index_crc must be a uint32, got {self.index_crc}")


def index_crc(indexes: np.ndarray) -> int:
  """CRC32 of an index array, as stored per stage.

  Args:
    indexes: [...] integer scale indexes (values must fit int32).

  Returns:
    zlib CRC32 (uint32) of the indexes as little-endian int32 in C order. The shape is not
    included; both sides know it.
  """
  return zlib.crc32(np.ascontiguousarray(indexes, dtype="<i4").tobytes())


def pack(header: Header, stages: Sequence[Stage]) -> bytes:
  """Serialises a header and its stages.

  Args:
    header: the header; `header.num_stages` must equal `len(stages)`.
    stages: the stages, in decoding order.

  Returns:
    The `.msinn` bytes.
  """
  if header.version != FORMAT_VERSION:
    raise ValueError(f"this writer writes format version {FORMAT_VERSION}, not {header.version}")
  if header.num_stages != len(stages):
    raise ValueError(f"header declares {header.num_stages} stages but {len(stages)} were given")
  parts = [_HEADER.pack(
      MAGIC, header.version, header.model_id, header.rate, header.height, header.width,
      header.padded_height, header.padded_width, header.num_stages)]
  parts += [_STAGE.pack(len(s.payload), s.index_crc, zlib.crc32(s.payload)) for s in stages]
  parts += [s.payload for s in stages]
  body = b"".join(parts)
  return body + _TRAILER.pack(zlib.crc32(body))


def unpack(data: bytes, *, expected_model_id: bytes | None = None) -> tuple[Header, list[Stage]]:
  """Parses and validates `.msinn` bytes.

  Args:
    data: the file contents.
    expected_model_id: if given, the 8-byte id of the model that is about to decode; a stream
      made by another model is rejected.

  Returns:
    (header, stages).

  Raises:
    BitstreamError: with a one-line message if the data is not a valid stream of this format
      version (and model).
  """
  view = memoryview(data).cast("B")
  if len(view) < len(MAGIC) or bytes(view[:len(MAGIC)]) != MAGIC:
    raise BitstreamError(f"not an .msinn file (it does not start with {MAGIC!r})")
  if len(view) <= len(MAGIC):
    raise BitstreamError("truncated .msinn file: it ends inside the header")
  if view[len(MAGIC)] != FORMAT_VERSION:
    raise BitstreamError(
        f".msinn file made by format version {view[len(MAGIC)]}, "
        f"this reader reads version {FORMAT_VERSION}")
  if len(view) < HEADER_BYTES + _TRAILER.size:
    raise BitstreamError("truncated .msinn file: it ends inside the header")
  (_, version, model_id, rate, height, width, padded_height, padded_width,
   num_stages) = _HEADER.unpack_from(view)
  fields = dict(model_id=model_id, rate=rate, height=height, width=width,
                padded_height=padded_height, padded_width=padded_width,
                num_stages=num_stages, version=version)
  problem = _header_problem(**fields)
  if problem:
    raise BitstreamError(f"corrupt .msinn header: {problem}")
  header = Header(**fields)

  table_end = HEADER_BYTES + num_stages * _STAGE.size
  if len(view) < table_end + _TRAILER.size:
    raise BitstreamError(
        f"truncated .msinn file: {len(view)} bytes cannot hold {num_stages} stage entries")
  entries = [_STAGE.unpack_from(view, HEADER_BYTES + i * _STAGE.size) for i in range(num_stages)]
  payload_bytes = sum(length for length, _, _ in entries)
  expected_size = table_end + payload_bytes + _TRAILER.size
  if len(view) != expected_size:
    kind = "truncated" if len(view) < expected_size else "corrupt"
    raise BitstreamError(
        f"{kind} .msinn file: its stage table needs {expected_size} bytes, "
        f"the file has {len(view)}")
  (stored_crc,) = _TRAILER.unpack_from(view, len(view) - _TRAILER.size)
  if zlib.crc32(view[:len(view) - _TRAILER.size]) != stored_crc:
    raise BitstreamError("corrupt .msinn file: checksum mismatch")
  if expected_model_id is not None and model_id != bytes(expected_model_id):
    raise BitstreamError(
        f".msinn file made by another model (model id {model_id.hex()}, "
        f"this model is {bytes(expected_model_id).hex()}); decode it with the model that made it")

  stages, offset = [], table_end
  for i, (length, stage_index_crc, payload_crc) in enumerate(entries):
    payload = bytes(view[offset:offset + length])
    offset += length
    if zlib.crc32(payload) != payload_crc:
      raise BitstreamError(f"corrupt .msinn file: payload of stage {i} fails its checksum")
    stages.append(Stage(payload=payload, index_crc=stage_index_crc))
  return header, stages


def _header_problem(
    model_id: bytes, rate: float, height: int, width: int, padded_height: int,
    padded_width: int, num_stages: int, version: int) -> str | None:
  """Returns a one-line description of what is wrong with header fields, or None."""
  if not isinstance(model_id, bytes) or len(model_id) != MODEL_ID_BYTES:
    return f"model_id must be {MODEL_ID_BYTES} bytes"
  if not 0 <= version < 256:
    return f"version {version} does not fit a byte"
  if not math.isfinite(rate) or abs(rate) > np.finfo(np.float32).max:
    return f"rate {rate} is not a finite float32"
  for name, size, padded in (("height", height, padded_height), ("width", width, padded_width)):
    if not 1 <= size <= MAX_DIM:
      return f"{name} {size} is outside [1, {MAX_DIM}]"
    if not size <= padded <= MAX_DIM:
      return f"padded {name} {padded} is outside [{name}, {MAX_DIM}]"
  if not 0 <= num_stages <= MAX_STAGES:
    return f"{num_stages} stages is more than the {MAX_STAGES} allowed"
  return None
