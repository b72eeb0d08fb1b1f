"""Compilation targets: `llvm` (host CPU) and `cuda`, parsed from the CLI spelling
`llvm -mcpu=znver4 -num-threads=2` or `cuda -arch=sm_90`."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from compiler.diagnostics import Unsupported

KINDS = ("llvm", "cuda")


def host_cpu() -> str:
    """LLVM's name for the host CPU (e.g. znver4), read from /proc/cpuinfo flags as a fallback."""
    try:
        from tvm.target import codegen  # noqa: PLC0415  (only when a backend is in use)

        from compiler.host import with_host_matrix_units
        name = codegen.llvm_get_system_cpu()
        if name and name != "generic":
            return with_host_matrix_units(str(name))
    except Exception:  # noqa: BLE001  (no tvm or no such API: fall back to flags)
        pass
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return "x86-64"
    if "avx512f" in flags:
        return "skylake-avx512"
    return "haswell" if "avx2" in flags else "x86-64"


@dataclass(frozen=True)
class Target:
    kind: str                           # "llvm" | "cuda"
    mcpu: str | None = None             # llvm: CPU name; None = host
    arch: str = "sm_80"                 # cuda: SM architecture
    num_threads: int | None = None      # None = all cores
    options: tuple[tuple[str, str], ...] = field(default=())
    fast_tier: str = "off"              # llvm: "off", "l2" (this machine's per-core L2) or a byte count
    int8: str = "mma"                   # cuda: int8 conv / matmul on tensor cores ("mma") or with "dp4a"
    mma: str = "sync"                   # cuda: tensor cores through mma.sync + ldmatrix ("sync") or "wmma"

    @classmethod
    def parse(cls, text: str) -> Target:
        words = text.split()
        if not words or words[0] not in KINDS:
            raise Unsupported(f"unknown target {text!r}; expected one of: {', '.join(KINDS)}",
                              hint="e.g. --target llvm, --target 'llvm -mcpu=znver4', --target cuda")
        kw: dict[str, str] = {}
        for w in words[1:]:
            m = re.fullmatch(r"-{1,2}([\w-]+)=(\S+)", w)
            if not m:
                raise Unsupported(f"cannot parse target option {w!r} in {text!r}", hint="use -key=value")
            kw[m.group(1)] = m.group(2)
        known = {"mcpu", "arch", "num-threads", "fast-tier", "int8", "mma"}
        if set(kw) - known:
            raise Unsupported(f"unknown target option(s) {sorted(set(kw) - known)}; known: {sorted(known)}")
        nt = kw.get("num-threads")
        tier = kw.get("fast-tier", "off")
        if tier not in ("off", "l2") and not tier.isdigit():
            raise Unsupported(f"target option -fast-tier={tier}: expected off, l2 or a size in bytes")
        int8 = kw.get("int8", "mma")
        if int8 not in ("mma", "dp4a") or int8 != "mma" and words[0] != "cuda":
            raise Unsupported(f"target option -int8={int8}: expected mma or dp4a, on cuda")
        mma = kw.get("mma", "sync")
        if mma not in ("sync", "wmma") or mma != "sync" and words[0] != "cuda":
            raise Unsupported(f"target option -mma={mma}: expected sync or wmma, on cuda")
        return cls(words[0], kw.get("mcpu"), kw.get("arch", "sm_80"), int(nt) if nt else None, fast_tier=tier,
                   int8=int8, mma=mma)

    @property
    def cpu(self) -> str:
        return self.mcpu or host_cpu()

    def threads(self) -> int:
        return self.num_threads or len(os.sched_getaffinity(0))

    def __str__(self) -> str:
        if self.kind == "cuda":
            return (f"cuda -arch={self.arch}" + (f" -int8={self.int8}" if self.int8 != "mma" else "")
                    + (f" -mma={self.mma}" if self.mma != "sync" else ""))
        return (f"llvm -mcpu={self.cpu}" + (f" -num-threads={self.num_threads}" if self.num_threads else "")
                + (f" -fast-tier={self.fast_tier}" if self.fast_tier != "off" else ""))
