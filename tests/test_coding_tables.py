"""Tests for msinn_jax.coding.tables: scale table, scale->index map, integer tables."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from msinn_jax.coding import tables as tables_lib


@pytest.fixture(scope="module")
def table():
  return tables_lib.scale_table()


@pytest.fixture(scope="module")
def tables(table):
  return tables_lib.build_tables(table)


def compressai_build_indexes(sigma: np.ndarray, table: np.ndarray) -> np.ndarray:
  """The CompressAI loop definition, in float32 like the model."""
  table32 = np.asarray(table, np.float32)
  sigma = np.maximum(np.asarray(sigma, np.float32), table32[0])
  indexes = np.full(sigma.shape, table32.size - 1, dtype=np.int32)
  for s in table32[:-1]:
    indexes -= (sigma <= s).astype(np.int32)
  return indexes


def test_scale_table_matches_definition(table):
  assert table.dtype == np.float64 and table.shape == (tables_lib.SCALES_LEVELS,)
  np.testing.assert_allclose(table[[0, -1]], [tables_lib.SCALES_MIN, tables_lib.SCALES_MAX],
                             rtol=1e-12)  # exp(log(x)) round trip in float64.
  np.testing.assert_allclose(np.diff(np.log(table)), math.log(256 / 0.11) / 63, rtol=1e-9)


def test_scale_table_rejects_bad_arguments():
  with pytest.raises(ValueError):
    tables_lib.scale_table(0.0, 1.0, 10)
  with pytest.raises(ValueError):
    tables_lib.scale_table(1.0, 2.0, 1)


def test_indexes_match_compressai_on_random_values(table):
  rng = np.random.default_rng(0)
  sigma = np.exp(rng.uniform(np.log(1e-3), np.log(1e4), size=(4, 1000))).astype(np.float32)
  got = np.asarray(jax.jit(lambda s: tables_lib.scales_to_indexes(s, table))(sigma))
  assert got.dtype == np.int32 and got.shape == sigma.shape
  np.testing.assert_array_equal(got, compressai_build_indexes(sigma, table))


def test_indexes_match_compressai_on_boundaries(table):
  t32 = np.asarray(table, np.float32)
  boundary = np.concatenate([
      t32, np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(0)),
      np.array([0, -1, 1e-30, 0.05, 1e30, np.inf, -np.inf], np.float32)])
  got = np.asarray(tables_lib.scales_to_indexes(jnp.asarray(boundary), table))
  np.testing.assert_array_equal(got, compressai_build_indexes(boundary, table))
  # sigma == table[k] maps to k exactly (the table is cast to float32 once).
  np.testing.assert_array_equal(got[:t32.size], np.arange(t32.size))


def test_nan_maps_to_last_index_like_compressai(table):
  got = tables_lib.scales_to_indexes(jnp.array([np.nan], jnp.float32), table)
  reference = compressai_build_indexes(np.array([np.nan]), table)
  assert int(got[0]) == table.size - 1 == int(reference[0])


def test_indexes_are_monotone(table):
  sigma = np.sort(np.exp(np.random.default_rng(1).uniform(-5, 7, 5000))).astype(np.float32)
  got = np.asarray(tables_lib.scales_to_indexes(sigma, table))
  assert np.all(np.diff(got) >= 0)
  assert got[0] == 0 and got[-1] == table.size - 1


def test_indexes_accept_bfloat16(table):
  sigma = jnp.array([0.5, 3.0, 100.0], jnp.bfloat16)
  got = tables_lib.scales_to_indexes(sigma, table)
  np.testing.assert_array_equal(got, compressai_build_indexes(np.asarray(sigma, np.float32), table))


@pytest.mark.parametrize("precision", [13, 16, 20])
def test_frequencies_are_a_valid_symmetric_table(table, precision):
  tables = tables_lib.build_tables(table, precision=precision)
  assert tables.freqs.dtype == np.uint32 and tables.support.dtype == np.int32
  for k in range(tables.num_levels):
    row = tables.row(k).astype(np.int64)
    c = int(tables.support[k])
    assert row.size == 2 * c + 2
    assert row.sum() == 1 << precision and row.min() >= 1
    np.testing.assert_array_equal(row[:2 * c + 1], row[2 * c::-1])  # p(s) == p(-s)
    assert np.all(tables.freqs[k, 2 * c + 2:] == 0)


def test_support_follows_compressai_update(table, tables):
  multiplier = -scipy.special.ndtri(1e-9 / 2)
  np.testing.assert_array_equal(tables.support, np.ceil(table * multiplier).astype(np.int32))
  assert tables.support[0] == 1 and tables.support[-1] == 1565


def test_frequencies_approximate_the_gaussian(tables):
  for k in (0, 20, 40, 63):
    c, scale = int(tables.support[k]), tables.scale_table[k]
    s = np.arange(-c, c + 1)
    pmf = scipy.special.ndtr((s + 0.5) / scale) - scipy.special.ndtr((s - 0.5) / scale)
    approx = tables.row(k)[:-1] / tables.total
    # Each bin gets 1 + its share of total - n units (n = 2c + 2 columns), rounded: off by at
    # most 2 units plus pmf * n.
    bound = (2 + pmf * (2 * c + 2)) / tables.total
    assert np.all(np.abs(approx - pmf) <= bound)


def test_tables_are_deterministic_and_fingerprinted(table, tables):
  again = tables_lib.build_tables(table.copy())
  assert len(tables.fingerprint()) == 8
  assert again.fingerprint() == tables.fingerprint()
  np.testing.assert_array_equal(again.freqs, tables.freqs)
  others = [
      tables_lib.build_tables(table, precision=15),
      tables_lib.build_tables(table, tail_mass=1e-6),
      tables_lib.build_tables(tables_lib.scale_table(levels=63)),
      tables_lib.build_tables(table * (1 + 1e-6)),  # Moves the float32 thresholds.
  ]
  prints = {t.fingerprint() for t in others} | {tables.fingerprint()}
  assert len(prints) == len(others) + 1


def test_fingerprint_golden(tables):
  # Changes only if the table construction (or scipy's ndtr) changes: then streams break.
  assert tables.fingerprint().hex() == "45be258b071c43c7"


@pytest.mark.parametrize("ulps", [1, 4])
def test_scales_a_few_ulps_apart_give_the_same_tables(table, tables, ulps):
  # Another CPU's `np.exp` can put a scale 1 ulp away (AVX-512 and AVX2 builds of numpy
  # do, for one of the 64 defaults); the model would then look like another model there
  # and refuse this machine's streams. Every scale moved up, down, or alternately, by
  # `ulps` float64 steps must leave the integer tables and the fingerprint unchanged.
  def nudged(direction):
    out = table.copy()
    for _ in range(ulps):
      out = np.nextafter(out, np.where(direction > 0, np.inf, 0.0))
    return out

  alternate = np.where(np.arange(table.size) % 2 == 0, 1, -1)
  for direction in (np.ones(table.size), -np.ones(table.size), alternate):
    other = tables_lib.build_tables(nudged(direction))
    assert not np.array_equal(other.scale_table, table)
    np.testing.assert_array_equal(other.freqs, tables.freqs)
    assert other.fingerprint() == tables.fingerprint()


def test_tables_are_immutable(tables):
  with pytest.raises(ValueError):
    tables.freqs[0, 0] = 5
  with pytest.raises(AttributeError):
    tables.precision = 12


@pytest.mark.parametrize("kwargs", [
    dict(table=[1.0, 0.5]), dict(table=[-1.0, 2.0]), dict(table=[]),
    dict(table=[1.0, 2.0], tail_mass=0.0), dict(table=[1.0, 2.0], precision=30),
    dict(table=[1.0, 200.0], precision=8),
])
def test_build_tables_rejects_bad_arguments(kwargs):
  with pytest.raises(ValueError):
    tables_lib.build_tables(**kwargs)
