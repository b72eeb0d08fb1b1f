"""The LUT low-bit GEMM (tvm_kernels/lut_gemm.py, T-MAC style: int8 tables, vpshufb lookups) with 4- and 2-bit
weights and the int4-weight VNNI matmul (tvm_kernels/qmatmul_int4.py: nibbles unpacked in registers, vpdpbusd) vs
our int8 VNNI matmul (tvm_kernels/qmatmul.py) and onnxruntime's MatMulInteger (uint8 activations x int8 weight
initializer, int32 out: its MLAS VNNI kernel, weights prepacked by the session) on batch-1 (GEMV) and
small-batch linear layers.

  python benchmarks/lut_vs_vnni.py [--threads 1] [--repeat 20] [--quick]

Every kernel computes int32 results (no requant: the epilogues are the same for all), operands in the
kernels' layouts; each output is first checked bit-exactly against its op's reference (q.lut_matmul,
q.matmul; the int4 VNNI kernel against q.matmul with weights in [-8, 7]). The weights are not cache-resident
between calls: each kernel cycles through enough copies of its weight that together they exceed 64 MB, more
than this CPU's caches (onnxruntime: as many sessions, each with its own weight initializer). The kernels of a row are timed
interleaved in the same run (benchmarks.common.interleaved_ms) and the median is printed, with the weight
bytes each streams per call (LUT 4-bit: half of int8 plus the group scales and zero points, G = 128; VNNI int4:
half of int8, per-tensor or per-column scales live in the requant, as for int8).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys


def _parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=20, help="interleaved rounds per row")
    p.add_argument("--quick", action="store_true", help="two shapes only")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["TVM_NUM_THREADS"] = str(ARGS.threads)  # before importing tvm
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import tvm  # noqa: E402

from benchmarks.common import interleaved_ms  # noqa: E402
from compiler.backends.tvm_kernels import lut_gemm as L, qmatmul as M, qmatmul_int4 as Q4  # noqa: E402
from compiler.backends.tvm_kernels.common import host_target  # noqa: E402
from compiler.ops import lut  # noqa: E402

SHAPES = [(1, 768, 768), (1, 1024, 4096), (1, 4096, 4096), (1, 4096, 11008), (4, 4096, 4096),
          (8, 4096, 4096), (16, 4096, 4096), (64, 1024, 1024)]
QUICK = [(1, 768, 768), (1, 4096, 4096)]
GROUP = 128
STREAM_BYTES = 64 << 20


def _cycling(lib, fixed_before, copies, fixed_after, out_shape):
    """A callable that runs lib with the next weight copy each call, and its output tensor."""
    dev = tvm.cpu()
    before = [tvm.runtime.tensor(a, dev) for a in fixed_before]
    after = [tvm.runtime.tensor(a, dev) for a in fixed_after]
    ws = [tvm.runtime.tensor(w, dev) for w in copies]
    out = tvm.runtime.empty(out_shape, "int32", dev)
    state = {"i": 0}

    def call():
        w = ws[state["i"] % len(ws)]
        state["i"] += 1
        lib["main"](*before, w, *after, out)
    return call, out


def _copies(w: np.ndarray, extra: int) -> list[np.ndarray]:
    n = max(1, -(-STREAM_BYTES // (w.nbytes + extra)))
    return [w.copy() for _ in range(n)]


def _vnni_row(target, kernel, a, w, label):
    """A VNNI matmul module (qmatmul or qmatmul_int4: `kernel`) on int8 activations `a` and weight `w`, checked
    bit-exactly against q.matmul's reference: (timed call, weight bytes)."""
    (m, k), n = a.shape, w.shape[1]
    int4 = kernel is Q4
    spec = (Q4.QMatmulInt4Spec if int4 else M.QMatmulSpec)(m, k, n, "int8", 0, None)
    make, pack = (Q4.make_qmatmul_int4, Q4.pack_weight_int4) if int4 else (M.make_qmatmul, M.pack_weight)
    lib = tvm.compile(tvm.IRModule({"main": make(spec).with_attr("global_symbol", "main")}), target=target)
    wp = pack(spec, w)
    fn, out = _cycling(lib, [a], _copies(wp, 0), [kernel.pack_bias(spec, w)], kernel.out_shape(spec))
    fn()
    if not np.array_equal(out.numpy()[:, :n], kernel.qmatmul_reference(spec, a, w)):
        raise AssertionError(f"{label} {m}x{k}x{n}: not bit-exact")
    return fn, wp.nbytes


def vnni_row(target, m, k, n, rng):
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    return _vnni_row(target, M, a, rng.integers(-127, 128, (k, n)).astype(np.int8), "vnni")


def int4_row(target, m, k, n, rng):
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    return _vnni_row(target, Q4, a, rng.integers(-8, 8, (k, n)).astype(np.int8), "vnni int4")


def lut_row(target, m, k, n, bits, rng):
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    spec = L.LutSpec(m, k, n, bits, GROUP, "int8", "int8", 0)
    codes = rng.integers(0, 1 << bits, (k, n))
    planes = lut.pack_planes(codes, bits, GROUP)
    u = rng.integers(1, 64, (spec.groups, n)).astype(np.int16)
    z = rng.integers(0, 1 << bits, (spec.groups, n)).astype(np.uint8)
    lib = tvm.compile(tvm.IRModule({"main": L.make_lut_gemm(spec).with_attr("global_symbol", "main")}), target=target)
    wp = L.pack_weight(spec, planes)
    up, zp = L.pack_groups(spec, u, "int16"), L.pack_groups(spec, z, "uint8")
    fn, out = _cycling(lib, [a], _copies(wp, up.nbytes + zp.nbytes), [up, zp, L.pack_bias(spec)], L.out_shape(spec))
    fn()
    if not np.array_equal(out.numpy()[:, :n], L.lut_gemm_reference(spec, a, planes, u, z)):
        raise AssertionError(f"lut {bits}-bit {m}x{k}x{n}: not bit-exact")
    return fn, wp.nbytes + up.nbytes + zp.nbytes


def ort_row(threads, m, k, n, rng):
    """onnxruntime MatMulInteger sessions (one per weight copy) cycled like our kernels, checked exactly."""
    import tempfile
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from benchmarks.common import ort_session
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "mmi",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mmi.onnx"
        onnx.save(model, path)
        sessions = [ort_session(path, threads) for _ in _copies(w, 0)]
    if not np.array_equal(sessions[0].run(None, {"a": a})[0], a.astype(np.int64) @ w.astype(np.int64)):
        raise AssertionError(f"onnxruntime MatMulInteger {m}x{k}x{n}: not exact")
    state = {"i": 0}

    def call():
        sessions[state["i"] % len(sessions)].run(None, {"a": a})
        state["i"] += 1
    return call, w.nbytes


def main() -> None:
    args = ARGS or _parse()
    target = host_target(args.threads)
    rng = np.random.default_rng(0)
    print(f"target {target}, {args.threads} thread(s), median of {args.repeat} interleaved rounds, ms; "
          f"weights streamed from DRAM (> 64 MB of copies per kernel); LUT: int8 tables, G = {GROUP}\n")
    print("| m x k x n | ORT MatMulInteger | VNNI int8 | VNNI int4 | LUT 4-bit | LUT 2-bit | weight MB int8 / int4 / "
          "LUT-4 / LUT-2 | ORT / VNNI int8 | VNNI / int4 | VNNI / LUT-4 | VNNI / LUT-2 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m, k, n in (QUICK if args.quick else SHAPES):
        rows = [ort_row(args.threads, m, k, n, rng), vnni_row(target, m, k, n, rng), int4_row(target, m, k, n, rng),
                lut_row(target, m, k, n, 4, rng), lut_row(target, m, k, n, 2, rng)]
        to, t8, ti, t4, t2 = (statistics.median(t) for t in interleaved_ms([f for f, _ in rows], 3, args.repeat))
        mb = " / ".join(f"{b / 2**20:.1f}" for _, b in rows[1:])
        print(f"| {m} x {k} x {n} | {to:.3f} | {t8:.3f} | {ti:.3f} | {t4:.3f} | {t2:.3f} | {mb} | {to / t8:.2f}x | "
              f"{t8 / ti:.2f}x | {t8 / t4:.2f}x | {t8 / t2:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
