"""Corrections to the CUDA C that TVM 0.27 generates, applied through TVM's `tvm_callback_cuda_postproc` hook, so
the source a cuda module stores (and compiles wherever it is loaded) and the one `--emit cuda` shows are the same.

* A constant vector of 8 or 16 bytes (int8x8 / int8x16 and unsigned: a tensor-core GEMM's 8- or 16-byte gather,
  the zero point it pads with or the 0x80 that shifts uint8 to int8) is printed as `make_int2` / `make_int4` (or
  `make_uint2` / `make_uint4`) of 8 or 16 byte values, which nvcc rejects ("too many arguments in function
  call"): the 32-bit words of those bytes instead.
* A bitwise operation (^, &, |) of two 8-bit vectors is printed byte by byte through `reinterpret_cast<unsigned
  char*>` of each 32-bit component: each component's 4 byte operations become one 32-bit operation, the same
  bits (the uint8 -> int8 shift of a 16-byte gather: 4 XORs instead of 16 byte operations in the source).
* A kernel that calls IEEE_OPS's functions (`T.call_pure_extern("float32", IEEE_OPS["div"], a, b)`) gets their
  definitions in front: each one PTX instruction (div.rn.f32, add.rn.f32, sub.rn.f32, mul.rn.f32) in inline assembly, since
  TVM's nvcc runs with --use_fast_math, under which `a / b` is div.approx and even __fdiv_rn / __fadd_rn flush
  subnormals (div.rn.ftz.f32), and a product and a sum may be contracted into an fma.
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


_WORD = r"[A-Za-z_]\w*(?:\.[xyzw])?"


def _byte_op(i: int, dst: str, a: str, op: str, b: str) -> str:
    return (rf"[ \t]*reinterpret_cast<unsigned char\*>\(&\({dst}\)\)\[{i}\] = \(unsigned char\)\(\("
            rf"\(reinterpret_cast<const unsigned char\*>\(&\({a}\)\)\[{i}\]\){op}"
            rf"\(reinterpret_cast<const unsigned char\*>\(&\({b}\)\)\[{i}\]\)\)\);\n")


_BYTE_OPS = re.compile(_byte_op(0, f"({_WORD})", f"({_WORD})", r"([\^&|])", f"({_WORD})")
                       + "".join(_byte_op(i, r"\1", r"\2", r"\3", r"\4") for i in (1, 2, 3)))


def _word_op(m: re.Match) -> str:
    indent = re.match(r"[ \t]*", m.group(0)).group(0)
    return f"{indent}{m.group(1)} = {m.group(2)} {m.group(3)} {m.group(4)};\n"


IEEE_OPS = {"div": "dyc_div_rn", "add": "dyc_add_rn", "sub": "dyc_sub_rn", "mul": "dyc_mul_rn"}
_IEEE_DEF = ('__device__ __forceinline__ float {name}(float a, float b) {{ float r; '
             'asm("{op}.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }}\n')


def _ieee_definitions(code: str) -> str:
    defs = "".join(_IEEE_DEF.format(name=name, op=op) for op, name in IEEE_OPS.items() if f"{name}(" in code)
    return defs + code


def fix(code: str) -> str:
    """`code` with TVM's 8- and 16-byte constant vectors written as words, its bytewise bitwise operations as
    word operations and the IEEE_OPS it calls defined."""
    return _ieee_definitions(_BYTE_OPS.sub(_word_op, _BYTES.sub(_words, code)))


tvm_ffi.register_global_func("tvm_callback_cuda_postproc", lambda code, target=None: fix(code), override=True)
