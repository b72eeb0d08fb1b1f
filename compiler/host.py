"""Facts about the CPU we compile on, shared by the backends and the cost model: LLVM's name for it and
the width of its vector registers. Kept out of `compiler/backends/` so the cost model can ask without
loading a backend."""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def host_cpu_name() -> str:
    """LLVM's name for the host CPU (e.g. ``"znver4"``), or ``"generic"`` if it cannot be detected."""
    try:
        # NOTE: LLVM's detection when TVM is installed; /proc/cpuinfo flags otherwise
        from tvm.target import codegen

        name = str(codegen.llvm_get_system_cpu())
        if name and codegen.llvm_is_valid_cpu(name, ""):
            return name
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
