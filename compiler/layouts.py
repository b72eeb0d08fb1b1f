"""Which channel-blocked layouts (NCHW{b}c) the CPU kernels read and write: one table that the layout
pass decides with and the TVM kernels build for. No TVM here, so passes can use it anywhere."""
from __future__ import annotations

BLOCKS = (16, 8, 4, 2)
INT_OUT_BLOCK = 16          # the VNNI conv computes 16 output channels per vector (see int_out_block)


def best_block(c: int, min_block: int = 2) -> int:
    """The largest of 16/8/4/2 dividing c (at least min_block), or 0: plain NCHW."""
    for b in BLOCKS:
        if b >= min_block and c % b == 0:
            return b
    return 0


def choose_blocks(ci: int, co: int, groups: int = 1) -> tuple[int, int]:
    """(in_block, out_block) of an fp32 conv: the largest block dividing the channel count, 0 (plain NCHW)
    when none does (e.g. the 3-channel image input). For grouped convs the blocks also divide the per-group
    channel counts when possible so the fast dense kind applies; depthwise convs get in_block == out_block."""
    if groups == 1:
        return best_block(ci), best_block(co)
    cig, cog = ci // groups, co // groups
    if cig == 1 and cog == 1:  # depthwise
        b = best_block(ci)
        return b, b
    for b_in in BLOCKS:
        if cig % b_in == 0:
            for b_out in BLOCKS:
                if cog % b_out == 0:
                    return b_in, b_out
    return best_block(ci), best_block(co)


def int_in_block(ci: int) -> int:
    """The VNNI conv's input block: 16, 8 or 4 dividing ci rounded up to a multiple of 4 (the padded
    channels hold the data's zero point)."""
    cip = -(-ci // 4) * 4
    return next(b for b in (16, 8, 4) if cip % b == 0)


def int_out_block(co: int) -> int:
    """The VNNI conv's output block: 16 when co % 16 == 0; else 8 when co % 8 == 0 (each 16-lane vector is
    written as two 8-channel halves, blocks 2o and 2o + 1, the last half dropped when co % 16 == 8: the
    24 / 40 / 72 / 120-channel layers of MobileNets stay blocked); else 0, plain NCHW. The int8 depthwise
    conv and the integer global sum read and write the same 16 or 8 blocks."""
    if co % INT_OUT_BLOCK == 0:
        return INT_OUT_BLOCK
    return 8 if co % 8 == 0 else 0


# -- the packed conv weights ----------------------------------------------------------------------------
# The CPU conv kernel reads its OIHW weight (I = ci / groups) in one of three packed forms, with ob the
# output-channel block of the accumulators and ib the input block:
#   dense     (co/ob, I/ib, kh, kw, ib, ob)    groups == 1, or groups whose channel counts the blocks divide
#   depthwise (co/ob, kh, kw, ob)              one input and one output channel per group
#   generic   (co/ob, I, kh, kw, ob)           any other grouping
# and the int8 VNNI conv (groups == 1) in
#   vnni      (cop/16, cip/ib, kh, kw, ib/4, 16, 4), cop = co and cip = ci rounded up to 16 and 4, the padding
#             zero: element [o, cb, r, s, q, j, t] = w[16 o + j, ib cb + 4 q + t, r, s]
# and the AMX conv (groups == 1, kw <= 4, 16-channel input blocks; 8-bit or int16 data) in
#   vnni_amx  (cop/16, cip/16, kh, 16, 16, 4), cip = ci rounded up to 16: per (output block, input block, kernel
#             row) one 64 x 16 AMX B tile, reduction element k = 4 q + t = 16 s + c (taps s >= kw zero):
#             element [o, cb, r, q, j, t] = w[16 o + j, 16 cb + k % 16, r, k // 16]
# and the AMX 1x1 conv (int16 data, a matmul over the pixels) in
#   vnni_rows (cop/16, kp/4, 16, 4), kp = ci rounded up to 64: element [o, q, j, t] = w[16 o + j, 4 q + t, 0, 0]
_TO_OIHW = {"dense": (0, 5, 1, 4, 2, 3), "depthwise": (0, 3, 1, 2), "generic": (0, 4, 1, 2, 3),
            "vnni": (0, 5, 1, 4, 6, 2, 3)}


def conv_weight_form(ci: int, co: int, groups: int, in_block: int, out_block: int) -> tuple[str, int, int]:
    """(form, ib, ob) of the packed weight of an fp32 conv whose data is in `in_block` blocks and whose
    result is in `out_block` blocks (0: plain). A plain-NCHW result still accumulates in blocks of the
    largest 16/8/4/2 dividing the (per-group) output channels."""
    cig, cog = ci // groups, co // groups
    depthwise = groups > 1 and cig == 1 and cog == 1
    ob = out_block or (best_block(cog, 1) if groups > 1 and not depthwise else best_block(co, 1)) or 1
    ib = in_block or 1
    if groups == 1:
        return "dense", ib, ob
    if depthwise:
        return "depthwise", ib, ob
    return ("dense" if cig % ib == 0 and cog % ob == 0 else "generic"), ib, ob


def pack_conv_weight(w, form: str, ib: int, ob: int):
    """OIHW weight -> its packed `form` (a contiguous copy)."""
    import numpy as np
    co, cig, kh, kw = w.shape
    if form == "dense":
        p = w.reshape(co // ob, ob, cig // ib, ib, kh, kw).transpose(0, 2, 4, 5, 3, 1)
    elif form == "depthwise":
        p = w.reshape(co // ob, ob, kh, kw).transpose(0, 2, 3, 1)
    else:
        p = w.reshape(co // ob, ob, cig, kh, kw).transpose(0, 2, 3, 4, 1)
    return np.ascontiguousarray(p)


def pack_vnni_conv_weight(w, ib: int, depth: int = 4):
    """OIHW int8 weight -> the VNNI conv's packed form (zero padding to cop and cip); `depth` 2 gives the
    int16 form the int16-activation conv reads (cop/16, cip/ib, kh, kw, ib/2, 16, 2), element
    [o, cb, r, s, q, j, t] = w[16 o + j, ib cb + 2 q + t, r, s] (vpdpwssd's pairs)."""
    import numpy as np
    co, ci, kh, kw = w.shape
    cop, cip = -(-co // 16) * 16, -(-ci // 4) * 4
    wp = np.zeros((cop, cip, kh, kw), np.int8 if depth == 4 else np.int16)
    wp[:co, :ci] = w
    p = wp.reshape(cop // 16, 16, cip // ib, ib // depth, depth, kh, kw).transpose(0, 2, 5, 6, 3, 1, 4)
    return np.ascontiguousarray(p)


def pack_amx_conv_weight(w):
    """OIHW int8 weight (kw <= 4) -> the AMX conv's vnni_amx form (zero padding to cop, cip and 4 taps)."""
    import numpy as np
    co, ci, kh, kw = w.shape
    cop, cip = -(-co // 16) * 16, -(-ci // 16) * 16
    wp = np.zeros((cop, cip, kh, 4), np.int8)
    wp[:co, :ci, :, :kw] = w
    p = wp.reshape(cop // 16, 16, cip // 16, 16, kh, 4).transpose(0, 2, 4, 5, 3, 1)     # [o, cb, r, s, c, j]
    p = p.reshape(cop // 16, cip // 16, kh, 16, 4, 16).transpose(0, 1, 2, 3, 5, 4)      # k = 16 s + c = 4 q + t
    return np.ascontiguousarray(p)


def pack_rows_conv_weight(w):
    """OIHW int8 1x1 weight -> the AMX 1x1 conv's vnni_rows form (zero padding to cop and a multiple of 64)."""
    import numpy as np
    co, ci = w.shape[:2]
    cop, kp = -(-co // 16) * 16, -(-ci // 64) * 64
    wp = np.zeros((kp, cop), np.int8)
    wp[:ci, :co] = w.reshape(co, ci).T
    return np.ascontiguousarray(wp.reshape(kp // 4, 4, cop // 16, 16).transpose(2, 0, 3, 1))


def unpack_amx_conv_weight(p, channels: tuple[int, ...]):
    """The vnni_amx form -> OIHW; `channels` (co, ci, kw)."""
    import numpy as np
    o, cb, kh = p.shape[:3]
    w = p.transpose(0, 1, 2, 3, 5, 4).reshape(o, cb, kh, 4, 16, 16).transpose(0, 5, 1, 4, 2, 3)
    w = w.reshape(o * 16, cb * 16, kh, 4)
    return np.ascontiguousarray(w[:channels[0], :channels[1], :, :channels[2]])


# A matmul's constant weight B (k, n) is packed as its CPU kernel reads it:
#   panels      (n/nb, k, nb), nb the panel width (matmul_panel_width): the fp32 matmul's column panels
#   vnni_matmul (np/16, kp/4, 16, 4), kp and np = k and n rounded up to 4 and 16, the padding zero:
#               element [o, q, j, t] = w[4 q + t, 16 o + j] (the int8 VNNI matmul, weight zero point 0)
#   vnni_matmul_int4 (np/64, kp/8, 4, 16, 4) uint8, kp and np = k and n rounded up to 8 and 64: byte
#               [c, p, b, j, t] holds w[8 p + t, 64 c + 16 b + j] in its low nibble and w[8 p + 4 + t, ...] in
#               its high one, two's complement (the int4 VNNI matmul, tvm_kernels/qmatmul_int4.py): half the
#               bytes of vnni_matmul
MATMUL_FORMS = ("panels", "vnni_matmul", "vnni_matmul_int4")


def matmul_panel_width(n: int) -> int:
    """Column-panel width of the fp32 matmul's packed B: 32 (two zmm) when n allows, else 16/8/4/2/1."""
    return next(nb for nb in (32, 16, 8, 4, 2, 1) if n % nb == 0)


def pack_matmul_weight(w, form: str):
    """(k, n) weight -> its packed `form` (a contiguous copy)."""
    import numpy as np
    k, n = w.shape
    if form == "panels":
        nb = matmul_panel_width(n)
        return np.ascontiguousarray(w.reshape(k, n // nb, nb).transpose(1, 0, 2))
    if form == "vnni_matmul_int4":
        kp, np_ = -(-k // 8) * 8, -(-n // 64) * 64
        wp = np.zeros((kp, np_), np.int16)
        wp[:k, :n] = np.asarray(w, np.int16)
        v = (wp & 0xF).reshape(kp // 8, 2, 4, np_ // 64, 4, 16)       # [p, half, t, c, b, j]
        byte = (v[:, 0] | (v[:, 1] << 4)).astype(np.uint8)           # [p, t, c, b, j]
        return np.ascontiguousarray(byte.transpose(2, 0, 3, 4, 1))   # [c, p, b, j, t]
    kp, np_ = -(-k // 4) * 4, -(-n // 16) * 16
    wp = np.zeros((kp, np_), np.int8)
    wp[:k, :n] = w
    return np.ascontiguousarray(wp.reshape(kp // 4, 4, np_ // 16, 16).transpose(2, 0, 3, 1))


def unpack_matmul_weight(p, form: str, channels: tuple[int, ...] = ()):
    """A packed matmul weight -> (k, n) (`channels`: (k, n) of a vnni_matmul weight)."""
    import numpy as np
    if form == "panels":
        return np.ascontiguousarray(p.transpose(1, 0, 2).reshape(p.shape[1], p.shape[0] * p.shape[2]))
    if form == "vnni_matmul_int4":
        c, pk = p.shape[:2]
        b = np.asarray(p, np.uint8).transpose(1, 4, 0, 2, 3).astype(np.int16)   # [p, t, c, b, j]
        halves = [((b & 0xF) ^ 8) - 8, ((b >> 4) ^ 8) - 8]
        w = np.stack(halves, axis=1).reshape(pk * 8, c * 64)                 # [p, half, t] x [c, b, j]
        return np.ascontiguousarray(w[:channels[0], :channels[1]].astype(np.int8))
    w = p.transpose(1, 3, 0, 2).reshape(p.shape[1] * 4, p.shape[0] * 16)
    return np.ascontiguousarray(w[:channels[0], :channels[1]])


def unpacked_conv_weight_shape(shape: tuple[int, ...], form: str,
                               channels: tuple[int, ...] = ()) -> tuple[int, int, int, int]:
    """The OIHW shape a packed weight of `shape` holds (`channels`: (co, ci) of a vnni or vnni_rows weight, (co, ci,
    kw) of a vnni_amx one)."""
    if form == "vnni":
        return channels[0], channels[1], shape[2], shape[3]
    if form == "vnni_amx":
        return channels[0], channels[1], shape[2], channels[2]
    if form == "vnni_rows":
        return channels[0], channels[1], 1, 1
    if form == "dense":
        return shape[0] * shape[5], shape[1] * shape[4], shape[2], shape[3]
    if form == "depthwise":
        return shape[0] * shape[3], 1, shape[1], shape[2]
    return shape[0] * shape[4], shape[1], shape[2], shape[3]


def unpack_conv_weight(p, form: str, channels: tuple[int, ...] = ()):
    """A packed weight -> OIHW (the inverse of pack_conv_weight, pack_vnni_conv_weight, pack_amx_conv_weight,
    pack_rows_conv_weight)."""
    import numpy as np
    if form == "vnni_amx":
        return unpack_amx_conv_weight(p, channels)
    if form == "vnni_rows":
        w = p.transpose(1, 3, 0, 2).reshape(p.shape[1] * 4, p.shape[0] * 16)[:channels[1], :channels[0]]
        return np.ascontiguousarray(w.T.reshape(channels[0], channels[1], 1, 1))
    if form == "vnni":
        cop, cip = p.shape[0] * 16, p.shape[1] * p.shape[4] * 4
        w = p.transpose(_TO_OIHW[form]).reshape(cop, cip, p.shape[2], p.shape[3])
        return np.ascontiguousarray(w[:channels[0], :channels[1]])
    return np.ascontiguousarray(p.transpose(_TO_OIHW[form]).reshape(unpacked_conv_weight_shape(p.shape, form)))
