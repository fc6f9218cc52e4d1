"""The JSON text msinn writes: strictly valid, with non-finite floats as null."""

from __future__ import annotations

import json
import math
from typing import Any


def json_text(value: Any) -> str:
  """`value` as indented, strictly valid JSON text ending in a newline.

  JSON has no NaN or infinity, but reports and RD curves can hold both (an exact round
  trip has an infinite PSNR, a diverged one a NaN error), so every non-finite float,
  nested in dicts, lists or tuples, is written as null; `rd.RDCurve` reads such a null
  back as NaN. The tools' JSON reports and RD files go through here (the training log,
  `metrics.jsonl`, is JSON Lines written by `train.metrics_log`).
  """
  return json.dumps(_finite_or_none(value), indent=2, allow_nan=False) + "\n"


def _finite_or_none(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _finite_or_none(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_finite_or_none(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value
