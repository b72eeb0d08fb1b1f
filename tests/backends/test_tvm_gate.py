"""The squeeze-excite gate kernel (passes/gate.py, compiler/backends/tvm_fused/gate.py): the gate multiply on
blocked data is one k.fused "gate" kernel with the channel block as vector lanes, bit-exact with the interpreter."""
from __future__ import annotations

import re

import numpy as np
import pytest

from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import kernel, linalg
from compiler.ops import quant as q
from compiler.ops import reduce as rd
from compiler.types import DType, TensorType

pytest.importorskip("tvm")

TARGET = "llvm -num-threads=1"


def _fconv(g, x, co, rng, k=1, groups=1):
    ci = x.type.shape[1]
    w = g.const((rng.standard_normal((co, ci // groups, k, k)) / np.sqrt(ci // groups * k * k)).astype(np.float32))
    return g.add1(linalg.conv, [x, w, g.const((0.1 * rng.standard_normal(co)).astype(np.float32))],
                  strides=(1, 1), pads=(k // 2,) * 4, dilations=(1, 1), groups=groups)


def _se_block(c: int, act, seed: int, hw: int = 10) -> tuple[Graph, np.random.Generator]:
    """conv -> depthwise conv -> act -> squeeze-excite (hardsigmoid or sigmoid gate) -> projection conv."""
    rng = np.random.default_rng(seed)
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, hw, hw), DType.F32))
    e = g.add1(ew.relu, [_fconv(g, x, c, rng)])
    d = act(g, _fconv(g, e, c, rng, k=3, groups=c))
    s = g.add1(rd.reduce_mean, [d], axes=(2, 3), keepdims=True)
    z = _fconv(g, g.add1(ew.relu, [_fconv(g, s, 8, rng)]), c, rng)
    gate = g.add1(ew.hard_sigmoid, [z], alpha=1 / 6, beta=0.5) if c % 16 else g.add1(ew.sigmoid, [z])
    g.outputs = [_fconv(g, g.add1(ew.mul, [d, gate]), 24, rng)]
    return g, rng


def _relu(g, v):
    return g.add1(ew.relu, [v])


def _silu(g, v):
    return g.add1(ew.mul, [v, g.add1(ew.sigmoid, [v])])


@pytest.mark.parametrize("c,act", [(72, _relu), (96, _silu), (40, _silu)])
def test_se_gate_is_one_blocked_kernel_and_bit_exact(c, act):
    """MobileNetV3's gate (relu activation, 8-channel blocks) and EfficientNet's (SiLU with a zero point: a
    subtract before the product; 16-channel blocks): in the final IR the gate is one k.fused "gate" kernel on
    blocked tensors, the TVM build calls the gate kernel (no op-by-op multiply) over the activation's buffer,
    and is bit-exact."""
    import compiler
    from compiler.api import final_ir
    from passes.quantize import QuantConfig
    from passes.quantize_pipeline import quantize_graph
    g, rng = _se_block(c, act, seed=c)
    calib = [rng.standard_normal((1, 16, 10, 10)).astype(np.float32) for _ in range(4)]
    ig, _ = quantize_graph(g, calib, QuantConfig(integer_only=True))
    fg, _ = final_ir(ig, TARGET)
    (gk,) = [n for n in fg.nodes if n.op is kernel.fused and n.attrs["kernel"] == "gate"]
    assert [n.op for n in gk.attrs["body"].nodes if n.op in (ew.mul, q.requant)] == [ew.mul, q.requant]
    assert gk.inputs[0].type.rank == 5 and gk.inputs[1].type.shape[2:4] == (1, 1)
    assert not any(n.op is ew.mul for n in fg.nodes)
    cm = compiler.compile(ig, target=TARGET)
    calls = re.findall(r"call_tir(?:_inplace)?\(cls\.([a-z_0-9]+?)_\d+,", cm.executable.source("relax"))
    assert "se_gate" in calls and not any("multiply" in k for k in calls)
    # the activation dies at the gate (the pool read it before): the gate writes over it
    assert re.search(r"call_tir_inplace\(cls\.se_gate_\d+", cm.executable.source("relax"))
    for seed in range(3):
        xs = np.random.default_rng(seed).standard_normal((1, 16, 10, 10)).astype(np.float32)
        want = interp.run(ig, xs)[0]
        np.testing.assert_array_equal(cm.run(xs)[0], want)


@pytest.mark.parametrize("b,a_dt,a_zp,g_zp,mult,shift,out_dt,out_zp,form", [
    (16, DType.U8, 3, 0, 1555277696, 38, DType.U8, 4, "hi"),       # EfficientNet's: SiLU's zero point, c >= 33
    (8, DType.U8, 0, 0, 1372202368, 38, DType.U8, 0, "hi"),        # MobileNetV3's
    (16, DType.I8, -5, 7, (1 << 22) + 12345, 30, DType.I8, -3, "i64"),
    (8, DType.U8, 0, 2, 1 << 14, 14, DType.I8, 0, "shl"),
])
def test_gate_kernel_bit_exact_in_every_requant_form(b, a_dt, a_zp, g_zp, mult, shift, out_dt, out_zp, form):
    """The fused gate chain on hand-built blocked tensors: the kernel takes each requant form
    (qconv2d.requant_form) and the offsets on either factor, bit-exact with the interpreter, written
    over the activation where the IR allows it."""
    import compiler
    from compiler.backends.tvm_fused.body import parse
    from compiler.backends.tvm_fused.gate import gate_plan
    from passes.gate import fuse
    g = Graph()
    a = g.add_input("a", TensorType((1, 3, 5, 7, b), a_dt))
    gt = g.add_input("g", TensorType((1, 3, 1, 1, b), DType.U8))

    def factor(v, zp):
        v = g.add1(ew.cast, [v], to=DType.I32)
        return g.add1(ew.sub, [v, g.const(np.array(zp, np.int32))]) if zp else v
    lo, hi = q.INT_RANGE[out_dt]
    prod = g.add1(ew.mul, [factor(gt, g_zp), factor(a, a_zp)])
    g.outputs = [g.add1(q.requant, [prod], multiplier=[mult], shift=[shift], zero_point=out_zp, in_zero_point=0,
                        qmin=lo, qmax=hi, dtype=out_dt, axis=1)]
    fg = fuse(g)
    (gk,) = [n for n in fg.nodes if n.op is kernel.fused]
    assert gk.attrs["kernel"] == "gate" and len(fg.nodes) == 1
    assert gate_plan(parse(gk))[0].rq.form == form
    cm = compiler.compile(g, target=TARGET)
    rng = np.random.default_rng(b + shift)
    info = np.iinfo(a_dt.numpy)
    for _ in range(3):
        av = rng.integers(info.min, info.max + 1, (1, 3, 5, 7, b)).astype(a_dt.numpy)
        gv = rng.integers(0, 256, (1, 3, 1, 1, b)).astype(np.uint8)
        av.flat[:2], gv.flat[:2] = (info.min, info.max), (0, 255)
        want = interp.run(g, av, gv)[0]
        assert np.unique(want).size > 8
        np.testing.assert_array_equal(cm.run(av, gv)[0], want)
