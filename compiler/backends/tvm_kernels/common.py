"""Shared helpers for the hand-scheduled TVM CPU kernels.

* :func:`host_target` -- an llvm ``tvm.target.Target`` for the machine we run on (mcpu detected through LLVM).
* :func:`finalize` -- stamp the attributes the Relax backend relies on onto a scheduled PrimFunc.
* :func:`act_te` -- the elementwise activations shared by conv2d and matmul epilogues.
* small integer helpers used by the tile pickers.
"""
from __future__ import annotations

import math
import os
from typing import Iterable, Optional, Sequence

import tvm
from tvm import te, tirx
from tvm.script import tirx as T

from compiler.host import host_cpu_name, host_vector_lanes, llvm_target_config  # noqa: F401  (re-exported)

OP_PATTERN_OPAQUE = 8  # relax kOpaque: FuseOps leaves such PrimFuncs alone
SCHEDULE_ATTR = "tvm_kernels.schedule"  # which schedule was applied: "tiled" / "simple" / "none"
# Storage scope of per-tile accumulators and row statistics. On the CPU, TVM serves a "local" allocation with a
# TVMBackendAllocWorkspace call in every iteration of the enclosing parallel loop; a "global" one under 1 KiB is
# a stack slot LLVM keeps in registers (depthwise convs 9-19% faster, a layer norm row 5x).
ACC_SCOPE = "global"


def host_target(num_cores: Optional[int] = None) -> tvm.target.Target:
    """llvm target for this host: ``Target({"kind": "llvm", "mcpu": <host cpu>, "num-cores": n})`` (with
    compiler.host.llvm_target_config's tuning flags).

    ``num_cores`` defaults to ``TVM_NUM_THREADS`` if set, else ``os.cpu_count()``.  (TVM 0.27 rejects the old
    ``"llvm -mcpu=..."`` strings; the dict form is required.)
    """
    if num_cores is None:
        env = os.environ.get("TVM_NUM_THREADS")
        num_cores = int(env) if env else (os.cpu_count() or 1)
    return tvm.target.Target(llvm_target_config(host_cpu_name(), num_cores))


def finalize(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Mark a scheduled PrimFunc as opaque (``op_pattern`` = 8) and scheduled (``tirx.is_scheduled``)."""
    return func.with_attr("op_pattern", OP_PATTERN_OPAQUE).with_attr("tirx.is_scheduled", True)


def act_te(x, activation: str, clip_min: float = 0.0, clip_max: float = 6.0, dtype: str = "float32"):
    """Apply an activation to a TE scalar expression.

    ``none``, ``relu``, ``clip`` (clip_min/clip_max), ``gelu_erf`` (0.5 x (1 + erf(x/sqrt2))) and ``gelu_tanh``
    (0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))).
    """
    dt = dtype
    if activation == "none":
        return x
    if activation == "relu":
        return te.max(x, tirx.const(0.0, dt))
    if activation == "clip":
        return te.min(te.max(x, tirx.const(clip_min, dt)), tirx.const(clip_max, dt))
    if activation == "gelu_erf":
        return tirx.const(0.5, dt) * x * (tirx.const(1.0, dt) + fast_erf(x * tirx.const(1.0 / math.sqrt(2.0), dt), dt))
    if activation == "gelu_tanh":
        c = tirx.const(math.sqrt(2.0 / math.pi), dt)
        inner = c * (x + tirx.const(0.044715, dt) * x * x * x)
        return tirx.const(0.5, dt) * x * (tirx.const(1.0, dt) + fast_tanh(inner, dt))
    raise ValueError(f"unknown activation {activation!r}")


def _rational_odd(x, clamp, alphas, betas, dt):
    """x * P(x^2) / Q(x^2) after clamping x to [-clamp, clamp] (vectorizes; no libm call)."""
    x = te.max(te.min(x, tirx.const(clamp, dt)), tirx.const(-clamp, dt))
    x2 = x * x
    p = tirx.const(alphas[0], dt)
    for c in alphas[1:]:
        p = p * x2 + tirx.const(c, dt)
    q = tirx.const(betas[0], dt)
    for c in betas[1:]:
        q = q * x2 + tirx.const(c, dt)
    return x * p / q


def fast_erf(x, dt: str = "float32"):
    """Rational erf approximation (Eigen / TVM fast_erf coefficients, ~1e-7 abs error in fp32); unlike
    ``te.erf`` (a scalar libm call) it is vectorized by LLVM."""
    alphas = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
              -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
    betas = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
             -1.42647390514189e-02)
    return _rational_odd(x, 4.0, alphas, betas, dt)


def fast_tanh(x, dt: str = "float32"):
    """Rational tanh approximation (Eigen / TVM fast_tanh coefficients), vectorizable."""
    alphas = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
              1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)
    betas = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)
    return _rational_odd(x, 7.90531110763549805, alphas, betas, dt)


def divisors(n: int) -> list:
    return [d for d in range(1, n + 1) if n % d == 0]


def largest_divisor_leq(n: int, limit: int) -> int:
    """Largest d <= limit with n % d == 0 (>= 1)."""
    for d in range(min(n, limit), 0, -1):
        if n % d == 0:
            return d
    return 1


def prod(xs: Iterable[int]) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def vectorize_under_reduction(sch, block) -> None:
    """A reduction block whose two innermost loops are (lane, k): k outside, the lanes vectorized inside it, the
    init split off (vectorize before decompose_reduction, as TVM needs): one vector of independent rows per step."""
    lane, k = sch.get_loops(block)[-2:]
    sch.reorder(k, lane)
    sch.vectorize(lane)
    sch.decompose_reduction(block, k)


def parallel_outer(sch, loops: Sequence, min_extent: int = 1):
    """Fuse the given outer loops and mark the result parallel (no-op for an empty list)."""
    loops = list(loops)
    if not loops:
        return None
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    sch.parallel(fused)
    return fused


def fast_exp(x, dt: str = "float32"):
    """e^x for float32 without a libm call (vectorizes): 2^n * p(r) with n = round(x log2 e), r = x - n ln 2
    (Cody-Waite split), p the Cephes expf polynomial; x clamped to the float32 range (~1e-7 rel. error)."""
    c = lambda v: tirx.const(v, dt)  # noqa: E731
    x = te.max(te.min(x, c(88.3762626647950)), c(-87.3365447504019))
    n = tirx.floor(x * c(1.44269504088896341) + c(0.5))
    r = x - n * c(0.693359375) - n * c(-2.12194440e-4)
    p = c(1.9875691500e-4)
    for k in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = p * r + c(k)
    p = p * r * r + r + c(1.0)
    two_n = tirx.reinterpret(dt, tirx.shift_left(n.astype("int32") + tirx.const(127, "int32"),
                                                 tirx.const(23, "int32")))
    return p * two_n


def block_or_none(sch, name: str):
    """The schedule's block `name`, or None where the PrimFunc has no such stage."""
    try:
        return sch.get_sblock(name)
    except Exception:  # noqa: BLE001  (TVM raises its own error types)
        return None


def reshape_params(func: tirx.PrimFunc, shapes: dict) -> tirx.PrimFunc:
    """`func` with each parameter buffer named in `shapes` ({name: (declared shape, new shape)}, same element
    count, both row-major) declared in its new shape, its body unchanged. TIR addresses a buffer by its strides,
    so an index the body computes for the old shape reaches the same element: [n, c, 0, p, j] of an
    (n, C, H, W, 16) buffer, p < H W, is element (n, c, p // W, p % W, j). A kernel built on a flat view of its
    image (qconv1x1_amx.py) takes the real tensors this way, with no reshape (a copy in the Relax VM) around the
    call. Through TVMScript: this TVM exposes no buffer map to rewrite."""
    text = func.script()
    for name, (old, new) in shapes.items():
        if old == new or f"{name}: T.Buffer(" not in text:
            continue
        if f"{name}: T.Buffer({tuple(old)}" not in text:
            raise ValueError(f"reshape_params: no parameter {name} of shape {tuple(old)}")
        text = text.replace(f"{name}: T.Buffer({tuple(old)}", f"{name}: T.Buffer({tuple(new)}", 1)
    parsed = tvm.script.from_source(text)
    return parsed["main"] if hasattr(parsed, "functions") else parsed


def gpu_form(gpu: bool):
    """(loop, unroll, vec, shared, local) of a kernel written once for two machines (cuda_attention.py's
    docstring): with `gpu` loop(n, tag) binds a GPU thread axis, unroll and vec unroll and vectorize, and the
    staged tiles and a thread's state are "shared" and "local"; without it every loop is serial and every buffer
    global, which runs on the CPU."""
    def loop(n: int, tag: str):
        return T.thread_binding(n, thread=tag) if gpu else T.serial(n)

    def unroll(n: int):
        return T.unroll(n) if gpu else T.serial(n)

    def vec(n: int):
        return T.vectorized(n) if gpu and n > 1 else T.serial(n)
    return (loop, unroll, vec) + (("shared", "local") if gpu else ("global", "global"))
