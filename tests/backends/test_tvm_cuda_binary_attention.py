"""The GPU's binary-code attention (compiler/backends/tvm_kernels/cuda_binary_attention.py): on cuda,
mfree.binary_attention is two kernels (max|V| per head; then per head and chunk of V's columns KV and KS summed in
registers from key tiles staged in shared memory, and one thread a query row), and compile(..., target cuda,
shiftadd_attention=True) builds.

Its arithmetic is checked without a GPU: the same TVMScript built with serial loops and global buffers runs on the
CPU, bit-exact (float32 bits) with the op's reference over shapes the tiles, column chunks and threads do not
divide, an all-zero V, rows whose code meets no key's, codes from zeros and subnormals, a subnormal scale; the GPU
program of a graph (tvm_cuda.build_for_cpu) equals the interpreter; the cuda build is those two kernels, each float
step its own IEEE PTX instruction (no flush to zero, no fma, no approximate division under TVM's nvcc
--use_fast_math), and ptxas assembles it without spills."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from compiler import interp  # noqa: E402
from compiler.backends import tvm_cuda  # noqa: E402
from compiler.backends.tvm import BACKEND, lower_to_relax  # noqa: E402
from compiler.backends.tvm_kernels import cuda_binary_attention as C  # noqa: E402
from compiler.backends.tvm_kernels.binary_attention import BinaryAttentionSpec  # noqa: E402
from compiler.diagnostics import Unsupported  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import mfree  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402
from tests.backends.test_tvm_shiftadd import _strip_indices, data_multiplies, reduction_updates  # noqa: E402
from tests.ptxas import assemble, usage  # noqa: E402

TARGET = Target.parse("cuda -arch=sm_90")
TINY = np.float32(1e-39)           # a subnormal float32


def _run_kernel(q, k, v) -> np.ndarray:
    """make_cuda_vmax and make_cuda_binary_attention (gpu=False) on the CPU: q (bh, lq, d), k (bh, lk, d),
    v (bh, lk, dv)."""
    bh, lq, d = q.shape
    lk, dv = v.shape[1:]
    vmax = C.make_cuda_vmax(bh, lk * dv, gpu=False).with_attr("global_symbol", "vmax")
    att = C.make_cuda_binary_attention(BinaryAttentionSpec(bh, lq, lk, d, dv), gpu=False)
    lib = tvm.compile(tvm.IRModule({"vmax": vmax, "att": att.with_attr("global_symbol", "att")}), target="llvm")
    part, out = tvm.runtime.empty((bh,), "int32"), tvm.runtime.empty((bh, lq, dv), "float32")
    lib["vmax"](tvm.runtime.tensor(np.ascontiguousarray(v.reshape(bh, lk * dv))), part)
    lib["att"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in (q, k, v)], part, out)
    return out.numpy()


def _data(bh, lq, lk, d, dv, kind, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((bh, lq, d), (bh, lk, d), (bh, lk, dv)))
    if kind == "edges":
        q[rng.random(q.shape) < 0.2], k[rng.random(k.shape) < 0.2] = 0.0, -0.0     # zeros: code 0
        q[rng.random(q.shape) < 0.1], k[rng.random(k.shape) < 0.1] = TINY, TINY    # subnormal positives: code 1
        q[0, 0] = -1.0                                 # no bit set: den = 0, out 0
        q[-1, -1] = np.float32(-TINY)
        v *= np.float32(10.0) ** rng.integers(-3, 4, v.shape).astype(np.float32)
        s = mfree.v_scale(v)
        v[0, 0, 0] = np.float32(2.5) * s               # on a rounding tie (where representable)
    elif kind == "zero-v":
        v[:] = 0.0
    elif kind == "subnormal-v":                        # max|V| / 127 subnormal: s, V / s and r near the bottom
        v *= np.float32(1e-38)
    return q, k, v


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.view(np.uint32).tolist() == b.view(np.uint32).tolist()


@pytest.mark.parametrize("bh,lq,lk,d,dv,kind", [
    (2, 16, 40, 8, 12, "normal"),          # lq != lk, d != dv; 40 keys: a tile of 32 and one of 8
    (3, 200, 70, 64, 64, "edges"),         # 200 queries > 128 threads, 3 tiles, 4 column chunks of 16
    (1, 5, 3, 3, 7, "normal"),             # fewer keys than a tile, dv 7 one chunk
    (2, 9, 33, 160, 48, "edges"),          # d > 128 threads (KS 2 entries a thread), KV 20 entries a thread
    (2, 7, 12, 5, 17, "normal"),           # dv 17: 17 chunks of one column
    (1, 1, 1, 1, 1, "normal"),
    (4, 12, 20, 16, 8, "zero-v"),          # s = 1, every v8 0, out 0
    (2, 24, 36, 8, 8, "subnormal-v"),
    (1, 3, 20, 2048, 4, "normal"),         # KV 2048 x 2 columns a block, 8-key tiles (48 KiB of shared memory)
], ids=["small", "queries-past-threads", "tiny", "deep", "dv-prime", "one", "all-zero-v", "subnormal-v", "very-deep"])
def test_the_gpu_kernel_is_bit_exact_with_the_reference(bh, lq, lk, d, dv, kind):
    q, k, v = _data(bh, lq, lk, d, dv, kind)
    want = mfree.binary_attention_values(q, k, v)
    if kind == "edges":
        assert not want[0, 0].any() and not want[-1, -1].any()
    if kind == "zero-v":
        assert not want.any()
    if kind == "subnormal-v":
        assert mfree.v_scale(v) < np.finfo(np.float32).tiny and want.any()
    assert _same_bits(_run_kernel(q, k, v), want)


def test_the_plan():
    assert C.plan(64, 64) == C.Plan(16, 32)                    # BERT: 4 chunks of 16 columns, 8 KV entries a thread
    assert C.plan(160, 48) == C.Plan(16, 32) and C.plan(7, 17) == C.Plan(1, 32)
    assert C.plan(2048, 4) == C.Plan(2, 8)
    with pytest.raises(ValueError, match="shared memory"):
        C.plan(8192, 4)


def test_a_wrong_kernel_is_caught(monkeypatch):
    """The check above can fail: a code that counts zeros (>= 0) is seen."""
    monkeypatch.setattr(C, "_positive", lambda x: x >= np.float32(0))
    q, k, v = _data(2, 16, 40, 8, 12, "edges")
    assert not _same_bits(_run_kernel(q, k, v), mfree.binary_attention_values(q, k, v))


def test_accumulations_are_masked_adds():
    """Every sum of the kernel's TIR is an add of a select on a code; the only float multiply is the output's."""
    script = C.make_cuda_binary_attention(BinaryAttentionSpec(2, 16, 32, 8, 32), gpu=False).script()
    updates = [rhs for _, rhs in reduction_updates(script)]
    sums = [rhs for rhs in updates if " + " in _strip_indices(rhs)]
    # KV, KS, den, num: each an add of a select on a code; besides them max|V|'s max and r = s / den
    assert len(sums) == 4 and all(re.match(r"^\w+\[[^\]]*\] \+ T\.Select\(", rhs) for rhs in sums)
    assert len(updates) == 6 and updates[0].startswith("T.max(") and " / " in updates[-1]
    assert data_multiplies(script) == []
    stores = [ln.strip() for ln in script.splitlines() if re.match(r"^\s*\w+\[.*\] = ", ln)]
    products = [ln for ln in stores if "*" in _strip_indices(ln.split("#")[0])]
    assert len(products) == 1 and products[0].startswith("out[")


def _graph(b, h, lq, lk, d, dv) -> Graph:
    g = Graph("binattn")
    ins = [g.add_input(n, TensorType(s, DType.F32))
           for n, s in (("q", (b, h, lq, d)), ("k", (b, h, lk, d)), ("v", (b, h, lk, dv)))]
    g.outputs = [g.add1(mfree.binary_attention, ins)]
    return g


@pytest.mark.parametrize("shape", [(1, 12, 128, 128, 64, 64), (2, 3, 24, 40, 16, 20), (3, 1, 130, 7, 9, 5)])
def test_the_cuda_program_matches_the_interpreter(shape):
    """Through the lowering (batch and heads flattened, V's view for the max): tvm_cuda.build_for_cpu."""
    g = _graph(*shape)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    assert _same_bits(tvm_cuda.build_for_cpu(g, TARGET)(*xs)[0], interp.run(g, *xs)[0])


def test_a_head_too_deep_for_shared_memory_is_refused():
    with pytest.raises(Unsupported, match="shared memory"):
        lower_to_relax(_graph(1, 1, 2, 2, 8192, 4), TARGET)


def _cuda_build():
    """BERT-base's attention shape: 12 heads, 128 tokens, depth 64."""
    return BACKEND.build(_graph(1, 12, 128, 128, 64, 64), TARGET)


def _kernel(src: str, name: str) -> str:
    return src.split(f"{name}_kernel(")[2].split('extern "C"')[0]


def test_the_cuda_build_is_two_kernels_with_registers_and_shared_tiles():
    exe = _cuda_build()
    assert re.findall(r"R\.call_tir\(cls\.(\w+)", exe.source("relax")) == ["binary_attention_vmax_0",
                                                                           "binary_attention_1"]
    assert exe.launches() == ["binary_attention_vmax_0", "binary_attention_1"]   # the reshapes are views
    src = _kernel(exe.cuda_source(), "binary_attention_1")
    assert "int acc_ptr[8];" in src and "int num_ptr[16];" in src and src.count("__shared__") == 2
    assert src.count("__syncthreads()") == 4
    # the float steps, each a call of an inline PTX instruction defined in front of the kernels: max / 127, a
    # thread's 4 staged V / s (+ 0.5), s / den, 16 outputs num * r; no float division of TVM's own (nvcc
    # --use_fast_math makes it approximate)
    code = re.sub(r"/\*.*?\*/", "", src)
    assert code.count("dyc_div_rn(") == 1 + 4 + 1 and code.count("dyc_add_rn(") == 4
    assert code.count("dyc_mul_rn(") == 16 and " / " not in code
    head = exe.cuda_source().split('extern "C"')[0]
    for op in ("div", "add", "mul"):
        assert f'float dyc_{op}_rn(float a, float b) {{ float r; asm("{op}.rn.f32 %0, %1, %2;"' in head
    vmax = _kernel(exe.cuda_source(), "binary_attention_vmax_0")
    assert "__shared__ alignas(64) int red_ptr[128];" in vmax and "& 2147483647" in vmax


@pytest.mark.skipif(shutil.which("ptxas") is None or shutil.which("nvcc") is None, reason="needs nvcc and ptxas")
def test_ptxas_assembles_the_binary_attention_without_spills():
    """...and, though TVM compiles with --use_fast_math, no float operation flushes subnormals (floor and the
    conversion to int aside: their operand V / s + 0.5 is never subnormal), none is approximate or fused."""
    ptx = _cuda_build().source("ptx")
    for name in ("binary_attention_vmax_0", "binary_attention_1"):
        body = ptx.split(f".entry {name}_kernel(")[1].split("\n}\n")[0]
        ops = set(re.findall(r"^\s+([a-z]+(?:\.[a-z0-9]+)*)", body, re.M))
        assert not {o for o in ops if ".ftz" in o} - {"cvt.rmi.ftz.f32.f32", "cvt.rzi.ftz.s32.f32"}, ops
        assert not [o for o in ops if o.startswith(("fma", "mad.f", "div.approx", "div.full", "setp.gt.f"))], ops
    assert {"div.rn.f32", "add.rn.f32", "mul.rn.f32"} <= ops         # the attention kernel's
    report = assemble(ptx)
    for name in ("binary_attention_1", "binary_attention_vmax_0"):
        registers, spills = usage(report, f"{name}_kernel")
        assert spills == 0 and registers <= 64, (name, registers, spills)


def test_compile_with_shiftadd_attention_for_cuda():
    """compile(target cuda, shiftadd_attention=True) on a block with projections: the attention is the two kernels
    (no fused softmax attention left), and the GPU program (built for the CPU) matches the interpreter of the final
    IR (the projections' float matmuls within float tolerance, the binary attention bit-exact)."""
    import compiler
    from compiler.ops import kernel
    from tests.passes.test_lmul import _block, _x
    g = _block(s=16)
    cm = compiler.compile(g, "cuda -arch=sm_90", shiftadd_attention=True)
    assert sum(n.op is mfree.binary_attention for n in cm.graph.nodes) == 1
    assert not any(n.op is kernel.fused and "attention" in n.attrs["kernel"] for n in cm.graph.nodes)
    launches = cm.executable.launches()
    assert [n for n in launches if "attention" in n] == ["binary_attention_vmax_0", "binary_attention_1"], launches
    x = _x(g)
    np.testing.assert_allclose(tvm_cuda.build_for_cpu(cm.graph, TARGET)(x)[0], interp.run(cm.graph, x)[0],
                               rtol=1e-5, atol=1e-6)
