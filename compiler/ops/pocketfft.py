"""signal.dft's complex transforms the way numpy computes them, for the lowerings.

numpy >= 2 computes fft and ifft with pocketfft's mixed-radix complex FFT (cfftp, C++ header version),
in float32 for an inverse transform of complex64 data, with float32 twiddles (compiler.ops.signal says when
it uses which precision). The reference of signal.dft is that numpy call, and so are the expected outputs
of ONNX's DFT conformance cases. Where the true result is exactly 0 (the imaginary part of the Nyquist bin
of an inverse transform of a real signal, say), the float32 FFT leaves round-off (1.9e-7 in
test_dft_inverse), more than the cases' absolute tolerance (1e-7): a transform that computes the true 0 (a
matmul with exact twiddles) fails them; only the same float operations, in the same order, rounded where
pocketfft rounds, pass.

`complex_fft` is that computation, written once against a few tensor operations (`FFTOps`) that each
backend provides (and `NumpyOps`, to check it against numpy). A complex signal is one real tensor of shape
(..., n, 2), real and imaginary parts in its last axis; every pocketfft statement becomes the same
operation on both parts at once (a rotation by 90 degrees swaps the parts and multiplies one by -1, which
is exact; a - b*c is a + b*(-c), also exact), and a pass works on all its butterflies at once, with the
radix in an axis of its own: a handful of tensor operations per pass, each float operation one that
pocketfft performs on the same operands. Plans: pocketfft's factorization (radix 8, 4, then 2 moved to the
front, then odd primes), its twiddles (computed in float64 as its sincos_2pibyn does, then rounded once),
its radix 2, 3, 4, 5, 7, 8 and 11 passes. Lengths that pocketfft transforms with its generic radix pass (a
prime factor of 13 or more) or with Bluestein's algorithm have no plan (`fft_factors` returns None): the
lowerings keep the twiddle matmul there.

pocketfft leaves the first output (u = 0) and the first column (i = 0) of a pass untwiddled; here they are
multiplied by the twiddle (1, 0) like the others, which changes no finite value (v * 1 + w * 0 is v, up to
the sign of 0). The bit-for-bit agreement needs products that are rounded before they are added: numpy's
x86-64 build has no FMA in its baseline, and a backend that contracts a * b + c into one FMA must stop it
(`FFTOps.rounded`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class FFTOps(Protocol):
    """The tensor operations `complex_fft` is written with, on the backend's tensors. Axes are negative;
    constants are numpy arrays in the compute dtype; `add`, `sub` and `mul` broadcast as numpy does."""

    def add(self, a: Any, b: Any) -> Any: ...

    def sub(self, a: Any, b: Any) -> Any: ...

    def mul(self, x: Any, c: np.ndarray) -> Any:
        """x times the constant c."""

    def rounded(self, xs: list[Any]) -> list[Any]:
        """xs (products by constants other than 0 and +-1), each rounded to its precision before anything
        adds to it: a backend that would contract a later a * b + c into one FMA (which rounds once, as
        pocketfft does not) stops it here, or in its `mul`."""

    def slice(self, x: Any, axis: int, start: int, stop: int) -> Any:
        """x[start:stop] along `axis`."""

    def flip(self, x: Any, axis: int) -> Any:
        """x reversed along `axis`."""

    def concat(self, xs: Sequence[Any], axis: int) -> Any: ...

    def transpose(self, x: Any, perm: Sequence[int]) -> Any:
        """numpy.transpose(x, perm) (perm of non-negative axes)."""

    def reshape(self, x: Any, shape: Sequence[int]) -> Any: ...

    def shape(self, x: Any) -> Sequence[int]: ...

    def cast(self, x: Any, dtype: np.dtype) -> Any:
        """x in `dtype` (float32 or float64); x itself when it has that dtype."""

    def pad(self, x: Any, axis: int, after: int) -> Any:
        """x with `after` zeros appended along `axis`."""


def fft_factors(length: int) -> list[int] | None:
    """pocketfft's factors of `length` for its complex FFT, in the order its passes run; None where it
    would use a pass or an algorithm not written here (a factor over 11, or Bluestein)."""
    if length < 1:
        return None
    lpf = 0 if length < 50 else _largest_prime_factor(length)
    if lpf * lpf > length and 1.5 * 2 * _cost_guess(_good_size_cmplx(2 * length - 1)) < _cost_guess(length):
        return None                                           # pocketfft_c picks Bluestein
    fact, n = [], length
    while n % 8 == 0:
        fact.append(8)
        n //= 8
    while n % 4 == 0:
        fact.append(4)
        n //= 4
    if n % 2 == 0:
        n //= 2
        fact.append(2)
        fact[0], fact[-1] = fact[-1], fact[0]
    d = 3
    while d * d <= n:
        while n % d == 0:
            fact.append(d)
            n //= d
        d += 2
    if n > 1:
        fact.append(n)
    return None if any(f > 11 for f in fact) else fact


def _largest_prime_factor(n: int) -> int:
    res = 1
    while n % 2 == 0:
        res, n = 2, n // 2
    x = 3
    while x * x <= n:
        while n % x == 0:
            res, n = x, n // x
        x += 2
    return n if n > 1 else res


def _cost_guess(n: int) -> float:
    ni, result = n, 0.0
    while n % 2 == 0:
        result, n = result + 2, n // 2
    x = 3
    while x * x <= n:
        while n % x == 0:
            result += x if x <= 5 else 1.1 * x
            n //= x
        x += 2
    if n > 1:
        result += n if n <= 5 else 1.1 * n
    return result * ni


def _good_size_cmplx(n: int) -> int:
    """The smallest 2^a 3^b 5^c 7^d 11^e >= n (pocketfft's util::good_size_cmplx)."""
    if n <= 12:
        return n
    best = 2 * n
    f11 = 1
    while f11 < best:
        f117 = f11
        while f117 < best:
            f1175 = f117
            while f1175 < best:
                x = f1175
                while x < n:
                    x *= 2
                while True:
                    if x < n:
                        x *= 3
                    elif x > n:
                        best = min(best, x)
                        if x & 1:
                            break
                        x >>= 1
                    else:
                        return n
                f1175 *= 5
            f117 *= 7
        f11 *= 11
    return best


def _twiddles(length: int) -> list[tuple[float, float]]:
    """cos and sin of 2 pi k / length for k in 0..length-1, in float64 as pocketfft's sincos_2pibyn
    computes them (an octant of cos / sin of a long-double angle, then a two-table product); each is
    rounded once to the transform's precision by the caller."""
    pi = np.longdouble("3.141592653589793238462643383279502884197")
    ang = float(np.longdouble(0.25) * pi / np.longdouble(length))
    n = length

    def calc(x: int) -> tuple[float, float]:
        x <<= 3
        if x < 4 * n:
            if x < 2 * n:
                if x < n:
                    return math.cos(x * ang), math.sin(x * ang)
                return math.sin((2 * n - x) * ang), math.cos((2 * n - x) * ang)
            x -= 2 * n
            if x < n:
                return -math.sin(x * ang), math.cos(x * ang)
            return -math.cos((2 * n - x) * ang), math.sin((2 * n - x) * ang)
        x = 8 * n - x
        if x < 2 * n:
            if x < n:
                return math.cos(x * ang), -math.sin(x * ang)
            return math.sin((2 * n - x) * ang), -math.cos((2 * n - x) * ang)
        x -= 2 * n
        if x < n:
            return -math.sin(x * ang), -math.cos(x * ang)
        return -math.cos((2 * n - x) * ang), -math.sin((2 * n - x) * ang)

    nval = (n + 2) // 2
    shift = 1
    while (1 << shift) * (1 << shift) < nval:
        shift += 1
    mask = (1 << shift) - 1
    v1 = [(1.0, 0.0)] + [calc(i) for i in range(1, mask + 1)]
    v2 = [(1.0, 0.0)] + [calc(i * (mask + 1)) for i in range(1, (nval + mask) // (mask + 1))]
    out = []
    for idx in range(n):
        k, sign = (idx, 1.0) if 2 * idx <= n else (n - idx, -1.0)
        (ar, ai), (br, bi) = v1[k & mask], v2[k >> shift]
        out.append((ar * br - ai * bi, sign * (ar * bi + ai * br)))
    return out


# pocketfft's constants: cos and |sin| of 2 pi j / p, j = 1..p//2, written as long-double literals and
# rounded to T0 (its tw<j>r, tw<j>i; the sign of tw<j>i is the transform's)
_ODD_CONSTS = {
    3: [(-0.5, 0.8660254037844386467637231707529362)],
    5: [(0.3090169943749474241022934171828191, 0.9510565162951535721164393333793821),
        (-0.8090169943749474241022934171828191, 0.5877852522924731291687059546390728)],
    7: [(0.6234898018587335305250048840042398, 0.7818314824680298087084445266740578),
        (-0.2225209339563144042889025644967948, 0.9749279121818236070181316829939312),
        (-0.9009688679024191262361023195074451, 0.433883739117558120475768332848359)],
    11: [(0.8412535328311811688618116489193677, 0.5406408174555975821076359543186917),
         (0.4154150130018864255292741492296232, 0.9096319953545183714117153830790285),
         (-0.1423148382732851404437926686163697, 0.9898214418809327323760920377767188),
         (-0.6548607339452850640569250724662936, 0.7557495743542582837740358439723444),
         (-0.9594929736144973898903680570663277, 0.2817325568414296977114179153466169)],
}
_HSQT2 = 0.707106781186547524400844362104849

# For each output pair (u, p - u), u = 1..p//2, pocketfft's PARTSTEP arguments: which tw<j>r multiplies
# plus_1, plus_2, ... and which tw<j>i (negative: subtracted) multiplies minus_1, minus_2, ...
_ODD = {
    3: ([(1,)], [(1,)]),
    5: ([(1, 2), (2, 1)], [(1, 2), (2, -1)]),
    7: ([(1, 2, 3), (2, 3, 1), (3, 1, 2)], [(1, 2, 3), (2, -3, -1), (3, -1, 2)]),
    11: ([(1, 2, 3, 4, 5), (2, 4, 5, 3, 1), (3, 5, 2, 1, 4), (4, 3, 1, 5, 2), (5, 1, 4, 2, 3)],
         [(1, 2, 3, 4, 5), (2, 4, -5, -3, -1), (3, -5, -2, 1, 4), (4, -3, 1, 5, -2), (5, -1, 4, -2, 3)]),
}


def _const(value: Any, dtype: np.dtype) -> np.ndarray:
    """A constant of the compute dtype. float32 ones go through float64 first, as pocketfft's long-double
    literals go through long double (the double rounding agrees for every constant here)."""
    return np.asarray(value, np.float64).astype(dtype)


def complex_fft(ops: FFTOps, x: Any, batch: Sequence[int], length: int, inverse: bool,
                dtype: np.dtype | type, scale: float | None = None) -> Any:
    """The complex FFT of x, shape batch + (length, 2) (real, imaginary) in `dtype` (float32 or float64),
    forward e^(-i theta) or inverse e^(+i theta), as pocketfft computes it in that precision, then
    multiplied by `scale` (pocketfft's fct; numpy's ifft passes 1 / length, rounded to the operand's
    precision) unless it is None. Needs fft_factors(length) to be a plan."""
    dt = np.dtype(dtype)
    fact = fft_factors(length)
    assert fact is not None, f"no pocketfft plan for length {length}"
    batch = tuple(batch)
    nb = len(batch)
    fwd = not inverse
    k = _Kit(ops, dt, fwd)
    tw = _twiddles(length) if len(fact) > 1 else []
    l1 = 1
    for ip in fact:
        ido = length // (l1 * ip)
        cc = ops.reshape(x, batch + (l1, ip, ido, 2))            # CC(i, j, k) at (..., k, j, i, :)
        if l1 > 1:                                               # the radix axis first: (..., j, k, i, :)
            cc = ops.transpose(cc, tuple(range(nb)) + (nb + 1, nb, nb + 2, nb + 3))
        else:
            cc = ops.reshape(cc, batch + (ip, 1, ido, 2))
        ch = k.butterfly(ip, cc)                                 # CH(i, k, u) at (..., u, k, i, :)
        if ido > 1:                          # special_mul by WA(u - 1, i) (u = 0, i = 0: by (1, 0))
            w = [[tw[u * l1 * i] for i in range(ido)] for u in range(ip)]
            wr = k.c([[[[r, r] for r, _ in row]] for row in w])
            wi = k.c([[[[i_, -i_] if fwd else [-i_, i_] for _, i_ in row]] for row in w])
            pr, pi = ops.rounded([ops.mul(ch, wr), ops.mul(k.swap(ch), wi)])
            ch = ops.add(pr, pi)
        x = ops.reshape(ch, batch + (length, 2))
        l1 *= ip
    if scale is not None and scale != 1.0:
        x = ops.mul(x, k.c(scale))
    return x


class _Kit:
    """pocketfft's passes on a tensor (..., ip, l1, ido, 2): the radix axis (-4) holds CC(., j, .) and
    then CH(., ., u); slices keep it (size 1), so every operand has the one rank."""

    def __init__(self, ops: FFTOps, dt: np.dtype, fwd: bool) -> None:
        self.ops, self.dt = ops, dt
        self.sgn = -1.0 if fwd else 1.0                          # the sign of every sine constant
        self.rot_fwd = self.c([1.0, -1.0] if fwd else [-1.0, 1.0])   # ROTX90<fwd>: swap, then these signs
        self.rot = self.c([-1.0, 1.0])                           # (-v.i, v.r): the cb of pass 3, 5, 7, 11

    def c(self, v: Any) -> np.ndarray:
        return _const(v, self.dt)

    def swap(self, v: Any) -> Any:
        return self.ops.flip(v, -1)

    def rotx90(self, v: Any) -> Any:
        return self.ops.mul(self.swap(v), self.rot_fwd)

    def at(self, x: Any, j: int, stop: int | None = None) -> Any:
        return self.ops.slice(x, -4, j, j + 1 if stop is None else stop)

    def butterfly(self, ip: int, cc: Any) -> Any:
        ops, at = self.ops, self.at
        add, sub = ops.add, ops.sub
        if ip == 2:
            a0, a1 = at(cc, 0), at(cc, 1)
            return ops.concat([add(a0, a1), sub(a0, a1)], -4)
        if ip == 4:
            lo, hi = at(cc, 0, 2), at(cc, 2, 4)
            s, d = add(lo, hi), sub(lo, hi)                      # (t2, t3), (t1, t4 before ROTX90)
            t2, t3, t1, t4 = at(s, 0), at(s, 1), at(d, 0), self.rotx90(at(d, 1))
            return ops.concat([add(t2, t3), add(t1, t4), sub(t2, t3), sub(t1, t4)], -4)
        if ip == 8:
            return self._pass8(cc)
        return self._odd(ip, cc)

    def _odd(self, ip: int, cc: Any) -> Any:
        """pass3, pass5, pass7, pass11: t0; the pairs t_j + t_(ip-j) (`plus`) and t_j - t_(ip-j) (`minus`),
        j = 1..h; CH(0) = t0 + plus_1 + ... + plus_h; then for u = 1..h (pocketfft's PARTSTEP(u, ip-u)),
        ca = t0 + plus_1 x_u1 + ... + plus_h x_uh and cb = rot(minus_1 y_u1 + ... + minus_h y_uh), the real
        and imaginary coefficients x, y of pocketfft's table; CH(u), CH(ip - u) = ca + cb, ca - cb."""
        ops, at = self.ops, self.at
        h = ip // 2
        xs, ys = _ODD[ip]
        t0 = at(cc, 0)
        hi, lo = at(cc, 1, h + 1), ops.flip(at(cc, h + 1, ip), -4)
        plus, minus = ops.add(hi, lo), ops.sub(hi, lo)
        out0 = t0
        for j in range(h):
            out0 = ops.add(out0, at(plus, j))
        tw = _ODD_CONSTS[ip]
        cr = self.c([[[[[tw[r - 1][0]]]] for r in row] for row in xs])                    # (u, j, 1, 1, 1)
        ci = self.c([[[[[(1 if s > 0 else -1) * self.sgn * tw[abs(s) - 1][1]]]] for s in row] for row in ys])
        # products with the pair index j in axis -4 and u in axis -5 (pocketfft's x * t, y * t)
        pr, pi = ops.rounded([ops.mul(self._unsqueeze(plus), cr), ops.mul(self._unsqueeze(minus), ci)])
        ca = self._unsqueeze(t0)
        v = None
        for j in range(h):
            ca = ops.add(ca, at(pr, j))
            term = at(pi, j)
            v = term if v is None else ops.add(v, term)
        cb = ops.mul(self.swap(v), self.rot)
        up, down = ops.add(ca, cb), ops.sub(ca, cb)              # (..., h, 1, l1, ido, 2): u = 1..h
        up, down = self._squeeze(up), ops.flip(self._squeeze(down), -4)
        return ops.concat([out0, up, down], -4)

    def _unsqueeze(self, x: Any) -> Any:
        """(..., m, l1, ido, 2) as (..., 1, m, l1, ido, 2)."""
        shape = tuple(self.ops.shape(x))
        return self.ops.reshape(x, shape[:-4] + (1,) + shape[-4:])

    def _squeeze(self, x: Any) -> Any:
        """(..., h, 1, l1, ido, 2) as (..., h, l1, ido, 2)."""
        shape = tuple(self.ops.shape(x))
        return self.ops.reshape(x, shape[:-4] + shape[-3:])

    def _pass8(self, cc: Any) -> Any:
        ops, at, rotx90 = self.ops, self.at, self.rotx90
        add, sub, mul = ops.add, ops.sub, ops.mul
        hsqt2 = self.c(_HSQT2)
        a = [at(cc, j) for j in range(8)]
        a1, a5 = add(a[1], a[5]), sub(a[1], a[5])
        a3, a7 = add(a[3], a[7]), sub(a[3], a[7])
        a1, a3 = add(a1, a3), sub(a1, a3)
        a3 = rotx90(a3)
        a7 = rotx90(a7)
        a5, a7 = add(a5, a7), sub(a5, a7)
        # ROTX45: fwd hsqt2 (v.r + v.i, v.i - v.r), else (v.r - v.i, v.i + v.r); ROTX135: fwd
        # hsqt2 (v.i - v.r, -v.r - v.i), else (-v.r - v.i, v.r - v.i)
        a5, a7 = ops.rounded([mul(add(a5, rotx90(a5)), hsqt2), mul(sub(rotx90(a7), a7), hsqt2)])
        a0, a4 = add(a[0], a[4]), sub(a[0], a[4])
        a2, a6 = add(a[2], a[6]), sub(a[2], a[6])
        s02, d02 = add(a0, a2), sub(a0, a2)
        a6 = rotx90(a6)
        s46, d46 = add(a4, a6), sub(a4, a6)
        return ops.concat([add(s02, a1), add(s46, a5), add(d02, a3), add(d46, a7),
                           sub(s02, a1), sub(s46, a5), sub(d02, a3), sub(d46, a7)], -4)


class NumpyOps:
    """FFTOps on numpy arrays (each operation rounded to the array's dtype, none fused)."""

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def sub(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a - b

    def mul(self, x: np.ndarray, c: np.ndarray) -> np.ndarray:
        return x * c

    def rounded(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        return xs

    def slice(self, x: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
        return np.take(x, np.arange(start, stop), axis=axis)

    def flip(self, x: np.ndarray, axis: int) -> np.ndarray:
        return np.flip(x, axis)

    def concat(self, xs: Sequence[np.ndarray], axis: int) -> np.ndarray:
        return np.concatenate(xs, axis)

    def transpose(self, x: np.ndarray, perm: Sequence[int]) -> np.ndarray:
        return np.transpose(x, perm)

    def reshape(self, x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        return x.reshape(tuple(shape))

    def shape(self, x: np.ndarray) -> Sequence[int]:
        return x.shape

    def cast(self, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
        return x.astype(dtype)

    def pad(self, x: np.ndarray, axis: int, after: int) -> np.ndarray:
        width = [(0, 0)] * x.ndim
        width[axis] = (0, after)
        return np.pad(x, width)
