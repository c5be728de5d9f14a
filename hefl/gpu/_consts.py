"""Host-side precomputation for the GPU kernels (pure Python integers, gmpy2 when present).

Everything here runs once per key (or once per table), never per ciphertext.  The same
functions feed the CUDA kernels (:mod:`hefl.gpu.backend`) and the NumPy model of the
kernels (:mod:`hefl.gpu.reference`), so the tests of the model check these numbers too.

Row orders must match the ``#define``s at the top of ``paillier.cu`` and ``crt.cu``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:  # gmpy2 is a hefl dependency, but the GPU machine's image may lack it
    import gmpy2 as _gmpy2
except ImportError:  # pragma: no cover - depends on the environment
    _gmpy2 = None

__all__ = [
    "K_N",
    "K_NR",
    "K_NR2",
    "K_ONE",
    "K_R1",
    "K_R2",
    "CrtConsts",
    "NConsts",
    "crt_consts",
    "fixed_base_seeds",
    "fixed_base_table",
    "ints_to_u32",
    "invert",
    "limbs32",
    "n2_consts",
    "powmod",
    "round_up",
    "u32_to_ints",
]

# paillier.cu constant rows
K_N, K_R1, K_R2, K_NR, K_NR2, K_ONE = range(6)


def powmod(base: int, exp: int, mod: int) -> int:
    """``base ** exp % mod`` through gmpy2 when available."""
    if _gmpy2 is not None:
        return int(_gmpy2.powmod(base, exp, mod))
    return pow(base, exp, mod)


def invert(a: int, mod: int) -> int:
    """Modular inverse of ``a`` modulo ``mod``."""
    if _gmpy2 is not None:
        return int(_gmpy2.invert(a, mod))
    return pow(a, -1, mod)


def limbs32(value: int) -> int:
    """Number of 32-bit limbs needed for numbers below ``value``."""
    return max(1, (int(value).bit_length() + 31) // 32)


def round_up(x: int, m: int) -> int:
    """Smallest multiple of ``m`` that is >= ``x``."""
    return -(-x // m) * m


def ints_to_u32(values, n_limbs: int) -> np.ndarray:
    """Python ints -> (N, n_limbs) little-endian uint32 array (for constants and tests)."""
    nbytes = 4 * n_limbs
    buf = b"".join(int(v).to_bytes(nbytes, "little") for v in values)
    return np.frombuffer(buf, dtype="<u4").reshape(-1, n_limbs).copy()


def u32_to_ints(arr: np.ndarray) -> list[int]:
    """(N, L) uint32 array -> Python ints (tests and constants only)."""
    arr = np.ascontiguousarray(arr, dtype="<u4")
    width = arr.shape[-1] * 4
    raw = arr.tobytes()
    return [int.from_bytes(raw[i : i + width], "little") for i in range(0, len(raw), width)]


def _np0(mod: int) -> int:
    """-mod^-1 mod 2^32 (mod odd)."""
    return (-invert(mod, 1 << 32)) % (1 << 32)


@dataclass(frozen=True)
class NConsts:
    """Constants of the kernels modulo N = n^2 (``paillier.cu``)."""

    nl: int
    rows: np.ndarray  # (6, nl) uint32: N, R1, R2, NR, NR2, ONE
    np0: int
    r: int  # R = 2^(32 nl)
    n2: int

    def to_mont(self, x: int) -> int:
        return x * self.r % self.n2

    def from_mont(self, x: int) -> int:
        return x * invert(self.r, self.n2) % self.n2


def n2_consts(n: int, nl: int) -> NConsts:
    """Constant rows for ``paillier.cu`` with ``nl`` limbs (nl >= limbs32(n^2))."""
    n2 = n * n
    if nl < limbs32(n2):
        raise ValueError(f"{nl} limbs cannot hold n^2 of {n2.bit_length()} bits")
    r = 1 << (32 * nl)
    r1 = r % n2
    r2 = r1 * r1 % n2
    rows = [n2, r1, r2, n * r1 % n2, n * r2 % n2, 1]
    return NConsts(nl=nl, rows=ints_to_u32(rows, nl), np0=_np0(n2), r=r, n2=n2)


@dataclass(frozen=True)
class CrtConsts:
    """Constants of the CRT decryption kernels (``crt.cu``)."""

    nl: int
    kp: np.ndarray  # (2, 9, nl) uint32 per prime: P2, R1, R2, R3, ONE, P, HPR, PINV, EXP
    np0s: np.ndarray  # (4,) uint32: -(p^2)^-1, -p^-1, -(q^2)^-1, -q^-1 mod 2^32
    exp_bits: tuple[int, int]
    kn: np.ndarray  # (3, nl) uint32: n, Q*R mod n, P*R mod n
    np0n: int


def crt_consts(n: int, p: int, q: int, nl: int) -> CrtConsts:
    """Constant rows for ``crt.cu`` with ``nl`` limbs (>= limbs of p^2, q^2 and n)."""
    if p * q != n:
        raise ValueError("p * q != n")
    if nl < max(limbs32(p * p), limbs32(q * q), limbs32(n)):
        raise ValueError(f"{nl} limbs are too few for p^2, q^2 and n")
    r = 1 << (32 * nl)
    kp = []
    np0s = []
    for a in (p, q):
        a2 = a * a
        # hp = L_p(g^(p-1) mod p^2)^-1 mod p with g = n + 1, as in phe
        hp = invert((powmod(n + 1, a - 1, a2) - 1) // a, a)
        r1 = r % a2
        rows = [a2, r1, r1 * r1 % a2, r1 * r1 * r1 % a2, 1, a, hp * r % a, invert(a, r), a - 1]
        kp.append(ints_to_u32(rows, nl))
        np0s += [_np0(a2), _np0(a)]
    big_q = q * invert(q, p)
    big_p = p * invert(p, q)
    kn = ints_to_u32([n, big_q * r % n, big_p * r % n], nl)
    return CrtConsts(
        nl=nl,
        kp=np.stack(kp),
        np0s=np.array(np0s, dtype=np.uint32),
        exp_bits=((p - 1).bit_length(), (q - 1).bit_length()),
        kn=kn,
        np0n=_np0(n),
    )


def fixed_base_seeds(hs: int, n2: int, r: int, wbits: int, nwin: int) -> list[list[int]]:
    """Montgomery forms of hs^(2^(wbits*w + k)) mod n^2, as ``seeds[w][k]`` for k < wbits.

    These are the entries ``T[w][2^k]`` of the fixed-base table
    ``T[w][d] = hs^(d * 2^(wbits*w))``; the others (d not a power of two) are products of
    two known entries and are filled on the device (``k_fb_table_step``).
    """
    seeds = []
    x = hs % n2
    for _ in range(nwin):
        row = []
        for _ in range(wbits):
            row.append(x * r % n2)
            x = x * x % n2
        seeds.append(row)
    return seeds


def fixed_base_table(hs: int, n2: int, r: int, wbits: int, nwin: int) -> list[list[int]]:
    """The whole table ``T[w][d] = hs^(d * 2^(wbits*w)) * R mod n^2`` on the host.

    Only for small parameters (tests of the NumPy model); the backend builds it on the GPU.
    """
    table = []
    base = hs % n2
    for _ in range(nwin):
        row, x = [], 1
        for _ in range(1 << wbits):
            row.append(x * r % n2)
            x = x * base % n2
        table.append(row)
        base = powmod(base, 1 << wbits, n2)
    return table
