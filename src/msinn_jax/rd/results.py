"""Rate-distortion curves in CompressAI's results JSON format.

One file holds one curve (one codec, one dataset, one point per rate setting):

  {"name": "VTM", "description": "...",
   "results": {"bpp": [...], "psnr-rgb": [...], "ms-ssim-rgb": [...],
               "encoding_time": [...], "decoding_time": [...]}}

as written by `compressai.utils.eval_model` and stored under CompressAI's `results/`.
Every list in `results` has one value per point; a null (how `jsonio.json_text` writes a
NaN or an infinity) reads as NaN. Any metric may be missing; other keys,
inside `results` (e.g. "bpp-estimated", "ms-ssim-rgb-db") or beside it (e.g.
"settings"), are kept as they are and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from msinn_jax.errors import UserError
from msinn_jax.image_io import write_bytes
from msinn_jax.jsonio import json_text

RATE_KEY = "bpp"

# Quality metrics, in dB, that BD figures and plots use: the keys tried in order.
# A linear MS-SSIM value v is converted with -10 log10(1 - v) (`metrics.ms_ssim_db`).
_DB_KEYS = {
    "psnr": ("psnr-rgb", "psnr"),
    "ms-ssim": ("ms-ssim-rgb-db", "ms-ssim-db-rgb", "ms-ssim-db"),
}
_LINEAR_KEYS = {"psnr": (), "ms-ssim": ("ms-ssim-rgb", "ms-ssim")}
QUALITY_METRICS = tuple(_DB_KEYS)


class RDError(UserError, ValueError):
  """A malformed RD curve file, or curves that do not support the requested figure."""


@dataclasses.dataclass(frozen=True)
class RDCurve:
  """One rate-distortion curve.

  Attributes:
    name: codec or model name (legend label).
    results: metric name -> one float per point, e.g. "bpp", "psnr-rgb", "ms-ssim-rgb".
    description: free text; for published curves, where the numbers come from.
    extra: any other top-level keys of the JSON object, preserved verbatim.
  """
  name: str
  results: Mapping[str, Sequence[float]]
  description: str = ""
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @classmethod
  def from_json(cls, obj: Any, source: str = "curve") -> RDCurve:
    """Builds a curve from a parsed JSON object, validating its structure.

    Args:
      obj: the parsed JSON value.
      source: how to name the object in error messages (e.g. the file path).

    Returns:
      The curve.

    Raises:
      RDError: `obj` is not a CompressAI results object.
    """
    if not isinstance(obj, dict):
      raise RDError(f"{source}: expected a JSON object with 'name' and 'results', "
                    f"got {type(obj).__name__}")
    name = obj.get("name", "")
    description = obj.get("description", "")
    results = obj.get("results")
    if not isinstance(name, str) or not isinstance(description, str):
      raise RDError(f"{source}: 'name' and 'description' must be strings")
    if not isinstance(results, dict):
      raise RDError(f"{source}: missing or non-object 'results'")
    lengths = {}
    for key, values in results.items():
      if not isinstance(values, list) or not all(_is_number(v) for v in values):
        raise RDError(f"{source}: results[{key!r}] must be a list of numbers")
      lengths[key] = len(values)
    if len(set(lengths.values())) > 1:
      raise RDError(f"{source}: results lists have different lengths: {lengths}")
    if not any(lengths.values()):
      raise RDError(f"{source}: the curve has no points")
    extra = {k: v for k, v in obj.items() if k not in ("name", "description", "results")}
    return cls(name=name, description=description,
               results={k: [math.nan if v is None else float(v) for v in vs]
                        for k, vs in results.items()},
               extra=extra)

  def to_json(self) -> dict[str, Any]:
    """The CompressAI JSON object: name, description, results, then the extra keys."""
    return {"name": self.name, "description": self.description,
            "results": {k: list(v) for k, v in self.results.items()}, **self.extra}

  @classmethod
  def load(cls, path: str | pathlib.Path) -> RDCurve:
    """Reads a CompressAI results JSON file; a missing name defaults to the file stem.

    Raises:
      RDError: the file is missing, unreadable, not JSON, or not a results object.
    """
    path = pathlib.Path(path)
    try:
      text = path.read_text()
    except FileNotFoundError:
      raise RDError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
      raise RDError(f"{path}: cannot read ({e})") from None
    try:
      obj = json.loads(text)
    except json.JSONDecodeError as e:
      raise RDError(f"{path}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
    curve = cls.from_json(obj, source=str(path))
    if not curve.name:
      curve = dataclasses.replace(curve, name=path.stem)
    return curve

  def save(self, path: str | pathlib.Path) -> None:
    """Writes the curve as indented, strict JSON (atomically; non-finite values as null)."""
    write_bytes(path, json_text(self.to_json()).encode())

  @property
  def num_points(self) -> int:
    return len(next(iter(self.results.values()), ()))

  def has_quality(self, metric: str) -> bool:
    """Whether `quality_db(metric)` can be computed (see `QUALITY_METRICS`)."""
    return any(k in self.results for k in _DB_KEYS[_check_metric(metric)]
               + _LINEAR_KEYS[metric])

  def quality_db(self, metric: str) -> np.ndarray:
    """Per-point quality in dB: "psnr" (PSNR-RGB) or "ms-ssim" (MS-SSIM-RGB in dB).

    Raises:
      RDError: the curve holds no such metric.
    """
    metric = _check_metric(metric)
    for key in _DB_KEYS[metric]:
      if key in self.results:
        return np.asarray(self.results[key], np.float64)
    for key in _LINEAR_KEYS[metric]:
      if key in self.results:
        with np.errstate(divide="ignore"):
          return -10. * np.log10(1. - np.asarray(self.results[key], np.float64))
    raise RDError(f"curve {self.name!r} has no {metric} values "
                  f"(looked for {', '.join(_DB_KEYS[metric] + _LINEAR_KEYS[metric])})")

  def non_finite(self, metric: str) -> np.ndarray:
    """Indexes of the points whose rate or `quality_db(metric)` is NaN or infinite (a
    null in the file)."""
    finite = np.isfinite(self.rate()) & np.isfinite(self.quality_db(metric))
    return np.flatnonzero(~finite)

  def rate(self) -> np.ndarray:
    """Per-point rate in bits per pixel.

    Raises:
      RDError: the curve has no "bpp" values.
    """
    if RATE_KEY not in self.results:
      raise RDError(f"curve {self.name!r} has no {RATE_KEY!r} values")
    return np.asarray(self.results[RATE_KEY], np.float64)


def _check_metric(metric: str) -> str:
  if metric not in _DB_KEYS:
    raise ValueError(f"Unknown quality metric {metric!r}; choose one of {QUALITY_METRICS}.")
  return metric


def _is_number(v: Any) -> bool:
  """A JSON number (bool is an int subclass in Python, so exclude it), NaN and Infinity
  included, or null for a non-finite one."""
  return v is None or isinstance(v, (int, float)) and not isinstance(v, bool)
