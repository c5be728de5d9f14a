"""NumPy model of the GPU kernels, limb for limb.

The CUDA code (``mont.cuh``, ``paillier.cu``, ``crt.cu``) keeps a big number of ``nl``
32-bit limbs in a *group* of ``tpi`` lanes, lane ``j`` holding limbs
``[j*lpt, (j+1)*lpt)``.  This module simulates such a group for a whole batch at once:
a number is a ``(batch, tpi, lpt)`` ``uint64`` array holding 32-bit values, a per-lane
register is a ``(batch, tpi)`` array, a warp shuffle is an index along axis 1 and a
ballot is a bit mask built from a boolean ``(batch, tpi)`` array.  Every routine follows
its CUDA twin step by step — the same carry words parked at lane boundaries, the same
carry-lookahead, the same window schedule — so that checking this model against gmpy2
(``tests/gpu/test_reference.py``, which runs on any CPU) checks the algorithm the GPU
runs, and a GPU result that differs from this model points at the CUDA transcription.

It is slow (Python loops over limbs, vectorised over the batch): for tests only.

Examples
--------
>>> import numpy as np
>>> from hefl.gpu.reference import GroupModel
>>> g = GroupModel(nl=8, tpi=4)
>>> n = (1 << 255) - 19
>>> a, b = 12345, 678910
>>> r = g.montmul(g.from_ints([a]), g.from_ints([b]), g.from_ints([n]), g.np0(n))
>>> g.to_ints(r)[0] == a * b * pow(1 << 256, -1, n) % n
True
"""

from __future__ import annotations

import numpy as np

from hefl.gpu import _consts as C

__all__ = ["GroupModel", "decrypt_model", "encrypt_model", "keygen_params"]

_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


class GroupModel:
    """A batch of ``tpi``-lane groups, each holding one ``nl``-limb number.

    Parameters
    ----------
    nl : int
        Limbs (32-bit) per number; a multiple of ``tpi``.
    tpi : int
        Lanes per number (1, 2, 4, ..., 32).
    pow_w : int
        Window width of :meth:`pow` (``HEFL_POW_W`` in ``mont.cuh``).
    """

    def __init__(self, nl: int, tpi: int, pow_w: int = 5):
        if tpi not in (1, 2, 4, 8, 16, 32) or nl % tpi:
            raise ValueError(f"bad group shape nl={nl}, tpi={tpi}")
        self.nl = nl
        self.tpi = tpi
        self.lpt = nl // tpi
        self.pow_w = pow_w
        self._lane = np.arange(tpi, dtype=np.uint64)

    # ----------------------------------------------------------------- conversions
    def from_u32(self, arr: np.ndarray) -> np.ndarray:
        """(N, <=nl) uint32 rows -> (N, tpi, lpt) uint64 lane layout (zero-padded)."""
        arr = np.asarray(arr, dtype=np.uint32)
        out = np.zeros((arr.shape[0], self.nl), dtype=np.uint64)
        out[:, : min(arr.shape[1], self.nl)] = arr[:, : self.nl]
        return out.reshape(-1, self.tpi, self.lpt)

    def to_u32(self, x: np.ndarray) -> np.ndarray:
        """Lane layout -> (N, nl) uint32."""
        return x.reshape(-1, self.nl).astype(np.uint32)

    def from_ints(self, values) -> np.ndarray:
        return self.from_u32(C.ints_to_u32(values, self.nl))

    def to_ints(self, x: np.ndarray) -> list[int]:
        return C.u32_to_ints(self.to_u32(x))

    @staticmethod
    def np0(mod: int) -> int:
        """-mod^-1 mod 2^32."""
        return (-pow(mod, -1, 1 << 32)) % (1 << 32)

    # ------------------------------------------------------------------ primitives
    def _ballot(self, pred: np.ndarray) -> np.ndarray:
        return (pred.astype(np.uint64) << self._lane).sum(axis=1, dtype=np.uint64)

    def lookahead(self, gen: np.ndarray, prop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``grp_lookahead``: carry into each lane (N, tpi) and out of the group (N,)."""
        G = self._ballot(gen)
        P = self._ballot(prop)
        A = G | P
        S = A + G  # < 2^33 for tpi <= 32: no uint64 overflow
        cv = S ^ A ^ G
        cin = (cv[:, None] >> self._lane[None, :]) & np.uint64(1)
        top = (S >> np.uint64(self.tpi)) & np.uint64(1)
        return cin, top

    def mac_row(self, t: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``mac_row``: t += x * y per lane (x (N,) broadcast), returns the overflow limb."""
        carry = np.zeros(t.shape[:2], dtype=np.uint64)
        xx = x.reshape(-1, 1)
        for k in range(self.lpt):
            acc = xx * y[:, :, k] + t[:, :, k] + carry
            t[:, :, k] = acc & _M32
            carry = acc >> _S32
        return carry

    def add(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``grp_add``: (a + b mod 2^(32 nl), carry out)."""
        r = np.empty_like(a)
        s = np.zeros(a.shape[:2], dtype=np.uint64)
        for k in range(self.lpt):
            s = a[:, :, k] + b[:, :, k] + (s >> _S32)
            r[:, :, k] = s & _M32
        allff = np.all(r == _M32, axis=2)
        cin, top = self.lookahead((s >> _S32) != 0, allff)
        s = cin
        for k in range(self.lpt):
            s = s + r[:, :, k]
            r[:, :, k] = s & _M32
            s = s >> _S32
        return r, top

    def sub(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``grp_sub``: (a - b mod 2^(32 nl), borrow out)."""
        r = np.empty_like(a)
        bw = np.zeros(a.shape[:2], dtype=np.uint64)
        for k in range(self.lpt):
            d = a[:, :, k] - b[:, :, k] - bw  # wraps modulo 2^64 like the CUDA u64
            r[:, :, k] = d & _M32
            bw = d >> np.uint64(63)
        allz = np.all(r == 0, axis=2)
        bi, top = self.lookahead(bw != 0, allz)
        for k in range(self.lpt):
            d = r[:, :, k] - bi
            r[:, :, k] = d & _M32
            bi = d >> np.uint64(63)
        return r, top

    def reduce_once(self, t: np.ndarray, extra: np.ndarray, n: np.ndarray) -> np.ndarray:
        """``grp_reduce_once``: (extra*R + t) mod n for values < 2n."""
        d, bo = self.sub(t, n)
        use = (extra != 0) | (bo == 0)
        return np.where(use[:, None, None], d, t)

    def modadd(self, a: np.ndarray, b: np.ndarray, n: np.ndarray) -> np.ndarray:
        s, top = self.add(a, b)
        return self.reduce_once(s, top, n)

    def montmul(self, a: np.ndarray, b: np.ndarray, n: np.ndarray, np0: int) -> np.ndarray:
        """``mont_mul``: a * b * R^-1 mod n (b < n, a < R), lane by lane."""
        N = max(a.shape[0], b.shape[0], n.shape[0])
        tpi, lpt = self.tpi, self.lpt
        a = np.broadcast_to(a, (N, tpi, lpt))
        b = np.broadcast_to(b, (N, tpi, lpt))
        n = np.broadcast_to(n, (N, tpi, lpt))
        t = np.zeros((N, tpi, lpt), dtype=np.uint64)
        c = np.zeros((N, tpi), dtype=np.uint64)
        np0_ = np.uint64(np0)
        for src in range(tpi):
            for w in range(lpt):
                ai = a[:, src, w].copy()  # __shfl_sync(a[w], src)
                cA = self.mac_row(t, ai, b)
                q = (t[:, 0, 0] * np0_) & _M32  # lane 0 computes q, broadcast
                cB = self.mac_row(t, q, n)
                low = t[:, :, 0].copy()
                recv = np.zeros_like(low)
                recv[:, : tpi - 1] = low[:, 1:]  # __shfl_down_sync(t[0], 1); top lane 0
                t[:, :, : lpt - 1] = t[:, :, 1:].copy()
                s = recv + cA + cB + c
                t[:, :, lpt - 1] = s & _M32
                c = s >> _S32
        # resolve the carry words parked at lane boundaries
        cin = np.zeros_like(c)
        cin[:, 1:] = c[:, :-1]
        extra = c[:, tpi - 1].copy()
        s = cin
        for k in range(lpt):
            s = s + t[:, :, k]
            t[:, :, k] = s & _M32
            s = s >> _S32
        allff = np.all(t == _M32, axis=2)
        ci, top = self.lookahead(s != 0, allff)
        s = ci
        for k in range(lpt):
            s = s + t[:, :, k]
            t[:, :, k] = s & _M32
            s = s >> _S32
        extra = extra + top
        return self.reduce_once(t, extra, n)

    def mullo(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``grp_mullo``: a * b mod 2^(32 nl), capturing the limb shifted out of lane 0."""
        N = max(a.shape[0], b.shape[0])
        tpi, lpt = self.tpi, self.lpt
        a = np.broadcast_to(a, (N, tpi, lpt))
        b = np.broadcast_to(b, (N, tpi, lpt))
        t = np.zeros((N, tpi, lpt), dtype=np.uint64)
        r = np.zeros((N, tpi, lpt), dtype=np.uint64)
        c = np.zeros((N, tpi), dtype=np.uint64)
        for src in range(tpi):
            for w in range(lpt):
                cA = self.mac_row(t, a[:, src, w].copy(), b)
                r[:, src, w] = t[:, 0, 0]
                low = t[:, :, 0].copy()
                recv = np.zeros_like(low)
                recv[:, : tpi - 1] = low[:, 1:]
                t[:, :, : lpt - 1] = t[:, :, 1:].copy()
                s = recv + cA + c
                t[:, :, lpt - 1] = s & _M32
                c = s >> _S32
        return r

    @staticmethod
    def get_bits(e_rows: np.ndarray, bit: int, width: int) -> np.ndarray:
        """``get_bits`` for each row of a (N, words) uint32 array."""
        words = e_rows.shape[1]
        wi, sh = bit >> 5, bit & 31
        v = e_rows[:, wi].astype(np.uint64) if wi < words else np.zeros(len(e_rows), np.uint64)
        if wi + 1 < words:
            v = v | (e_rows[:, wi + 1].astype(np.uint64) << _S32)
        return ((v >> np.uint64(sh)) & np.uint64((1 << width) - 1)).astype(np.int64)

    def pow(self, x, e_rows, e_bits, one, n, np0):
        """``mont_pow``: x^e in the Montgomery domain, fixed window of ``pow_w`` bits."""
        W = self.pow_w
        N = x.shape[0]
        e_rows = np.broadcast_to(np.asarray(e_rows, dtype=np.uint32), (N, e_rows.shape[-1]))
        tbl = [np.broadcast_to(one, x.shape).copy(), x.copy()]
        acc = x.copy()
        for _ in range(2, 1 << W):
            acc = self.montmul(acc, x, n, np0)
            tbl.append(acc.copy())
        if e_bits <= 0:
            return np.broadcast_to(one, x.shape).copy()
        tbl_arr = np.stack(tbl, axis=1)  # (N, 2^W, tpi, lpt)
        rows = np.arange(N)
        nwin = (e_bits + W - 1) // W
        acc = tbl_arr[rows, self.get_bits(e_rows, (nwin - 1) * W, W)]
        for win in range(nwin - 2, -1, -1):
            for _ in range(W):
                acc = self.montmul(acc, acc, n, np0)
            acc = self.montmul(acc, tbl_arr[rows, self.get_bits(e_rows, win * W, W)], n, np0)
        return acc

    def fixed_base(self, alpha_rows, nwin, wbits, table, n, np0):
        """``fixed_base``: product over windows of table[w][digit_w(alpha)] (Montgomery)."""
        # table: (nwin, 2^wbits, tpi, lpt) lane layout
        acc = table[0][self.get_bits(alpha_rows, 0, wbits)]
        for w in range(1, nwin):
            acc = self.montmul(acc, table[w][self.get_bits(alpha_rows, w * wbits, wbits)], n, np0)
        return acc


# ---------------------------------------------------------------------- pipelines
def _pad_rows(rows: np.ndarray, nl: int) -> np.ndarray:
    return rows.reshape(1, -1)[:, :nl]


def encrypt_model(g: GroupModel, kc: C.NConsts, m_u32, obf_u32):
    """``k_encrypt`` with plain obfuscators and plain output (k1 = NR2, k0 = R1)."""
    K = [g.from_u32(kc.rows[i : i + 1]) for i in range(6)]
    n = K[C.K_N]
    x = g.montmul(g.from_u32(m_u32), K[C.K_NR2], n, kc.np0)
    x = g.modadd(x, np.broadcast_to(K[C.K_R1], x.shape), np.broadcast_to(n, x.shape))
    return g.to_u32(g.montmul(x, g.from_u32(obf_u32), n, kc.np0))


def decrypt_model(g: GroupModel, cc: C.CrtConsts, c_u32: np.ndarray) -> np.ndarray:
    """``k_decrypt_half`` for both primes followed by ``k_crt``; returns (N, nl) uint32."""
    nl = g.nl
    N = c_u32.shape[0]
    halves = []
    for pr in range(2):
        K = [g.from_u32(cc.kp[pr, i : i + 1]) for i in range(9)]
        np0, np0p = int(cc.np0s[2 * pr]), int(cc.np0s[2 * pr + 1])
        n = np.broadcast_to(K[0], (N, g.tpi, g.lpt))
        hi = g.from_u32(c_u32[:, nl:]) if c_u32.shape[1] > nl else g.from_ints([0] * N)
        lo = g.from_u32(c_u32[:, :nl])
        x = g.montmul(hi, K[3], n, np0)
        z = g.montmul(lo, K[2], n, np0)
        x = g.modadd(x, z, n)
        x = g.pow(x, cc.kp[pr, 8 : 9], cc.exp_bits[pr], K[1], n, np0)
        one = np.broadcast_to(K[4], x.shape)
        x = g.montmul(x, one, n, np0)
        x, _ = g.sub(x, one)
        z = g.mullo(x, K[7])
        z = g.montmul(z, K[6], K[5], np0p)
        halves.append(z)
    KN = [g.from_u32(cc.kn[i : i + 1]) for i in range(3)]
    a = g.montmul(halves[0], KN[1], KN[0], cc.np0n)
    b = g.montmul(halves[1], KN[2], KN[0], cc.np0n)
    return g.to_u32(g.modadd(a, b, np.broadcast_to(KN[0], a.shape)))


def keygen_params(n_bits: int = 2048, alpha_bits: int | None = None):
    """A Paillier key for tests and benchmarks: ``PaillierParams`` with p, q and DJN hs.

    Primes come from the OS CSPRNG (``secrets``) through gmpy2's ``next_prime`` when
    gmpy2 is installed, else a Miller-Rabin search in pure Python.  ``hs = h^n mod n^2``
    for a random unit h, ``alpha_bits`` defaults to n_bits / 2.
    """
    import secrets

    from hefl.he._backend import PaillierParams

    half = n_bits // 2
    while True:
        p = _random_prime(half, secrets)
        q = _random_prime(n_bits - half, secrets)
        n = p * q
        if p != q and n.bit_length() == n_bits:
            break
    n2 = n * n
    while True:
        h = secrets.randbelow(n2 - 2) + 2
        if _gcd(h, n) == 1:
            break
    hs = C.powmod(h, n, n2)
    return PaillierParams(n=n, hs=hs, alpha_bits=alpha_bits or half, p=p, q=q)


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _random_prime(bits: int, rng) -> int:
    while True:
        x = rng.randbits(bits) | (1 << (bits - 1)) | (3 << max(0, bits - 2)) | 1
        if C._gmpy2 is not None:
            p = int(C._gmpy2.next_prime(x))
        else:
            p = x
            while not _is_probable_prime(p):
                p += 2
        if p.bit_length() == bits:
            return p


_SMALL_PRIMES = [p for p in range(3, 2000, 2) if all(p % d for d in range(3, int(p**0.5) + 1, 2))]


def _is_probable_prime(n: int, rounds: int = 32) -> bool:
    import secrets

    if n < 2:
        return False
    for sp in _SMALL_PRIMES:
        if n % sp == 0:
            return n == sp
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(rounds):
        a = secrets.randbelow(n - 3) + 2
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True
