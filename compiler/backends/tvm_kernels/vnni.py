"""The AVX-512 VNNI tensor intrinsic (vpdpbusd: 4 uint8 x 16x4 int8 -> 16 int32 accumulators), registered once
for the integer conv, matmul and batched matmul schedules to tensorize with."""
from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

VNNI_INTRIN = "dyc_dot_16x4_u8i8i32_vnni"


# ----------------------------------------------------------------------------------------------------------------
# the tensor intrinsic (LLVM 22: vpdpbusd.512 takes <64 x i8> operands)
# ----------------------------------------------------------------------------------------------------------------
def _intrin(scope: str):
    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1, scope=scope)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1, scope=scope)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            # one expression: named intermediates would become per-iteration workspace buffers once the
            # kernel is inside a parallel loop
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16),
                              dtype="int8x64"),
                B.vload([0, 0], dtype="int8x64"), dtype="int32x16")
    return desc, impl


def register_intrinsics() -> None:
    if s_tir.TensorIntrin.get(VNNI_INTRIN, allow_missing=True) is None:
        s_tir.TensorIntrin.register(VNNI_INTRIN, *_intrin("global"))


register_intrinsics()
