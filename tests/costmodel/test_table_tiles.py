"""An int8 conv whose write-back ends in an activation table is offered only tiles with at least two output-channel
blocks and 12 accumulators (costmodel.features._table_tile: measured 2x faster there), its default tile included;
where no tile qualifies every tile stays a candidate. Without a table nothing changes."""
from __future__ import annotations

import pytest

pytest.importorskip("tvm")

from compiler.backends.tvm_kernels import qconv2d as K  # noqa: E402
from costmodel import features as F  # noqa: E402
from costmodel import policy  # noqa: E402

RQ = K.Requant(0, 60, 0, 255, "uint8", "hi")


def _spec(ci: int, co: int, h: int, table: str | None) -> K.QConvSpec:
    return K.QConvSpec(1, ci, h, h, co, 1, 1, (1, 1), (0,) * 4, (1, 1), "int8", 0, K.choose_in_block(ci), RQ,
                       None, None, None, None, table)


@pytest.mark.parametrize("ci,co,h", [(16, 96, 112), (24, 144, 56), (80, 480, 14)])
def test_a_table_write_back_gets_tiles_of_two_channel_blocks_and_12_accumulators(ci, co, h):
    plain, tabled = F.candidate_tiles(_spec(ci, co, h, None)), F.candidate_tiles(_spec(ci, co, h, "uint8"))
    assert any(t[0] == 1 for t in plain)                              # the model may pick one channel block ...
    assert tabled and all(t[0] >= 2 and t[0] * t[1] >= 12 for t in tabled)
    assert set(tabled) <= set(plain)
    tile, _ = policy.choose(_spec(ci, co, h, "uint8"), "llvm -mcpu=sapphirerapids")
    assert tile in tabled                                             # ... not where a table follows


def test_without_a_qualifying_tile_every_tile_stays():
    # 72 output channels: 5 blocks of 16 (padded), width 56: no tile has >= 2 blocks and >= 12 accumulators
    spec = _spec(24, 72, 56, "uint8")
    assert F.candidate_tiles(spec) == F.candidate_tiles(_spec(24, 72, 56, None))
