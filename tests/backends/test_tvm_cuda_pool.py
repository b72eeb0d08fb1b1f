"""Max pools on the GPU's blocked layout (compiler/backends/tvm_fused/cuda.emit_pool, tvm_kernels/pool.pool2d_te with
`unrolled`): each output's window maximum is one expression, a thread per output, where dlight's GPU reduction
schedule gave every output a block of 256 threads for its 9 or 25 values; an elementwise consumer joins the pool's
kernel, but a pool that follows a pool (YOLOv8n's SPPF) stays a kernel of its own (FuseOps inlining it would load its
window's windows).

Checked without a GPU: the launches and each pool kernel's grid (threads = outputs: benchmarks/gpu_grids.py) in the
cuda build; the GPU
program built for the CPU (tvm_cuda.build_for_cpu) equals the interpreter, integer-only INT8 bit for bit, FP16 within
its convs' float32 summation order."""
from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from benchmarks import gpu_grids  # noqa: E402
from compiler import interp  # noqa: E402
from compiler.api import final_ir  # noqa: E402
from compiler.backends import tvm_cuda  # noqa: E402
from compiler.backends.tvm import BACKEND  # noqa: E402
from compiler.target import Target  # noqa: E402

TARGET = "cuda -arch=sm_90"


class _Pools(nn.Module):
    """A stem's 3 x 3 / 2 max pool, then an SPPF: three 5 x 5 / 1 pools in a row, concatenated."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.sppf = nn.MaxPool2d(5, 1, 2)
        self.head = nn.Conv2d(64, 16, 1)

    def forward(self, x):
        x = self.pool(torch.relu(self.stem(x))) * 0.5 + 0.25     # an elementwise consumer FuseOps joins to the pool
        y = torch.relu(self.mid(x))
        a = self.sppf(y)
        b = self.sppf(a)
        c = self.sppf(b)
        return self.head(torch.cat([y, a, b, c], 1))


def _final(mode: str):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, 3, 20, 20)).astype(np.float32) for _ in range(3)]
    kw = dict(quantize="int8", integer_only=True, calibration=[[x] for x in xs[1:]]) if mode == "int8" \
        else dict(precision="fp16")
    g, _ = final_ir(_Pools().eval(), TARGET, example_inputs=(torch.from_numpy(xs[0]),), **kw)
    return g, xs[0]


@pytest.mark.parametrize("mode", ["int8", "fp16"])
def test_blocked_max_pools_are_a_thread_per_output_and_exact(mode):
    g, x = _final(mode)
    exe = BACKEND.build(g, Target.parse(TARGET))
    launches = exe.launches()
    pools = [k for k in launches if "max_pool2d" in k]
    assert len(pools) == 4 and all(k.count("max_pool2d") == 1 for k in pools), launches     # none fused into another
    assert pools[0].startswith("fused_max_pool2d"), launches      # the stem pool with its elementwise consumer
    grids = {k: (blocks, threads, written) for k, blocks, threads, written in gpu_grids.launches(exe)}
    for k in pools:             # a thread per output: (2, 1, 10, 10, 16), the stem's 20 x 20 halved
        blocks, threads, written = grids[k]
        assert written == 2 * 16 * 10 * 10 and blocks == -(-written // threads), (k, grids[k])
    got = tvm_cuda.build_for_cpu(g, Target.parse(TARGET))(x)
    for a, b in zip(got, interp.run(g, x)):
        if mode == "int8":
            np.testing.assert_array_equal(a, b)
        else:                   # the float16 convs' float32 sums in another order: an ulp here and there
            np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=2e-3, atol=1e-3)
