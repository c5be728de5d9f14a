"""CPU backend of the Okamoto–Uchiyama kit: fixed-base tables and GMP batch kernels.

Numbers travel as ``(N, L)`` uint64 limb arrays as in :mod:`hefl.he._backend`; here one
modulus serves ciphertexts and encoded plaintexts alike (``L = limbs(n)``, n = p²q).

Encryption ``c = G^m · H^r mod n`` is two fixed-base products, walked in one pass by the
native kernel ``fbt_prod``: a table for ``H`` (exponents r of ``r_bits`` bits) and tables
for ``G`` and ``G⁻¹`` (a negative m uses ``G⁻¹`` with |m|, so the exponent stays as short
as the value).  The tables have *levels*: level ``(off, w)`` holds ``base^(d·2^off)`` for
``d < 2^w``, so an exponent costs one multiplication per non-zero w-bit digit and no
squarings.  The ``G`` tables use wide windows for the low bits (where fixed-point values
live) and narrow ones above, which keeps them small while covering the whole plaintext
space.  With the secret key the same products are taken mod p² and mod q (22 and 11
limbs instead of 32) and joined by CRT.

Batches are split over ``n_jobs`` threads; the kernels release the GIL.  Without the C
extension (or with GMP limbs that are not 64 bits) ``_GmpyOUOps`` computes the same
results with gmpy2.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass, field

import gmpy2
import numpy as np

from hefl.errors import EncodingOverflowError

from ._backend import ints_to_limbs, limbs_for, limbs_to_ints
from ._cpu import BatchModArith, _limbs, _ops, _u64

__all__ = ["CpuOUBackend", "LevelTable", "OUParams", "level_spec", "ou_native_available"]

log = logging.getLogger(__name__)

try:  # pragma: no cover - depends on the build
    from hefl import _native as _NATIVE  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    _NATIVE = None
try:  # pragma: no cover - depends on the build
    from hefl import _mont as _MONT  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    _MONT = None

_OU_KERNELS = ("fbt_prod", "signed_mag", "ou_decrypt", "mulmod_mpn")


def ou_native_available() -> bool:
    """True when the C extension has the OU kernels (built against 64-bit GMP limbs)."""
    return _NATIVE is not None and all(hasattr(_NATIVE, k) for k in _OU_KERNELS)


@dataclass(frozen=True)
class OUParams:
    """Numbers of one OU key: public ``(n, G, H, p_bits, r_bits)``, optionally ``p, q, t``.

    ``n = p²q``; ``G = g^u`` and ``H = g'^(n·u)`` mod n where ``p − 1 = t·u`` with ``t``
    prime; ``p_bits`` is the bit length of p (public: it fixes the plaintext bound) and
    ``r_bits`` the length of the random exponents.
    """

    n: int
    G: int
    H: int
    p_bits: int
    r_bits: int
    p: int | None = None
    q: int | None = None
    t: int | None = None
    G_inv: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "G_inv", int(gmpy2.invert(self.G, self.n)))

    @property
    def has_private(self) -> bool:
        return self.p is not None

    @property
    def limbs(self) -> int:
        return limbs_for(self.n)

    @property
    def plaintext_bits(self) -> int:
        """Bits of the largest plaintext magnitude: |m| < 2^(p_bits − 2) ≤ p/3."""
        return self.p_bits - 2


def level_spec(bits: int, segments) -> list[tuple[int, int]]:
    """Levels ``(offset, window)`` covering ``bits`` exponent bits.

    ``segments`` is a list of ``(up_to_bit, window)``: windows of that width are used
    until ``up_to_bit`` (the last segment runs to ``bits``); the last level is trimmed so
    the table covers exactly ``bits`` bits.
    """
    levels = []
    off = 0
    for j, (upto, w) in enumerate(segments):
        end = bits if j == len(segments) - 1 else min(bits, int(upto))
        while off < end:
            ww = min(int(w), end - off)
            levels.append((off, ww))
            off += ww
    return levels


class LevelTable:
    """Fixed-base table ``base^e mod m`` with a window per level (see the module docstring).

    ``table`` is an ``(rows, L)`` uint64 array; ``levels`` an ``(nlev, 3)`` int64 array of
    ``(bit offset, window, first row)``.  Row ``first + d`` of a level is
    ``base^(d·2^offset)``; row ``first`` (d = 0) is 1.
    """

    def __init__(self, base: int, modulus: int, levels: list[tuple[int, int]]):
        self.modulus = int(modulus)
        self.L = limbs_for(modulus)
        self.m_limbs = _limbs(modulus, self.L)
        self.bits = sum(w for _, w in levels)
        rows = 0
        lev = []
        for off, w in levels:
            lev.append((off, w, rows))
            rows += 1 << w
        self.levels = np.array(lev, dtype=np.int64).reshape(-1, 3)
        self.table = np.zeros((rows, self.L), dtype=np.uint64)
        ops = _ops()
        b = gmpy2.mpz(base) % self.modulus
        # group levels of one width and fill them together: rows [k, 2k) = rows [0, k) · b_i^k
        by_w: dict[int, list[tuple[int, int]]] = {}
        for off, w, first in lev:
            by_w.setdefault(w, []).append((off, first))
        for w, group in by_w.items():
            size = 1 << w
            blk = np.zeros((len(group), size, self.L), dtype=np.uint64)
            blk[:, 0, 0] = 1
            for j, (off, _) in enumerate(group):
                blk[j, 1] = _limbs(int(gmpy2.powmod(b, 1 << off, self.modulus)), self.L)
            k = 1
            while k < size:
                if k > 1:  # b_i^k = (b_i^(k/2))²
                    half = np.ascontiguousarray(blk[:, k // 2])
                    sq = np.empty_like(half)
                    ops.mulmod(half, half, self.m_limbs, sq, self.L)
                    blk[:, k] = sq
                step = min(k, size - k) - 1
                if step > 0:
                    lo = np.ascontiguousarray(blk[:, 1 : 1 + step]).reshape(-1, self.L)
                    mult = np.ascontiguousarray(
                        np.broadcast_to(blk[:, k : k + 1], (len(group), step, self.L))
                    ).reshape(-1, self.L)
                    out = np.empty_like(lo)
                    ops.mulmod(lo, mult, self.m_limbs, out, self.L)
                    blk[:, k + 1 : k + 1 + step] = out.reshape(len(group), step, self.L)
                k *= 2
            for j, (_, first) in enumerate(group):
                self.table[first : first + size] = blk[j]

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes)


# -- kernels ---------------------------------------------------------------------------------
class _GmpyOUOps:
    """gmpy2 implementation of the OU kernels' signatures (fallback)."""

    @staticmethod
    def _int(buf: np.ndarray, L: int) -> int:
        return limbs_to_ints(np.asarray(buf).reshape(1, L))[0]

    def fbt_prod(self, init, Li, t1, lev1, e1, Le1, t2, t2n, lev2, e2, Le2, neg, m, rk, out, L):
        del rk  # the Montgomery correction rows of the native kernel; plain arithmetic here
        mod = gmpy2.mpz(self._int(m, L))
        N = out.size // L
        lev1 = np.asarray(lev1, dtype=np.int64).reshape(-1, 3)
        lev2 = np.asarray(lev2, dtype=np.int64).reshape(-1, 3)
        inits = limbs_to_ints(np.asarray(init).reshape(N, Li)) if Li else [1] * N
        x1 = limbs_to_ints(np.asarray(e1).reshape(N, Le1)) if len(lev1) else [0] * N
        x2 = limbs_to_ints(np.asarray(e2).reshape(N, Le2)) if len(lev2) else [0] * N
        tabs = [np.asarray(t).reshape(-1, L) for t in (t1, t2, t2n)]
        res = []
        for i in range(N):
            acc = gmpy2.mpz(inits[i]) % mod
            for lev, e, tab in ((lev1, x1[i], tabs[0]), (lev2, x2[i], tabs[2] if len(lev2) and neg[i] else tabs[1])):
                if not len(lev):
                    continue
                cover = int(lev[-1, 0] + lev[-1, 1])
                if e >> cover:
                    raise ValueError(f"exponent of row {i} larger than the fixed-base table")
                for off, w, first in lev.tolist():
                    d = (e >> off) & ((1 << w) - 1)
                    if d:
                        acc = acc * gmpy2.mpz(limbs_to_ints(tab[first + d : first + d + 1])[0]) % mod
            res.append(int(acc))
        out[...] = ints_to_limbs(res, L).reshape(out.shape)

    def signed_mag(self, x, Lx, n, mag, Lm, neg, maxbits):
        n_ = self._int(n, Lx)
        vals = limbs_to_ints(np.asarray(x).reshape(-1, Lx))
        mags = []
        for i, v in enumerate(vals):
            if v >= n_:
                return i
            negative = v > n_ // 2
            a = n_ - v if negative else v
            if a.bit_length() > maxbits:
                return i
            mags.append(a)
            neg[i] = negative
        if mags:
            mag[...] = ints_to_limbs(mags, Lm).reshape(mag.shape)
        return -1

    def ou_decrypt(self, c, Lc, p, Lp, p2, Lp2, t, Lt, gpinv, n, out, Ln):
        p_, p2_, t_, gi, n_ = (
            gmpy2.mpz(self._int(v, L)) for v, L in ((p, Lp), (p2, Lp2), (t, Lt), (gpinv, Lp), (n, Ln))
        )
        res = []
        for x in limbs_to_ints(np.asarray(c).reshape(-1, Lc)):
            y = (gmpy2.powmod(gmpy2.mpz(x) % p2_, t_, p2_) - 1) // p_ * gi % p_
            res.append(int(y - p_ + n_ if y > p_ // 2 else y))
        out[...] = ints_to_limbs(res, Ln).reshape(out.shape)

    def mulmod_mpn(self, a, b, m, out, L):
        _ops().mulmod(a, b, m, out, L)


def _ou_ops():
    return _NATIVE if ou_native_available() else _GmpyOUOps()


_EMPTY_U64 = np.zeros(1, dtype=np.uint64)
_EMPTY_LEV = np.zeros((0, 3), dtype=np.int64)
_EMPTY_U8 = np.zeros(1, dtype=np.uint8)


class _TableSet:
    """The H, G and G⁻¹ tables of one modulus (n, or p² / q with the secret key)."""

    def __init__(self, prm: OUParams, modulus: int, h_levels, g_levels):
        self.h = LevelTable(prm.H, modulus, h_levels)
        self.g = LevelTable(prm.G, modulus, g_levels)
        self.gi = LevelTable(prm.G_inv, modulus, g_levels)
        self.L = self.h.L
        self.m = self.h.m_limbs
        # rows k = 0..K: R^(k+1) mod m, R = 2^(64 L), to undo k Montgomery steps (fbt_prod)
        K = len(self.h.levels) + len(self.g.levels) + 1
        R = gmpy2.mpz(1) << (64 * self.L)
        self.rk = ints_to_limbs([int(gmpy2.powmod(R, k + 1, modulus)) for k in range(K + 1)], self.L)

    @property
    def nbytes(self) -> int:
        return self.h.nbytes + self.g.nbytes + self.gi.nbytes


class CpuOUBackend(BatchModArith):
    """OU arithmetic on the CPU with GMP, batches split over ``n_jobs`` threads.

    Parameters
    ----------
    params : OUParams
    n_jobs : int
        Threads per batch.
    h_window : int
        Window of the ``H`` table (the random exponent has ``r_bits`` bits).
    g_windows : list of (up_to_bit, window)
        Windows of the ``G`` / ``G⁻¹`` tables by bit range (see :func:`level_spec`).
    """

    name = "cpu"

    def __init__(self, params: OUParams, n_jobs: int = 1, h_window: int = 12,
                 g_windows=((132, 12), (None, 8))):
        self.params = params
        self.n_jobs = max(1, int(n_jobs))
        self.ops = _ops()
        self.ou = _ou_ops()
        self.L = params.limbs
        self.n_l = _limbs(params.n, self.L)
        self.r_mod_n = _limbs((1 << (64 * self.L)) % params.n, self.L)
        self._cm, self._cL, self._r_mod, self._Ln = self.n_l, self.L, self.r_mod_n, self.L
        self.h_levels = level_spec(params.r_bits, [(None, h_window)])
        self.g_levels = level_spec(params.plaintext_bits, list(g_windows))
        #: limbs of an exponent magnitude (covers plaintext_bits)
        self.Lm = -(-params.plaintext_bits // 64)
        self.Lr = -(-params.r_bits // 64)
        self._tables: dict | None = None
        self._table_lock = threading.Lock()
        if params.has_private:
            p, q, t = params.p, params.q, params.t
            assert p is not None and q is not None and t is not None
            p2 = p * p
            self.Lp, self.Lp2, self.Lq, self.Lt = limbs_for(p), limbs_for(p2), limbs_for(q), limbs_for(t)
            gp = gmpy2.powmod(params.G % p2, t, p2)  # = g^(p-1) mod p², of order p
            gp_inv = int(gmpy2.invert((gp - 1) // p, p))
            self._dec = (
                _limbs(p, self.Lp), _limbs(p2, self.Lp2), _limbs(t, self.Lt), _limbs(gp_inv, self.Lp),
            )
            self._crt = (_limbs(p2, self.Lp2), _limbs(q, self.Lq), _limbs(int(gmpy2.invert(q, p2)), self.Lp2))

    # -- helpers -------------------------------------------------------------------------
    def tables(self) -> dict:
        """Build (once) and return the fixed-base tables: ``{"n": …}`` or ``{"p2": …, "q": …}``."""
        with self._table_lock:
            if self._tables is None:
                prm = self.params
                if prm.p is not None and prm.q is not None:
                    self._tables = {
                        "p2": _TableSet(prm, prm.p * prm.p, self.h_levels, self.g_levels),
                        "q": _TableSet(prm, prm.q, self.h_levels, self.g_levels),
                    }
                else:
                    self._tables = {"n": _TableSet(prm, prm.n, self.h_levels, self.g_levels)}
                log.debug("OU fixed-base tables: %.1f MB", sum(t.nbytes for t in self._tables.values()) / 2**20)
            return self._tables

    def random_exponents(self, count: int) -> np.ndarray:
        """``count`` fresh r of ``r_bits`` bits from the OS CSPRNG, as (count, Lr) limbs."""
        bits, le = self.params.r_bits, self.Lr
        raw = np.frombuffer(secrets.token_bytes(8 * le * count), dtype=np.uint64).reshape(count, le).copy()
        extra = 64 * le - bits
        if extra:
            raw[:, -1] &= np.uint64((1 << (64 - extra)) - 1)
        return raw

    def signed(self, res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signed residues mod n → (magnitudes (N, Lm), negative flags (N,) uint8), range-checked."""
        res = _u64(res)
        count = res.shape[0]
        mag = np.empty((count, self.Lm), dtype=np.uint64)
        neg = np.empty(count, dtype=np.uint8)
        bad = int(self.ou.signed_mag(res, self.L, self.n_l, mag, self.Lm, neg, self.params.plaintext_bits))
        if bad >= 0:
            raise EncodingOverflowError(
                f"plaintext {bad} is outside the OU plaintext space "
                f"(|m| must be below 2^{self.params.plaintext_bits})"
            )
        return mag, neg

    def _product(self, count: int, init: np.ndarray | None, r: np.ndarray | None,
                 mag: np.ndarray | None, neg: np.ndarray | None, serial: bool = False) -> np.ndarray:
        """``init · H^r · G^(±mag) mod n`` per row; any of the three factors may be absent."""
        tabs = self.tables()
        out = np.empty((count, self.L), dtype=np.uint64)
        arrays = [out]
        for a in (init, r, mag, neg):
            if a is not None:
                arrays.append(a)
        has_i, has_r, has_m = init is not None, r is not None, mag is not None

        def one(ts: _TableSet, o, parts) -> None:
            it = iter(parts)
            x_i = next(it) if has_i else _EMPTY_U64
            x_r = next(it) if has_r else _EMPTY_U64
            x_m = next(it) if has_m else _EMPTY_U64
            x_n = next(it) if has_m else _EMPTY_U8
            self.ou.fbt_prod(
                x_i, self.L if has_i else 0,
                ts.h.table, ts.h.levels if has_r else _EMPTY_LEV, x_r, self.Lr,
                ts.g.table, ts.gi.table, ts.g.levels if has_m else _EMPTY_LEV, x_m, self.Lm, x_n,
                ts.m, ts.rk, o, ts.L,
            )

        if "n" in tabs:
            def work(o, *parts):
                one(tabs["n"], o, parts)
        else:
            tp, tq = tabs["p2"], tabs["q"]
            p2_l, q_l, qinv_l = self._crt

            def work(o, *parts):
                xp = np.empty((o.shape[0], tp.L), dtype=np.uint64)
                xq = np.empty((o.shape[0], tq.L), dtype=np.uint64)
                one(tp, xp, parts)
                one(tq, xq, parts)
                self.ops.crt(xp, tp.L, xq, tq.L, p2_l, q_l, qinv_l, o, self.L)

        self._run(work, count, *arrays, serial=serial)
        return out

    # -- interface -----------------------------------------------------------------------
    def obfuscators(self, count: int, *, serial: bool = False) -> np.ndarray:
        """``count`` fresh ``H^r mod n`` (each r from the OS CSPRNG)."""
        return self._product(count, None, self.random_exponents(count), None, None, serial=serial)

    def encrypt(self, res: np.ndarray, obf: np.ndarray | None = None) -> np.ndarray:
        """``G^m · H^r mod n`` for signed residues ``res`` (N, L); with ``obf`` (N, L) given,
        ``G^m · obf`` (a pooled ``H^r``), else fresh r."""
        res = _u64(res)
        count = res.shape[0]
        mag, neg = self.signed(res)
        if obf is not None:
            return self._product(count, _u64(obf), None, mag, neg)
        return self._product(count, None, self.random_exponents(count), mag, neg)

    def add_plain(self, a: np.ndarray, res: np.ndarray) -> np.ndarray:
        """``a · G^m mod n`` (the ciphertext's own randomness hides the sum)."""
        mag, neg = self.signed(_u64(res))
        return self._product(a.shape[0], _u64(a), None, mag, neg)

    def decrypt(self, c: np.ndarray) -> np.ndarray:
        """Ciphertexts (N, L) → signed residues mod n (N, L) (m > p/2 stands for m − p)."""
        if not self.params.has_private:
            raise ValueError("decrypt needs the private key")
        c = _u64(c)
        out = np.empty((c.shape[0], self.L), dtype=np.uint64)
        p_l, p2_l, t_l, gi_l = self._dec
        self._run(
            lambda x, o: self.ou.ou_decrypt(x, self.L, p_l, self.Lp, p2_l, self.Lp2, t_l, self.Lt, gi_l, self.n_l,
                                            o, self.L),
            c.shape[0], c, out,
        )
        return out

