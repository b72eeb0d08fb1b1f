"""Short softmax rows on cuda (compiler/backends/tvm_lower/nn.py `_short_softmax_te`): a row of at most SHORT_ROW values
is read whole by each output, a thread per output with no reduction (no shared memory), where dlight's reduction
schedule gave every row a block of 256 threads (YOLOv8n's DFL: rows of 16). float16 rounds step by step as the
reference does. Checked without a GPU: the cuda build's source, and the GPU program built for the CPU against the
interpreter (within float rounding: the row sum's order and the CPU's exp differ from numpy's)."""
from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from compiler import interp  # noqa: E402
from compiler.backends import tvm_cuda  # noqa: E402
from compiler.backends.tvm import BACKEND  # noqa: E402
from compiler.backends.tvm_lower.nn import SHORT_ROW  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import nn  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402

TARGET = Target.parse("cuda -arch=sm_90")


@pytest.mark.parametrize("shape,axis,dtype", [
    ((2, 4, 16, 50), 2, DType.F32),       # YOLOv8n's DFL: 16 bins along axis 1 of (batch, 4, 16, anchors)
    ((2, 4, 16, 50), 2, DType.F16),
    ((30, 32), -1, DType.F32),
    ((30, 7), -1, DType.F16),
    ((6, 33), -1, DType.F32),             # a row longer than SHORT_ROW: dlight's reduction, shared memory
])
def test_short_softmax_rows_are_a_thread_per_output(shape, axis, dtype):
    g = Graph()
    x = g.add_input("x", TensorType(shape, dtype))
    g.outputs = [g.add1(nn.softmax, [x], axis=axis)]
    src = BACKEND.build(g, TARGET).source("cuda")
    assert ("__shared__" in src) == (shape[axis] > SHORT_ROW)
    v = (np.random.default_rng(0).standard_normal(shape) * 3).astype(dtype.numpy)
    got = tvm_cuda.build_for_cpu(g, TARGET)(v)[0]
    want = interp.run(g, v)[0]
    assert got.dtype == want.dtype
    tol = 2e-3 if dtype is DType.F16 else 2e-6
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=tol, atol=tol)
