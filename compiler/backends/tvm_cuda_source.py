"""Corrections to the CUDA C that TVM 0.27 generates, applied through TVM's `tvm_callback_cuda_postproc` hook, so
the source a cuda module stores (and compiles wherever it is loaded) and the one `--emit cuda` shows are the same.

* A constant vector of 8 or 16 bytes (int8x8 / int8x16 and unsigned: a tensor-core GEMM's 8- or 16-byte gather,
  the zero point it pads with or the 0x80 that shifts uint8 to int8) is printed as `make_int2` / `make_int4` (or
  `make_uint2` / `make_uint4`) of 8 or 16 byte values, which nvcc rejects ("too many arguments in function
  call"): the 32-bit words of those bytes instead.
"""
from __future__ import annotations

import re

import tvm_ffi

_BYTE = r"\((?:uchar|unsigned char|signed char|char)\)\s*-?\d+"
_BYTES = re.compile(r"make_(u?)int([24])\(\s*(" + _BYTE + r"(?:\s*,\s*" + _BYTE + r")*)\s*\)")


def _words(m: re.Match) -> str:
    values = [int(v) for v in re.findall(r"\)\s*(-?\d+)", m.group(3))]
    unsigned, n = m.group(1), int(m.group(2))
    if len(values) != 4 * n:                # a well-formed vector of n words: left as it is
        return m.group(0)
    data = bytes(v & 0xFF for v in values)
    words = [int.from_bytes(data[i:i + 4], "little") for i in range(0, 4 * n, 4)]
    cast = "" if unsigned else "(int)"
    return f"make_{unsigned}int{n}(" + ", ".join(f"{cast}0x{w:08x}u" for w in words) + ")"


def fix(code: str) -> str:
    """`code` with TVM's 8- and 16-byte constant vectors written as words."""
    return _BYTES.sub(_words, code)


tvm_ffi.register_global_func("tvm_callback_cuda_postproc", lambda code, target=None: fix(code), override=True)
