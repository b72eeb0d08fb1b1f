"""What the per-kernel profile is read against: which IR node each compiled kernel runs (its op, how
many arithmetic operations and bytes a run of it takes), and the roofline of the CPU it runs on.

The backend records, while it lowers, which top-level nodes call each kernel symbol; `kernel_facts`
turns that into the artifact's `kernels` object (deterministic: counts from shapes, never times).
Operations are counted by compiler/energy.py's per-op rules over the kernel's body (a multiply-add is
two). The roofline is min(peak, bandwidth x operations per byte): the peak per core is a stated
constant per CPU (`PEAK_FLOP_PER_CYCLE`) times the host clock, the bandwidth is measured once here
with a large array copy."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.ir import Graph, Node

# fp32 FLOP per cycle per core (2 per FMA lane): two FMA pipes of the CPU's native vector width. Zen 4
# runs AVX-512 on 256-bit pipes, so it counts as AVX2 width; the Xeon parts with two 512-bit FMA units
# get 64. Any other CPU: from its features (avx512f 64, fma 32, else 8).
PEAK_FLOP_PER_CYCLE = {"znver4": 32, "znver3": 32, "znver2": 32, "znver1": 16, "haswell": 32,
                       "broadwell": 32, "skylake": 32, "alderlake": 32, "skylake-avx512": 64,
                       "cascadelake": 64, "cooperlake": 64, "icelake-server": 64, "sapphirerapids": 64,
                       "emeraldrapids": 64, "graniterapids": 64}
# integer kernels: an int8 dot-product instruction (vpdpbusd) does 4 multiply-adds per 32-bit lane where
# an fp32 FMA does one, so 4x the fp32 rate with VNNI; without it int8 multiplies widen to int16 (2x)
INT8_SPEEDUP = {True: 4, False: 2}
# AMX: one tdpbusd (16 x 16 x 64 multiply-adds) per 16 cycles, 1024 multiply-adds = 2048 int8 operations per cycle
AMX_INT8_OPS_PER_CYCLE = 2048


def _name(n: Node) -> str:
    return n.name or (n.outputs[0].name if n.outputs else n.op.name)


def _anchor(n: Node) -> str:
    """The op a node computes: a fused kernel's anchor op, else its own."""
    body = n.attrs.get("body")
    if n.op.name == "k.fused" and isinstance(body, Graph):
        from compiler.ops.kernel import anchor_of
        try:
            return anchor_of(body).op.name
        except StopIteration:
            return n.op.name
    return n.op.name


def _counts(n: Node) -> dict[str, int]:
    """Arithmetic counts of `n` (through a kernel's body) by compiler.energy's rules."""
    from compiler.energy import RULES, merge
    out: dict[str, int] = {}
    for a in n.attrs.values():
        if isinstance(a, Graph):
            for m in a.nodes:
                out = merge(out, _counts(m))
    rule = RULES.get(n.op)
    counts = rule.count(n) if rule is not None else None
    return merge(out, counts or {})


def _bytes(n: Node) -> int:
    """Bytes a node moves once: its operands, its results and the constants its body reads."""
    seen: dict[int, int] = {}
    for a in n.attrs.values():
        if isinstance(a, Graph):
            for m in a.nodes:
                seen.update({id(v.const): v.type.nbytes for v in m.inputs if v.is_const})
    return (sum(v.type.nbytes for v in n.inputs) + sum(v.type.nbytes for v in n.outputs)
            + sum(seen.values()))


def node_facts(n: Node) -> dict[str, Any]:
    """One top-level node: its name, op, kernel kind, operations, bytes and whether it computes in
    integers (no floating-point arithmetic in its counts)."""
    counts = _counts(n)
    arith = {k: v for k, v in counts.items() if k.split("_")[0] in ("mul", "add", "div", "shift")}
    return {"node": _name(n), "op": _anchor(n), "kernel": str(n.attrs.get("kernel", "")),
            "ops": int(sum(arith.values())), "bytes": int(_bytes(n)),
            "integer": bool(arith) and not any(k.endswith("fp32") for k in arith)}


def kernel_facts(g: Graph, symbols: dict[str, list[Node]]) -> dict[str, Any]:
    """The artifact's `kernels` object: `symbols` (kernel symbol -> {nodes, op, kernel, ops, bytes,
    integer}: the counts are per run, summed over the nodes calling it) and `op_by_op` (top-level nodes
    that call none of our kernels: Relax lowers them, under names of its own)."""
    out: dict[str, Any] = {}
    for sym, nodes in symbols.items():
        facts = [node_facts(n) for n in nodes]
        if not facts:
            continue
        out[sym] = {"nodes": [f["node"] for f in facts], "op": facts[0]["op"], "kernel": facts[0]["kernel"],
                    "ops": sum(f["ops"] for f in facts), "bytes": sum(f["bytes"] for f in facts),
                    "integer": all(f["integer"] for f in facts)}
    called = {id(n) for nodes in symbols.values() for n in nodes}
    rest = [node_facts(n) for n in g.nodes if id(n) not in called and n.op.name != "nn.reshape"]
    return {"symbols": out, "op_by_op": rest}


def match(kernel: str, facts: dict[str, Any] | None) -> dict[str, Any] | None:
    """The facts of profiled kernel `kernel`: by symbol; else the op-by-op node whose op's name the
    Relax function's name contains (e.g. "fused_reshape_softmax" and nn.softmax), when one does."""
    if not facts:
        return None
    if kernel in facts.get("symbols", {}):
        return facts["symbols"][kernel]
    hits = [f for f in facts.get("op_by_op", []) if f["op"].rpartition(".")[2] in kernel]
    return hits[0] if len(hits) == 1 else None


# -- the roofline ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Roofline:
    """Peak fp32 and int8 operations per second of `threads` cores, the memory bandwidth in bytes per
    second, and how each was obtained."""

    fp32_peak: float
    int8_peak: float
    bandwidth: float
    source: str
    amx_peak: float = 0.0       # int8 on the AMX tiles (0: the CPU has none)

    def roof(self, ops: int, nbytes: int, integer: bool, amx: bool = False, int16: bool = False) -> float:
        """Attainable operations per second at intensity ops / bytes (`amx`: an int8 kernel on the tiles; `int16`:
        an int16-activation kernel, vpdpwssd's two multiply-adds per 32-bit lane: twice fp32's peak)."""
        if int16 and integer:
            peak = min(self.int8_peak, 2 * self.fp32_peak)
        else:
            peak = self.amx_peak if amx and self.amx_peak else self.int8_peak if integer else self.fp32_peak
        return min(peak, self.bandwidth * ops / nbytes) if nbytes else peak


def measure_bandwidth(nbytes: int = 1 << 26, repeat: int = 3) -> float:
    """Bytes per second of one core copying a 64 MB array (read + write), best of `repeat`."""
    a = np.ones(nbytes // 4, np.float32)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best


def roofline(mcpu: str, threads: int) -> Roofline:
    """The roofline of `threads` cores of this host running code built for `mcpu`."""
    from compiler.host import cpu_features, host_clock_ghz
    feats = cpu_features(mcpu)
    per_cycle = PEAK_FLOP_PER_CYCLE.get(mcpu) or (64 if "avx512f" in feats else 32 if "fma" in feats else 8)
    ghz = host_clock_ghz() or 2.0
    vnni = bool({"avx512vnni", "avxvnni"} & feats)
    fp32 = per_cycle * ghz * 1e9 * threads
    amx = AMX_INT8_OPS_PER_CYCLE * ghz * 1e9 * threads if "amx-int8" in feats else 0.0
    bw = measure_bandwidth()
    source = (f"peak: {per_cycle} fp32 FLOP/cycle/core for {mcpu} (stated) x {ghz:.2f} GHz (/proc/cpuinfo)"
              f" x {threads} core(s); int8 x{INT8_SPEEDUP[vnni]} ({'VNNI' if vnni else 'no VNNI'})"
              + (f", {AMX_INT8_OPS_PER_CYCLE} int8 ops/cycle/core on AMX (*_amx kernels)" if amx else "")
              + f"; memory {bw / 1e9:.1f} GB/s (a 64 MB copy, measured)")
    return Roofline(fp32, fp32 * INT8_SPEEDUP[vnni], bw, source, amx)
