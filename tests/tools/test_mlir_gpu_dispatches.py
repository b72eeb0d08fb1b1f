"""benchmarks/mlir_gpu_dispatches.py reads IREE's lowering configurations of a cuda build (no GPU needed): each
contraction's multiply-adds from its dispatch name, and the kind of config IREE chose for it."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("iree.compiler")

from benchmarks.mlir_gpu_dispatches import KINDS, configurations, dispatches, kind, shares  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import elementwise as ew  # noqa: E402
from compiler.ops import linalg, nn  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402


def _net(dt: DType) -> Graph:
    """A 3x3 conv 64 -> 64 on 1x64x32x32, ReLU, a 2x2 max pool."""
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.add_input("x", TensorType((1, 64, 32, 32), dt))
    w = g.const((rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(dt.numpy))
    y = g.add1(ew.relu, [g.add1(linalg.conv, [x, w], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))])
    g.outputs = [g.add1(nn.max_pool, [y], kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0), dilations=(1, 1))]
    return g


@pytest.mark.parametrize("dt", [DType.F16, DType.F32])
def test_each_conv_dispatch_has_its_multiply_adds_and_the_kind_of_config_iree_chose(dt):
    found = dispatches(configurations(_net(dt), Target.parse("cuda -arch=sm_90")))
    convs = [f for f in found if f[2]]
    assert len(convs) == 1 and convs[0][2] == 64 * 32 * 32 * 64 * 3 * 3       # the pool carries none
    assert len(found) >= 2 and all(k in KINDS for _, k, _ in found)
    # IREE 3.13 has NVIDIA mma for f16 (mma.sync, WMMA) and none for f32
    assert convs[0][1] == ("tensor cores" if dt is DType.F16 else "1 per thread")
    assert shares(found)[convs[0][1]] == 1.0


def test_kind_reads_the_tile_of_a_thread():
    assert kind(None) == "other"
    assert kind("mma_kind = #iree_gpu.mma_layout<NV_MMA_SYNC_F32_16x8x16_F16>, workgroup = [1, 64, 64, 0]") \
        == "tensor cores"
    assert kind("reduction = [0, 0, 32], thread = [1, 16, 0], workgroup = [32, 128, 1]") == "thread tile"
    assert kind("reduction = [0, 0, 0, 0, 1, 3, 3], thread = [1, 1, 1, 1, 0, 0, 0], workgroup = [1, 2, 4, 4, 0, 0, 0]") \
        == "1 per thread"
