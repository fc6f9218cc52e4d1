"""Published and measured reference RD curves shipped with the package.

`msinn_jax/data/reference_curves.json` maps dataset -> name -> CompressAI curve; each
curve's `description` says where its numbers come from. It holds:

* `<dataset>/msinn-anchor8` and `<dataset>/msinn-anchor12` for kodak, clic and tecnick:
  the MSINN paper's own results (the "Our*" and "Our" curves, anchor_num 8 and 12) as
  published in RD_data.md of the official repository hytu99/MSINN-VRLIC;
* Kodak anchors from CompressAI's `results/image/kodak/` (vtm, hm, bpg, av1, jpeg,
  jpeg2000, webp, and a few learned codecs);
* Kodak curves measured for this project with current libraries (jpeg2000-openjpeg,
  hevc444-x265, webp-libwebp, jpeg444/jpeg420-libjpeg-turbo, avif444-aom, jpegxl-libjxl).

On the command line a reference can be given wherever a results JSON path is accepted,
as `ref:<dataset>/<name>`, e.g. `ref:kodak/vtm`.
"""

from __future__ import annotations

import importlib.resources
import json
from typing import Any

from msinn_jax.rd.results import RDCurve, RDError

REF_PREFIX = "ref:"
_DATA_FILE = "reference_curves.json"


def _table() -> dict[str, dict[str, Any]]:
  text = (importlib.resources.files("msinn_jax") / "data" / _DATA_FILE).read_text()
  return json.loads(text)


def list_references() -> list[str]:
  """All shipped curves as "dataset/name", in file order (datasets, then curves)."""
  return [f"{dataset}/{name}" for dataset, curves in _table().items() for name in curves]


def load_reference(dataset: str, name: str) -> RDCurve:
  """A shipped reference curve.

  Args:
    dataset: "kodak", "clic" or "tecnick" (case-insensitive).
    name: curve name within the dataset, e.g. "vtm" or "msinn-anchor12" (case-insensitive).

  Returns:
    The curve.

  Raises:
    RDError: unknown dataset or name; the message lists the choices.
  """
  table = _table()
  curves = table.get(dataset.lower())
  if curves is None:
    raise RDError(f"unknown reference dataset {dataset!r}; choose one of {', '.join(table)}")
  obj = curves.get(name.lower())
  if obj is None:
    raise RDError(f"unknown reference {dataset.lower()}/{name}; "
                  f"{dataset.lower()} has {', '.join(curves)}")
  return RDCurve.from_json(obj, source=f"{REF_PREFIX}{dataset.lower()}/{name.lower()}")


def load_curve(spec: str) -> RDCurve:
  """A curve from a results JSON path, or a shipped one named `ref:<dataset>/<name>`.

  Raises:
    RDError: the file cannot be read or parsed, or the reference does not exist.
  """
  if not spec.startswith(REF_PREFIX):
    return RDCurve.load(spec)
  dataset, sep, name = spec[len(REF_PREFIX):].partition("/")
  if not sep or not dataset or not name:
    raise RDError(f"bad reference {spec!r}: expected {REF_PREFIX}<dataset>/<name>, "
                  f"e.g. {REF_PREFIX}kodak/vtm")
  return load_reference(dataset, name)
