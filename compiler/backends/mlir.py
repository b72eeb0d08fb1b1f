"""The MLIR backend: Graph -> MLIR (linalg/arith/math/tensor, built with IREE's Python bindings)
-> iree.compiler (in-process Session) -> vmfb -> iree.runtime.

Each op is lowered by the function registered for its OpDef in `mlir_lower` (`@lowers(op)`).
`build_module` writes one `func.func @main` taking the graph inputs and returning its outputs;
constants are `arith.constant dense<...>`. Integer tensors are signless in MLIR: uint8 travels
as i8 (numpy views at the boundary) and the lowerings choose unsigned arithmetic from the DType.
bfloat16, float8 / float4 and the sub-byte ints travel in integers too (bits in i16 / i8, values in
i8: mlir_runtime.to_abi); casts to and from them are integer code (mlir_lower/casts.py), bfloat16
ops compute in float32 (byte_types.widen_bf16), other ops refuse them (byte_types.check_byte_types).

Targets:
- llvm: IREE llvm-cpu for the host CPU (or -mcpu) with the flags in `CPU_FLAGS` (measured:
  im2col for convolutions + data tiling; see the module's README notes in `cpu_flags`).
  Runs on the `local-sync` driver for one thread (no worker pool), `local-task` otherwise.
- cuda: IREE cuda for `-arch` (sm_80/86/89 directly; sm_90 and newer through a patched
  `hal.device.targets` attribute, since IREE 3.13's known-target table ends at sm_89). Building
  works without a GPU and keeps the PTX (`source("ptx")`); `run` needs an NVIDIA GPU.
"""
from __future__ import annotations

import glob
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from compiler.backends.byte_types import MOVES_BYTES, check_byte_types, widen_bf16
from compiler.backends.mlir_lower import LOWERINGS, LowerCtx, lowers
from compiler.backends.mlir_lower.linalg import fenced_convs
from compiler.backends.mlir_lower.registry import elem_type, first_lines, lower_nodes, read, tensor_type
from compiler.backends.mlir_runtime import VmfbExecutable
from compiler.diagnostics import BackendToolError, SourceLoc, Unsupported
from compiler.ir import Graph
from compiler.ops import linalg as la
from compiler.ops import nn
from compiler.ops import quant
from compiler.ops.registry import OpDef
from compiler.target import Target
from compiler.types import DType

__all__ = ["BACKEND", "LOWERINGS", "MLIRBackend", "MLIRExecutable", "build_module", "emit_mlir", "lowers"]

# CPU flags (IREE 3.13, 1 thread, this 2-core Zen4 VM). One 3x3 conv 1x64x56x56 -> 64 plus one
# stride-2 1x1 conv: defaults 29.3 ms (the strided NCHW conv is lowered poorly), im2col 3.2 ms,
# im2col + data tiling 4.1 ms (the 3x3 conv alone: ~2.8 ms in every setting). On all of ResNet-50
# (TVM_IREE_GUIDE.md section 14) im2col + data tiling is best: 103 ms vs 155 ms im2col only, 454 ms
# default. So both: im2col makes every conv a matmul, data tiling packs matmuls for AVX-512.
# float64 stays float64 (IREE demotes it to float32 by default, which changes the ABI)
CPU_FLAGS = ("--iree-opt-data-tiling", "--iree-global-opt-use-im2col-for-convs",
             "--iree-input-demote-f64-to-f32=false")
_KNOWN_CUDA = ("sm_60", "sm_61", "sm_70", "sm_72", "sm_75", "sm_80", "sm_86", "sm_87", "sm_89")


def _check_supported(g: Graph) -> None:
    """`g` after widen_bf16: refuse missing lowerings and ops computing on a carried type (every element type has
    a carrier: bfloat16, float8 / float4 and the sub-byte ints live in integers, registry.elem_type and
    mlir_lower/casts.py; byte_types.check_byte_types; bfloat16 only in the ops in BF16_NATIVE)."""
    missing = sorted({n.op.name for n in g.walk() if n.op not in LOWERINGS})
    if missing:
        raise Unsupported(f"{', '.join(missing)} has no lowering for 'mlir'",
                          SourceLoc(g.source), hint="use --backend tvm, or report the missing op")
    for n in g.walk():
        if n.op in MOVES_BYTES | BF16_NATIVE or n.bodies:
            continue
        if any(v.type.dtype is DType.BF16 for v in (*n.inputs, *n.outputs)):
            raise Unsupported(f"mlir: {n.op.name} on bfloat16 tensors",
                              n.loc or SourceLoc(g.source, n.name, n.op.name), hint="use --backend tvm")
    check_byte_types(g, "mlir")


# bfloat16 is computed in float32 (byte_types.widen_bf16) but for these ops, lowered on it as their references
# compute (softmax rounds every step to bfloat16)
BF16_NATIVE = frozenset({nn.softmax})


def _abi_type(dt: DType):
    return elem_type(dt)


def build_module(g: Graph, target: Target, context=None):
    """The graph as an MLIR module in `context` (a fresh IREE context by default)."""
    from iree.compiler import ir
    from iree.compiler.dialects import func

    g = widen_bf16(g, BF16_NATIVE)
    _check_supported(g)
    context = context or ir.Context()
    with context, ir.Location.unknown():
        module = ir.Module.create()
        ctx = LowerCtx(g, target)
        in_types = [tensor_type(v.type.shape, _abi_type(v.type.dtype)) for v in g.inputs]
        out_types = [tensor_type(v.type.shape, _abi_type(v.type.dtype)) for v in g.outputs]
        with ir.InsertionPoint(module.body):
            fn = func.FuncOp("main", (in_types, out_types))
            block = fn.add_entry_block()
            with ir.InsertionPoint(block):
                env: dict[int, ir.Value] = {id(v): a for v, a in zip(g.inputs, block.arguments)}
                lower_nodes(ctx, g.nodes, env, fenced_convs(ctx, g.nodes))
                func.ReturnOp([read(ctx, env, v) for v in g.outputs])
        if not module.operation.verify():
            raise BackendToolError("the generated MLIR module does not verify")
    return module


def emit_mlir(g: Graph, target: Target) -> str:
    """The MLIR text of `g` (what `compile --emit mlir` prints)."""
    return str(build_module(g, target))


# -- compiling -------------------------------------------------------------------
def _widened_conv(n) -> bool:
    """A conv whose operands the lowering widens into its accumulator: integer, or float16 summed in float32."""
    return n.op is quant.conv or (n.op is la.conv and n.inputs[0].type.dtype is DType.F16)


def _computed_weight(n) -> bool:
    """A conv whose weight is not a constant (a run-time input, or dequantized at run time)."""
    return n.op in (la.conv, quant.conv) and not n.inputs[1].is_const


def _cpu_flags(target: Target, g: Graph | None = None) -> list[str]:
    cpu = target.mcpu or "host"
    flags = list(CPU_FLAGS)
    if g is not None and any(_widened_conv(n) and n.inputs[0].type.shape[0] > 1 or _computed_weight(n)
                             for n in g.walk()):
        # IREE 3.13's im2col rewrite emits a mistyped arith.addi / addf for convs whose operands are widened
        # (integer, and float16 summed in float32), at batch > 1 ("'arith.addf' op requires the same type");
        # with data tiling it fails on a conv whose weight is computed ("tiling factors must be less than or
        # equal to the input rank": QLinearConv with a run-time weight): leave it out.
        flags.remove("--iree-global-opt-use-im2col-for-convs")
    if g is not None and any(v.type.dtype is DType.BOOL and v.type.rank >= 2 for n in g.walk() for v in n.inputs):
        # IREE 3.13's data tiling packs a bool operand with an i8 padding value ("'linalg.pack' op expected
        # padding_value has 'i8' but got: 'i1'", attention masks): leave it out.
        flags.remove("--iree-opt-data-tiling")
    return ["--iree-hal-target-device=local", "--iree-hal-local-target-device-backends=llvm-cpu",
            f"--iree-llvmcpu-target-cpu={cpu}", *flags]


_SM90_ATTRS: dict[str, str] = {}


def _patched_cuda_target(arch: str) -> str:
    """IREE 3.13 knows NVIDIA targets up to sm_89: take the compiler's sm_89 device target
    attribute and patch the arch (and the shared-memory size for Hopper and newer)."""
    if arch not in _SM90_ATTRS:
        import iree.compiler as ireec
        tiny = ("func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {\n"
                "  %0 = arith.addf %a, %a : tensor<4xf32>\n  return %0 : tensor<4xf32>\n}\n")
        src = ireec.compile_str(tiny, extra_args=["--iree-hal-target-device=cuda", "--iree-cuda-target=sm_89",
                                                  "--compile-to=executable-sources"]).decode()
        dev = re.search(r'(#hal\.device\.target<"cuda".*?) : !hal\.device', src, re.DOTALL).group(1)
        dev = dev.replace('arch = "sm_89"', f'arch = "{arch}"')
        dev = dev.replace("max_workgroup_memory_bytes = 101376", "max_workgroup_memory_bytes = 232448")
        _SM90_ATTRS[arch] = dev
    return _SM90_ATTRS[arch]


def cuda_target(target: Target) -> tuple[list[str], str | None]:
    """The compiler flags for cuda `target`, and the hal.device.targets attribute to set on the module instead
    where IREE does not know the arch (None where it does)."""
    if target.arch in _KNOWN_CUDA:
        return ["--iree-hal-target-device=cuda", f"--iree-cuda-target={target.arch}"], None
    return [], _patched_cuda_target(target.arch)


def set_device_target(module, attr: str) -> None:
    """Sets `attr` (from cuda_target) as `module`'s hal.device.targets."""
    from iree.compiler import ir
    with module.context:
        module.operation.attributes["hal.device.targets"] = ir.ArrayAttr.get([ir.Attribute.parse(attr)])


def compile_graph(g: Graph, target: Target) -> tuple[bytes, str | None]:
    """(vmfb bytes, PTX text for cuda) — built in-process, no MLIR text round trip."""
    from iree.compiler.api import Output, Session

    session = Session()
    dump = tempfile.mkdtemp(prefix="dyc_iree_") if target.kind == "cuda" else None
    patched = None
    if target.kind == "llvm":
        flags = _cpu_flags(target, g)
    elif target.kind == "cuda":
        cuda_flags, patched = cuda_target(target)
        flags = [f"--iree-hal-dump-executable-binaries-to={dump}", *cuda_flags]
    else:
        raise Unsupported(f"target {target.kind} is not supported by the mlir backend")
    session.set_flags(*flags)
    context = session.context
    context.load_all_available_dialects()
    diags: list[str] = []

    def on_diag(d) -> bool:
        diags.append(f"{d.location}: {d.message}")
        return True

    handler = context.attach_diagnostic_handler(on_diag)
    try:
        module = build_module(g, target, context)
        if patched is not None:
            set_device_target(module, patched)
        inv = session.invocation()
        inv.import_module(module.operation)
        if not inv.execute():
            raise BackendToolError(f"iree-compile failed for {target}: {first_lines(chr(10).join(diags))}",
                                   SourceLoc(g.source), hint="flags: " + " ".join(flags))
        out = Output.open_membuffer()
        inv.output_vm_bytecode(out)
        vmfb = bytes(out.map_memory())
    finally:
        handler.detach()
    ptx = None
    if dump is not None:
        files = sorted(glob.glob(os.path.join(dump, "*.ptx")))
        ptx = "\n".join(Path(f).read_text() for f in files)
        for f in glob.glob(os.path.join(dump, "*")):
            os.remove(f)
        os.rmdir(dump)
    return vmfb, ptx


# -- running: compiler/backends/mlir_runtime.py (what a runtime bundle loads without iree.compiler) ------
class MLIRExecutable(VmfbExecutable):
    """A compiled vmfb (mlir_runtime.VmfbExecutable) that also emits its MLIR and PTX."""

    def __init__(self, vmfb: bytes, g: Graph | None, target: Target, ptx: str | None = None,
                 out_dtypes: Sequence[DType] | None = None):
        outs = out_dtypes if out_dtypes is not None else [v.type.dtype for v in g.outputs]
        super().__init__(vmfb, target, outs)
        self._graph, self._ptx = g, ptx
        self._mlir_text: str | None = None

    def source(self, kind: str) -> str:
        if kind == "mlir":
            if self._mlir_text is None:
                if self._graph is None:
                    raise Unsupported("--emit mlir needs the model, not a loaded library",
                                      hint="compile the model again to see its MLIR")
                self._mlir_text = emit_mlir(self._graph, self._target)
            return self._mlir_text
        if kind == "ptx":
            if self._target.kind != "cuda":
                raise Unsupported("--emit ptx needs --target cuda")
            if not self._ptx:
                raise Unsupported("PTX is not available for an executable loaded from a library",
                                  hint="rebuild the model to see its PTX")
            return self._ptx
        raise Unsupported(f"--emit {kind} is not available for mlir; choose one of "
                          f"{', '.join(MLIRBackend.EMIT_KINDS)}")


class MLIRBackend:
    name = "mlir"
    EMIT_KINDS = ("mlir", "ptx")      # ptx only for --target cuda

    def supported_ops(self) -> frozenset[OpDef]:
        return frozenset(LOWERINGS)

    def build(self, g: Graph, target: Target) -> MLIRExecutable:
        vmfb, ptx = compile_graph(g, target)
        return MLIRExecutable(vmfb, g, target, ptx)

    def load(self, library: bytes, signature: object, target: Target) -> MLIRExecutable:
        """An executable from `library_bytes()`; it can run but not re-emit mlir/ptx."""
        if target.kind not in ("llvm", "cuda"):
            raise Unsupported(f"target {target.kind} is not supported by the mlir backend")
        outs = [t.dtype for _, t in signature.outputs]
        return MLIRExecutable(bytes(library), None, target, out_dtypes=outs)


BACKEND = MLIRBackend()
