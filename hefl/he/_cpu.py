"""CPU backend of the Paillier-family kits: GMP batch kernels, split over threads.

The kernels live in the C extension ``hefl._native`` (built at install time against
GMP); each call releases the GIL, so a batch split into ``n_jobs`` chunks runs on
``n_jobs`` cores without pickling anything.  Where the extension could not be built,
``_GmpyOps`` does the same arithmetic with gmpy2 — same results, a few times slower.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import gmpy2
import numpy as np

from ._backend import PaillierBackend, PaillierParams, ints_to_limbs, limbs_for, limbs_to_ints

__all__ = ["CpuPaillierBackend", "native_available", "FixedBaseTable"]

log = logging.getLogger(__name__)

try:  # pragma: no cover - depends on the build
    from hefl import _native as _NATIVE
except ImportError:  # pragma: no cover
    _NATIVE = None
try:  # pragma: no cover - depends on the build
    from hefl import _mont as _MONT
except ImportError:  # pragma: no cover
    _MONT = None


def native_available() -> bool:
    """True when the GMP C extension was built."""
    return _NATIVE is not None


def _u64(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.uint64)


def _limbs(value: int, n_limbs: int) -> np.ndarray:
    return ints_to_limbs([value], n_limbs)[0]


class _GmpyOps:
    """gmpy2 implementation of the native kernels' signatures (fallback)."""

    @staticmethod
    def _load(buf: np.ndarray) -> list:
        return [gmpy2.mpz(v) for v in limbs_to_ints(buf)]

    @staticmethod
    def _store(out: np.ndarray, values) -> None:
        out[...] = ints_to_limbs([int(v) for v in values], out.shape[-1]).reshape(out.shape)

    def mulmod(self, a, b, m, out, L):
        mod = gmpy2.mpz(limbs_to_ints(m.reshape(1, L))[0])
        xs, ys = self._load(a.reshape(-1, L)), self._load(b.reshape(-1, L))
        self._store(out, [x * y % mod for x, y in zip(xs, ys)])

    def powmod(self, a, L, e, Le, m, out):
        mod = gmpy2.mpz(limbs_to_ints(m.reshape(1, L))[0])
        xs, es = self._load(a.reshape(-1, L)), self._load(e.reshape(-1, Le))
        self._store(out, [gmpy2.powmod(x, k, mod) for x, k in zip(xs, es)])

    def fb_powmod(self, table, w, nwin, e, Le, m, out, L):
        mod = gmpy2.mpz(limbs_to_ints(m.reshape(1, L))[0])
        tb = table.reshape(nwin, 1 << w, L)
        res = []
        mask = (1 << w) - 1
        for k in limbs_to_ints(e.reshape(-1, Le)):
            if k >> (w * nwin):
                raise ValueError("exponent larger than the fixed-base table")
            acc = gmpy2.mpz(1)
            for i in range(nwin):
                d = (k >> (w * i)) & mask
                if d:
                    acc = acc * gmpy2.mpz(limbs_to_ints(tb[i, d : d + 1])[0]) % mod
            res.append(acc)
        self._store(out, res)

    def encrypt(self, m, Ln, obf, n, nsq, out, Lc):
        n_, nsq_ = (gmpy2.mpz(limbs_to_ints(x.reshape(1, -1))[0]) for x in (n, nsq))
        ms, rs = self._load(m.reshape(-1, Ln)), self._load(obf.reshape(-1, Lc))
        self._store(out, [(1 + x * n_) * r % nsq_ for x, r in zip(ms, rs)])

    def bucket_prod(self, a, ids, F, NB, m, out, L):
        mod = gmpy2.mpz(limbs_to_ints(m.reshape(1, L))[0])
        xs = self._load(a.reshape(-1, L))
        acc = [gmpy2.mpz(1)] * (F * NB)
        ids = ids.reshape(len(xs), F)
        if ids.size and ids.max() >= NB:
            raise ValueError(f"bucket id {int(ids.max())} out of range [0, {NB})")
        for i, x in enumerate(xs):
            for f in range(F):
                b = ids[i, f]
                if b >= 0:
                    k = f * NB + b
                    acc[k] = acc[k] * x % mod
        self._store(out, acc)

    def decrypt(self, c, Lc, p, q, hp, hq, qinv, out, Ln, Lh):
        p_, q_, hp_, hq_, qi = (gmpy2.mpz(limbs_to_ints(x.reshape(1, Lh))[0]) for x in (p, q, hp, hq, qinv))
        p2, q2 = p_ * p_, q_ * q_
        res = []
        for x in self._load(c.reshape(-1, Lc)):
            mp = (gmpy2.powmod(x % p2, p_ - 1, p2) - 1) // p_ * hp_ % p_
            mq = (gmpy2.powmod(x % q2, q_ - 1, q2) - 1) // q_ * hq_ % q_
            res.append(mq + q_ * ((mp - mq) * qi % p_))
        self._store(out, res)

    def crt(self, xp, Lp, xq, Lq, p2, q2, q2inv, out, L):
        p2_, q2_ = gmpy2.mpz(limbs_to_ints(p2.reshape(1, Lp))[0]), gmpy2.mpz(limbs_to_ints(q2.reshape(1, Lq))[0])
        qi = gmpy2.mpz(limbs_to_ints(q2inv.reshape(1, Lp))[0])
        a, b = self._load(xp.reshape(-1, Lp)), self._load(xq.reshape(-1, Lq))
        self._store(out, [y + q2_ * ((x - y) * qi % p2_) for x, y in zip(a, b)])

    def check_range(self, a, L, n, Ln, nsq):
        n_, nsq_ = gmpy2.mpz(limbs_to_ints(n.reshape(1, Ln))[0]), gmpy2.mpz(limbs_to_ints(nsq.reshape(1, L))[0])
        for i, x in enumerate(self._load(a.reshape(-1, L))):
            if not (0 < x < nsq_) or gmpy2.gcd(x, n_) != 1:
                return i
        return -1


def _ops():
    return _NATIVE if _NATIVE is not None else _GmpyOps()


_POOLS: dict[int, tuple[int, ThreadPoolExecutor]] = {}
_POOLS_LOCK = threading.Lock()


def _executor(n_jobs: int) -> ThreadPoolExecutor:
    """One thread pool per size and process (a forked child must not reuse the parent's)."""
    pid = os.getpid()
    with _POOLS_LOCK:
        entry = _POOLS.get(n_jobs)
        if entry is None or entry[0] != pid:
            entry = (pid, ThreadPoolExecutor(max_workers=n_jobs, thread_name_prefix="hefl-he"))
            _POOLS[n_jobs] = entry
        return entry[1]


class FixedBaseTable:
    """Window table for ``base^e mod m`` with a fixed base: entry [i, d] = base^(d·2^(w·i)).

    Exponentiation is then one multiplication per non-zero w-bit digit of e (no squarings),
    e.g. 103 multiplications for a 1024-bit exponent with w = 10.
    """

    def __init__(self, base: int, modulus: int, exp_bits: int, window: int):
        self.modulus = modulus
        self.window = window
        self.n_windows = -(-exp_bits // window)
        self.exp_bits = exp_bits
        self.L = limbs_for(modulus)
        self.m_limbs = _limbs(modulus, self.L)
        ops = _ops()
        size = 1 << window
        table = np.zeros((self.n_windows, size, self.L), dtype=np.uint64)
        table[:, 0, 0] = 1
        b = gmpy2.mpz(base) % modulus
        for i in range(self.n_windows):
            table[i, 1] = _limbs(int(b), self.L)
            # doubling: entry k = b^k; then entries (k, 2k) = entries (0, k) * b^k in one batch
            bk = b
            k = 1
            while 2 * k <= size:
                bk = bk * bk % modulus if k > 1 else b
                if k > 1:
                    table[i, k] = _limbs(int(bk), self.L)
                step = min(k, size - k) - 1
                if step > 0:
                    out = np.empty((step, self.L), dtype=np.uint64)
                    mult = np.ascontiguousarray(np.broadcast_to(table[i, k], (step, self.L)))
                    ops.mulmod(_u64(table[i, 1 : 1 + step]), mult, self.m_limbs, out, self.L)
                    table[i, k + 1 : k + 1 + step] = out
                k *= 2
            b = gmpy2.powmod(b, 1 << window, modulus)
        self.table = table
        self.mont_table = None
        if _MONT is not None:
            # Montgomery form x·R mod m, R = 2^(64 L): one batched multiplication by R mod m
            r_mod = _limbs((1 << (64 * self.L)) % modulus, self.L)
            flat = table.reshape(-1, self.L)
            mt = np.empty_like(flat)
            ops.mulmod(flat, np.ascontiguousarray(np.broadcast_to(r_mod, flat.shape)), self.m_limbs, mt, self.L)
            self.mont_table = mt.reshape(table.shape)

    def pow(self, exps: np.ndarray) -> np.ndarray:
        """``base^e`` for each row of ``exps`` ((N, Le) uint64 limbs)."""
        exps = _u64(exps)
        out = np.empty((exps.shape[0], self.L), dtype=np.uint64)
        if self.mont_table is not None:
            _MONT.fb_powmod(self.mont_table, self.window, self.n_windows, exps, exps.shape[1], self.m_limbs, out, self.L)
        else:
            _ops().fb_powmod(self.table, self.window, self.n_windows, exps, exps.shape[1], self.m_limbs, out, self.L)
        return out


class BatchModArith:
    """Batched arithmetic modulo one ciphertext modulus, split over threads.

    Shared by the Paillier (modulus n²) and OU (modulus n) CPU backends.  Subclasses set
    ``ops`` (the kernels), ``n_jobs``, ``n_l``/``_Ln`` (n and its limb count), and
    ``_cm``/``_cL``/``_r_mod`` (the ciphertext modulus, its limb count and R mod it).
    """

    #: rows per chunk below which a batch is not split over threads
    min_chunk = 64

    def _run(self, fn, n_rows: int, *arrays: np.ndarray, serial: bool = False) -> None:
        """Call ``fn(*row_slices)`` over chunks of rows, in parallel when worth it."""
        jobs = 1 if serial else min(self.n_jobs, max(1, n_rows // self.min_chunk))
        if jobs <= 1:
            fn(*arrays)
            return
        bounds = np.linspace(0, n_rows, jobs + 1).astype(int)
        futures = [
            _executor(self.n_jobs).submit(fn, *(a[lo:hi] for a in arrays))
            for lo, hi in zip(bounds[:-1], bounds[1:])
            if hi > lo
        ]
        for f in futures:
            f.result()

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Homomorphic addition: a · b mod the ciphertext modulus, elementwise."""
        a, b = _u64(a), _u64(b)
        out = np.empty_like(a)
        # mpn-level multiply + divide (no mpz conversions) where the extension has it
        mul = getattr(self.ops, "mulmod_mpn", None) or self.ops.mulmod
        self._run(lambda x, y, o: mul(x, y, self._cm, o, self._cL), a.shape[0], a, b, out)
        return out

    def mul_scalar(self, a: np.ndarray, k: np.ndarray) -> np.ndarray:
        """a^k mod the ciphertext modulus, elementwise, for non-negative k (N, Le)."""
        a, k = _u64(a), _u64(k)
        out = np.empty_like(a)
        self._run(lambda x, e, o: self.ops.powmod(x, self._cL, e, e.shape[1], self._cm, o), a.shape[0], a, k, out)
        return out

    def sum(self, a: np.ndarray) -> np.ndarray:
        """Product of all rows (the encrypted sum)."""
        a = _u64(a)
        return self.bucket_sum(a, np.zeros((a.shape[0], 1), dtype=np.int32), 1)[0, 0]

    def _bucket_prod(self, a, ids, n_feat, n_buckets, out) -> None:
        # Montgomery chains (hefl._mont) where built with the native kernels, else mpz products
        if _MONT is not None and self.ops is _NATIVE:
            _MONT.bucket_prod(a, ids, n_feat, n_buckets, self._cm, self._r_mod, out, self._cL)
        else:
            self.ops.bucket_prod(a, ids, n_feat, n_buckets, self._cm, out, self._cL)

    def bucket_sum(self, a: np.ndarray, ids: np.ndarray, n_buckets: int) -> np.ndarray:
        """(F, n_buckets, L): per feature and bucket the product of its rows (1 where none)."""
        a = _u64(a)
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        if ids.ndim == 1:
            ids = ids[:, None]
        n_rows, n_feat = ids.shape
        jobs = min(self.n_jobs, max(1, n_rows // 256))
        if jobs <= 1:
            out = np.empty((n_feat, n_buckets, self._cL), dtype=np.uint64)
            self._bucket_prod(a, ids, n_feat, n_buckets, out)
            return out
        # split rows, build partial histograms in parallel, then multiply them together
        bounds = np.linspace(0, n_rows, jobs + 1).astype(int)
        parts = [np.empty((n_feat, n_buckets, self._cL), dtype=np.uint64) for _ in range(jobs)]
        futures = [
            _executor(self.n_jobs).submit(self._bucket_prod, a[lo:hi], ids[lo:hi], n_feat, n_buckets, parts[j])
            for j, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))
        ]
        for f in futures:
            f.result()
        acc = parts[0].reshape(-1, self._cL)
        for part in parts[1:]:
            acc = self.add(acc, part.reshape(-1, self._cL))
        return acc.reshape(n_feat, n_buckets, self._cL)

    def invert(self, a: np.ndarray) -> np.ndarray:
        """Elementwise a^-1 mod the ciphertext modulus (homomorphic negation)."""
        m = gmpy2.mpz(limbs_to_ints(self._cm.reshape(1, -1))[0])
        return ints_to_limbs([int(gmpy2.invert(gmpy2.mpz(v), m)) for v in limbs_to_ints(_u64(a))], self._cL)

    def check(self, a: np.ndarray) -> int:
        """Index of the first row outside [1, modulus) or not coprime to n, else -1."""
        a = _u64(a)
        jobs = min(self.n_jobs, max(1, a.shape[0] // 2048))
        if jobs <= 1:
            return int(self.ops.check_range(a, self._cL, self.n_l, self._Ln, self._cm))
        bounds = np.linspace(0, a.shape[0], jobs + 1).astype(int)
        futures = [_executor(self.n_jobs).submit(self.ops.check_range, a[lo:hi], self._cL, self.n_l, self._Ln,
                                                 self._cm) for lo, hi in zip(bounds[:-1], bounds[1:])]
        for lo, f in zip(bounds[:-1], futures):
            bad = int(f.result())
            if bad >= 0:
                return int(lo) + bad
        return -1


class CpuPaillierBackend(BatchModArith, PaillierBackend):
    """Paillier arithmetic on the CPU with GMP, batches split over ``n_jobs`` threads.

    With the private key the DJN obfuscator ``hs^α`` is computed mod p² and mod q² from
    two fixed-base tables and joined by CRT (about 3× less work than mod n²); with the
    public key alone one table mod n² is used.
    """

    name = "cpu"

    def __init__(self, params: PaillierParams, n_jobs: int = 1, window: int | None = None):
        super().__init__(params, n_jobs)
        self.ops = _ops()
        self.Ln = params.limbs_n
        self.Lc = params.limbs_c
        self.n_l = _limbs(params.n, self.Ln)
        self.nsq_l = _limbs(params.nsquare, self.Lc)
        self.r_mod_nsq = _limbs((1 << (64 * self.Lc)) % params.nsquare, self.Lc)
        self._cm, self._cL, self._r_mod, self._Ln = self.nsq_l, self.Lc, self.r_mod_nsq, self.Ln
        self._window = window
        self._tables: tuple | None = None
        self._table_lock = threading.Lock()
        if params.has_private:
            p, q = params.p, params.q
            self.Lh = limbs_for(max(p, q))
            g = params.n + 1
            hp = int(gmpy2.invert((gmpy2.powmod(g, p - 1, p * p) - 1) // p, p))
            hq = int(gmpy2.invert((gmpy2.powmod(g, q - 1, q * q) - 1) // q, q))
            qinv = int(gmpy2.invert(q, p))
            self._dec = [_limbs(v, self.Lh) for v in (p, q, hp, hq, qinv)]

    # -- helpers -------------------------------------------------------------------------
    def _get_tables(self):
        with self._table_lock:
            if self._tables is None:
                prm = self.params
                if prm.has_private:
                    w = self._window or (10 if prm.n.bit_length() >= 2048 else 8)
                    p2, q2 = prm.p * prm.p, prm.q * prm.q
                    tp = FixedBaseTable(prm.hs % p2, p2, prm.alpha_bits, w)
                    tq = FixedBaseTable(prm.hs % q2, q2, prm.alpha_bits, w)
                    crt = (_limbs(p2, tp.L), _limbs(q2, tq.L), _limbs(int(gmpy2.invert(q2, p2)), tp.L))
                    self._tables = (tp, tq, crt)
                else:
                    w = self._window or 8
                    self._tables = (FixedBaseTable(prm.hs, prm.nsquare, prm.alpha_bits, w), None, None)
            return self._tables

    # -- interface -----------------------------------------------------------------------
    def random_exponents(self, count: int) -> np.ndarray:
        """``count`` fresh α of ``alpha_bits`` bits from the OS CSPRNG, as (count, Le) limbs."""
        bits = self.params.alpha_bits
        le = -(-bits // 64)
        raw = np.frombuffer(secrets.token_bytes(8 * le * count), dtype=np.uint64).reshape(count, le).copy()
        extra = 64 * le - bits
        if extra:
            raw[:, -1] &= np.uint64((1 << (64 - extra)) - 1)
        return raw

    def obfuscators(self, count: int, *, serial: bool = False) -> np.ndarray:
        """Fresh DJN obfuscators; ``serial=True`` stays on the calling thread (pool fillers)."""
        tp, tq, crt = self._get_tables()
        alphas = self.random_exponents(count)
        out = np.empty((count, self.Lc), dtype=np.uint64)
        if tq is None:
            self._run(lambda e, o: o.__setitem__(slice(None), tp.pow(e)), count, alphas, out, serial=serial)
            return out

        def work(e: np.ndarray, o: np.ndarray) -> None:
            rp, rq = tp.pow(e), tq.pow(e)
            self.ops.crt(rp, tp.L, rq, tq.L, crt[0], crt[1], crt[2], o, self.Lc)

        self._run(work, count, alphas, out, serial=serial)
        return out

    def encrypt(self, m: np.ndarray, obf: np.ndarray) -> np.ndarray:
        m, obf = _u64(m), _u64(obf)
        out = np.empty((m.shape[0], self.Lc), dtype=np.uint64)
        self._run(
            lambda a, r, o: self.ops.encrypt(a, self.Ln, r, self.n_l, self.nsq_l, o, self.Lc),
            m.shape[0], m, obf, out,
        )
        return out

    def decrypt(self, c: np.ndarray) -> np.ndarray:
        if not self.params.has_private:
            raise ValueError("decrypt needs the private key")
        c = _u64(c)
        out = np.empty((c.shape[0], self.Ln), dtype=np.uint64)
        p, q, hp, hq, qi = self._dec
        self._run(
            lambda x, o: self.ops.decrypt(x, self.Lc, p, q, hp, hq, qi, o, self.Ln, self.Lh), c.shape[0], c, out
        )
        return out

