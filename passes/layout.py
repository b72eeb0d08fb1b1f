"""assign_layouts: which tensors live in the channel-blocked layout NCHW{b}c between kernels.

Each fused kernel whose anchor has a blocked CPU kernel states the layouts it reads and writes
(`compiler.layouts` says which): its body gains `layout.unpack` of its blocked operands at the top
and `layout.pack` of its result at the bottom, and the graph gets the matching conversions around
it. Conversions are then kept to the fewest:

- a value that is the unpack of a blocked value is read blocked straight from it (no pack);
- an elementwise node whose operands are all blocked alike (scalar constants aside) runs on the
  blocked values, and so do channel concats, slices of whole channel blocks and spatial resizes;
- a pack of the quantize kernel's plain result moves into it (it writes the packed layout);
- unpacks nobody reads are dropped.

Extra epilogue inputs with the kernel's full output shape (a residual) are read in the output's
layout.

Two tables say which kernels read and write blocked data: `kernel_layout` for the CPU's kernels
(`assign_layouts`, the llvm pipeline) and `gpu_kernel_layout` for the GPU's (`assign_gpu_layouts`, the
cuda pipeline): its int8 and float16 convs are implicit GEMMs whose gather reads a pixel's 4 channels as one
aligned vector from NCHW{16}c (NCHW: 4 loads H*W apart) and whose write-back stores 4 channels as one vector.
"""
from __future__ import annotations

from dataclasses import dataclass

from compiler import layouts
from compiler.ir import Graph, Node, Value
from compiler.ops import kernel, linalg, nn, quant as q, reduce as rd, shape
from compiler.ops import layout as lay
from compiler.types import DType
from passes.base import register_pass
from passes.canonicalize import dead_code
from passes.fusion import ELEMENTWISE

F32 = DType.F32
INT8 = (DType.I8, DType.U8)


# kernels whose write-back can produce any channel block (with padding): the others write the layout
# kernel_layout gives them
WRITES_ANY_LAYOUT = frozenset({"quantize"})


@dataclass(frozen=True)
class KernelLayout:
    in_block: int          # 0: plain
    out_block: int
    fill: int = 0          # what padding channels of the packed input hold


def _spatial(n: Node) -> bool:
    return n.op in (rd.reduce_mean, rd.reduce_max, rd.reduce_sum) and n.inputs[0].type.rank == 4 and \
        sorted(ax % 4 for ax in n.attrs["axes"]) == [2, 3] and n.attrs["keepdims"]


def kernel_layout(node: Node) -> KernelLayout | None:
    """The layouts the CPU kernel of fused `node` reads and writes, or None (plain throughout)."""
    body = node.attrs["body"]
    a = kernel.anchor_of(body)
    x = a.inputs[0]
    if x.type.rank != 4 or (a.op is not q.quantize and body.inputs and body.inputs[0] is not x
                            and not (x.producer is not None and x.producer.inputs[0] is body.inputs[0])):
        return None
    c = x.type.shape[1]
    if a.op is linalg.conv and x.type.dtype is F32 and a.inputs[1].is_const:
        ib, ob = layouts.choose_blocks(c, a.outputs[0].type.shape[1], a.attrs["groups"])
        return KernelLayout(ib, ob)
    if a.op is q.conv and x.type.dtype in q.INT_DATA and a.inputs[1].is_const and a.attrs["groups"] == c > 1 \
            and a.outputs[0].type.shape[1] == c:       # depthwise: the same 16 (or 8) channel blocks in and out
        b = next((b for b in (16, 8) if c % b == 0), 0)
        return KernelLayout(b, b, a.attrs["x_zero_point"]) if b else None
    if a.op is q.conv and x.type.dtype in q.INT_DATA and a.inputs[1].is_const and a.attrs["groups"] == 1:
        xz = a.attrs["x_zero_point"] + (128 if x.type.dtype is DType.I8 else 0)
        if not (-2**15 <= xz < 2**15 if x.type.dtype is DType.I16 else 0 <= xz <= 255):
            return None
        return KernelLayout(layouts.int_in_block(c), layouts.int_out_block(a.outputs[0].type.shape[1]),
                            a.attrs["x_zero_point"])
    if a.op in (nn.max_pool, nn.avg_pool) or (_spatial(a) and a.op is not rd.reduce_sum):
        if x.type.dtype is F32:
            b = layouts.best_block(c)
            return KernelLayout(b, b)
        if x.type.dtype in INT8 and a.op in (nn.max_pool, rd.reduce_max):
            b = layouts.int_out_block(c)
            return KernelLayout(b, b)
    if a.op is rd.reduce_sum and _spatial(a) and x.producer is not None and x.producer.inputs[0] is body.inputs[0] \
            and body.inputs[0].type.dtype in q.INT_DATA:
        b = layouts.int_out_block(c)
        return KernelLayout(b, b)
    return None


GPU_BLOCKS = (16, 8)        # multiples of 4: one pixel's 4 channels are one aligned 32-bit (float16: 64-bit) word
GPU_DTYPES = (DType.I8, DType.U8, DType.F16)
GPU_PAD_BELOW = 4           # an input of fewer channels is read NCHW{4}c, its channels padded to 4


def gpu_kernel_layout(node: Node) -> KernelLayout | None:
    """The layouts the GPU kernel of fused `node` reads and writes, or None (plain throughout): an ungrouped
    2-D int8 or float16 conv by a constant weight (tvm_fused/cuda.emit_qconv, emit_conv) reads and writes the
    largest of GPU_BLOCKS dividing its channel counts (0, plain, where none does), an input of fewer than
    GPU_PAD_BELOW channels (a 3-channel image) NCHW{4}c padded with the zero point; an int8 or
    float16 max pool (or global max) reads and writes that block (tvm_fused/cuda.emit_pool), so a pool between
    convs needs no conversion, and so does a float32 global average pool of a blocked conv's result (FP16's ResNet
    tail: its last conv writes the float16 result widened to float32, kernel.widened_result). FP32 stays NCHW
    (its convs are dlight's SIMT matmuls, not our GEMM)."""
    body = node.attrs["body"]
    a = kernel.anchor_of(body)
    x = a.inputs[0]
    if not body.inputs or body.inputs[0] is not x or x.type.rank != 4:
        return None
    if a.op is rd.reduce_mean and _spatial(a) and x.type.dtype is F32:      # a global average pool: blocked
        p = node.inputs[0].producer                                          # where its input is written so
        if p is not None and p.op is lay.unpack:                             # (by this pass already)
            block = p.inputs[0].type.shape[4]
        else:
            made = gpu_kernel_layout(p) if p is not None and p.op is kernel.fused else None
            block = made.out_block if made is not None else 0
        return KernelLayout(block, block) if block else None
    if x.type.dtype not in GPU_DTYPES:
        return None
    if a.op in (nn.max_pool, rd.reduce_max) and (a.op is nn.max_pool or _spatial(a)):
        b = next((b for b in GPU_BLOCKS if x.type.shape[1] % b == 0), 0)      # a max pool: cuda.emit_pool
        return KernelLayout(b, b) if b else None
    conv = q.conv if x.type.dtype in INT8 else linalg.conv
    if a.op is not conv or a.attrs["groups"] != 1 or not a.inputs[1].is_const:
        return None
    if x.type.dtype is DType.F16 and body.outputs[0].type.dtype is not DType.F16 and not kernel.widened_result(body):
        return None             # a float16 body ending in another float32 op: lowered op by op, plain
    ib, ob = (next((b for b in GPU_BLOCKS if c % b == 0), 0) for c in (x.type.shape[1], a.outputs[0].type.shape[1]))
    if not ib and x.type.shape[1] < GPU_PAD_BELOW:
        ib = GPU_PAD_BELOW      # a 3-channel image: padded to 4 (the weight's 4th channel 0), a pixel is one word
    return KernelLayout(ib, ob, a.attrs.get("x_zero_point", 0)) if ib or ob else None


def _blocked_body(node: Node, kl: KernelLayout, blocked_operands: list[int], out_blocked: bool) -> Graph:
    """A copy of the body reading operands `blocked_operands` blocked and writing its result blocked."""
    old = node.attrs["body"]
    body = Graph(old.name)
    body._names = set(old._names)
    vmap: dict[int, Value] = {}
    for i, v in enumerate(old.inputs):
        if i in blocked_operands:
            block = kl.in_block if i == 0 else kl.out_block
            p = Value(v.name + "_packed", lay.pack.infer([v.type], {"block": block, "fill": 0})[0])
            body.inputs.append(p)
            vmap[id(v)] = body.add1(lay.unpack, [p], channels=v.type.shape[1])
        else:
            nv = Value(v.name, v.type)
            body.inputs.append(nv)
            vmap[id(v)] = nv
    for n in old.nodes:
        ins = [vmap.get(id(v), v) for v in n.inputs]
        outs = [Value(v.name, v.type) for v in n.outputs]
        vmap.update({id(v): o for v, o in zip(n.outputs, outs)})
        body.nodes.append(Node(n.op, ins, n.attrs, outs, n.name, n.loc))
    res = vmap[id(old.outputs[0])]
    body.outputs = [body.add1(lay.pack, [res], block=kl.out_block) if out_blocked else res]
    return body


class _Assigner:
    def __init__(self, g: Graph, layout_of):
        self.g, self.layout_of = g, layout_of
        self.users = g.uses()
        self.outputs = {id(v) for v in g.outputs}
        self.out: list[Node] = []
        self.blocked: dict[int, tuple[Value, int]] = {}     # id(plain value) -> (blocked value, block)
        self.packs: dict[tuple[int, int, int], Value] = {}

    def emit(self, op, ins, **attrs) -> Value:
        v = Value(self.g.fresh_name(ins[0].name + ("_packed" if op is lay.pack else "_plain")),
                  op.infer([x.type for x in ins], op.complete_attrs(attrs))[0])
        self.out.append(Node(op, ins, op.complete_attrs(attrs), [v], v.name))
        return v

    def as_blocked(self, v: Value, block: int, fill: int) -> Value:
        have = self.blocked.get(id(v))
        c = v.type.shape[1]
        if have is not None and have[1] == block and c % block == 0:
            return have[0]
        key = (id(v), block, fill)
        if key not in self.packs:
            self.packs[key] = self.emit(lay.pack, [v], block=block, fill=fill)
        return self.packs[key]

    def set_blocked(self, plain_out: Value, blocked: Value, block: int, producer: Node) -> None:
        """producer now writes `blocked`; plain_out becomes the unpack of it."""
        self.out.append(producer)
        self.out.append(Node(lay.unpack, [blocked], {"channels": plain_out.type.shape[1]}, [plain_out],
                             plain_out.name))
        self.blocked[id(plain_out)] = (blocked, block)

    def kernel(self, node: Node, kl: KernelLayout) -> None:
        out_t = node.outputs[0].type
        blocked_ops = [0] if kl.in_block else []
        if kl.out_block:
            blocked_ops += [i for i, v in enumerate(node.inputs) if i and v.type.shape == out_t.shape
                            and v.type.rank == 4]
        ins = [self.as_blocked(v, kl.in_block if i == 0 else kl.out_block, kl.fill if i == 0 else 0)
               if i in blocked_ops else v for i, v in enumerate(node.inputs)]
        new_body = _blocked_body(node, kl, blocked_ops, bool(kl.out_block))
        if not kl.out_block:
            self.out.append(Node(kernel.fused, ins, {**node.attrs, "body": new_body}, node.outputs, node.name,
                                 node.loc))
            return
        plain = node.outputs[0]
        bv = Value(self.g.fresh_name(plain.name + "_packed"), new_body.outputs[0].type)
        fused = Node(kernel.fused, ins, {**node.attrs, "body": new_body}, [bv], node.name, node.loc)
        self.set_blocked(plain, bv, kl.out_block, fused)

    def elementwise(self, node: Node) -> bool:
        """Run `node` on blocked operands when they are all blocked alike; True if it did. An operand may
        broadcast over the spatial axes (a squeeze-excite gate (n, c, 1, 1) times (n, c, h, w)): blocked,
        (n, c/b, 1, 1, b) broadcasts the same way."""
        if node.op not in ELEMENTWISE or len(node.outputs) != 1 or node.outputs[0].type.rank != 4 or \
                len(node.attrs.get("multiplier", ())) > 1:       # a per-channel requant indexes channels
            return False
        out_shape = node.outputs[0].type.shape
        vals = [v for v in node.inputs if not (v.is_const and v.type.size == 1)]
        have = [self.blocked.get(id(v)) for v in vals]
        if not vals or any(h is None for h in have) or len({h[1] for h in have}) != 1 or \
                any(v.type.rank != 4 or v.type.shape[:2] != out_shape[:2] or
                    v.type.shape[2:] not in (out_shape[2:], (1, 1)) for v in vals) or \
                not any(v.type.shape == out_shape for v in vals):
            return False
        block = have[0][1]
        if node.outputs[0].type.shape[1] % block or any(self._plain_needed(v) for v in vals):
            return False
        ins = [self.blocked[id(v)][0] if id(v) in self.blocked else v for v in node.inputs]
        plain = node.outputs[0]
        bt = lay.pack.infer([plain.type], {"block": block, "fill": 0})[0]
        bv = Value(self.g.fresh_name(plain.name + "_packed"), bt)
        self.set_blocked(plain, bv, block, Node(node.op, ins, node.attrs, [bv], node.name, node.loc))
        return True

    def channel_data_movement(self, node: Node) -> bool:
        """A concat along channels of values blocked alike, a slice of whole channel blocks, or a spatial
        resize runs on the blocked values (C2f's split and concat, SPPF's concat, FPN upsampling). True if
        it did."""
        out = node.outputs[0] if len(node.outputs) == 1 else None
        if out is None or out.type.rank != 4:
            return False
        if node.op is shape.concat and node.attrs["axis"] % 4 == 1:
            have = [self.blocked.get(id(v)) for v in node.inputs]
            if any(h is None for h in have) or len({h[1] for h in have}) != 1 or \
                    any(v.type.shape[1] % have[0][1] for v in node.inputs):
                return False
            block = have[0][1]
            ins, attrs = [h[0] for h in have], node.attrs
        elif node.op is shape.slice_ and id(node.inputs[0]) in self.blocked and \
                [ax % 4 for ax in node.attrs["axes"]] == [1]:
            src, block = self.blocked[id(node.inputs[0])]
            start, stop, step = shape.slice_bounds(node.inputs[0].type.shape, node.attrs)[1]
            if step != 1 or start % block or stop % block or node.inputs[0].type.shape[1] % block:
                return False
            ins, attrs = [src], {**node.attrs, "starts": (start // block,), "ends": (stop // block,),
                                 "axes": (1,), "steps": (1,)}
        elif node.op is shape.resize and id(node.inputs[0]) in self.blocked and \
                tuple(node.attrs["sizes"][:2]) == node.inputs[0].type.shape[:2] and \
                tuple(node.attrs["scales"][:2]) == (1.0, 1.0) and not node.attrs["roi"]:
            src, block = self.blocked[id(node.inputs[0])]          # per-axis: the spatial axes only
            sz, sc = node.attrs["sizes"], node.attrs["scales"]
            ins, attrs = [src], {**node.attrs, "sizes": (*src.type.shape[:2], sz[2], sz[3], block),
                                 "scales": (1.0, 1.0, sc[2], sc[3], 1.0)}
        else:
            return False
        bt = node.op.infer([v.type for v in ins], attrs)[0]
        bv = Value(self.g.fresh_name(out.name + "_packed"), bt)
        self.set_blocked(out, bv, block, Node(node.op, ins, attrs, [bv], node.name, node.loc))
        return True

    def _plain_needed(self, v: Value) -> bool:
        """v's plain form is read anyway (a graph output, or a reader with no blocked form), so an
        elementwise reader may as well run on it."""
        if id(v) in self.outputs:
            return True
        for r, _ in self.users.get(v, []):
            if r.op is kernel.fused and self.layout_of(r) is not None:
                continue
            if r.op in ELEMENTWISE and r.outputs[0].type.rank == 4:
                continue
            if r.op in (shape.concat, shape.slice_, shape.resize) and r.outputs[0].type.rank == 4:
                continue
            return True
        return False

    def sink_packs(self) -> None:
        """pack(v) where v is the plain result of a kernel that can write any layout (WRITES_ANY_LAYOUT),
        read only by packs of one block and fill: the kernel writes that layout itself."""
        outputs = {id(v) for v in self.g.outputs}
        changed = True
        while changed:
            changed = False
            users: dict[int, list[Node]] = {}
            for n in self.out:
                for v in n.inputs:
                    users.setdefault(id(v), []).append(n)
            for i, n in enumerate(self.out):
                if n.op is not kernel.fused or n.attrs["kernel"] not in WRITES_ANY_LAYOUT or \
                        n.attrs["body"].outputs[0].producer.op is lay.pack:
                    continue
                v = n.outputs[0]
                us = users.get(id(v), [])
                if id(v) in outputs or not us or any(u.op is not lay.pack for u in us) or \
                        len({(u.attrs["block"], u.attrs["fill"]) for u in us}) != 1:
                    continue
                body = n.attrs["body"]
                nb = Graph(body.name)
                nb._names = set(body._names)
                nb.inputs, nb.nodes = list(body.inputs), list(body.nodes)
                nb.outputs = [nb.add1(lay.pack, [body.outputs[0]], block=us[0].attrs["block"],
                                      fill=us[0].attrs["fill"])]
                packed = us[0].outputs[0]
                self.out[i] = Node(kernel.fused, n.inputs, {**n.attrs, "body": nb}, [packed], n.name, n.loc)
                dup = {id(u.outputs[0]) for u in us[1:]}
                self.out = [m for m in self.out if not any(m is u for u in us)]
                for m in self.out:
                    m.inputs = [packed if id(x) in dup else x for x in m.inputs]
                self.g.outputs = [packed if id(x) in dup else x for x in self.g.outputs]
                changed = True
                break


def assign(g: Graph, layout_of=kernel_layout) -> Graph:
    """g with the layouts `layout_of` (a kernel table) gives its fused kernels, and the fewest conversions."""
    g = g.clone()
    a = _Assigner(g, layout_of)
    for node in g.nodes:
        kl = layout_of(node) if node.op is kernel.fused else None
        if kl is not None and (kl.in_block or kl.out_block):
            a.kernel(node, kl)
        elif not a.elementwise(node) and not a.channel_data_movement(node):
            a.out.append(node)
    g.nodes = a.out
    a.sink_packs()
    g.nodes = a.out
    return dead_code(g)


@register_pass("assign_layouts")
def assign_layouts(g: Graph) -> Graph:
    """Channel-blocked NCHW{b}c layouts for the CPU kernels, with the fewest pack/unpack conversions."""
    return assign(g)


@register_pass("assign_gpu_layouts")
def assign_gpu_layouts(g: Graph) -> Graph:
    """Channel-blocked NCHW{b}c layouts for the GPU's int8 and float16 convs (gpu_kernel_layout), with the
    fewest pack/unpack conversions."""
    return assign(g, gpu_kernel_layout)
