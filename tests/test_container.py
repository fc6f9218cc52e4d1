"""Tests for msinn_jax.coding.container: the .msinn format, its checks and its messages."""

import struct
import zlib

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from msinn_jax.coding import container
from msinn_jax.coding import range_coder
from msinn_jax.coding import tables as tables_lib
from msinn_jax.errors import BitstreamError

MODEL_ID = bytes.fromhex("0123456789abcdef")


@pytest.fixture(scope="module")
def tables():
  return tables_lib.build_tables(tables_lib.scale_table())


@pytest.fixture(scope="module")
def coded(tables):
  """A small valid stream with 3 real stages: (bytes, header, stages, index arrays)."""
  rng = np.random.default_rng(0)
  index_arrays = [rng.integers(0, tables.num_levels, shape).astype(np.int32)
                  for shape in [(4, 6, 8), (8, 8), (1,)]]
  stages = []
  for indexes in index_arrays:
    symbols = np.round(rng.normal(0, tables.scale_table[indexes])).astype(np.int32)
    stages.append(container.Stage(payload=range_coder.encode(symbols, indexes, tables),
                                  index_crc=container.index_crc(indexes)))
  header = container.Header(model_id=MODEL_ID, rate=2.5, height=30, width=40,
                            padded_height=64, padded_width=64, num_stages=len(stages))
  return container.pack(header, stages), header, stages, index_arrays


def with_trailer(body: bytes) -> bytes:
  return body + struct.pack(">I", zlib.crc32(body))


def patched(data: bytes, offset: int, fmt: str, value) -> bytes:
  """Overwrites one header field and fixes the trailing CRC (so only that field is wrong)."""
  body = bytearray(data[:-4])
  struct.pack_into(fmt, body, offset, value)
  return with_trailer(bytes(body))


def test_round_trip(coded):
  data, header, stages, _ = coded
  got_header, got_stages = container.unpack(data, expected_model_id=MODEL_ID)
  assert got_header == header and got_stages == stages
  assert got_header.version == container.FORMAT_VERSION


def test_sizes():
  header = container.Header(model_id=MODEL_ID, rate=1.0, height=1, width=1,
                            padded_height=64, padded_width=64, num_stages=10)
  stages = [container.Stage(payload=b"", index_crc=0)] * 10
  assert container.HEADER_BYTES == 34
  assert len(container.pack(header, stages)) == 34 + 10 * 12 + 4  # 158 bytes of overhead.


def test_rate_is_stored_as_float32():
  header = container.Header(model_id=MODEL_ID, rate=0.1, height=8, width=8,
                            padded_height=8, padded_width=8, num_stages=0)
  assert header.rate == float(np.float32(0.1))
  assert container.unpack(container.pack(header, []))[0] == header


def test_layout_is_big_endian(coded):
  data, header, stages, _ = coded
  assert data[:4] == b"MSNN" and data[4] == 1 and data[5:13] == MODEL_ID
  assert struct.unpack(">fIIIIB", data[13:34]) == (2.5, 30, 40, 64, 64, 3)
  length, crc, payload_crc = struct.unpack(">III", data[34:46])
  assert (length, crc, payload_crc) == (
      len(stages[0].payload), stages[0].index_crc, zlib.crc32(stages[0].payload))
  assert struct.unpack(">I", data[-4:])[0] == zlib.crc32(data[:-4])


def test_index_crc_is_dtype_independent():
  indexes = np.arange(24).reshape(2, 3, 4)
  assert container.index_crc(indexes) == container.index_crc(indexes.astype(np.int32))
  assert container.index_crc(indexes) == zlib.crc32(indexes.astype("<i4").tobytes())
  assert container.index_crc(indexes) != container.index_crc(indexes[..., ::-1])


def test_decoder_side_index_check(coded, tables):
  _, _, stages, index_arrays = coded
  for stage, indexes in zip(stages, index_arrays):
    assert container.index_crc(indexes) == stage.index_crc
  desynced = index_arrays[0].copy()
  desynced[0, 0, 0] = (desynced[0, 0, 0] + 1) % tables.num_levels
  assert container.index_crc(desynced) != stages[0].index_crc


@pytest.mark.parametrize("data", [b"", b"MS", b"PNG\x89....", b"MSNX" + bytes(40)])
def test_wrong_magic(data):
  with pytest.raises(BitstreamError, match="not an .msinn file"):
    container.unpack(data)


def test_wrong_version(coded):
  data = coded[0]
  with pytest.raises(BitstreamError,
                     match="made by format version 2, this reader reads version 1"):
    container.unpack(data[:4] + b"\x02" + data[5:])
  with pytest.raises(BitstreamError, match="made by format version 7"):
    container.unpack(b"MSNN\x07")  # The version is reported even for a stub.


def test_wrong_model_id(coded):
  with pytest.raises(BitstreamError, match="made by another model"):
    container.unpack(coded[0], expected_model_id=b"\xff" * 8)


@pytest.mark.parametrize("offset, fmt, value, match", [
    (17, ">I", 65537, "height 65537 is outside"),
    (21, ">I", 0, "width 0 is outside"),
    (25, ">I", 20, "padded height 20 is outside"),
    (29, ">I", 2**32 - 1, "padded width 4294967295 is outside"),
    (33, ">B", 200, "200 stages is more than"),
    (13, ">f", float("nan"), "rate nan is not a finite"),
    (34, ">I", 2**32 - 1, "truncated .msinn file: its stage table needs"),
])
def test_absurd_fields(coded, offset, fmt, value, match):
  with pytest.raises(BitstreamError, match=match):
    container.unpack(patched(coded[0], offset, fmt, value))


def test_stage_count_beyond_data(coded):
  data = patched(coded[0], 33, ">B", 60)
  with pytest.raises(BitstreamError, match="cannot hold 60 stage entries"):
    container.unpack(data[:200])


def test_trailing_crc_mismatch(coded):
  data = bytearray(coded[0])
  data[-10] ^= 0x40
  with pytest.raises(BitstreamError, match="checksum mismatch"):
    container.unpack(bytes(data))


def test_stage_payload_crc_mismatch(coded):
  data = coded[0]
  payload_start = container.HEADER_BYTES + 3 * 12
  body = bytearray(data[:-4])
  body[payload_start] ^= 1  # Corrupt stage 0's payload, then fix only the trailing CRC.
  with pytest.raises(BitstreamError, match="payload of stage 0 fails its checksum"):
    container.unpack(with_trailer(bytes(body)))


def test_extra_bytes(coded):
  with pytest.raises(BitstreamError, match="corrupt .msinn file: its stage table needs"):
    container.unpack(coded[0] + b"\0")


def test_every_truncation_is_an_error(coded):
  data = coded[0]
  for cut in range(len(data)):
    with pytest.raises(BitstreamError):
      container.unpack(data[:cut])


def test_pack_and_header_validate_caller_input():
  with pytest.raises(ValueError, match="model_id"):
    container.Header(model_id=b"short", rate=0, height=1, width=1,
                     padded_height=1, padded_width=1, num_stages=0)
  with pytest.raises(ValueError, match="padded height"):
    container.Header(model_id=MODEL_ID, rate=0, height=10, width=1,
                     padded_height=5, padded_width=1, num_stages=0)
  header = container.Header(model_id=MODEL_ID, rate=0, height=1, width=1,
                            padded_height=1, padded_width=1, num_stages=2)
  with pytest.raises(ValueError, match="declares 2 stages"):
    container.pack(header, [container.Stage(payload=b"", index_crc=0)])
  with pytest.raises(ValueError, match="uint32"):
    container.Stage(payload=b"", index_crc=-1)


def check_mutated(data: bytes, index_arrays, tables):
  """unpack (and decode of what it returns) must succeed or raise BitstreamError."""
  try:
    header, stages = container.unpack(data, expected_model_id=MODEL_ID)
  except BitstreamError as e:
    assert "\n" not in str(e)
    return
  for stage, indexes in zip(stages, index_arrays):
    try:
      range_coder.decode(stage.payload, indexes, tables)
    except BitstreamError:
      pass


mutation = st.tuples(
    st.sampled_from(["flip", "replace", "truncate", "insert", "delete"]),
    st.integers(0, 2**16), st.integers(0, 255))


@hypothesis.settings(max_examples=300, deadline=1000)
@hypothesis.given(st.lists(mutation, min_size=1, max_size=4))
def test_mutated_streams_unpack_or_raise(coded, tables, mutations):
  data = bytearray(coded[0])
  for kind, position, value in mutations:
    position %= max(len(data), 1)
    if kind == "flip" and data:
      data[position] ^= 1 << (value % 8)
    elif kind == "replace" and data:
      data[position] = value
    elif kind == "truncate":
      del data[position:]
    elif kind == "insert":
      data[position:position] = bytes([value])
    elif data:
      del data[position]
  check_mutated(bytes(data), coded[3], tables)


@hypothesis.settings(max_examples=300, deadline=1000)
@hypothesis.given(st.integers(0, 2**16), st.integers(0, 7))
def test_bit_flips_with_fixed_trailer_unpack_or_raise(coded, tables, position, bit):
  # Re-sealing the trailer after the flip exercises the checks behind the trailing CRC.
  body = bytearray(coded[0][:-4])
  body[position % len(body)] ^= 1 << bit
  check_mutated(with_trailer(bytes(body)), coded[3], tables)


@hypothesis.settings(max_examples=200, deadline=1000)
@hypothesis.given(st.binary(max_size=512))
def test_random_bytes_after_magic_unpack_or_raise(tables, tail):
  check_mutated(b"MSNN\x01" + tail, [], tables)
  check_mutated(with_trailer(b"MSNN\x01" + tail), [], tables)
