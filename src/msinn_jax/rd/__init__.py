"""Rate-distortion curves: CompressAI results files, Bjontegaard deltas, references, plots."""

from msinn_jax.rd.bd import bd_psnr, bd_rate
from msinn_jax.rd.reference import list_references, load_curve, load_reference
from msinn_jax.rd.results import RDCurve, RDError

__all__ = [
    "RDCurve",
    "RDError",
    "bd_psnr",
    "bd_rate",
    "list_references",
    "load_curve",
    "load_reference",
]
