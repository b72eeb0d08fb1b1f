"""The GPU's integer attention (compiler/backends/tvm_kernels/cuda_qattention.py): on cuda, q.attention is one kernel
(one thread per query, the key tiles staged in shared memory, the running max, sum and int64 numerator in registers,
the op's key blocks walked exactly as compiler.ops.qattention's reference walks them).

Its arithmetic is checked without a GPU: the same TVMScript built with serial loops, global buffers and __dp4a
written out runs on the CPU, bit-exact with the op's reference (blocks of 1, 16, 64 and one wider than a staged tile,
keys the block does not divide, keep masks broadcast along the batch, the rows or neither, int8 and uint8 outputs);
the GPU program of a graph (tvm_cuda.build_for_cpu) equals the interpreter; the cuda build is that one kernel, and
ptxas assembles it without spills."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from compiler import interp  # noqa: E402
from compiler.api import lower_kernels  # noqa: E402
from compiler.backends import tvm_cuda  # noqa: E402
from compiler.backends.tvm_kernels.cuda_qattention import make_cuda_qattention  # noqa: E402
from compiler.backends.tvm_kernels.qattention import QAttentionSpec  # noqa: E402
from compiler.ir import Node  # noqa: E402
from compiler.ops import ivit, qattention  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType  # noqa: E402
from passes.qattention import fuse_integer_attention  # noqa: E402
from tests.backends.kernel_ir import build  # noqa: E402
from tests.ops.qattention_chain import S_QKV, chain, inputs  # noqa: E402
from tests.ptxas import assemble, usage  # noqa: E402

TARGET = Target.parse("cuda -arch=sm_90")
U8 = {"dtype": DType.U8, "zero_point": 128, "qmin": 0, "qmax": 255}
# out = t = (A << 16) // L itself: every floor division (of a negative numerator too) shows in the output
T_ITSELF = {"dtype": DType.I32, "multiplier": 1 << 30, "shift": 30, "qmin": -2**31, "qmax": 2**31 - 1}


def _attrs(lk: int, d: int, block: int, **over) -> dict:
    """q.attention's attributes as fuse_integer_attention sets them for lk keys of depth d."""
    return {**fuse_integer_attention(chain(1, 1, 1, lk, d)).nodes[0].attrs, "block": block, **over}


def _run_kernel(a: dict, q, k, v, keep, tq: int) -> np.ndarray:
    """make_cuda_qattention(gpu=False) on the CPU: q, k, v (bh, l, d) int8, keep (mb, mr, lk) bool or None."""
    bh, lq, d = q.shape
    lk, dv = v.shape[1:]
    mb, mr = keep.shape[:2] if keep is not None else (0, 0)
    out = a["dtype"].numpy
    spec = QAttentionSpec(bh, lq, lk, d, dv, tq, a["block"], a["qk_multiplier"], a["qk_shift"], a["qk_qmin"],
                          a["qk_qmax"], a["fill"], ivit.exp_unit(a["scale"]), a["n"], a["multiplier"], a["shift"],
                          a["zero_point"], a["qmin"], a["qmax"], np.dtype(out).name, mb, mr)
    f = make_cuda_qattention(spec, gpu=False)
    mod = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target="llvm")
    keep = np.ones((1, 1, lk), bool) if keep is None else keep
    res = tvm.runtime.empty((bh, lq, dv), np.dtype(out).name)
    mod["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in (q, k, v, keep)], res)
    return res.numpy()


def _data(bh: int, lq: int, lk: int, d: int, dv: int, mask: str | None, seed: int = 0, sharp: int = 1):
    rng = np.random.default_rng(seed)

    def i8(*shape, gain=1):
        return np.clip(np.rint(rng.standard_normal(shape) / S_QKV / 1.5 * gain), -128, 127).astype(np.int8)
    keep = None
    if mask == "batch":                          # a padding mask: per sequence, along the keys
        keep = np.ones((bh, 1, lk), bool)
        keep[1:, :, -max(1, lk // 4):] = False
    elif mask == "rows":                         # a causal mask shared by every head
        keep = np.tril(np.ones((lq, lk), bool), lk - lq)[None]
    elif mask == "full":
        keep = rng.random((bh, lq, lk)) < 0.7
    return i8(bh, lq, d, gain=sharp), i8(bh, lk, d), i8(bh, lk, dv), keep


@pytest.mark.parametrize("bh,lq,lk,d,dv,block,tq,mask,out", [
    (2, 16, 40, 32, 32, 16, 8, None, {}),             # 40 keys in blocks of 16: a short last block
    (6, 20, 36, 8, 16, 1, 4, "batch", {}),            # blocks of 1 key, 9 to a staged tile; d != dv
    (4, 32, 100, 64, 64, 64, 32, "rows", U8),         # the default block, 100 keys, a causal mask, uint8 out
    (2, 16, 250, 16, 8, 100, 16, "full", {}),         # an op block wider than the staged tile (64 + 36 keys)
    (3, 8, 19, 6, 6, 4, 8, None, U8),                 # d, dv not multiples of 4 (q, K words padded)
    (2, 1, 128, 64, 64, 64, 1, "batch", {}),          # one query
    (2, 64, 64, 64, 64, 16, 16, None, {}),            # 4 query blocks, 4 op blocks to a staged tile
    (4, 32, 200, 32, 32, 16, 32, "batch", T_ITSELF),  # t unrounded: floor, not truncating, divisions
    (2, 16, 300, 32, 16, 128, 16, None, T_ITSELF),
    (2, 16, 40, 32, 128, 16, 8, "batch", {}),         # dv 128: two threads a query, 64 columns each
    (2, 8, 70, 128, 200, 64, 4, "full", T_ITSELF),    # four threads a query (50 columns); 32-key tiles (48 KiB)
], ids=["block16-partial", "block1-padding", "block64-causal-u8", "block100-two-tiles", "odd-depth-u8",
        "one-query", "block16-query-blocks", "t-block16", "t-block128", "dv128-split", "dv200-split-small-tiles"])
def test_the_gpu_kernel_is_bit_exact_with_the_reference(bh, lq, lk, d, dv, block, tq, mask, out):
    a = _attrs(lk, d, block, **out)
    q, k, v, keep = _data(bh, lq, lk, d, dv, mask, sharp=3)
    want = qattention.attention_values(q, k, v, keep, a)
    got = _run_kernel(a, q, k, v, keep, tq)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_the_kernel_walks_the_ops_block_and_a_wrong_block_is_caught():
    """The result depends on the block (compiler/ops/qattention.py): the kernel for block 16 equals the reference for
    16 and not the one for 64, so the check above can fail."""
    a = _attrs(256, 64, 16)
    q, k, v, _ = _data(4, 64, 256, 64, 64, None, seed=1, sharp=3)
    got = _run_kernel(a, q, k, v, None, 64)
    np.testing.assert_array_equal(got, qattention.attention_values(q, k, v, None, a))
    assert not np.array_equal(got, qattention.attention_values(q, k, v, None, {**a, "block": 64}))


def _fused(g, block=None):
    fg = fuse_integer_attention(g)
    if block is not None:
        n = fg.nodes[0]
        fg.nodes[0] = Node(n.op, n.inputs, {**n.attrs, "block": block}, n.outputs, n.name, n.loc)
    return fg


@pytest.mark.parametrize("b,h,lq,lk,mask,block", [(1, 2, 32, 32, None, None), (2, 3, 16, 48, "padding", 16),
                                                  (1, 2, 32, 128, "causal", None), (2, 2, 20, 100, "padding", 64),
                                                  (1, 2, 16, 24, None, 1)])
def test_the_cuda_program_matches_the_interpreter(b, h, lq, lk, mask, block):
    """Through the lowering (batch dimensions flattened, the keep mask broadcast): tvm_cuda.build_for_cpu."""
    g = chain(b, h, lq, lk, 32, mask)
    fg = _fused(g, block)
    ins = inputs(g)
    got = tvm_cuda.build_for_cpu(lower_kernels(fg, TARGET), TARGET)(*ins)[0]
    np.testing.assert_array_equal(got, interp.run(fg, *ins)[0])


def _cuda_build(d: int = 64):
    """BERT-base's attention shape: 12 heads, 128 tokens, depth 64."""
    return build(_fused(chain(1, 12, 128, 128, d)), TARGET)


def test_the_cuda_build_is_one_kernel_with_registers_and_shared_tiles():
    exe = _cuda_build()
    assert re.findall(r"R\.call_tir\(cls\.(\w+)", exe.source("relax")) == ["qattention_0"]
    src = exe.cuda_source().split("qattention_0_kernel(")[2].split('extern "C"')[0]
    assert "__shared__ alignas(64) int ks_ptr[1024];" in src and "__shared__ alignas(64) int vs_ptr[4096];" in src
    assert "int64_t acc_ptr[64];" in src and "__dp4a(" in src
    assert src.count("__syncthreads()") == 2


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ptxas") is None or shutil.which("nvcc") is None, reason="needs nvcc and ptxas")
@pytest.mark.parametrize("d", [64, 128])
def test_ptxas_assembles_the_integer_attention_without_spills(d):
    """...the scores with dp4a, K and V read from shared memory 16 bytes at a time, each product into the int64
    numerator one widening multiply; at depth 128, four threads a query (cuda_qattention.REGISTERS)."""
    ptx = _cuda_build(d).source("ptx")
    assert "dp4a.s32.s32" in ptx and "ld.shared.v4.u32" in ptx and "mul.wide.s32" in ptx
    registers, spills = usage(assemble(ptx), "qattention_0_kernel")
    assert spills == 0 and registers <= 255, (registers, spills)


@pytest.mark.slow
def test_an_integer_encoder_with_integer_attention_builds_for_cuda():
    """compile(target cuda, integer_attention=True): every layer's attention is one q.attention kernel in the
    CUDA module, and the GPU program (built for the CPU) equals the interpreter of the final IR."""
    torch = pytest.importorskip("torch")
    import compiler
    from compiler.api import final_ir
    from examples.zoo import seeded_encoder
    model, x, calib = seeded_encoder(hidden=64, heads=4, ffn=128, layers=2, seq=32, batch=2)
    opts = dict(example_inputs=(torch.tensor(x),), quantize="int8", calibration=calib, integer_only=True,
                integer_attention=True)
    g, _ = final_ir(model, "cuda -arch=sm_90", **opts)
    assert g.op_histogram().get("q.attention", 0) == 2
    cm = compiler.compile(model, "cuda -arch=sm_90", **opts)
    assert len(re.findall(r"call_tir\(cls\.qattention_\d+", cm.executable.source("relax"))) == 2
    assert re.search(r"__global__ void __launch_bounds__\(\d+\) qattention_\d+_kernel\(", cm.executable.cuda_source())
    np.testing.assert_array_equal(tvm_cuda.build_for_cpu(g, TARGET)(x)[0], interp.run(g, x)[0])
