"""Table lookups on AVX-512: `table[v]` indexed by a vector of lanes, as register permutes or one hardware
gather instead of one load per lane.

The integer activations (passes/table_islands.py) end in such a lookup, fused into the conv's write-back. After
TVM vectorizes that write-back, the load's index is a vector that is not a ramp, and LLVM emits it lane by
lane: per output byte a `vpextrw` of the index, a `movzx` and a `vpinsrb` of the entry.

A 256-entry table of 8-bit values (an 8-bit index), with VBMI, is four 64-byte registers and a lookup of up to
64 lanes is

    lo  = vpermi2b(idx, table[0:64],    table[64:128])     # entries 0..127: the index's low 7 bits
    hi  = vpermi2b(idx, table[128:192], table[192:256])    # entries 128..255
    out = idx < 0 ? hi : lo                                # the index byte's top bit (vpmovb2m, vpblendmb)

The index is the lane's value truncated to a byte: a 256-entry table is indexed by 0..255, and those are
the byte's 8 bits, so the result is the same entry the gather loads.

A 65536-entry table (a 16-bit index: an activation kept at 16 bits) is held as int32 by the kernels
(tvm_kernels/table.py), and a lookup of 16 (or 8) lanes is one `vpgatherdd` of those 32-bit entries
(`gather_lookup`): x86 has no 8- or 16-bit gather, and LLVM, which prefers no gathers on recent Intel cores,
loads such a vector lane by lane even from an int32 table. The index is in [0, 65536) by construction (the
16-bit value minus its dtype's minimum).

Both are applied after TVM's lowering (its loops vectorized) as the TIR pipeline `pipeline_for` names, for CPUs
with AVX-512 (the permutes where the CPU has VBMI; `compiler.host.cpu_features`).
"""
from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx
from tvm.ir.expr import TensorLoad
from tvm.tirx.buffer import BufferType
from tvm.s_tir.pipeline import default_s_tir_pipeline
from tvm.tirx.compilation_pipeline import PIPELINE_MAP, register_tir_pipeline

from compiler.host import cpu_features

PIPELINE = "dyc_vbmi"              # byte permutes and gathers
GATHER_PIPELINE = "dyc_avx512"      # gathers only (AVX-512 without VBMI)
VPERMI2B = "llvm.x86.avx512.vpermi2var.qi.512"
GATHERS = {16: "llvm.x86.avx512.mask.gather.dpi.512", 8: "llvm.x86.avx512.mask.gather3siv8.si"}  # i32 lanes
WIDE_TABLE = 65536
WIDTH = 64                        # bytes in one zmm register


def _lanes(load) -> int:
    return tvm.DataType(str(load.ty.dtype)).lanes


def _is_byte_gather(load) -> bool:
    """A vector load from a 256-entry 8-bit buffer whose index is not a ramp."""
    buf = load.source.ty
    if not isinstance(buf, BufferType) or str(buf.dtype) not in ("int8", "uint8") or len(load.indices) != 1:
        return False
    lanes = _lanes(load)
    if not 1 < lanes <= WIDTH or WIDTH % lanes or isinstance(load.indices[0], tirx.Ramp):
        return False
    shape = list(buf.shape)
    return len(shape) == 1 and isinstance(shape[0], tirx.IntImm) and shape[0].value == 256


def _const_lanes(n: int) -> list:
    return [tirx.IntImm("int32", i) for i in range(n)]


def permute_lookup(load) -> tirx.PrimExpr:
    """The VBMI form of a byte-table gather (the module docstring): the same lanes and dtype as `load`."""
    buf, dtype, lanes = load.source, str(load.source.ty.dtype), _lanes(load)
    idx = tirx.Cast(f"int8x{lanes}", load.indices[0])
    if lanes < WIDTH:                 # widen to one register: repeat the lanes, keep the first `lanes` results
        idx = tirx.Shuffle([idx] * (WIDTH // lanes), _const_lanes(WIDTH))
    quarters = []
    for k in range(4):
        part = tirx.BufferLoad(buf, [tirx.Ramp(tirx.IntImm("int32", k * WIDTH), tirx.IntImm("int32", 1), WIDTH)])
        quarters.append(part if dtype == "int8" else tirx.reinterpret(f"int8x{WIDTH}", part))
    lo = tirx.call_llvm_pure_intrin(f"int8x{WIDTH}", VPERMI2B, quarters[0], idx, quarters[1])
    hi = tirx.call_llvm_pure_intrin(f"int8x{WIDTH}", VPERMI2B, quarters[2], idx, quarters[3])
    out = tirx.Select(idx < tirx.Broadcast(tirx.IntImm("int8", 0), WIDTH), hi, lo)
    if lanes < WIDTH:
        out = tirx.Shuffle([out], _const_lanes(lanes))
    return out if dtype == "int8" else tirx.reinterpret(f"uint8x{lanes}", out)


def _is_wide_gather(load) -> bool:
    """A vector load of 8 or 16 lanes from a 65536-entry int32 buffer whose index is not a ramp."""
    buf = load.source.ty
    if not isinstance(buf, BufferType) or str(buf.dtype) != "int32" or len(load.indices) != 1:
        return False
    shape = list(buf.shape)
    return _lanes(load) in GATHERS and not isinstance(load.indices[0], tirx.Ramp) and len(shape) == 1 \
        and isinstance(shape[0], tirx.IntImm) and shape[0].value == WIDE_TABLE


def gather_lookup(load) -> tirx.PrimExpr:
    """`load` as one vpgatherdd: every lane enabled, scale 4 bytes per entry."""
    lanes = _lanes(load)
    base = tirx.address_of(tirx.BufferLoad(load.source, [tirx.IntImm("int32", 0)]))
    return tirx.call_llvm_pure_intrin(f"int32x{lanes}", GATHERS[lanes], tirx.Broadcast(tirx.IntImm("int32", 0), lanes),
                                      base, load.indices[0], tirx.Broadcast(tirx.IntImm("bool", 1), lanes),
                                      tirx.IntImm("int32", 4))


def rewrite(func: tirx.PrimFunc, permutes: bool = True) -> tirx.PrimFunc:
    """`func` with every byte-table gather in VBMI form (`permutes`) and every 65536-entry int32 table's lookup one
    hardware gather (unchanged where there is none)."""
    def visit(node):
        if not isinstance(node, TensorLoad):
            return node
        if permutes and _is_byte_gather(node):
            return permute_lookup(node)
        return gather_lookup(node) if _is_wide_gather(node) else node
    body = tvm_ffi.structural_map(func.body, visit)
    return func if body.same_as(func.body) else func.with_body(body)


@tvm.tirx.transform.prim_func_pass(opt_level=0, name="VBMIByteLookup")
def vbmi_byte_lookup(func, _mod, _ctx):
    return rewrite(func)


@tvm.tirx.transform.prim_func_pass(opt_level=0, name="AVX512TableGather")
def avx512_table_gather(func, _mod, _ctx):
    return rewrite(func, permutes=False)


def _pipeline(rewrite_pass):
    def make():
        lower, finalize_host, finalize_device = default_s_tir_pipeline()
        return tvm.transform.Sequential([lower, rewrite_pass]), finalize_host, finalize_device
    return make


for _name, _pass in ((PIPELINE, vbmi_byte_lookup), (GATHER_PIPELINE, avx512_table_gather)):
    if _name not in PIPELINE_MAP:
        register_tir_pipeline(_name, _pipeline(_pass))


def pipeline_for(mcpu: str) -> str:
    """The TIR pipeline `tvm.compile` takes for CPU `mcpu`: ours where it has AVX-512 (with the byte permutes
    where it has VBMI), else TVM's default."""
    feats = cpu_features(mcpu)
    return PIPELINE if "avx512vbmi" in feats else GATHER_PIPELINE if "avx512f" in feats else "default"
