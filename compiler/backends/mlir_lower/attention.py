"""A fused attention (`k.fused{kernel = "attention"}`, passes.einsum.fuse_attention) as one
`iree_linalg_ext.attention`: IREE's own one-pass attention, which its GPU pipeline tiles with an online
softmax (the scores never reach memory). On the CPU the body is lowered op by op (ON_TARGETS says why).

The op computes softmax(scale * Q K^T + mask) V over indexing maps, so what our body states is all
expressed by its maps: batch dimensions as they are, K transposed or not, a head repeat of K and V
(grouped-query attention) as a split of the head dimension that K and V do not index, a mask broadcast along
some dimensions as a map without them. A causal body becomes a boolean mask computed from the indices
(true: the key is kept), not the float mask the body would have built. The NaN guard torch's export puts
after the softmax becomes a guard on the output (_zero_nan). What the op cannot state raises NotFusable, and
the body is lowered op by op (kernel.py).
"""
from __future__ import annotations

from iree.compiler import ir
from iree.compiler.dialects import arith, linalg

from compiler.backends.attention_body import Attention, read_attention
from compiler.backends.base import NotFusable
from compiler.backends.mlir_lower.registry import PAR, LowerCtx, amap, elem_type, generic, scalar, tensor_type
from compiler.ir import Node
from compiler.types import DType


# The targets on which a fused attention is one iree_linalg_ext.attention. On cuda IREE tiles it for the GPU
# (float16: mma.sync tensor-core MMA). On the CPU IREE 3.13's llvm-cpu pipeline runs it at ~2 GFLOP/s: 12 heads x
# 512 x 64 took 350 ms, against 23 ms for the body op by op (1 thread, `PYTHONPATH=. python
# benchmarks/attention_vs_torch.py --backend mlir`), so there the body is lowered op by op. The lowering's
# arithmetic is checked on the CPU all the same (tests/backends/test_mlir_attention.py adds llvm here).
ON_TARGETS = frozenset({"cuda"})


def lower_attention(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    if ctx.target.kind not in ON_TARGETS:
        raise NotFusable(f"the body op by op on {ctx.target.kind} (IREE's attention is slower there)")
    body = node.attrs["body"]
    a = read_attention(body, (DType.F32, DType.F16))
    operand = {id(v): i for i, v in enumerate(body.inputs)}
    if any(id(x) not in operand for x in (a.q, a.k, a.v)):
        raise NotFusable("q, k and v must be operands of the attention kernel")
    if a.k_group != a.v_group:
        raise NotFusable("K and V repeated by different head counts")
    group = a.k_group
    *sb, lq, d = a.q.type.shape
    lk, dv = a.v.type.shape[-2:]
    if lk == 1:       # IREE 3.13's cuda pipeline crashes (SIGSEGV) on one key with more than 2 queries
        raise NotFusable("one key: the body op by op")
    batch = list(sb) if group == 1 else list(sb[:-1]) + [sb[-1] // group, group]
    kv_batch = [i for i in range(len(batch)) if group == 1 or i != len(batch) - 1]
    if any(list(x.type.shape[:-2]) != [batch[i] for i in kv_batch] for x in (a.k, a.v)):
        raise NotFusable("K and V must have the batch of Q (less its repeated heads)")
    nb = len(batch)
    m, n, k1, k2 = nb, nb + 1, nb + 2, nb + 3
    dims = nb + 4
    bdims = list(range(nb))
    et = elem_type(a.q.type.dtype)
    mask = _mask(ctx, a, args, operand, batch, group, (m, k2))      # first: it may still decline
    q = ctx.reshape(args[operand[id(a.q)]], batch + [lq, d])
    ins = [q, args[operand[id(a.k)]], args[operand[id(a.v)]], scalar(a.scale, et)]
    maps = [amap(dims, bdims + [m, k1]), amap(dims, kv_batch + ([k1, k2] if a.k_transposed else [k2, k1])),
            amap(dims, kv_batch + [k2, n]), amap(dims, [])]
    if mask is not None:
        ins.append(mask[0])
        maps.append(amap(dims, mask[1]))
    maps.append(amap(dims, bdims + [m, n]))
    op = ir.Operation.create(
        "iree_linalg_ext.attention", results=[tensor_type(batch + [lq, dv], et)], operands=ins + [ctx.empty(batch + [lq, dv], et)],
        attributes={"indexing_maps": ir.ArrayAttr.get([ir.AffineMapAttr.get(x) for x in maps])}, regions=1)
    block = op.regions[0].blocks.append(ir.F32Type.get())
    with ir.InsertionPoint(block):
        ir.Operation.create("iree_linalg_ext.yield", operands=[block.arguments[0]])
    out = op.results[0]
    if a.zero_masked_rows:
        out = ctx.ewise([out], batch + [lq, dv], et, _zero_nan)
    return [ctx.reshape(out, body.outputs[0].type.shape)]


def _zero_nan(x: ir.Value) -> ir.Value:
    """The body's NaN guard, on the output: a query whose every key the mask removes (-inf) has a NaN
    softmax row, which the guard makes 0; the op's output row is then NaN (0 / 0), so the row reads 0. (Only a
    NaN in V itself reads otherwise: NaN in the body, 0 here.)"""
    return arith.select(arith.cmpf(arith.CmpFPredicate.UNO, x, x), scalar(0.0, x.type), x)


def _mask(ctx: LowerCtx, a: Attention, args: list[ir.Value], operand: dict[int, int], batch: list[int],
          group: int, rows_keys: tuple[int, int]) -> tuple[ir.Value, list[int]] | None:
    """(the mask operand, the iteration dimensions it is indexed by), or None where there is none; NotFusable
    before it emits anything."""
    m, k2 = rows_keys
    if a.causal >= 0:
        lq, lk = a.q.type.shape[-2], a.v.type.shape[-2]
        return _causal(ctx, lq, lk, a.causal), [m, k2]
    if a.mask is None:
        return None
    if id(a.mask) not in operand and not a.mask.is_const:
        raise NotFusable("the attention mask must be an operand or a constant")
    if a.mask.type.dtype is not a.q.type.dtype:
        raise NotFusable("the mask's type differs from Q's")
    value = args[operand[id(a.mask)]] if id(a.mask) in operand else ctx.const(a.mask.const, a.mask.type.dtype)
    scores = len(batch) - (group > 1) + 2
    ms = [1] * (scores - a.mask.type.rank) + list(a.mask.type.shape)
    if group > 1:     # the head dimension splits in (K/V head, repeat) like Q's
        h = ms[-3]
        ms = ms[:-3] + ([h // group, group] if h > 1 else [1, 1]) + ms[-2:]
    loops = list(range(len(batch))) + [m, k2]
    kept = [i for i, s in enumerate(ms) if s != 1]
    return ctx.reshape(value, [ms[i] for i in kept]), [loops[i] for i in kept]


def _causal(ctx: LowerCtx, lq: int, lk: int, offset: int) -> ir.Value:
    """(lq, lk) booleans: key j is kept for query i iff j <= i + offset."""
    i1, idx = ir.IntegerType.get_signless(1), ir.IndexType.get()

    def keep(_out):
        i = arith.addi(linalg.IndexOp(0).result, arith.ConstantOp(idx, offset).result)
        return arith.cmpi(arith.CmpIPredicate.sle, linalg.IndexOp(1).result, i)

    return generic([], [ctx.empty([lq, lk], i1)], [amap(2, [0, 1])], [PAR, PAR], keep)[0]
