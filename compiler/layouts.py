"""Which channel-blocked layouts (NCHW{b}c) the CPU kernels read and write: one table that the layout
pass decides with and the TVM kernels build for. No TVM here, so passes can use it anywhere."""
from __future__ import annotations

BLOCKS = (16, 8, 4, 2)
INT_OUT_BLOCK = 16          # the VNNI conv writes 16-channel blocks (when co % 16 == 0)


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
    return INT_OUT_BLOCK if co % INT_OUT_BLOCK == 0 else 0
