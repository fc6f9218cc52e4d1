"""Integer tables of the indexed Gaussian entropy model (host side, pure functions of config).

MSINN codes every latent `y` as the integer symbol `q = round((y - mu) * g)` (g: the rate's
gain vector; sigma is already scaled by the scale gain) under a zero-mean Gaussian
`N(0, sigma)` discretised on unit bins, exactly like CompressAI's
`GaussianConditional` (Ballé et al. 2018; Minnen et al. 2018). The continuous `sigma`
predicted by the network never reaches the entropy coder: it is first mapped to an integer
*index* into a fixed, log-spaced `scale_table`, and the coder only sees per-index integer
frequency tables. Encoder and decoder therefore agree as long as they agree on the indexes
(which the bitstream protects with a CRC, see `docs/bitstream.md`).

Per index `k` with scale `s_k = scale_table[k]` the alphabet is

    column j in [0, 2 c_k]   <->  symbol j - c_k        (the support [-c_k, c_k])
    column 2 c_k + 1         <->  ESCAPE                (|q| > c_k, value coded separately)

with `c_k = ceil(s_k * Phi^-1(1 - tail_mass / 2))` as in CompressAI `update()`. The escape
column carries the Gaussian tail mass outside [-c_k - 0.5, c_k + 0.5]; see
`range_coder.py` for how the escaped value itself is coded.

The float64 pmf is quantised to integer frequencies (each >= 1, summing to exactly
`2**precision`) by a deterministic, symmetric largest-remainder rule, so the coder works
from integers only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import struct

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

SCALES_MIN = 0.11
SCALES_MAX = 256
SCALES_LEVELS = 64

# Bumped whenever the table construction or what the fingerprint covers changes; hashed
# into the fingerprint. v2: the float32 scale table is hashed instead of the float64 one.
_TABLES_VERSION = b"msinn-indexed-gaussian-tables/v2"


def scale_table(
    scales_min: float = SCALES_MIN,
    scales_max: float = SCALES_MAX,
    levels: int = SCALES_LEVELS,
) -> np.ndarray:
  """Log-spaced scale table, as CompressAI `get_scale_table` (but in float64).

  Args:
    scales_min: smallest scale (also the lower bound applied to sigma), > 0.
    scales_max: largest scale, > scales_min.
    levels: number of entries, >= 2.

  Returns:
    [levels] float64, strictly increasing, `table[0] == scales_min`.
  """
  if not 0 < scales_min < scales_max or levels < 2:
    raise ValueError(
        f"need 0 < scales_min < scales_max and levels >= 2, "
        f"got {scales_min}, {scales_max}, {levels}")
  return np.exp(np.linspace(math.log(scales_min), math.log(scales_max), levels))


def scales_to_indexes(sigma: jax.Array, table: np.ndarray) -> jax.Array:
  """Maps predicted scales to integer table indexes (jittable).

  Equivalent to CompressAI `GaussianConditional.build_indexes` after its `LowerBound`:
  sigma is lower-bounded at `table[0]`, and the index is the number of entries of
  `table[:-1]` strictly less than sigma, i.e. the first `k` with `sigma <= table[k]`
  (or the last index). `+inf` and NaN map to the last index, as in CompressAI.

  The table is cast to float32 once, with numpy's round-to-nearest (a deterministic,
  platform-independent operation), and all comparisons are exact float32 comparisons, so
  the result depends only on the float32 value of sigma.

  Args:
    sigma: [...] floating scales (any float dtype; compared as float32).
    table: [L] float scale table (normally `scale_table()`), strictly increasing.

  Returns:
    [...] int32 indexes in [0, L - 1], same shape as sigma.
  """
  table32 = np.asarray(table, dtype=np.float32)
  sigma = jnp.maximum(jnp.asarray(sigma, jnp.float32), table32[0])
  # side="left" counts the entries strictly less than sigma; NaN sorts last.
  return jnp.searchsorted(jnp.asarray(table32[:-1]), sigma, side="left").astype(jnp.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class IndexedTables:
  """Integer frequency tables for every scale index (immutable; build with `build_tables`).

  Attributes:
    scale_table: [L] float64 scales the tables were built from.
    tail_mass: probability mass left outside the support [-c_k, c_k] (per table).
    precision: frequencies of each table sum to `2**precision`.
    support: [L] int32 `c_k`; table k codes symbols in [-c_k, c_k] directly.
    freqs: [L, 2 * max(c) + 2] uint32. Row k: columns [0, 2 c_k] are the symbols
      -c_k..c_k, column 2 c_k + 1 is the escape, further columns are 0 (unused).
  """

  scale_table: np.ndarray
  tail_mass: float
  precision: int
  support: np.ndarray
  freqs: np.ndarray

  def __post_init__(self):
    for array in (self.scale_table, self.support, self.freqs):
      array.flags.writeable = False

  @property
  def num_levels(self) -> int:
    """Number of scale indexes L."""
    return int(self.support.shape[0])

  @property
  def total(self) -> int:
    """Sum of the frequencies of every table, `2**precision`."""
    return 1 << self.precision

  def row(self, k: int) -> np.ndarray:
    """Frequencies of table k.

    Args:
      k: scale index in [0, L).

    Returns:
      [2 c_k + 2] uint32: symbols -c_k..c_k, then the escape.
    """
    return self.freqs[k, :2 * int(self.support[k]) + 2]

  def fingerprint(self) -> bytes:
    """8 bytes identifying these tables (SHA-256 over parameters and integer tables).

    It covers what coding depends on: the float32 scale table (the index thresholds
    `scales_to_indexes` compares against) and the integer tables. Not the float64 scale
    table: `np.exp` differs in the last bit between CPUs (numpy's AVX-512 and AVX2 paths
    give one of the default 64 scales 1 ulp apart), which would make the same model look
    like another one on another machine and refuse its streams.
    """
    h = hashlib.sha256(_TABLES_VERSION)
    h.update(struct.pack(">Id", self.precision, self.tail_mass))
    h.update(self.scale_table.astype(">f4").tobytes())
    h.update(self.support.astype(">i4").tobytes())
    h.update(self.freqs.astype(">u4").tobytes())
    return h.digest()[:8]


def build_tables(
    table: np.ndarray, tail_mass: float = 1e-9, precision: int = 16) -> IndexedTables:
  """Builds the integer tables of the indexed Gaussian model.

  Deterministic: the pmf is computed in float64 with `scipy.special.ndtr`, normalised
  with an exactly rounded sum (`math.fsum`) and quantised with integer arithmetic plus a
  stable sort, so the same inputs (and library versions) give the same tables, and inputs
  1 ulp apart (the same scale table from another CPU's `exp`) give the same integers;
  `IndexedTables.fingerprint` exposes any difference.

  Args:
    table: [L] float scale table, positive and strictly increasing.
    tail_mass: total probability outside the directly coded support, in (0, 1).
    precision: log2 of the frequency total, in [8, 24] (constriction codes at 24 bits).

  Returns:
    The tables.
  """
  table = np.array(table, dtype=np.float64)
  if table.ndim != 1 or table.size < 1 or not np.all(np.isfinite(table)) or np.any(table <= 0):
    raise ValueError("table must be a non-empty rank-1 array of positive finite scales")
  if np.any(np.diff(table) <= 0):
    raise ValueError("table must be strictly increasing")
  if not 0.0 < tail_mass < 1.0:
    raise ValueError(f"tail_mass must be in (0, 1), got {tail_mass}")
  if not 8 <= precision <= 24:
    raise ValueError(f"precision must be in [8, 24], got {precision}")
  multiplier = -scipy.special.ndtri(tail_mass / 2)
  support = np.ceil(table * multiplier).astype(np.int64)
  total = 1 << precision
  if 2 * int(support.max()) + 2 > total // 2:
    raise ValueError(
        f"precision {precision} is too small for a support of {2 * support.max() + 1} symbols")
  freqs = np.zeros((table.size, 2 * int(support.max()) + 2), dtype=np.uint32)
  for k, (scale, c) in enumerate(zip(table, support)):
    freqs[k, :2 * c + 2] = _quantised_row(float(scale), int(c), total)
  return IndexedTables(
      scale_table=table,
      tail_mass=float(tail_mass),
      precision=int(precision),
      support=support.astype(np.int32),
      freqs=freqs,
  )


def _quantised_row(scale: float, c: int, total: int) -> np.ndarray:
  """Integer frequencies of one table: symbols -c..c then escape, each >= 1, sum `total`.

  The half table `h = [p(0), p(1), ..., p(c), p(escape)]` has multiplicities
  `m = [1, 2, ..., 2, 1]` (p(s) = p(-s)). Every column first gets 1; the remaining
  `total - (2c + 2)` units are shared by floor(p * units) and then a largest-remainder pass
  over `h` (ties broken by position), skipping a pair when only one unit is left; a single
  unit no column can take goes to the centre. This keeps the table exactly symmetric.
  """
  s = np.arange(c + 1, dtype=np.float64)
  # Upper-tail differences are accurate far from the mean.
  half = scipy.special.ndtr(-(s - 0.5) / scale) - scipy.special.ndtr(-(s + 0.5) / scale)
  half[0] = 1.0 - 2.0 * scipy.special.ndtr(-0.5 / scale)
  escape = 2.0 * scipy.special.ndtr(-(c + 0.5) / scale)
  p = np.concatenate([half, [escape]])
  mult = np.ones(c + 2, dtype=np.int64)
  mult[1:c + 1] = 2
  p = p / math.fsum(mult * p)

  units = total - (2 * c + 2)
  target = p * units
  extra = np.floor(target).astype(np.int64)
  remaining = units - int(np.dot(mult, extra))
  if remaining < 0:  # Only possible through float rounding of the normalisation.
    extra[0] += remaining
    remaining = 0
  order = np.lexsort((np.arange(c + 2), -(target - extra)))  # frac desc, then position
  cost = np.cumsum(mult[order])
  take = order[cost <= remaining]
  extra[take] += 1
  remaining -= int(mult[take].sum())
  if remaining > 0:
    rest = order[take.size:]
    singles = rest[mult[rest] == 1]
    extra[singles[0] if remaining == 1 and singles.size else 0] += remaining
  half_freq = extra + 1
  row = np.concatenate([half_freq[c:0:-1], half_freq[:c + 1], half_freq[c + 1:]])
  assert row.sum() == total and row.min() >= 1, (scale, c)
  return row.astype(np.uint32)
