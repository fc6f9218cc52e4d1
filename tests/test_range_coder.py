"""Tests for msinn_jax.coding.range_coder: round trips, escapes, rate, goldens, corruption."""

import hashlib

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import scipy.special

from msinn_jax.coding import range_coder
from msinn_jax.coding import tables as tables_lib
from msinn_jax.errors import BitstreamError

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@pytest.fixture(scope="module")
def tables():
  return tables_lib.build_tables(tables_lib.scale_table())


def sample(rng, indexes, tables, laplace=False, gain=1.0):
  scale = tables.scale_table[indexes] * gain
  noise = rng.laplace(0, scale / np.sqrt(2)) if laplace else rng.normal(0, scale)
  return np.round(noise).astype(np.int32)


def index_patterns(rng, shape, levels):
  size = int(np.prod(shape))
  return {
      "random": rng.integers(0, levels, shape),
      "constant_low": np.zeros(shape, int),
      "constant_high": np.full(shape, levels - 1),
      "sorted": np.sort(rng.integers(0, levels, size)).reshape(shape),
      "reversed": np.sort(rng.integers(0, levels, size))[::-1].reshape(shape),
      "blocks": (np.arange(size) // 97 % levels).reshape(shape),
  }


def assert_round_trip(symbols, indexes, tables):
  data = range_coder.encode(symbols, indexes, tables)
  decoded = range_coder.decode(data, indexes, tables)
  assert decoded.dtype == np.int32 and decoded.shape == np.shape(indexes)
  np.testing.assert_array_equal(decoded, symbols)
  return data


@pytest.mark.parametrize("laplace", [False, True])
@pytest.mark.parametrize("shape", [(1,), (7, 13), (2, 16, 8, 3)])
def test_round_trip_many_index_patterns(tables, laplace, shape):
  rng = np.random.default_rng(len(shape) + 10 * laplace)
  for indexes in index_patterns(rng, shape, tables.num_levels).values():
    for gain in (1.0, 3.0):  # gain 3 pushes many symbols into the escape.
      symbols = sample(rng, indexes, tables, laplace, gain)
      assert_round_trip(symbols, indexes.astype(np.int32), tables)


def test_round_trip_huge_outliers(tables):
  rng = np.random.default_rng(0)
  indexes = rng.integers(0, tables.num_levels, 5000).astype(np.int32)
  symbols = sample(rng, indexes, tables)
  outliers = rng.integers(-(2**20), 2**20 + 1, 300)
  positions = rng.choice(symbols.size, outliers.size, replace=False)
  symbols[positions] = outliers
  extremes = [INT32_MIN, INT32_MAX, INT32_MIN + 1, INT32_MAX - 1, 2**16, -(2**16), 2**17 + 1]
  symbols[:len(extremes)] = extremes
  assert_round_trip(symbols, indexes, tables)


def test_round_trip_support_edges_of_every_table(tables):
  c = tables.support.astype(np.int64)
  k = np.arange(tables.num_levels)
  zero = np.zeros_like(c)
  offsets = np.stack([-c - 2, -c - 1, -c, zero - 1, zero, zero + 1, c, c + 1, c + 2])  # [9, L]
  symbols = offsets.astype(np.int32)
  indexes = np.broadcast_to(k, offsets.shape).astype(np.int32)
  assert_round_trip(symbols, indexes, tables)


@pytest.mark.parametrize("value", [INT32_MIN, INT32_MAX])
def test_int32_extremes_under_every_index(tables, value):
  indexes = np.arange(tables.num_levels, dtype=np.int32)
  assert_round_trip(np.full(indexes.shape, value, np.int32), indexes, tables)


def test_wider_integer_dtypes_in_int32_range_are_accepted(tables):
  symbols = np.array([INT32_MIN, -5, 0, 7, INT32_MAX], np.int64)
  indexes = np.array([0, 5, 10, 40, 63], np.uint8)
  data = range_coder.encode(symbols, indexes, tables)
  np.testing.assert_array_equal(range_coder.decode(data, indexes, tables), symbols)


def test_empty_input(tables):
  empty = np.zeros((0, 4), np.int32)
  assert range_coder.encode(empty, empty, tables) == b""
  assert range_coder.decode(b"", empty, tables).shape == (0, 4)


@pytest.mark.parametrize("symbols, indexes, match", [
    (np.array([2**31]), np.array([0]), "int32 range"),
    (np.array([-(2**31) - 1]), np.array([0]), "int32 range"),
    (np.array([1.0]), np.array([0]), "integers"),
    (np.array([1, 2]), np.array([0]), "shape"),
    (np.array([1]), np.array([64]), r"\[0, 64\)"),
    (np.array([1]), np.array([-1]), r"\[0, 64\)"),
    (np.array([1]), np.array([0.0]), "integers"),
])
def test_encode_rejects_invalid_input(tables, symbols, indexes, match):
  with pytest.raises(ValueError, match=match):
    range_coder.encode(symbols, indexes, tables)


def test_rate_matches_estimate_and_ideal(tables):
  rng = np.random.default_rng(1)
  indexes = rng.integers(0, tables.num_levels, 200_000).astype(np.int32)
  symbols = sample(rng, indexes, tables)
  actual = 8 * len(range_coder.encode(symbols, indexes, tables))
  estimate = range_coder.estimate_bits(symbols, indexes, tables)
  # Range-coder overhead: constriction's 24-bit requantisation plus a final word or two.
  assert estimate <= actual <= 1.01 * estimate + 64
  scale = tables.scale_table[indexes]
  magnitude = np.abs(symbols)
  pmf = (scipy.special.ndtr(-(magnitude - 0.5) / scale)
         - scipy.special.ndtr(-(magnitude + 0.5) / scale))
  pmf = np.where(magnitude == 0, 1 - 2 * scipy.special.ndtr(-0.5 / scale), pmf)
  ideal = -np.log2(pmf).sum()
  # 16-bit integer tables cost ~0.1 % over the continuous model here.
  assert ideal <= actual <= 1.01 * ideal


def test_estimate_counts_escape_bits(tables):
  indexes = np.zeros(2, np.int32)
  base = range_coder.estimate_bits(np.zeros(2, np.int32), indexes, tables)
  # q = 2 under c_0 = 1: m = 0, v = 0, u = 1 -> n = 0: escape column + log2(33) bits.
  # q = 2**20: u = 2 (2**20 - 2) + 1 -> n = 20: 20 more bits.
  escape = tables.precision - np.log2(tables.freqs[0, 3])
  centre = tables.precision - np.log2(tables.freqs[0, 1])
  got = range_coder.estimate_bits(np.array([2, 2**20], np.int32), indexes, tables)
  np.testing.assert_allclose(got - base, 2 * (escape - centre) + 2 * np.log2(33) + 20)


def golden_inputs(tables):
  """Symbols and indexes from integer arithmetic only (no RNG whose stream could change)."""
  i = np.arange(4096, dtype=np.int64)
  h = (i * 2654435761 + 12345) % 2**32
  indexes = (h % tables.num_levels).astype(np.int32)
  c = tables.support[indexes].astype(np.int64)
  symbols = ((h >> 8) % (2 * c + 1) - c) // 3
  symbols[::509] = [INT32_MIN, INT32_MAX, 2**20, -(2**20), 1000, -1000, 77, -77, 5]
  return symbols.astype(np.int32), indexes


def test_golden_bytes(tables):
  # Fixed symbols + indexes + default tables -> fixed bytes. If this changes, the coder,
  # constriction's model quantisation or the tables changed, and old streams will not decode.
  symbols, indexes = golden_inputs(tables)
  data = assert_round_trip(symbols, indexes, tables)
  assert hashlib.sha256(data).hexdigest() == (
      "3195e278b63e39d3a3bc564b076234d89ff1f604da827e7ad541143789655e63")


@pytest.fixture(scope="module")
def medium_stream(tables):
  rng = np.random.default_rng(2)
  indexes = rng.integers(0, tables.num_levels, 600).astype(np.int32)
  symbols = sample(rng, indexes, tables, gain=1.5)
  return range_coder.encode(symbols, indexes, tables), symbols, indexes


def test_every_truncation_is_an_error(tables, medium_stream):
  data, _, indexes = medium_stream
  for cut in range(len(data)):
    with pytest.raises(BitstreamError):
      range_coder.decode(data[:cut], indexes, tables)


def test_trailing_data_is_an_error(tables, medium_stream):
  data, _, indexes = medium_stream
  with pytest.raises(BitstreamError):
    range_coder.decode(data + b"\0\0\0\0", indexes, tables)


@hypothesis.settings(max_examples=150, deadline=1000)
@hypothesis.given(st.data())
def test_mutated_payload_decodes_or_raises_bitstream_error(tables, medium_stream, data):
  payload, symbols, indexes = medium_stream
  mutated = bytearray(payload)
  for _ in range(data.draw(st.integers(1, 4), label="mutations")):
    kind = data.draw(st.sampled_from(["flip", "replace", "truncate", "insert"]), label="kind")
    position = data.draw(st.integers(0, max(len(mutated) - 1, 0)), label="position")
    if kind == "flip" and mutated:
      mutated[position] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "replace" and mutated:
      mutated[position] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
      del mutated[position:]
    else:
      mutated[position:position] = data.draw(st.binary(min_size=1, max_size=8))
  try:
    decoded = range_coder.decode(bytes(mutated), indexes, tables)
  except BitstreamError:
    return
  # Only an exact, canonical encoding decodes.
  assert range_coder.encode(decoded, indexes, tables) == bytes(mutated)


@hypothesis.settings(max_examples=100, deadline=1000)
@hypothesis.given(st.binary(max_size=256), st.integers(0, 300), st.integers(0, 63))
def test_random_bytes_decode_or_raise(tables, payload, size, level):
  indexes = np.full(size, level, np.int32)
  try:
    range_coder.decode(payload, indexes, tables)
  except BitstreamError:
    pass
