"""The AVX-512 VNNI tensor intrinsics, registered once for the integer conv, matmul and batched matmul schedules
to tensorize with: vpdpbusd (4 uint8 x 16x4 int8 -> 16 int32 accumulators) and, for int16 activations,
vpdpwssd (2 int16 x 16x2 int16 -> 16 int32 accumulators; the products' pair sums wrap like q.conv's int32); and the
depthwise conv's (`register_depthwise_intrinsic`): a shuffle of adjacent pixels' taps into per-channel lanes, then
the same instructions."""
from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

VNNI_INTRIN = "dyc_dot_16x4_u8i8i32_vnni"
VNNI16_INTRIN = "dyc_dot_16x2_i16i16i32_vnni"


# ----------------------------------------------------------------------------------------------------------------
# the tensor intrinsics (LLVM 22: vpdpbusd.512 takes <64 x i8> operands, vpdpwssd.512 <32 x i16>)
# ----------------------------------------------------------------------------------------------------------------
def _intrin(a_dtype: str, b_dtype: str, depth: int, llvm_name: str):
    """C[16] (int32) += sum over `depth` of A[k] x B[i, k]: A's `depth` values broadcast as one 32-bit lane."""
    a_vec, b_vec = f"{a_dtype}x{depth}", f"{b_dtype}x{16 * depth}"

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((depth,), a_dtype, offset_factor=1), B: T.Buffer((16, depth), b_dtype, offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:depth], B[0:16, 0:depth])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, depth):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((depth,), a_dtype, offset_factor=1), B: T.Buffer((16, depth), b_dtype, offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:depth], B[0:16, 0:depth])
            T.writes(C[0:16])
            # one expression: named intermediates would become per-iteration workspace buffers once the
            # kernel is inside a parallel loop
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name),
                C.vload([0], dtype="int32x16"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], a_vec), dtype="int32"), 16), dtype=b_vec),
                B.vload([0, 0], dtype=b_vec), dtype="int32x16")
    return desc, impl


INTRINSICS = {VNNI_INTRIN: ("uint8", "int8", 4, "llvm.x86.avx512.vpdpbusd.512"),
              VNNI16_INTRIN: ("int16", "int16", 2, "llvm.x86.avx512.vpdpwssd.512")}


def lanes(data_dtype: str) -> tuple[int, str, str]:
    """(reduction steps per 32-bit lane, weight dtype, intrinsic) of a VNNI kernel on `data_dtype` activations:
    (4, int8, vpdpbusd) for 8-bit data (int8 shifted to uint8), (2, int16, vpdpwssd) for int16."""
    name = VNNI16_INTRIN if data_dtype == "int16" else VNNI_INTRIN
    _, weight, depth, _ = INTRINSICS[name]
    return depth, weight, name


def _depthwise_intrin(a_dtype: str, w_dtype: str, depth: int, block: int, llvm_name: str):
    """C[block] (int32) += sum over `depth` taps of A[k, i] x B[i, k]: A is `depth` adjacent pixels of one channel
    block (tap-major, as the blocked layout holds them), B the weights channel-major. One shuffle makes each 32-bit
    lane channel i's taps (vpermb / vpermw), one vpdpbusd / vpdpwssd adds them."""
    n = block * depth
    perm = [k * block + i for i in range(block) for k in range(depth)]      # lane i*depth + k <- tap k, channel i
    op_vec, a_vec = f"{w_dtype}x{n}", f"{a_dtype}x{n}"

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((depth, block), a_dtype, offset_factor=1), B: T.Buffer((block, depth), w_dtype, offset_factor=1),
             C: T.Buffer((block,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:block], A[0:depth, 0:block], B[0:block, 0:depth])
            T.writes(C[0:block])
            for i in T.serial(0, block):
                for k in T.serial(0, depth):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk, vi], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((depth, block), a_dtype, offset_factor=1), B: T.Buffer((block, depth), w_dtype, offset_factor=1),
             C: T.Buffer((block,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:block], A[0:depth, 0:block], B[0:block, 0:depth])
            T.writes(C[0:block])
            C[T.ramp(T.int32(0), 1, block)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name), C.vload([0], dtype=f"int32x{block}"),
                T.reinterpret(T.Shuffle([A.vload([0, 0], dtype=a_vec)], perm), dtype=op_vec),
                B.vload([0, 0], dtype=op_vec), dtype=f"int32x{block}")
    return desc, impl


def register_depthwise_intrinsic(wide: bool, block: int) -> str:
    """The depthwise VNNI intrinsic (qdepthwise.py's VNNI form) for int16 (`wide`) or 8-bit data and 8- or
    16-channel blocks, registered on first use; its name."""
    name = f"dyc_depthwise_{block}x{2 if wide else 4}_{'i16' if wide else 'u8'}_vnni"
    if s_tir.TensorIntrin.get(name, allow_missing=True) is None:
        base = "vpdpwssd" if wide else "vpdpbusd"
        args = ("int16", "int16", 2) if wide else ("uint8", "int8", 4)
        s_tir.TensorIntrin.register(name, *_depthwise_intrin(*args, block,
                                                             f"llvm.x86.avx512.{base}.{32 * block}"))
    return name


def register_intrinsics() -> None:
    for name, args in INTRINSICS.items():
        if s_tir.TensorIntrin.get(name, allow_missing=True) is None:
            s_tir.TensorIntrin.register(name, *_intrin(*args))


register_intrinsics()
