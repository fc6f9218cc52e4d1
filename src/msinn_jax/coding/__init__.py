"""Entropy coding on the host: integer tables, range coder, and the `.msinn` container."""

from msinn_jax.coding.container import Header, Stage, index_crc, pack, unpack
from msinn_jax.coding.range_coder import decode, encode, estimate_bits
from msinn_jax.coding.tables import (
    SCALES_LEVELS,
    SCALES_MAX,
    SCALES_MIN,
    IndexedTables,
    build_tables,
    scale_table,
    scales_to_indexes,
)

__all__ = [
    "SCALES_LEVELS",
    "SCALES_MAX",
    "SCALES_MIN",
    "Header",
    "IndexedTables",
    "Stage",
    "build_tables",
    "decode",
    "encode",
    "estimate_bits",
    "index_crc",
    "pack",
    "scale_table",
    "scales_to_indexes",
    "unpack",
]
