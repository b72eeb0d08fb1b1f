"""Facts about the CPU we compile on, shared by the backends and the cost model: LLVM's name for it, the
width of its vector registers, its instruction-set extensions and whether an artifact built for another
CPU can run here. Kept out of `compiler/backends/` so the cost model can ask without loading a backend."""
from __future__ import annotations

import os

from functools import lru_cache


@lru_cache(maxsize=None)
def host_cpu_name() -> str:
    """LLVM's name for the host CPU (e.g. ``"znver4"``), or ``"generic"`` if it cannot be detected."""
    try:
        # NOTE: LLVM's detection when TVM is installed; /proc/cpuinfo flags otherwise
        from tvm.target import codegen

        name = str(codegen.llvm_get_system_cpu())
        if name and codegen.llvm_is_valid_cpu(name, ""):
            return with_host_matrix_units(name)
    except Exception:  # pragma: no cover - depends on the TVM build
        pass
    flags = _cpu_flags()
    if "avx512f" in flags:
        return "skylake-avx512"
    if "avx2" in flags:
        return "haswell"
    return "generic"


def host_vector_lanes(dtype_bits: int = 32) -> int:
    """Lanes of ``dtype_bits`` in the widest vector register on the host (fp32: 16 with AVX-512, 8 with AVX2,
    else 4)."""
    flags = _cpu_flags()
    bits = 512 if "avx512f" in flags else 256 if "avx2" in flags or " avx " in flags else 128
    return bits // dtype_bits


def _cpu_flags() -> str:
    """The ``flags`` line of /proc/cpuinfo ("" where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


# LLVM's name of each instruction-set extension that generated code may use -> the Linux /proc/cpuinfo
# flag saying the host has it (the vector, dot-product and matrix extensions; what an artifact built
# with a newer -mcpu would die on with an illegal instruction)
ISA_FLAGS: dict[str, str] = {
    "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "bmi2": "bmi2",
    "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512dq": "avx512dq", "avx512cd": "avx512cd",
    "avx512vl": "avx512vl", "avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni",
    "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16", "avx512ifma": "avx512ifma",
    "avx512vbmi": "avx512vbmi", "avx512vbmi2": "avx512_vbmi2", "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq",
    "amx-tile": "amx_tile", "amx-int8": "amx_int8", "amx-bf16": "amx_bf16",
}


def host_cpu_flags() -> frozenset[str]:
    """The host's CPU flags as Linux names them in /proc/cpuinfo (empty where there is no such file)."""
    return frozenset(_cpu_flags().partition(":")[2].split())


@lru_cache(maxsize=None)
def cpu_features(mcpu: str) -> frozenset[str]:
    """The instruction-set features LLVM gives CPU `mcpu` (LLVM's names, e.g. "avx512vnni"); empty when
    TVM's LLVM is not installed or does not know the name, and under DYC_RUNTIME_ONLY=1 (the runtime
    alone: importing tvm would map the compiler's libraries beside the runtime's)."""
    if os.environ.get("DYC_RUNTIME_ONLY") == "1":
        return frozenset()
    try:
        import tvm
        from tvm.target import codegen
        if not codegen.llvm_is_valid_cpu(mcpu, ""):
            return frozenset()
        target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
        return frozenset(str(f) for f in codegen.llvm_get_cpu_features(target))
    except Exception:  # pragma: no cover - depends on the TVM build
        return frozenset()


# LLVM's machine combiner splits vpdpwssd into vpmaddwd + vpaddd where that shortens the accumulator's critical path
# (a win for one dependent chain); our kernels keep 8-16 independent accumulators, so the split only doubles the
# instructions: the int16 conv 1152->320 at 7x7 takes 162 us split, 104 us as vpdpwssd. "fast-dpwssd" (a tuning
# flag, no new instructions) keeps the instruction.
VNNI_TUNING = ("+fast-dpwssd",)


def llvm_target_config(mcpu: str, cores: int) -> dict:
    """The TVM llvm target (dict form) for CPU `mcpu` and `cores` threads: VNNI_TUNING where the CPU has AVX-512
    VNNI."""
    cfg = {"kind": "llvm", "mcpu": mcpu, "num-cores": int(cores)}
    if "avx512vnni" in cpu_features(mcpu):
        cfg["mattr"] = list(VNNI_TUNING)
    return cfg


def missing_features(mcpu: str) -> list[str]:
    """The extensions of ISA_FLAGS that code built for `mcpu` may use and the host lacks (LLVM's names,
    sorted); empty when the host's flags are unknown (no /proc/cpuinfo), so nothing is refused blindly."""
    have = host_cpu_flags()
    if not have:
        return []
    return sorted(f for f in cpu_features(mcpu) if f in ISA_FLAGS and ISA_FLAGS[f] not in have)


# LLVM CPUs with AMX, oldest first: where a host has AMX and LLVM's name for it lacks it, the first of these
# whose extensions the host has all is taken instead
AMX_CPUS = ("sapphirerapids", "graniterapids")
# Linux x86-64: arch_prctl's syscall number, its "request permission for an extended state" code, and the
# extended-state component of the AMX tile data
SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA = 158, 0x1023, 18


def with_host_matrix_units(name: str) -> str:
    """`name`, or an LLVM CPU with AMX where the host has AMX (cpuinfo's amx_int8) and `name` lacks it. A
    hypervisor that hides the CPU's model number makes LLVM name a Sapphire Rapids after an older core
    ("rocketlake"), whose code never uses the matrix units; the kernels ask for them by the CPU's features."""
    have = host_cpu_flags()
    if "amx_int8" not in have or "amx-int8" in cpu_features(name):
        return name
    for cpu in AMX_CPUS:
        feats = cpu_features(cpu)
        if "amx-int8" in feats and all(ISA_FLAGS[f] in have for f in feats if f in ISA_FLAGS):
            return cpu
    return name


@lru_cache(maxsize=None)
def request_amx() -> bool:
    """Ask Linux for this process's AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), which
    an AMX instruction needs before it runs (else SIGILL); True when granted. A no-op False on hosts without
    AMX. Asked once, before running or building any kernel for an AMX CPU."""
    if "amx_tile" not in host_cpu_flags():
        return False
    import ctypes
    try:
        return ctypes.CDLL(None, use_errno=True).syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


def host_clock_ghz() -> float | None:
    """The clock /proc/cpuinfo reports for the first core ("cpu MHz"), in GHz; None where it is absent."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("cpu MHz")), "")
        return float(line.partition(":")[2]) / 1e3 if line else None
    except (OSError, ValueError):
        return None
