"""Fast paths of the TVM backend: our scheduled kernels (tvm_kernels) with fused epilogues, and
activations kept in the blocked NCHW{b}c layout between them.

`plan(g)` groups nodes into kernels (a pure analysis of the graph):

    conv2d [+ bias] [+ residual add] [+ relu | clip]      -> tvm_kernels.conv2d (blocked in and out)
    matmul(x, W const 2-D) [+ bias] [+ relu | gelu]        -> tvm_kernels.matmul (packed panels)
    matmul(A, B) / matmul(A, transpose(B)), activations    -> tvm_kernels.matmul (batched)
    max_pool / avg_pool 2-D, reduce_mean|max over (2, 3)   -> tvm_kernels.pool (blocked)

Integer (quantized) groups, bit-exact with compiler.interp:

    q.conv(x u8/i8, W const int8, b const, groups 1) [+ q.requant]                -> tvm_kernels.qconv2d (VNNI)
        [+ dyadic residual: requant -> int32, nn.add with (q.requant -> int32 of) another tensor, q.requant]
        activations stay blocked (n, c/16, h, w, 16) u8/i8/int32 between kernels
    q.matmul(x u8/i8, W const 2-D) [+ int32 bias] [+ q.requant along the last axis] -> tvm_kernels.qmatmul (VNNI)
    q.matmul(A, B | transpose(B)), activations [+ per-tensor q.requant]          -> tvm_kernels.qbmm (VNNI)
    nn.max_pool / reduce_max over (2, 3) on int8/uint8                              -> tvm_kernels.pool (blocked)
    q.shiftmax over the last axis of 8/16-bit data [+ per-tensor q.requant]         -> tvm_kernels.shiftmax

`FastPath.lower(node)` emits those kernels while the generic per-op lowerings handle the rest;
a value stays blocked until a node without a blocked implementation reads it, which gets the
(cached) unpacked form from `plain(v)`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from compiler.backends.tvm_kernels import conv2d as kconv
from costmodel import policy as tile_policy
from compiler.backends.tvm_kernels import layout as klayout
from compiler.backends.tvm_kernels import matmul as kmm
from compiler.backends.tvm_kernels import pool as kpool
from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn, reduce as rd, shape
from compiler.backends.tvm_kernels import qconv2d as kq
from compiler.backends.tvm_kernels import qmatmul as kqm
from compiler.backends.tvm_kernels import qbmm as kqb
from compiler.backends.tvm_kernels import shiftmax as ksm
from compiler.backends.tvm_lower.registry import tvm_dtype
from compiler.ops import quant as q
from compiler.ops import ivit
from compiler.types import DType

F32 = DType.F32


@dataclass
class Group:
    """Nodes lowered as one kernel; it is emitted when the walk reaches `nodes[-1]`."""

    kind: str                               # "conv" | "matmul" | "pool"
    nodes: list[Node]
    spec: object
    operands: dict[str, Value] = field(default_factory=dict)
    consts: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def out(self) -> Value:
        return self.nodes[-1].outputs[0]


def _scalar_or_channel(v: Value, channels: int) -> np.ndarray | None:
    """The constant as a per-channel vector (C,) if it broadcasts as (1, C, 1, 1) or a scalar."""
    if not v.is_const or v.type.dtype is not F32:
        return None
    c = np.asarray(v.const)
    if c.size == 1:
        return np.full(channels, c.reshape(-1)[0], np.float32)
    if c.ndim >= 3 and c.size == channels and c.shape[-3] == channels and c.shape[-1] == c.shape[-2] == 1:
        return c.reshape(channels).astype(np.float32)
    return None


class _Uses:
    def __init__(self, g: Graph):
        self.users = g.uses()
        self.outputs = {id(v) for v in g.outputs}
        self.taken: set[int] = set()        # nodes already claimed by a group

    def single(self, v: Value) -> Node | None:
        """The only user of v, when v has exactly one, is not a graph output, and that user is
        not already part of another kernel."""
        us = self.users.get(v, [])
        if len(us) != 1 or id(v) in self.outputs or id(us[0][0]) in self.taken:
            return None
        return us[0][0]


def _activation(u: _Uses, v: Value) -> tuple[Node | None, str, float, float]:
    n = u.single(v)
    if n is not None and n.op is ew.relu:
        return n, "relu", 0.0, 0.0
    if n is not None and n.op is ew.clip and np.isfinite(n.attrs["min"]) and np.isfinite(n.attrs["max"]):
        return n, "clip", n.attrs["min"], n.attrs["max"]
    return None, "none", 0.0, 0.0


def _plan_conv(conv: Node, u: _Uses) -> Group | None:
    x, w = conv.inputs[0], conv.inputs[1]
    if x.type.rank != 4 or x.type.dtype is not F32 or not w.is_const or \
            (len(conv.inputs) > 2 and not conv.inputs[2].is_const):
        return None
    n, ci, h, wd = x.type.shape
    co, _, kh, kw = w.type.shape
    groups = conv.attrs["groups"]
    nodes, operands = [conv], {"x": x}
    consts = {"w": np.asarray(w.const)}
    if len(conv.inputs) > 2:
        consts["b"] = np.asarray(conv.inputs[2].const)
    cur = conv.outputs[0]
    nxt = u.single(cur)
    if "b" not in consts and nxt is not None and nxt.op is ew.add:
        other = nxt.inputs[1] if nxt.inputs[0] is cur else nxt.inputs[0]
        if (b := _scalar_or_channel(other, co)) is not None:
            consts["b"], cur = b, nxt.outputs[0]
            nodes.append(nxt)
            nxt = u.single(cur)
    if nxt is not None and nxt.op is ew.add:
        other = nxt.inputs[1] if nxt.inputs[0] is cur else nxt.inputs[0]
        if not other.is_const and other.type == cur.type and id(other) not in {id(cur)}:
            operands["residual"], cur = other, nxt.outputs[0]
            nodes.append(nxt)
    act_node, act, lo, hi = _activation(u, cur)
    if act_node is not None:
        nodes.append(act_node)
    in_b, out_b = kconv.choose_blocks(ci, co, groups)
    p = conv.attrs["pads"]
    try:
        spec = kconv.Conv2dSpec(n, ci, h, wd, co, kh, kw, tuple(conv.attrs["strides"]),
                                (p[0], p[1], p[2], p[3]), tuple(conv.attrs["dilations"]), groups,
                                in_b, out_b, "b" in consts, "residual" in operands, act, lo, hi)
    except ValueError:
        return None
    return Group("conv", nodes, spec, operands, consts)


def _plan_matmul(mm: Node, u: _Uses) -> Group | None:
    a, b = mm.inputs
    if a.type.dtype is not F32 or a.type.rank < 2 or b.type.rank < 2:
        return None
    m, k = a.type.shape[-2:]
    if b.is_const and b.type.rank == 2:
        n_ = b.type.shape[1]
        nodes, consts, cur = [mm], {"w": np.asarray(b.const)}, mm.outputs[0]
        nxt = u.single(cur)
        if nxt is not None and nxt.op is ew.add:
            other = nxt.inputs[1] if nxt.inputs[0] is cur else nxt.inputs[0]
            if other.is_const and other.type.dtype is F32 and other.type.size == n_ and \
                    other.type.shape[-1] == n_ and other.type.rank <= cur.type.rank:
                consts["b"], cur = np.asarray(other.const).reshape(n_), nxt.outputs[0]
                nodes.append(nxt)
                nxt = u.single(cur)
        act = "none"
        if nxt is not None and nxt.op is ew.relu:
            act = "relu"
        elif nxt is not None and nxt.op is ew.gelu:
            act = "gelu_tanh" if nxt.attrs["approximate"] == "tanh" else "gelu_erf"
        if act != "none":
            nodes.append(nxt)
        rows = int(np.prod(a.type.shape[:-1]))
        spec = kmm.MatmulSpec((), rows, n_, k, True, False, "b" in consts, act)
        return Group("matmul", nodes, spec, {"a": a}, consts)
    if b.is_const or a.type.rank != b.type.rank or a.type.shape[:-2] != b.type.shape[:-2]:
        return None
    src, transpose_b = b, False
    t = b.producer
    if t is not None and t.op is shape.transpose and u.single(b) is mm:
        perm = t.attrs["perm"]
        r = len(perm)
        if list(perm) == list(range(r - 2)) + [r - 1, r - 2]:
            src, transpose_b = t.inputs[0], True
    n_ = b.type.shape[-1]
    spec = kmm.MatmulSpec(a.type.shape[:-2], m, n_, k, False, transpose_b, False, "none")
    return Group("matmul", [mm], spec, {"a": a, "b": src})


def _plan_pool(p: Node) -> Group | None:
    x = p.inputs[0]
    if x.type.rank == 4 and x.type.dtype in (DType.I8, DType.U8) and p.op in (nn.max_pool, rd.reduce_max):
        return _plan_int_max_pool(p)
    if x.type.rank != 4 or x.type.dtype is not F32:
        return None
    n, c, h, w = x.type.shape
    block = kconv.choose_blocks(c, c)[1] or 0
    if p.op in (rd.reduce_mean, rd.reduce_max):
        if sorted(p.attrs["axes"]) != [2, 3] or not p.attrs["keepdims"]:
            return None
        kind = "global_avg" if p.op is rd.reduce_mean else "global_max"
        spec = kpool.PoolSpec(kind, n, c, h, w, block=block)
    else:
        a = p.attrs
        kind = "max" if p.op is nn.max_pool else "avg"
        spec = kpool.PoolSpec(kind, n, c, h, w, a["kernel"][0], a["kernel"][1], tuple(a["strides"]),
                              tuple(a["pads"]), tuple(a["dilations"]), block,
                              p.attrs.get("count_include_pad", False), a["ceil_mode"])
    return Group("pool", [p], spec, {"x": x})


def plan(g: Graph) -> dict[int, Group]:
    """id(node) -> the Group it belongs to, for every node a fast kernel takes."""
    u = _Uses(g)
    taken: dict[int, Group] = {}
    for node in g.nodes:
        if id(node) in taken:
            continue
        grp = None
        if node.op is linalg.conv:
            grp = _plan_conv(node, u)
        elif node.op is linalg.matmul:
            grp = _plan_matmul(node, u)
        elif node.op in (nn.max_pool, nn.avg_pool, rd.reduce_mean, rd.reduce_max):
            grp = _plan_pool(node)
        elif node.op is q.quantize:
            grp = _plan_quantize(node, u)
        elif node.op is ew.cast:
            grp = _plan_int_global_sum(node, u)
        elif node.op is q.conv:
            grp = _plan_qconv(node, u)
        elif node.op is q.matmul:
            grp = _plan_qmatmul(node, u)
        elif node.op is ivit.shiftmax:
            grp = _plan_shiftmax(node, u)
        if grp is not None and not any(id(m) in taken for m in grp.nodes):
            for m in grp.nodes:
                taken[id(m)] = grp
                u.taken.add(id(m))
    return taken


# -- integer (quantized) groups -------------------------------------------------------------------
_INT_ACT = (DType.I8, DType.U8)


def _requant_of(node: Node | None, rank: int, channel_axis: int) -> kq.Requant | None:
    """The Requant of a q.requant node whose per-channel axis (if any) is `channel_axis`."""
    if node is None or node.op is not q.requant:
        return None
    a = node.attrs
    if len(a["multiplier"]) > 1 and a["axis"] % rank != channel_axis % rank:
        return None
    return kq.Requant(a["in_zero_point"], a["zero_point"], a["qmin"], a["qmax"], tvm_dtype(a["dtype"]))


_I32_RANGE = (-2**31, 2**31 - 1)


def _in_form(rq: kq.Requant | None, attrs, x_range: tuple[int, int]) -> kq.Requant | None:
    """rq with the cheapest exact evaluation (kq.requant_form) for inputs in x_range."""
    if rq is None:
        return None
    form = kq.requant_form(attrs["multiplier"], attrs["shift"], rq.in_zp, rq.out_zp, x_range, (rq.qmin, rq.qmax))
    return kq.Requant(rq.in_zp, rq.out_zp, rq.qmin, rq.qmax, rq.dtype, form)


def _plan_qconv(conv: Node, u: _Uses) -> Group | None:
    """q.conv (constant int8 weight / bias, groups 1) + q.requant [+ the dyadic residual pattern:
    requant -> int32, add with (requant -> int32 of) another tensor, requant -> int8/uint8]."""
    x, w = conv.inputs[0], conv.inputs[1]
    a = conv.attrs
    if x.type.rank != 4 or x.type.dtype not in _INT_ACT or not w.is_const or \
            w.type.dtype not in (DType.I8, DType.I4) or a["groups"] != 1 or \
            (len(conv.inputs) > 2 and not conv.inputs[2].is_const):
        return None
    xz = a["x_zero_point"] + (128 if x.type.dtype is DType.I8 else 0)
    if not 0 <= xz <= 255:
        return None
    n, ci, h, wd = x.type.shape
    co, _, kh, kw = w.type.shape
    nodes, operands = [conv], {"x": x}
    consts = {"w": np.asarray(w.const)}
    if len(conv.inputs) > 2:
        consts["b"] = np.asarray(conv.inputs[2].const)
    rq_node = u.single(conv.outputs[0])
    rq1 = _requant_of(rq_node, 4, 1)
    rq1b = rq2 = rq3 = res_dt = None
    if rq1 is not None:
        nodes.append(rq_node)
        consts["rq1"] = rq_node.attrs
        if rq1.dtype != "int32" and co % 16 == 0:
            # the dyadic pass: conv -> requant (output grid) -> requant to int32 (common scale) -> add
            nb = u.single(rq_node.outputs[0])
            rb = _requant_of(nb, 4, 1)
            if rb is not None and rb.dtype == "int32":
                nxt_add = u.single(nb.outputs[0])
                if nxt_add is not None and nxt_add.op is ew.add:
                    rq1b, rq_node = rb, nb
                    nodes.append(nb)
                    consts["rq1b"] = nb.attrs
        last = rq1b or rq1
        add = u.single(rq_node.outputs[0]) if last.dtype == "int32" and co % 16 == 0 else None
        if add is not None and add.op is ew.add and add.inputs[0].type == add.inputs[1].type:
            cur = rq_node.outputs[0]
            other = add.inputs[1] if add.inputs[0] is cur else add.inputs[0]
            fin = u.single(add.outputs[0])
            rq3 = _requant_of(fin, 4, 1)
            if other is not cur and not other.is_const and rq3 is not None:
                nodes += [add, fin]
                consts["rq3"] = fin.attrs
                r2n = other.producer
                rq2 = _requant_of(r2n, 4, 1) if r2n is not None and r2n.op is q.requant else None
                if rq2 is not None and rq2.dtype == "int32" and u.single(other) is add and \
                        id(r2n) not in u.taken and r2n.inputs[0].type.dtype in (*_INT_ACT, DType.I32) and \
                        not r2n.inputs[0].is_const:
                    nodes.insert(0, r2n)
                    consts["rq2"] = r2n.attrs
                    operands["residual"] = r2n.inputs[0]
                else:
                    rq2 = None
                    operands["residual"] = other
                res_dt = tvm_dtype(operands["residual"].type.dtype)
    p = a["pads"]
    # the int32 accumulator (+ bias) and the int32 sum wrap: their range is all of int32
    rq1 = _in_form(rq1, consts.get("rq1"), _I32_RANGE)
    if rq1b is not None:
        rq1b = _in_form(rq1b, consts["rq1b"], (rq1.qmin, rq1.qmax))
    if rq2 is not None:
        rt = operands["residual"].type.dtype
        rq2 = _in_form(rq2, consts["rq2"], _I32_RANGE if res_dt == "int32" else q.INT_RANGE[rt])
    rq3 = _in_form(rq3, consts.get("rq3"), _I32_RANGE)
    try:
        spec = kq.QConvSpec(n, ci, h, wd, co, kh, kw, tuple(a["strides"]), (p[0], p[1], p[2], p[3]),
                            tuple(a["dilations"]), tvm_dtype(x.type.dtype), a["x_zero_point"],
                            kq.choose_in_block(ci), rq1, res_dt, rq2, rq3, rq1b)
    except ValueError:
        return None
    return Group("qconv", nodes, spec, operands, consts)


def _plan_qmatmul(mm: Node, u: _Uses) -> Group | None:
    """q.matmul(x, W constant 2-D) [+ int32 bias constant] [+ q.requant along the last axis]."""
    a, b = mm.inputs
    if not b.is_const:
        return _plan_qbmm(mm, u)
    if a.type.dtype not in _INT_ACT or a.type.rank < 2 or b.type.rank != 2:
        return None
    at = mm.attrs
    if not 0 <= at["a_zero_point"] + (128 if a.type.dtype is DType.I8 else 0) <= 255 or \
            not kqm.weight_fits(b.const, at["b_zero_point"]):
        return None
    k, n_ = b.type.shape
    rows = int(np.prod(a.type.shape[:-1]))
    nodes, consts = [mm], {"w": np.asarray(b.const)}
    rq_node = u.single(mm.outputs[0])
    if rq_node is not None and rq_node.op is ew.add:       # + int32 bias along the last axis
        other = rq_node.inputs[1] if rq_node.inputs[0] is mm.outputs[0] else rq_node.inputs[0]
        if other.is_const and other.type.dtype is DType.I32 and other.type.size == n_ and \
                other.type.shape[-1] == n_ and rq_node.outputs[0].type == mm.outputs[0].type:
            consts["b"] = np.asarray(other.const).reshape(n_)
            nodes.append(rq_node)
            rq_node = u.single(rq_node.outputs[0])
    rq = _requant_of(rq_node, mm.outputs[0].type.rank, -1)
    if rq is not None:
        nodes.append(rq_node)
        consts["rq"] = rq_node.attrs
    spec = kqm.QMatmulSpec(rows, k, n_, tvm_dtype(a.type.dtype), at["a_zero_point"], rq)
    return Group("qmatmul", nodes, spec, {"a": a}, consts)


def _per_tensor_requant(n: Node, u: _Uses, nodes: list[Node]) -> tuple[kq.Requant | None, int, int]:
    """(Requant, m, c) of a per-tensor q.requant that is n's only user, appended to `nodes`; else (None, 0, 0)."""
    rq_node = u.single(n.outputs[0])
    if rq_node is None or rq_node.op is not q.requant or len(rq_node.attrs["multiplier"]) != 1:
        return None, 0, 0
    nodes.append(rq_node)
    rq = _requant_of(rq_node, n.outputs[0].type.rank, -1)
    return rq, rq_node.attrs["multiplier"][0], rq_node.attrs["shift"][0]


def _plan_qbmm(mm: Node, u: _Uses) -> Group | None:
    """q.matmul of two activations with the same batch dims (attention), b read through a
    last-two-axes transpose when that transpose has no other user [+ a per-tensor q.requant]."""
    a, b = mm.inputs
    at = mm.attrs
    if a.type.dtype not in _INT_ACT or b.type.dtype not in _INT_ACT or a.type.rank < 2 or \
            a.type.rank != b.type.rank or a.type.shape[:-2] != b.type.shape[:-2] or \
            not kqb.b_fits(tvm_dtype(b.type.dtype), at["b_zero_point"]):
        return None
    src, transpose_b = b, False
    t = b.producer
    r = b.type.rank
    if t is not None and t.op is shape.transpose and u.single(b) is mm and \
            list(t.attrs["perm"]) == list(range(r - 2)) + [r - 1, r - 2]:
        src, transpose_b = t.inputs[0], True
    nodes, consts = [mm], {}
    rq, m_, c_ = _per_tensor_requant(mm, u, nodes)
    m, k = a.type.shape[-2:]
    try:
        spec = kqb.QBmmSpec(int(np.prod(a.type.shape[:-2], dtype=np.int64)), m, k, b.type.shape[-1],
                            tvm_dtype(a.type.dtype), at["a_zero_point"], tvm_dtype(b.type.dtype),
                            at["b_zero_point"], transpose_b, rq, m_, c_)
    except ValueError:
        return None
    return Group("qbmm", nodes, spec, {"a": a, "b": src}, consts)


def _plan_shiftmax(sm: Node, u: _Uses) -> Group | None:
    """q.shiftmax over the last axis of 8/16-bit data [+ a per-tensor q.requant]."""
    x = sm.inputs[0]
    a = sm.attrs
    if x.type.rank < 1 or a["axis"] % x.type.rank != x.type.rank - 1 or x.is_const:
        return None
    nodes = [sm]
    rq, m_, c_ = _per_tensor_requant(sm, u, nodes)
    length = x.type.shape[-1]
    out = a["dtype"]
    try:
        spec = ksm.ShiftmaxSpec(x.type.size // length, length, tvm_dtype(x.type.dtype), ivit.exp_unit(a["scale"]),
                                a["n"], ivit._OUT_BITS[out], q.INT_RANGE[out][1], a["dividend_bits"],
                                tvm_dtype(out), rq, m_, c_)
    except ValueError:
        return None
    return Group("shiftmax", nodes, spec, {"x": x})


def _plan_quantize(node: Node, u: _Uses) -> Group | None:
    """q.quantize of a float32 NCHW tensor: one kernel that also writes the layout its integer convs read."""
    x = node.inputs[0]
    if x.type.rank != 4 or x.type.dtype is not F32:
        return None
    v = node.outputs[0]
    users = [] if id(v) in u.outputs else [m for m, _ in u.users.get(v, [])]
    return Group("quantize", [node], tuple(x.type.shape), {"x": x}, {"users": users})


def _plan_int_global_sum(cast: Node, u: _Uses) -> Group | None:
    """The dyadic global average pool: nn.cast 8-bit -> int32, nn.reduce_sum over (2, 3) [+ q.requant]."""
    x = cast.inputs[0]
    if x.type.rank != 4 or x.type.dtype not in _INT_ACT or cast.attrs["to"] is not DType.I32:
        return None
    sm = u.single(cast.outputs[0])
    if sm is None or sm.op is not rd.reduce_sum or sorted(ax % 4 for ax in sm.attrs["axes"]) != [2, 3] or \
            not sm.attrs["keepdims"]:
        return None
    n, c, h, w = x.type.shape
    lo, hi = q.INT_RANGE[x.type.dtype]
    nodes, consts = [cast, sm], {}
    rq_node = u.single(sm.outputs[0])
    rq = _in_form(_requant_of(rq_node, 4, 1), rq_node.attrs if rq_node is not None else None,
                  (h * w * lo, h * w * hi))
    if rq is not None:
        nodes.append(rq_node)
        consts["rq"] = rq_node.attrs
    try:
        spec = kpool.IntGlobalSumSpec(n, c, h, w, 16 if c % 16 == 0 else 0, tvm_dtype(x.type.dtype), rq)
    except ValueError:
        return None
    return Group("int_global_sum", nodes, spec, {"x": x}, consts)


def _plan_int_max_pool(p: Node) -> Group | None:
    x = p.inputs[0]
    n, c, h, w = x.type.shape
    block = 16 if c % 16 == 0 else 0
    dt = tvm_dtype(x.type.dtype)
    if p.op is rd.reduce_max:
        if sorted(ax % 4 for ax in p.attrs["axes"]) != [2, 3] or not p.attrs["keepdims"]:
            return None
        spec = kpool.PoolSpec("global_max", n, c, h, w, block=block, dtype=dt)
    else:
        a = p.attrs
        spec = kpool.PoolSpec("max", n, c, h, w, a["kernel"][0], a["kernel"][1], tuple(a["strides"]),
                              tuple(a["pads"]), tuple(a["dilations"]), block, False, a["ceil_mode"], dt)
    return Group("pool", [p], spec, {"x": x})


class _IntEmit:
    """Emission of the integer groups (mixed into FastPath)."""

    def _int_data(self, v: Value, s: kq.QConvSpec) -> relax.Expr:
        """v as the conv's (n, cip//ib, h, w, ib) data; channel-padded packs are not shared."""
        if s.cip == s.ci:
            return self.in_layout(v, s.in_block)
        n, c, h, w = v.type.shape
        dt = tvm_dtype(v.type.dtype)
        key = ("pack_pad", id(v), s.in_block, s.cip)
        if key not in self.blocked_extra:
            gv = self._kernel(("pack_pad", n, c, h, w, s.in_block, s.cip, dt, s.x_zp),
                              lambda: kq.make_pack_channels(n, c, h, w, s.in_block, s.cip, dt, s.x_zp),
                              "pack_nchwc")
            self.blocked_extra[key] = self._call(gv, [self.plain(v)],
                                                 (n, s.cip // s.in_block, h, w, s.in_block), dt)
        return self.blocked_extra[key]

    def _emit_qconv(self, grp: Group) -> None:
        s: kq.QConvSpec = grp.spec
        w = grp.consts["w"]
        args = [self._int_data(grp.operands["x"], s), relax.const(kq.pack_weight(s, w), "int8"),
                relax.const(kq.pack_bias(s, w, grp.consts.get("b")), "int32")]

        def rq(name):
            at, r = grp.consts[name], getattr(s, name)
            return relax.const(kq.pack_requant(at["multiplier"], at["shift"], s.co, s.cop, form=r.form),
                               kq.requant_dtype(r))
        if s.rq1 is not None:
            args.append(rq("rq1"))
        if s.rq1b is not None:
            args.append(rq("rq1b"))
        if s.residual_dtype is not None:
            args.append(self.in_layout(grp.operands["residual"], 16))
            if s.rq2 is not None:
                args.append(rq("rq2"))
            args.append(rq("rq3"))
        gv = self._kernel(("qconv", s), lambda: tile_policy.kernel(s), "qconv2d_vnni")  # tile: cost model
        self._set_out(grp.out, self._call(gv, args, kq.out_shape(s), s.out_dtype), 16 if s.blocked_out else 0)

    def _emit_quantize(self, grp: Group) -> None:
        """Blocked (and channel-padded) output when every reader is an integer conv taking it as its data in
        the same layout; plain otherwise."""
        n, c, h, w = grp.spec
        v, a = grp.out, grp.nodes[0].attrs
        dt = tvm_dtype(a["dtype"])
        layouts = set()
        for m in grp.consts["users"] or [None]:
            g = self.groups.get(id(m)) if m is not None else None
            if g is None or g.kind != "qconv" or g.operands["x"] is not v or g.operands.get("residual") is v:
                layouts.add(None)
            else:
                layouts.add((g.spec.in_block, g.spec.cip, g.spec.x_zp))
        ib, cp, fill = layouts.pop() if len(layouts) == 1 and None not in layouts else (0, c, 0)
        if ib and cp == c and c % ib:
            ib, cp = 0, c
        gv = self._kernel(("quantize", n, c, h, w, ib, cp, a["scale"], a["zero_point"], a["qmin"], a["qmax"], dt,
                           fill),
                          lambda: klayout.make_quantize_pack(n, c, h, w, ib, cp, a["scale"], a["zero_point"],
                                                             a["qmin"], a["qmax"], dt, fill), "quantize")
        x = self.plain(grp.operands["x"])
        if not ib:
            self.plain_env[id(v)] = self._call(gv, [x], (n, c, h, w), dt)
        elif cp != c:
            self.blocked_extra[("pack_pad", id(v), ib, cp)] = self._call(gv, [x], (n, cp // ib, h, w, ib), dt)
        else:
            self._set_out(v, self._call(gv, [x], (n, c // ib, h, w, ib), dt), ib)

    def _emit_int_global_sum(self, grp: Group) -> None:
        s: kpool.IntGlobalSumSpec = grp.spec
        args = [self.in_layout(grp.operands["x"], s.block)]
        if s.rq is not None:
            at = grp.consts["rq"]
            cop = -(-s.c // 16) * 16
            args.append(relax.const(kq.pack_requant(at["multiplier"], at["shift"], s.c, cop, form=s.rq.form),
                                    kq.requant_dtype(s.rq)))
        gv = self._kernel(("int_global_sum", s), lambda: kpool.make_int_global_sum(s), "int_global_sum")
        self._set_out(grp.out, self._call(gv, args, s.out_shape(), s.out_dtype), s.block)

    def _emit_qmatmul(self, grp: Group) -> None:
        s: kqm.QMatmulSpec = grp.spec
        zp = grp.nodes[0].attrs["b_zero_point"]
        w = grp.consts["w"]
        a = self.bb.emit(relax.op.reshape(self.plain(grp.operands["a"]), (s.m, s.k)))
        args = [a, relax.const(kqm.pack_weight(s, w, zp), "int8"), relax.const(kqm.pack_bias(s, w, zp, grp.consts.get("b")), "int32")]
        if s.rq is not None:
            at = grp.consts["rq"]
            args.append(relax.const(kqm.pack_requant(at["multiplier"], at["shift"], s), "int64"))
        gv = self._kernel(("qmatmul", s), lambda: tile_policy.kernel(s), "qmatmul_vnni")
        y = self._call(gv, args, kqm.out_shape(s), s.out_dtype)
        if s.np_ != s.n:
            y = self.bb.emit(relax.op.strided_slice(y, axes=[1], begin=[0], end=[s.n]))
        self.plain_env[id(grp.out)] = self.bb.emit(relax.op.reshape(y, grp.out.type.shape))


    def _emit_qbmm(self, grp: Group) -> None:
        s: kqb.QBmmSpec = grp.spec
        a = self.bb.emit(relax.op.reshape(self.plain(grp.operands["a"]), (s.bsz, s.m, s.k)))
        b = self.bb.emit(relax.op.reshape(self.plain(grp.operands["b"]), s.b_shape))
        pack = self._kernel(("qbmm_pack", s), lambda: kqb.make_pack(s), "qbmm_pack")
        pb = self.bb.emit(relax.call_tir(pack, [b], [relax.TensorType(kqb.panel_shape(s), "int8"),
                                                     relax.TensorType((s.bsz, s.n), "int32")]))
        panel, bias = (self.bb.emit(relax.TupleGetItem(pb, i)) for i in range(2))
        gv = self._kernel(("qbmm", s), lambda: tile_policy.kernel(s), "qbmm_vnni")
        y = self._call(gv, [a, panel, bias], kqb.out_shape(s), s.out_dtype)
        self.plain_env[id(grp.out)] = self.bb.emit(relax.op.reshape(y, grp.out.type.shape))


    def _emit_shiftmax(self, grp: Group) -> None:
        s: ksm.ShiftmaxSpec = grp.spec
        x = self.bb.emit(relax.op.reshape(self.plain(grp.operands["x"]), (s.rows, s.length)))
        gv = self._kernel(("shiftmax", s), lambda: ksm.make_shiftmax(s), "shiftmax")
        y = self._call(gv, [x], (s.rows, s.length), s.out_dtype)
        self.plain_env[id(grp.out)] = self.bb.emit(relax.op.reshape(y, grp.out.type.shape))


# Elementwise ops that work on any layout, as (relax op) for unary or binary-with-scalar use.
_BLOCKED_UNARY = {ew.relu: relax.op.nn.relu, ew.sigmoid: relax.op.sigmoid, ew.tanh: relax.op.tanh}


class FastPath(_IntEmit):
    """Emits the planned kernels and tracks which values live in a blocked layout."""

    def __init__(self, bb: relax.BlockBuilder, g: Graph, plain_env: dict[int, relax.Expr],
                 read_plain: Callable[[Value], relax.Expr]):
        self.bb, self.g = bb, g
        self.groups = plan(g)
        self.plain_env = plain_env          # id(value) -> plain (logical layout) expr
        self.blocked: dict[int, tuple[relax.Expr, int]] = {}   # id(value) -> (expr, block)
        self._read_plain = read_plain
        self._funcs: dict[tuple, relax.GlobalVar] = {}
        self.blocked_extra: dict[tuple, relax.Expr] = {}   # channel-padded packs of integer data

    # -- kernels as GlobalVars, one per distinct spec ---------------------------
    def _kernel(self, key: tuple, make: Callable[[], tvm.tirx.PrimFunc], name: str) -> relax.GlobalVar:
        if key not in self._funcs:
            func = make()
            sym = f"{name}_{len(self._funcs)}"
            self._funcs[key] = self.bb.add_func(func.with_attr("global_symbol", sym), sym)
        return self._funcs[key]

    def _call(self, gv, args, shape_, dtype="float32") -> relax.Expr:
        return self.bb.emit(relax.call_tir(gv, args, relax.TensorType(tuple(shape_), dtype)))

    # -- layouts ---------------------------------------------------------------
    def plain(self, v: Value) -> relax.Expr:
        """v in its logical (plain) layout, unpacking a blocked value once."""
        if id(v) not in self.plain_env and id(v) in self.blocked:
            expr, block = self.blocked[id(v)]
            n, c, h, w = v.type.shape
            if h == w == 1:               # (n, c/b, 1, 1, b) already has NCHW element order
                self.plain_env[id(v)] = self.bb.emit(relax.op.reshape(expr, (n, c, h, w)))
            else:
                dt = tvm_dtype(v.type.dtype)
                gv = self._kernel(("unpack", n, c, h, w, block, dt),
                                  lambda: klayout.make_unpack_nchwc(n, c, h, w, block, dt), "unpack_nchwc")
                self.plain_env[id(v)] = self._call(gv, [expr], (n, c, h, w), dt)
        return self._read_plain(v)

    def in_layout(self, v: Value, block: int) -> relax.Expr:
        """v as NCHW{block}c (block 0 = plain)."""
        if block == 0:
            return self.plain(v)
        if id(v) in self.blocked:
            expr, have = self.blocked[id(v)]
            if have == block:
                return expr
        n, c, h, w = v.type.shape
        src = self.plain(v)
        dt = tvm_dtype(v.type.dtype)
        gv = self._kernel(("pack", n, c, h, w, block, dt),
                          lambda: klayout.make_pack_nchwc(n, c, h, w, block, dt), "pack_nchwc")
        expr = self._call(gv, [src], (n, c // block, h, w, block), dt)
        self.blocked.setdefault(id(v), (expr, block))
        return expr

    def _set_out(self, v: Value, expr: relax.Expr, block: int) -> None:
        if block:
            self.blocked[id(v)] = (expr, block)
        else:
            self.plain_env[id(v)] = expr

    # -- lowering ----------------------------------------------------------------
    def lower(self, node: Node) -> bool:
        """Emit `node` if a fast path owns it; False hands it to the generic lowering."""
        grp = self.groups.get(id(node))
        if grp is not None:
            if node is grp.nodes[-1]:
                getattr(self, f"_emit_{grp.kind}")(grp)
            return True
        return self._blocked_elementwise(node)

    def _blocked_elementwise(self, node: Node) -> bool:
        """relu/sigmoid/tanh, and add/mul of two equally blocked values, stay blocked."""
        if not node.inputs or not all(id(v) in self.blocked for v in node.inputs):
            return False
        if all(id(v) in self.plain_env for v in node.inputs):
            return False                    # already unpacked for another reader: stay plain
        if node.op in _BLOCKED_UNARY:
            expr, block = self.blocked[id(node.inputs[0])]
            self._set_out(node.outputs[0], self.bb.emit(_BLOCKED_UNARY[node.op](expr)), block)
            return True
        if node.op in (ew.add, ew.mul) and node.inputs[0].type == node.inputs[1].type:
            (a, ba), (b, bb_) = (self.blocked[id(v)] for v in node.inputs)
            if ba == bb_:
                fn = relax.op.add if node.op is ew.add else relax.op.multiply
                self._set_out(node.outputs[0], self.bb.emit(fn(a, b)), ba)
                return True
        return False

    def _emit_conv(self, grp: Group) -> None:
        s: kconv.Conv2dSpec = grp.spec
        args = [self.in_layout(grp.operands["x"], s.in_block),
                relax.const(kconv.pack_weight(s, grp.consts["w"].astype(np.float32)))]
        if s.has_bias:
            args.append(relax.const(kconv.pack_bias(s, grp.consts["b"].astype(np.float32))))
        if s.has_residual:
            args.append(self.in_layout(grp.operands["residual"], s.out_block))
        gv = self._kernel(("conv", s), lambda: tile_policy.kernel(s), "conv2d_nchwc")  # tile: cost model
        self._set_out(grp.out, self._call(gv, args, kconv.out_shape(s)), s.out_block)

    def _emit_matmul(self, grp: Group) -> None:
        s: kmm.MatmulSpec = grp.spec
        a = self.plain(grp.operands["a"])
        if s.b_is_const:
            a = self.bb.emit(relax.op.reshape(a, (s.m, s.k)))
            args = [a, relax.const(kmm.pack_b(s, grp.consts["w"].astype(np.float32)))]
            if s.has_bias:
                args.append(relax.const(grp.consts["b"].astype(np.float32)))
        else:
            args = [a, self.plain(grp.operands["b"])]
        gv = self._kernel(("matmul", s), lambda: tile_policy.kernel(s), "matmul")  # tile: cost model
        y = self._call(gv, args, kmm.out_shape(s))
        if s.b_is_const:
            y = self.bb.emit(relax.op.reshape(y, grp.out.type.shape))
        self.plain_env[id(grp.out)] = y

    def _emit_pool(self, grp: Group) -> None:
        s: kpool.PoolSpec = grp.spec
        x = self.in_layout(grp.operands["x"], s.block)
        gv = self._kernel(("pool", s), lambda: kpool.make_pool2d(s), f"{s.kind}_pool2d")
        self._set_out(grp.out, self._call(gv, [x], kpool.pool_out_shape(s), s.dtype), s.block)
