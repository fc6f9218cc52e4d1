"""How exactly g_s undoes g_a, piece by piece (paper Sec. III-A: the transform is a bijection).

For one image x the report follows g_a's own path (squeeze -> stage -> split, stage by
stage) and, at every invertible piece, measures inverse(forward(u)) - u on the piece's
actual input u, without quantisation:

    stage s, unit i:  actnorm, permute (channel mixing), coupling   each piece alone
                      unit                                          the three together
    stage s:          stage                                         all its units
    whole flow:       g_s(g_a(x)) - x, max / mean abs and PSNR (peak 1, [0, 1] signal)

and checks the log-determinants: forward + inverse of every piece, g_a + g_s, and g_a
against the sum of the units' forward log-determinants (all ~0 for a consistent flow).

The per-unit path walks the flow's own structure (`make_stages`, `stage_units`,
`unit_pieces`, the same lists the modules apply); `InvertibilityReport.path_mismatch`
still measures how far composing the pieces is from the real g_a.

Each stage's checks are one jitted function, g_a and g_s are jitted as wholes; the flow
modules are static arguments, so checkers of equal configs share compilations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from msinn_jax.codec import pad_image
from msinn_jax.config import ModelConfig
from msinn_jax.flow.multiscale import FlowStage, MultiScaleFlow, make_stages, stage_units
from msinn_jax.flow.squeeze import space_to_depth
from msinn_jax.flow.unit import unit_pieces

DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class PieceError:
  """Round-trip error of one invertible piece on its actual input in g_a.

  Attributes:
    stage: stage index (0 = finest).
    unit: unit index within the stage; None for the row of the whole stage.
    piece: "actnorm", "permute", "coupling", "unit" or "stage".
    max_abs_error: max |inverse(forward(u)) - u| over the piece's input u.
    mean_abs_error: mean of the same.
    logdet_forward: log|det| of the forward map at u.
    logdet_inverse: log|det| of the inverse map at forward(u).
    input_max_abs: max |u|, the scale the errors are to be read against (hidden
      states after ActNorm are far from [0, 1]).
  """

  stage: int
  unit: int | None
  piece: str
  max_abs_error: float
  mean_abs_error: float
  logdet_forward: float
  logdet_inverse: float
  input_max_abs: float

  @property
  def logdet_sum(self) -> float:
    """forward + inverse log-determinant (0 for an exact pair)."""
    return self.logdet_forward + self.logdet_inverse

  def to_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "logdet_sum": self.logdet_sum}


@dataclasses.dataclass(frozen=True)
class FlowRoundTrip:
  """Error of the whole round trip g_s(g_a(x)) against x.

  Attributes:
    max_abs_error: max |g_s(g_a(x)) - x|.
    mean_abs_error: mean |g_s(g_a(x)) - x|.
    psnr_db: 10 log10(1 / MSE) for x in [0, 1]; inf when the round trip is exact.
    logdet_analysis: log|det| of g_a at x.
    logdet_synthesis: log|det| of g_s at g_a(x).
  """

  max_abs_error: float
  mean_abs_error: float
  psnr_db: float
  logdet_analysis: float
  logdet_synthesis: float

  @property
  def logdet_sum(self) -> float:
    """g_a + g_s log-determinant (0 for an exact pair)."""
    return self.logdet_analysis + self.logdet_synthesis

  def to_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "logdet_sum": self.logdet_sum}


@dataclasses.dataclass(frozen=True)
class InvertibilityReport:
  """Everything `InvertibilityChecker.check` measures on one image.

  Attributes:
    pieces: one row per piece, unit and stage, in g_a's order.
    round_trip: the whole g_s(g_a(x)).
    logdet_of_units: sum of every unit's forward log-determinant on the per-unit path.
    path_mismatch: max |difference| between the per-unit path (pieces composed into
      units, units into stages, stages into latents) and the flow's own results; 0 up
      to compiler fusion differences when this file matches the flow modules.
  """

  pieces: tuple[PieceError, ...]
  round_trip: FlowRoundTrip
  logdet_of_units: float
  path_mismatch: float

  @property
  def logdet_units_gap(self) -> float:
    """log|det| of g_a minus the sum of the units' (0 when they agree)."""
    return self.round_trip.logdet_analysis - self.logdet_of_units

  def to_dict(self) -> dict[str, Any]:
    return {
        "round_trip": self.round_trip.to_dict(),
        "logdet": {
            "analysis": self.round_trip.logdet_analysis,
            "synthesis": self.round_trip.logdet_synthesis,
            "analysis_plus_synthesis": self.round_trip.logdet_sum,
            "sum_of_units": self.logdet_of_units,
            "analysis_minus_sum_of_units": self.logdet_units_gap,
        },
        "path_mismatch": self.path_mismatch,
        "pieces": [p.to_dict() for p in self.pieces],
    }


def codec_input(rgb: np.ndarray, config: ModelConfig) -> np.ndarray:
  """[H, W, 3] uint8 -> [Hp, Wp, 3] float32 in [0, 1], zero-padded as `Codec.compress` pads."""
  return pad_image(rgb, config.pad_multiple)[0][0]


def _round_trip(module: nn.Module, params: Any, u: jax.Array) -> tuple[jax.Array, ...]:
  """(forward(u), max err, mean err, logdet fwd, logdet inv, max |u|) of one module on
  u [1, ...]."""
  variables = {"params": params}
  y, ld_fwd = module.apply(variables, u)
  u_back, ld_inv = module.apply(variables, y, inverse=True)
  err = jnp.abs(u_back - u)
  return y, jnp.max(err), jnp.mean(err), ld_fwd[0], ld_inv[0], jnp.max(jnp.abs(u))


@functools.partial(jax.jit, static_argnums=0)
def _check_stage(stage: FlowStage, params: Any, h: jax.Array
                 ) -> tuple[list[tuple[jax.Array, ...]], jax.Array, jax.Array]:
  """The checks of one stage on its input h (after the squeeze), [1, h, w, c].

  Returns:
    One (max err, mean err, logdet fwd, logdet inv, max |u|) per row, in the order of
    `_row_labels`; the stage output along the per-unit path; and the path mismatch
    within the stage (pieces composed vs their unit, units composed vs the stage).
  """
  rows, mismatch = [], jnp.zeros((), h.dtype)
  u = h
  for unit in stage_units(stage):
    unit_params = params[unit.name]
    v = u
    for piece in unit_pieces(unit):
      v, *stats = _round_trip(piece, unit_params.get(piece.name, {}), v)
      rows.append(tuple(stats))
    out, *stats = _round_trip(unit, unit_params, u)
    rows.append(tuple(stats))
    mismatch = jnp.maximum(mismatch, jnp.max(jnp.abs(v - out)))
    u = out
  stage_out, *stats = _round_trip(stage, params, h)
  rows.append(tuple(stats))
  mismatch = jnp.maximum(mismatch, jnp.max(jnp.abs(u - stage_out)))
  return rows, u, mismatch


@functools.partial(jax.jit, static_argnums=0)
def _analysis(flow: MultiScaleFlow, variables: Any, x: jax.Array
              ) -> tuple[list[jax.Array], jax.Array]:
  return flow.apply(variables, x, method=MultiScaleFlow.analysis)


@functools.partial(jax.jit, static_argnums=0)
def _synthesis(flow: MultiScaleFlow, variables: Any, latents: list[jax.Array]
               ) -> tuple[jax.Array, jax.Array]:
  return flow.apply(variables, latents, method=MultiScaleFlow.synthesis)


def _row_labels(stage_index: int, stage: FlowStage) -> list[tuple[int, int | None, str]]:
  """(stage, unit, piece) of every row `_check_stage` returns."""
  labels = []
  for i, unit in enumerate(stage_units(stage)):
    labels += [(stage_index, i, piece.name) for piece in unit_pieces(unit)]
    labels.append((stage_index, i, "unit"))
  labels.append((stage_index, None, "stage"))
  return labels


# --- The checker ----------------------------------------------------------------------------


class InvertibilityChecker:
  """Measures the invertibility of a model's flow on images.

  Args:
    config: the model configuration.
    params: the model's parameters (`variables["params"]`, with the flow under "flow").
    dtype: "float32" or "float64"; float64 runs under `jax.enable_x64(True)` with the
      parameters and the image cast to float64.
    precision: `jax.default_matmul_precision` for the checks ("default", "high",
      "highest"); the flow's channel mixing always runs at HIGHEST.
  """

  def __init__(self, config: ModelConfig, params: dict[str, Any], dtype: str = "float32",
               precision: str = "default"):
    if dtype not in DTYPES:
      raise ValueError(f"dtype={dtype!r}; choose one of {DTYPES}")
    if "flow" not in params:
      raise ValueError("params has no 'flow' subtree; pass variables['params'] of an MSINN")
    self.config, self.dtype, self.precision = config, dtype, precision
    self._params = params["flow"]
    self._stages = make_stages(config)
    self._flow = MultiScaleFlow(config)

  @contextlib.contextmanager
  def _scope(self):
    """The dtype and precision context every computation of this checker runs in."""
    with contextlib.ExitStack() as stack:
      if self.dtype == "float64":
        stack.enter_context(jax.enable_x64(True))
      stack.enter_context(jax.default_matmul_precision(self.precision))
      yield

  def _cast(self, x: np.ndarray | jax.Array) -> tuple[jax.Array, Any]:
    """(x as [1, H, W, C] in the checker's dtype, the flow params in that dtype)."""
    x = jnp.asarray(x)
    if x.ndim != 3:
      raise ValueError(f"expected one [H, W, C] image, got shape {x.shape}")
    multiple = 2**self.config.num_stages
    if x.shape[0] % multiple or x.shape[1] % multiple:
      raise ValueError(f"image sides {x.shape[:2]} must be multiples of {multiple}; pad first")
    dt = jnp.dtype(self.dtype)
    params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, dt), self._params)
    return x.astype(dt)[None], params

  def round_trip(self, x: np.ndarray | jax.Array) -> FlowRoundTrip:
    """Only the whole g_s(g_a(x)) check (cheaper than `check`).

    Args:
      x: [H, W, 3] image in [0, 1], sides multiples of 2**num_stages.
    """
    with self._scope():
      x, params = self._cast(x)
      return self._whole(x, {"params": params})[0]

  def _whole(self, x: jax.Array, variables: Any) -> tuple[FlowRoundTrip, list[jax.Array]]:
    latents, ld_a = _analysis(self._flow, variables, x)
    x_back, ld_s = _synthesis(self._flow, variables, latents)
    err = np.abs(np.asarray(x_back, np.float64) - np.asarray(x, np.float64))
    mse = float(np.mean(err**2))
    psnr = 10 * math.log10(1 / mse) if mse > 0 else math.inf
    result = FlowRoundTrip(float(err.max()), float(err.mean()), psnr, float(ld_a[0]),
                           float(ld_s[0]))
    return result, latents

  def check(self, x: np.ndarray | jax.Array) -> InvertibilityReport:
    """The full report on one image.

    Args:
      x: [H, W, 3] image in [0, 1], sides multiples of 2**num_stages (pad as the codec
        does with `codec_input`).
    """
    with self._scope():
      x, params = self._cast(x)
      whole, latents = self._whole(x, {"params": params})
      pieces, mismatch = [], 0.0
      path_latents = []
      h = x
      for s, stage in enumerate(self._stages):
        rows, h, mm = jax.device_get(_check_stage(stage, params[f"stage{s}"],
                                                      space_to_depth(h)))
        for (stage_i, unit_i, name), stats in zip(_row_labels(s, stage), rows, strict=True):
          pieces.append(PieceError(stage_i, unit_i, name, *(float(v) for v in stats)))
        mismatch = max(mismatch, float(mm))
        keep, h = jnp.split(h, 2, axis=-1)
        path_latents.append(keep)
      path_latents.append(h)
      for ours, theirs in zip(path_latents, latents, strict=True):
        diff = np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))
        mismatch = max(mismatch, float(diff.max()))
    logdet_units = math.fsum(p.logdet_forward for p in pieces if p.piece == "unit")
    return InvertibilityReport(tuple(pieces), whole, logdet_units, mismatch)
