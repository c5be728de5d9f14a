"""Backend checks shared by the real-GPU tests and the emulated-GPU tests.

Each check runs one operation of a Paillier backend on a batch with edge values and
compares every output row with an oracle computed here from Python integers (gmpy2 when
installed).  Nothing here imports CuPy.
"""

from __future__ import annotations

import math
import secrets

import numpy as np

from hefl.he._backend import ints_to_limbs, limbs_to_ints

try:
    import gmpy2
except ImportError:  # pragma: no cover - the GPU machine's image may lack gmpy2
    gmpy2 = None


def powmod(b: int, e: int, m: int) -> int:
    return int(gmpy2.powmod(b, e, m)) if gmpy2 is not None else pow(b, e, m)


class Oracle:
    """Textbook Paillier with g = n + 1 on Python ints."""

    def __init__(self, params):
        self.p = params
        self.n, self.n2 = params.n, params.nsquare
        self.lam = math.lcm(params.p - 1, params.q - 1)
        self.mu = pow((powmod(self.n + 1, self.lam, self.n2) - 1) // self.n, -1, self.n)

    def C(self, values) -> np.ndarray:
        return ints_to_limbs(values, self.p.limbs_c)

    def M(self, values) -> np.ndarray:
        return ints_to_limbs(values, self.p.limbs_n)

    def decrypt(self, c: int) -> int:
        return (powmod(c, self.lam, self.n2) - 1) // self.n * self.mu % self.n

    def encrypt(self, m: int) -> int:
        r = powmod(self.p.hs, secrets.randbits(self.p.alpha_bits), self.n2)
        return (1 + m * self.n) * r % self.n2

    def rand_c(self, k: int) -> list[int]:
        return [secrets.randbelow(self.n2) for _ in range(k)]


def _eq(got: np.ndarray, want: list[int], what: str) -> None:
    got_i = limbs_to_ints(got)
    bad = [i for i, (g, w) in enumerate(zip(got_i, want)) if g != w]
    assert len(got_i) == len(want), f"{what}: {len(got_i)} rows, expected {len(want)}"
    assert not bad, f"{what}: {len(bad)}/{len(want)} rows differ, first at {bad[:5]}"


def check_obfuscators(be, o: Oracle, k: int = 16) -> None:
    obf = be.obfuscators(k)
    assert obf.shape == (k, o.p.limbs_c) and obf.dtype == np.uint64
    vals = limbs_to_ints(obf)
    assert len(set(vals)) == k, "obfuscators repeat"
    # hs^alpha is an n-th residue: its order divides lambda
    assert all(0 < v < o.n2 and powmod(v, o.lam, o.n2) == 1 for v in vals)


def check_encrypt(be, o: Oracle, k: int = 12) -> None:
    n = o.n
    ms = [0, 1, n - 1, n // 2] + [secrets.randbelow(n) for _ in range(k)]
    rs = [powmod(o.p.hs, secrets.randbits(o.p.alpha_bits), o.n2) for _ in ms]
    got = be.encrypt(o.M(ms), o.C(rs))
    _eq(got, [(1 + m * n) * r % o.n2 for m, r in zip(ms, rs)], "encrypt")
    fresh = be.encrypt_fresh(o.M(ms))
    assert [o.decrypt(c) for c in limbs_to_ints(fresh)] == ms, "encrypt_fresh"
    assert len(set(limbs_to_ints(fresh))) == len(ms)


def check_add(be, o: Oracle, k: int = 12) -> None:
    n2 = o.n2
    a = [0, 1, n2 - 1, n2 - 1, 1] + o.rand_c(k)
    b = [n2 - 1, n2 - 1, n2 - 1, 1, 1] + o.rand_c(k)
    _eq(be.add(o.C(a), o.C(b)), [x * y % n2 for x, y in zip(a, b)], "add")


def check_mul_scalar(be, o: Oracle, k: int = 8) -> None:
    n, n2 = o.n, o.n2
    a = [1, n2 - 1, secrets.randbelow(n2), 0, n2 - 1] + o.rand_c(k)
    ks = [n - 1, n - 1, 0, 5, 1] + [secrets.randbelow(n) for _ in range(k)]
    _eq(be.mul_scalar(o.C(a), o.M(ks)), [powmod(x, e, n2) for x, e in zip(a, ks)], "mul_scalar")
    small = [secrets.randbits(40) for _ in a]  # narrow exponents take the short path
    _eq(be.mul_scalar(o.C(a), o.M(small)), [powmod(x, e, n2) for x, e in zip(a, small)],
        "mul_scalar small k")


def check_sum(be, o: Oracle, k: int = 37) -> None:
    vals = o.rand_c(k) + [o.n2 - 1]
    want = 1
    for v in vals:
        want = want * v % o.n2
    got = be.sum(o.C(vals))
    assert got.shape == (o.p.limbs_c,)
    assert limbs_to_ints(got[None, :])[0] == want, "sum"
    empty = be.sum(np.zeros((0, o.p.limbs_c), dtype=np.uint64))
    assert limbs_to_ints(empty[None, :])[0] == 1, "sum of nothing"


def check_bucket_sum(be, o: Oracle, rows: int = 50, feats: int = 3, buckets: int = 5) -> None:
    vals = o.rand_c(rows)
    rng = np.random.default_rng()
    ids = rng.integers(-1, buckets, size=(rows, feats), dtype=np.int32)
    ids[:, 0] = np.where(ids[:, 0] == buckets - 1, -1, ids[:, 0])  # an empty bucket
    got = be.bucket_sum(o.C(vals), ids, buckets)
    assert got.shape == (feats, buckets, o.p.limbs_c)
    want = []
    for f in range(feats):
        for b in range(buckets):
            acc = 1
            for i in np.flatnonzero(ids[:, f] == b):
                acc = acc * vals[i] % o.n2
            want.append(acc)
    _eq(got.reshape(feats * buckets, -1), want, "bucket_sum")


def check_decrypt(be, o: Oracle, k: int = 12) -> None:
    n, n2 = o.n, o.n2
    ms = [0, 1, n - 1, n // 3] + [secrets.randbelow(n) for _ in range(k)]
    cs = [o.encrypt(m) for m in ms]
    edge = [1, n2 - 1, n + 1, secrets.randbelow(n2)]
    got = be.decrypt(o.C(cs + edge))
    assert got.shape == (len(cs) + len(edge), o.p.limbs_n)
    _eq(got, ms + [o.decrypt(c) for c in edge], "decrypt")


def check_device_pipeline(be, o: Oracle, k: int = 10) -> None:
    """Montgomery-form device ops: encrypt -> add -> mul -> histogram/pack -> decrypt."""
    n, n2 = o.n, o.n2
    ms = [secrets.randbelow(1 << 20) for _ in range(k)]
    vs = [secrets.randbelow(1 << 20) for _ in range(k)]
    m32 = o.M(ms).view("<u4")
    ca = be.encrypt_device(m32)
    cb = be.to_device(o.C([o.encrypt(v) for v in vs]))
    assert [o.decrypt(c) for c in limbs_to_ints(be.from_device(ca))] == ms
    s = be.add_device(ca, cb)
    ks = [secrets.randbelow(1 << 16) for _ in range(k)]
    t = be.mul_scalar_device(s, o.M(ks).view("<u4"))
    dec = limbs_to_ints(np.asarray(_host(be.decrypt_device(t))).view("<u8"))
    assert dec == [(m + v) * kk % n for m, v, kk in zip(ms, vs, ks)], "device pipeline"
    ids = np.array([[i % 3] for i in range(k)], dtype=np.int32)
    h = be.bucket_sum_device(s, ids, 3)
    hd = limbs_to_ints(be.from_device(h.reshape(3, -1)))
    assert [o.decrypt(c) for c in hd] == [
        sum(ms[i] + vs[i] for i in range(k) if i % 3 == b) % n for b in range(3)
    ], "device histogram"
    packed = be.shift_pack_device(ca, 24, 4)
    pd = [o.decrypt(c) for c in limbs_to_ints(be.from_device(packed))]
    want = [sum(ms[i] << (24 * (i - j0)) for i in range(j0, min(k, j0 + 4))) % n
            for j0 in range(0, k, 4)]
    assert pd == want, "shift_pack"
    host_packed = be.shift_pack(o.C([o.encrypt(m) for m in ms]), 24, 4)
    assert [o.decrypt(c) for c in limbs_to_ints(host_packed)] == want, "shift_pack (host)"
    del n2


def _host(x):
    try:
        import cupy

        return cupy.asnumpy(x)
    except Exception:  # noqa: BLE001
        return np.asarray(x)


ALL_CHECKS = [
    check_obfuscators,
    check_encrypt,
    check_add,
    check_mul_scalar,
    check_sum,
    check_bucket_sum,
    check_decrypt,
    check_device_pipeline,
]
