"""Intel AMX for the int8 matmul: a block of (16 rm) x (16 rn) int32 outputs accumulated over the whole reduction in
tile registers (tdpbusd: 16 x 64 uint8 times 16 x 64 int8 in VNNI order -> 16 x 16 int32, 16384 multiply-adds
per instruction, 8-16x what vpdpbusd does per cycle), registered as a tensor intrinsic for the qmatmul and qbmm
schedules to tensorize with.

The operands are those of the VNNI kernel unchanged: the activations uint8 (int8 shifted by +128, the shift
folded into the bias), the weight in the vnni_matmul form (np_//16, kp//4, 16, 4), whose 16-column block is
already an AMX B tile (a row of 64 bytes per 4-deep step of the reduction). Tile registers: C in 0 .. rm rn - 1,
A after them, B last (at most 8 in all). Each use of the intrinsic configures the tiles (ldtilecfg), loads the
block's accumulators, runs the reduction 64 deep per step, stores them and releases the tiles.

The conv's intrinsic (`register_conv`, qconv2d_amx.py) reads its A tiles straight from the padded NCHW16c data: a
tile row is one output pixel's 4 horizontal taps x 16 channels (64 contiguous bytes), the 16 rows of a tile
`stride` pixels apart (a tileloadd stride of 16 stride bytes), so the whole reduction (input channel blocks x
kernel rows) runs on the tiles with no copy of the data.

Linux gives a process AMX state only after it asks: compiler.host.request_amx, called when an intrinsic is
registered (a build that may run its kernels) and when the runtime loads (compiler/backends/tvm_runtime.py).
"""
from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from compiler.host import request_amx

ROWS, COLS, DEPTH = 16, 16, 64          # one tile: 16 rows, 16 int32 columns, 64 bytes of reduction per step
TILES = 8
INT16_OFFSET = 32768                    # int16 data as uint16 bytes: x + 32768 = 256 high + low


def block_fits(rm: int, rn: int) -> bool:
    """rm x rn accumulator tiles, rm A tiles and rn B tiles fit the 8 tile registers."""
    return rm >= 1 and rn >= 1 and rm * rn + rm + rn <= TILES


def columns_fit(n16: int) -> bool:
    """n16 16-column blocks group into blocks of 2 or 3 (TVM drops a block axis of extent 1, which the
    intrinsic's loop nest then no longer matches)."""
    return n16 % 2 == 0 or n16 % 3 == 0


def intrin_name(rm: int, rn: int, k: int) -> str:
    return f"dyc_amx_u8i8i32_{rm}x{rn}_k{k}"


@T.macro
def _configure(ntiles: int):
    """ldtilecfg: palette 1; tiles 0 .. ntiles - 1 of 16 rows x 64 bytes (tile t's bytes per row at 16 + 2 t,
    a u16, its rows at 48 + t)."""
    cfg = T.alloc_buffer((64,), "uint8", scope="global")
    for i in T.vectorized(64):
        cfg[i] = T.if_then_else(i == 0, T.uint8(1), T.if_then_else(
            i >= 16 and i < 16 + 2 * ntiles and i % 2 == 0, T.uint8(DEPTH),
            T.if_then_else(i >= 48 and i < 48 + ntiles, T.uint8(ROWS), T.uint8(0))))
    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.ldtilecfg", T.address_of(cfg[0])))


def _intrin(rm: int, rn: int, k: int):
    m, kq = ROWS * rm, k // 4

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (m, k), "uint8", offset_factor=1)
        B = T.match_buffer(b, (rn, kq, COLS, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (m, rn, COLS), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:m, 0:rn, 0:COLS], A[0:m, 0:k], B[0:rn, 0:kq, 0:COLS, 0:4])
            T.writes(C[0:m, 0:rn, 0:COLS])
            for i, o, j, q, t in T.grid(m, rn, COLS, kq, 4):
                with T.sblock("update"):
                    vi, vo, vj, vq, vt = T.axis.remap("SSSRR", [i, o, j, q, t])
                    C[vi, vo, vj] = C[vi, vo, vj] + T.cast(A[vi, vq * 4 + vt], "int32") * \
                        T.cast(B[vo, vq, vj, vt], "int32")

    ntiles, c0, a0, b0 = rm * rn + rm + rn, 0, rm * rn, rm * rn + rm

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa = T.int32()
        sb = T.int32()
        sc = T.int32()
        A = T.match_buffer(a, (m, k), "uint8", offset_factor=1, strides=[sa, 1])
        B = T.match_buffer(b, (rn, kq, COLS, 4), "int8", offset_factor=1, strides=[sb, 64, 4, 1])
        C = T.match_buffer(c, (m, rn, COLS), "int32", offset_factor=1, strides=[sc, COLS, 1])
        with T.sblock("root"):
            T.reads(C[0:m, 0:rn, 0:COLS], A[0:m, 0:k], B[0:rn, 0:kq, 0:COLS, 0:4])
            T.writes(C[0:m, 0:rn, 0:COLS])
            _configure(ntiles)
            for r in T.unroll(rm):
                for o in T.unroll(rn):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.Cast("int8", c0 + r * rn + o),
                                                  T.address_of(C[r * ROWS, o, 0]), T.Cast("int64", sc * 4)))
            for q in T.serial(k // DEPTH):
                for r in T.unroll(rm):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.Cast("int8", a0 + r),
                                                  T.address_of(A[r * ROWS, q * DEPTH]), T.Cast("int64", sa)))
                for o in T.unroll(rn):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.Cast("int8", b0 + o),
                                                  T.address_of(B[o, q * (DEPTH // 4), 0, 0]), T.int64(64)))
                for r in T.unroll(rm):
                    for o in T.unroll(rn):
                        T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tdpbusd", T.Cast("int8", c0 + r * rn + o),
                                                      T.Cast("int8", a0 + r), T.Cast("int8", b0 + o)))
            for r in T.unroll(rm):
                for o in T.unroll(rn):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilestored64", T.Cast("int8", c0 + r * rn + o),
                                                  T.address_of(C[r * ROWS, o, 0]), T.Cast("int64", sc * 4)))
            T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilerelease"))
    return desc, impl


def register(rm: int, rn: int, k: int) -> str:
    """The tensor intrinsic for an rm x rn block of tiles over a reduction of k (a multiple of 64)."""
    request_amx()
    name = intrin_name(rm, rn, k)
    if s_tir.TensorIntrin.get(name, allow_missing=True) is None:
        s_tir.TensorIntrin.register(name, *_intrin(rm, rn, k))
    return name


def conv_intrin_name(rm: int, rn: int, cib: int, kh: int, stride: int, planes: int = 1) -> str:
    kind = "conv16" if planes == 2 else "conv"
    return f"dyc_amx_{kind}_u8i8i32_{rm}x{rn}_c{cib}_k{kh}_s{stride}"


def _conv_intrin(rm: int, rn: int, cib: int, kh: int, sw: int, planes: int):
    """C (rn 16-channel blocks, 1 row, 16 rm pixels, 16) += the conv of A (channel blocks, kh rows, the pixels
    the tile rows read, 16) with B (rn, cib, kh, 16 q, 16 j, 4 t): pixel i's reduction element k = 4 q + t is
    A[cb, ky, i sw + k // 16, k % 16]. rn == 1 has no block axis (TVM drops a loop of extent 1, which the loop
    nest then must not have either). The accumulators start at zero (tilezero: the schedule's init block zeroes
    C first). Tiles: C 0 .. rm rn - 1, A after them, B last.

    planes == 2 (int16 data, rm == 1): A's channel block 2 cb holds the high bytes of x + 32768, 2 cb + 1 the low
    ones, and C = the sum over A's blocks p of A[p] x (256 for even p, else 1) x B[p // 2]: each plane
    accumulates in its own tiles (the high ones first), and C = (high << 8) + low at the end, the low sums
    through a scratch buffer."""
    m = ROWS * rm
    px, blocks = (m - 1) * sw + 4, planes * cib
    shapes = dict(a=(blocks, kh, px, 16), b=(rn, cib, kh, 16, COLS, 4), c=(rn, 1, m, COLS))

    def weighed(a, vcp):        # a product's plane weight (none for 8-bit data)
        return a if planes == 1 else a * T.if_then_else(vcp % 2 == 0, 256, 1)

    def block(vcp):             # the weight's channel block of A's block vcp
        return vcp if planes == 1 else vcp // 2

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, shapes["a"], "uint8", offset_factor=1)
        B = T.match_buffer(b, shapes["b"], "int8", offset_factor=1)
        C = T.match_buffer(c, shapes["c"], "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:rn, 0:1, 0:m, 0:COLS], A[0:blocks, 0:kh, 0:px, 0:16],
                    B[0:rn, 0:cib, 0:kh, 0:16, 0:COLS, 0:4])
            T.writes(C[0:rn, 0:1, 0:m, 0:COLS])
            if rn == 1:
                for i, j, cp, ky, q, t in T.grid(m, COLS, blocks, kh, 16, 4):
                    with T.sblock("update"):
                        vi, vj, vcp, vky, vq, vt = T.axis.remap("SSRRRR", [i, j, cp, ky, q, t])
                        C[0, 0, vi, vj] = C[0, 0, vi, vj] + weighed(T.cast(
                            A[vcp, vky, vi * sw + vq // 4, vq % 4 * 4 + vt], "int32"), vcp) * \
                            T.cast(B[0, block(vcp), vky, vq, vj, vt], "int32")
            else:
                for o, i, j, cp, ky, q, t in T.grid(rn, m, COLS, blocks, kh, 16, 4):
                    with T.sblock("update"):
                        vo, vi, vj, vcp, vky, vq, vt = T.axis.remap("SSSRRRR", [o, i, j, cp, ky, q, t])
                        C[vo, 0, vi, vj] = C[vo, 0, vi, vj] + weighed(T.cast(
                            A[vcp, vky, vi * sw + vq // 4, vq % 4 * 4 + vt], "int32"), vcp) * \
                            T.cast(B[vo, block(vcp), vky, vq, vj, vt], "int32")

    acc = planes * rm * rn
    ntiles, a0, b0 = acc + planes * rm + rn, acc, acc + planes * rm

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa0 = T.int32()
        sa1 = T.int32()
        sa2 = T.int32()
        sb = T.int32()
        sc0 = T.int32()
        sc1 = T.int32()
        sc2 = T.int32()
        A = T.match_buffer(a, shapes["a"], "uint8", offset_factor=1, strides=[sa0, sa1, sa2, 1])
        B = T.match_buffer(b, shapes["b"], "int8", offset_factor=1, strides=[sb, kh * 1024, 1024, 64, 4, 1])
        C = T.match_buffer(c, shapes["c"], "int32", offset_factor=1, strides=[sc0, sc1, sc2, 1])
        with T.sblock("root"):
            T.reads(C[0:rn, 0:1, 0:m, 0:COLS], A[0:blocks, 0:kh, 0:px, 0:16],
                    B[0:rn, 0:cib, 0:kh, 0:16, 0:COLS, 0:4])
            T.writes(C[0:rn, 0:1, 0:m, 0:COLS])
            low = T.alloc_buffer((rn * (planes - 1), m, COLS), "int32", scope="global")
            _configure(ntiles)
            for t in T.unroll(acc):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilezero", T.Cast("int8", t)))
            for cb in T.serial(cib):
                for ky in T.serial(kh):
                    for g in T.unroll(planes):
                        for r in T.unroll(rm):
                            T.evaluate(T.call_llvm_intrin(
                                "void", "llvm.x86.tileloadd64", T.Cast("int8", a0 + g * rm + r),
                                T.address_of(A[cb * planes + g, ky, r * ROWS * sw, 0]), T.Cast("int64", sa2 * sw)))
                    for o in T.unroll(rn):
                        T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.Cast("int8", b0 + o),
                                                      T.address_of(B[o, cb, ky, 0, 0, 0]), T.int64(64)))
                    for g in T.unroll(planes):
                        for r in T.unroll(rm):
                            for o in T.unroll(rn):
                                T.evaluate(T.call_llvm_intrin(
                                    "void", "llvm.x86.tdpbusd", T.Cast("int8", (g * rm + r) * rn + o),
                                    T.Cast("int8", a0 + g * rm + r), T.Cast("int8", b0 + o)))
            for r in T.unroll(rm):
                for o in T.unroll(rn):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilestored64", T.Cast("int8", r * rn + o),
                                                  T.address_of(C[o, 0, r * ROWS, 0]), T.Cast("int64", sc2 * 4)))
            if planes == 2:
                for o in T.unroll(rn):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilestored64", T.Cast("int8", rn + o),
                                                  T.address_of(low[o, 0, 0]), T.int64(COLS * 4)))
            T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilerelease"))
            if planes == 2:
                for o, i in T.grid(rn, m):
                    for j in T.vectorized(COLS):
                        C[o, 0, i, j] = T.shift_left(C[o, 0, i, j], 8) + low[o, i, j]
    return desc, impl


def register_conv(rm: int, rn: int, cib: int, kh: int, stride: int, planes: int = 1) -> str:
    """The conv's tensor intrinsic: rm 16-pixel tiles x rn 16-channel blocks over cib input channel blocks and
    kh kernel rows, pixels `stride` apart; planes 2: int16 data's two byte planes (rm 1)."""
    request_amx()
    name = conv_intrin_name(rm, rn, cib, kh, stride, planes)
    if s_tir.TensorIntrin.get(name, allow_missing=True) is None:
        s_tir.TensorIntrin.register(name, *_conv_intrin(rm, rn, cib, kh, stride, planes))
    return name


def rows_intrin_name(rn: int, k: int) -> str:
    return f"dyc_amx_rows_u8i8i32_2x{rn}_k{k}"


def _rows_intrin(rn: int, k: int):
    """C (2 groups, 16 rows, rn 16-column blocks, 16) += A (2, 16, k) times B (rn, k/4, 16, 4): the matmul
    intrinsic's 2 x rn block with its rows as 2 groups of 16 (qconv1x1_amx.py: int16 data's high and low byte
    planes, or two 16-pixel tiles). rn == 1 has no block axis, as in _conv_intrin."""
    kq = k // 4
    shapes = dict(a=(2, ROWS, k), b=(rn, kq, COLS, 4), c=(2, ROWS, rn, COLS))

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, shapes["a"], "uint8", offset_factor=1)
        B = T.match_buffer(b, shapes["b"], "int8", offset_factor=1)
        C = T.match_buffer(c, shapes["c"], "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:2, 0:ROWS, 0:rn, 0:COLS], A[0:2, 0:ROWS, 0:k], B[0:rn, 0:kq, 0:COLS, 0:4])
            T.writes(C[0:2, 0:ROWS, 0:rn, 0:COLS])
            if rn == 1:
                for g, i, j, q, t in T.grid(2, ROWS, COLS, kq, 4):
                    with T.sblock("update"):
                        vg, vi, vj, vq, vt = T.axis.remap("SSSRR", [g, i, j, q, t])
                        C[vg, vi, 0, vj] = C[vg, vi, 0, vj] + T.cast(A[vg, vi, vq * 4 + vt], "int32") * \
                            T.cast(B[0, vq, vj, vt], "int32")
            else:
                for g, i, o, j, q, t in T.grid(2, ROWS, rn, COLS, kq, 4):
                    with T.sblock("update"):
                        vg, vi, vo, vj, vq, vt = T.axis.remap("SSSSRR", [g, i, o, j, q, t])
                        C[vg, vi, vo, vj] = C[vg, vi, vo, vj] + T.cast(A[vg, vi, vq * 4 + vt], "int32") * \
                            T.cast(B[vo, vq, vj, vt], "int32")

    ntiles, a0, b0 = 3 * rn + 2, 2 * rn, 2 * rn + 2

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa0 = T.int32()
        sa1 = T.int32()
        sb = T.int32()
        sc0 = T.int32()
        sc1 = T.int32()
        sc2 = T.int32()
        A = T.match_buffer(a, shapes["a"], "uint8", offset_factor=1, strides=[sa0, sa1, 1])
        B = T.match_buffer(b, shapes["b"], "int8", offset_factor=1, strides=[sb, 64, 4, 1])
        C = T.match_buffer(c, shapes["c"], "int32", offset_factor=1, strides=[sc0, sc1, sc2, 1])
        with T.sblock("root"):
            T.reads(C[0:2, 0:ROWS, 0:rn, 0:COLS], A[0:2, 0:ROWS, 0:k], B[0:rn, 0:kq, 0:COLS, 0:4])
            T.writes(C[0:2, 0:ROWS, 0:rn, 0:COLS])
            _configure(ntiles)
            for t in T.unroll(2 * rn):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilezero", T.Cast("int8", t)))
            for q in T.serial(k // DEPTH):
                for r in T.unroll(2):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.Cast("int8", a0 + r),
                                                  T.address_of(A[r, 0, q * DEPTH]), T.Cast("int64", sa1)))
                for o in T.unroll(rn):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.Cast("int8", b0 + o),
                                                  T.address_of(B[o, q * (DEPTH // 4), 0, 0]), T.int64(64)))
                for r in T.unroll(2):
                    for o in T.unroll(rn):
                        T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tdpbusd", T.Cast("int8", r * rn + o),
                                                      T.Cast("int8", a0 + r), T.Cast("int8", b0 + o)))
            for r in T.unroll(2):
                for o in T.unroll(rn):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilestored64", T.Cast("int8", r * rn + o),
                                                  T.address_of(C[r, 0, o, 0]), T.Cast("int64", sc1 * 4)))
            T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilerelease"))
    return desc, impl


def register_rows(rn: int, k: int) -> str:
    """The rows intrinsic: 2 groups of 16 rows x rn 16-column blocks over a reduction of k (a multiple of 64)."""
    request_amx()
    name = rows_intrin_name(rn, k)
    if s_tir.TensorIntrin.get(name, allow_missing=True) is None:
        s_tir.TensorIntrin.register(name, *_rows_intrin(rn, k))
    return name
