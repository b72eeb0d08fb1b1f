"""The activation lookup fused into the integer kernels' write-back (passes/table_islands.py's q.table):
`table[v - min(v's dtype)]`, 256 entries for an 8-bit value, 65536 for a 16-bit one (an activation on int16
grids: QuantConfig.keep_16bit). A 65536-entry table is held as int32 (`table_storage`), so that a vector of
lookups is one hardware gather of 32-bit lanes (compiler/backends/tvm_byte_lookup.py): x86 has no 8- or 16-bit
gather, and LLVM otherwise loads lane by lane. A 256-entry table stays as it is (VBMI permutes there)."""
from __future__ import annotations

from tvm import te, tirx

__all__ = ["TABLE_INDEX", "table_storage", "table_te", "table_args"]

# index dtype -> (its minimum, the table's entries)
TABLE_INDEX = {"int8": (-128, 256), "uint8": (0, 256), "int16": (-2**15, 2**16), "uint16": (0, 2**16)}


def table_storage(index_dtype: str, table_dtype: str) -> str:
    """The dtype a kernel holds its table in: int32 for a 65536-entry table (one vpgatherdd per 16 lookups:
    tvm_byte_lookup.gather_lookup), the table's own for a 256-entry one."""
    return "int32" if TABLE_INDEX[index_dtype][1] > 256 else table_dtype


def table_te(v, table, index_dtype: str, table_dtype: str):
    """table[v - min(index dtype)]: the 256-entry lookup of an 8-bit value, the 65536-entry one of a 16-bit
    value (an activation on int16 grids: QuantConfig.keep_16bit), as `table_dtype` (the table's entries)."""
    y = table[v.astype("int32") - tirx.const(TABLE_INDEX[index_dtype][0], "int32")]
    return y if table.dtype == table_dtype else y.astype(table_dtype)


def table_args(spec) -> dict:
    """The lookup table's placeholder (held as `table_storage`), keyed as write_back_te takes it (none without a
    table)."""
    if spec.table is None:
        return {}
    size = TABLE_INDEX[spec.pre_table_dtype][1]
    return {"table": te.placeholder((size,), table_storage(spec.pre_table_dtype, spec.table), "table")}
