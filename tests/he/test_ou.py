"""The OU kit: the HE core's kit checks run against OU (and, for comparison, Paillier), plus
OU's own scalar-layer, key, bound and kernel checks.

The shared checks take the ``kit`` fixture, parametrised over ``pkit`` (Paillier) and
``okit`` (OU): the same code must pass for both, so nothing in it may assume Paillier's
plaintext modulus — bounds come from ``kit.encoder.max_int`` and ``kit.plaintext_bits``.
"""

import itertools
import json
import pickle

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hefl.errors import (
    BackendUnavailableError,
    EncodingOverflowError,
    InsecureKeyError,
    InvalidCiphertextError,
    KeyMismatchError,
)
from hefl.he import (
    Packer,
    cipher_from_wire,
    cipher_to_wire,
    concatenate,
    load_public_kit,
    ou,
    paillier,
    public_kit_to_wire,
)
from hefl.he import keygen as he_keygen
from hefl.he._backend import ints_to_limbs, limbs_to_ints
from hefl.he._ou_cpu import (
    CpuOUBackend,
    LevelTable,
    OUParams,
    _GmpyOUOps,
    level_spec,
    ou_native_available,
)

floats = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


@pytest.fixture(scope="session", params=["pkit", "okit"])
def kit(request):
    """Each additive kit in turn: the kit-level suite below runs unchanged against both."""
    return request.getfixturevalue(request.param)


def _keygen_like(kit, **kw):
    if kit.scheme == "ou":
        return ou.keygen(1024, allow_insecure=True, backend="cpu", **kw)
    return paillier.keygen(1024, allow_insecure=True, backend="cpu", **kw)


# -- the kit suite (Paillier and OU) ---------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(x=arrays(np.float64, st.integers(0, 12), elements=floats))
def test_float_round_trip(kit, x):
    np.testing.assert_allclose(kit.decrypt(kit.encrypt(x)), x, rtol=0, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(x=arrays(np.int64, st.integers(0, 10), elements=st.integers(-(2**62), 2**62)))
def test_int_round_trip_exact(kit, x):
    out = kit.decrypt(kit.encrypt(x))
    assert out.dtype == np.int64 and np.array_equal(out, x)


def test_extreme_values_and_overflow(kit):
    big = kit.encoder.max_int
    ca = kit.encrypt(np.array([big, -big, 0], dtype=object))
    assert list(kit.decrypt(ca)) == [big, -big, 0]
    with pytest.raises(EncodingOverflowError):
        kit.encrypt(np.array([big + 1], dtype=object))
    with pytest.raises(EncodingOverflowError):
        kit.encrypt(np.array([-big - 1], dtype=object))
    with pytest.raises(EncodingOverflowError):
        kit.encrypt(np.array([np.nan]))
    # a sum that leaves the range is detected at decryption, never wrapped silently
    with pytest.raises(EncodingOverflowError):
        kit.decrypt(ca[:1] + ca[:1])
    with pytest.raises(EncodingOverflowError):
        kit.decrypt(ca[1:2] * 2)


def test_arithmetic(kit):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    a, b = kit.encrypt(x), kit.encrypt(y)
    np.testing.assert_allclose(kit.decrypt(a + b), x + y, atol=1e-9)
    np.testing.assert_allclose(kit.decrypt(a - b), x - y, atol=1e-9)
    np.testing.assert_allclose(kit.decrypt(a + 2.5), x + 2.5, atol=1e-9)
    np.testing.assert_allclose(kit.decrypt(a - 7.25), x - 7.25, atol=1e-9)
    np.testing.assert_allclose(kit.decrypt(-a), -x, atol=1e-9)
    np.testing.assert_allclose(kit.decrypt(a * 3), x * 3, atol=1e-9)
    np.testing.assert_allclose(kit.decrypt(a * -4), x * -4, atol=1e-9)
    np.testing.assert_allclose(kit.decrypt(a * y), x * y, atol=1e-5)
    np.testing.assert_allclose(kit.decrypt(a.sum()), x.sum(), atol=1e-8)
    np.testing.assert_allclose(kit.decrypt(a.sum(axis=0)), x.sum(axis=0), atol=1e-8)
    np.testing.assert_allclose(kit.decrypt(a.sum(axis=1)), x.sum(axis=1), atol=1e-8)
    np.testing.assert_allclose(kit.decrypt(a[1:, ::2]), x[1:, ::2], atol=1e-9)
    np.testing.assert_allclose(kit.decrypt(concatenate([a, b])), np.concatenate([x, y]), atol=1e-9)
    np.testing.assert_allclose(kit.decrypt(a.rescale(60)), x, atol=1e-9)
    v = kit.encrypt(x[0])
    np.testing.assert_allclose(kit.decrypt(v.dot(y[0])), x[0] @ y[0], atol=1e-5)
    np.testing.assert_allclose(kit.decrypt(v.dot(y.T)), x[0] @ y.T, atol=1e-5)
    ints = kit.encrypt(np.array([5, -7, 0]))
    assert list(kit.decrypt(ints * np.array([-3, 2, 9]) + np.array([1, 1, -1]))) == [-14, -13, -1]
    empty = kit.encrypt(np.zeros(0))
    assert kit.decrypt(empty).shape == (0,)
    assert kit.decrypt(empty.sum()) == 0


def test_bucket_sum(kit):
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    ids = rng.integers(-1, 8, size=(300, 3))
    h = kit.decrypt(kit.bucket_sum(kit.encrypt(x), ids, 8))
    want = np.zeros((3, 8))
    for f in range(3):
        for b in range(8):
            want[f, b] = x[ids[:, f] == b].sum()
    np.testing.assert_allclose(h, want, atol=1e-8)
    with pytest.raises(ValueError):
        kit.bucket_sum(kit.encrypt(x[:2]), np.array([0, 9]), 8)


def test_mock_parity(kit, mkit):
    rng = np.random.default_rng(2)
    x = rng.normal(size=50)
    ids = rng.integers(0, 4, size=(50, 2))
    outs = []
    for k in (kit, mkit):
        a = k.encrypt(x)
        outs.append((k.decrypt(k.bucket_sum(a * -1.5 + 2.0, ids, 4)), k.decrypt((a - a[::-1]).sum())))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_packing_budget_comes_from_the_kit(kit):
    """Packer + bucket sums + shift-and-pack, sized by kit.plaintext_bits only."""
    rng = np.random.default_rng(5)
    n_rows = 200
    X = np.column_stack([rng.uniform(-1, 1, n_rows), rng.uniform(0, 1, n_rows)])
    pk = Packer([(-1, 1), (0, 1)], frac_bits=20, max_summands=n_rows, plaintext_bits=kit.plaintext_bits)
    per = pk.per_plaintext()
    assert per == kit.plaintext_bits // pk.bits and per * pk.bits <= kit.plaintext_bits
    enc = kit.encrypt_encoded(pk.pack_limbs(X, kit.Ln))
    ids = rng.integers(0, 6, size=n_rows)
    hist = kit.bucket_sum(enc, ids, 6)
    packed = kit.shift_and_pack(hist, pk.bits, per)
    assert packed.shape == (-(-6 // per),)
    sums, counts = pk.unpack_compressed(kit.decrypt_raw(packed), per)
    sums, counts = sums[:6], counts[:6]
    for b in range(6):
        assert counts[b] == np.sum(ids == b)
        np.testing.assert_allclose(sums[b], X[ids == b].sum(axis=0), atol=n_rows * 2.0**-20)
    with pytest.raises(EncodingOverflowError):
        kit.shift_and_pack(hist, pk.bits, per + 1)
    with pytest.raises(EncodingOverflowError):
        Packer([(0, 1)], frac_bits=kit.plaintext_bits, max_summands=1, plaintext_bits=kit.plaintext_bits)


def test_encoded_round_trip(kit):
    """encrypt_encoded and decrypt_raw speak the encoder's residues (negatives as n − |v|)."""
    vals = [0, 1, 12345, kit.encoder.max_int, kit.n - 1, kit.n - kit.encoder.max_int]
    raw = kit.decrypt_raw(kit.encrypt_encoded(np.array(vals, dtype=object)))
    assert limbs_to_ints(raw) == vals
    limbs = kit.encoder.encode_limbs(np.array([-2.5, 3.25]), 4, kit.Ln)
    assert np.array_equal(kit.decrypt_raw(kit.encrypt_encoded(limbs, frac_bits=4)), limbs)
    with pytest.raises(ValueError):
        kit.encrypt_encoded(np.array([kit.n], dtype=object))


def test_serialisation_and_validation(kit):
    pub = kit.public_kit()
    data = public_kit_to_wire(kit)
    doc = json.loads(data)
    secrets_ = [kit._p, kit._q] + ([kit._t] if kit.scheme == "ou" else [])
    for s in secrets_:
        assert str(s) not in data.decode() and format(s, "x") not in data.decode()
    assert not {"p", "q", "t", "lambda", "mu"} & set(doc)
    loaded = load_public_kit(data, allow_insecure=True, backend="cpu")
    assert type(loaded) is type(pub) and loaded.fingerprint() == kit.fingerprint()
    with pytest.raises(InsecureKeyError):
        load_public_kit(data)
    ca = loaded.encrypt(np.arange(6).reshape(2, 3))
    raw = ca.to_bytes()
    assert len(raw) == 6 * pub.cipher_width
    back = kit.cipher_from_bytes(raw, (2, 3), 0)
    assert np.array_equal(kit.decrypt(back), np.arange(6).reshape(2, 3))
    meta, frames = cipher_to_wire(ca)
    again = cipher_from_wire(json.loads(json.dumps(meta)), [bytes(f) for f in frames], kit)
    assert np.array_equal(kit.decrypt(again), np.arange(6).reshape(2, 3))
    bad = bytearray(raw)
    bad[: pub.cipher_width] = b"\0" * pub.cipher_width
    with pytest.raises(InvalidCiphertextError):
        kit.cipher_from_bytes(bytes(bad), (2, 3), 0)
    with pytest.raises(InvalidCiphertextError):
        kit.cipher_from_bytes(raw[:-1], (2, 3), 0)
    with pytest.raises(InvalidCiphertextError):
        kit.from_raw([kit._p])  # shares a factor with n
    top = kit.n if kit.scheme == "ou" else kit.n**2
    with pytest.raises(InvalidCiphertextError):
        kit.from_raw([top])
    with pytest.raises(TypeError):
        pickle.dumps(kit)


def test_key_mismatch(kit, mkit, pkit, okit):
    other = _keygen_like(kit)
    with pytest.raises(KeyMismatchError):
        kit.encrypt(np.ones(2)) + other.encrypt(np.ones(2))
    with pytest.raises(KeyMismatchError):
        kit.decrypt(other.encrypt(np.ones(2)))
    with pytest.raises(KeyMismatchError):
        kit.encrypt(np.ones(1)) + mkit.encrypt(np.ones(1))
    cross = okit if kit is pkit else pkit
    with pytest.raises(KeyMismatchError):
        kit.encrypt(np.ones(1)) + cross.encrypt(np.ones(1))
    meta, frames = cipher_to_wire(other.encrypt(np.ones(2)))
    with pytest.raises(KeyMismatchError):
        cipher_from_wire(meta, frames, kit)


def test_insecure_key_refused(kit):
    mod = ou if kit.scheme == "ou" else paillier
    with pytest.raises(InsecureKeyError):
        mod.keygen(1024)


def test_obfuscator_pool(kit):
    kit.precompute(40, background=True)
    kit.wait_pool()
    assert kit.pool_size >= 40
    x = np.arange(30.0)
    before = kit.pool_size
    a = kit.encrypt(x)
    assert kit.pool_size == before - 30
    b = kit.encrypt(x)
    assert a.raw() != b.raw()  # fresh obfuscator per ciphertext
    assert len(set(a.raw())) == 30
    np.testing.assert_allclose(kit.decrypt(a), x)
    kit.precompute(5)  # a pool shorter than the batch: pooled first, fresh for the rest
    c = kit.encrypt(x[:12])
    assert kit.pool_size == 0 and len(set(c.raw())) == 12
    np.testing.assert_allclose(kit.decrypt(c), x[:12])
    kit.precompute(64, background=True, low_priority=True)
    kit.cancel_precompute()
    assert kit.pool_size == 0


def test_public_kit_encrypts(kit):
    pub = kit.public_kit()
    x = np.array([1.25, -4.0, 0.0])
    np.testing.assert_allclose(kit.decrypt(pub.encrypt(x)), x)
    np.testing.assert_allclose(kit.decrypt(pub.encrypt(x) * -2 + kit.encrypt(x)), -x)
    assert pub.public_kit() is pub and not hasattr(pub, "decrypt")


# -- OU only ---------------------------------------------------------------------------------
def test_ou_key_structure(okit):
    p, q, t = okit._p, okit._q, okit._t
    n = okit.n
    assert n == p * p * q and n.bit_length() == 1024
    assert p.bit_length() == okit.p_bits == 342 and q.bit_length() == 1024 - 2 * 342
    assert p >> (okit.p_bits - 2) == 3  # top two bits: 2^(p_bits-2) ≤ p/3
    assert gmpy2.is_prime(p) and gmpy2.is_prime(q) and gmpy2.is_prime(t)
    assert t.bit_length() == 2 * ou.security_bits(1024) == 160 and (p - 1) % t == 0
    assert okit.r_bits == 160 and okit.plaintext_bits == okit.p_bits - 2
    assert okit.encoder.max_int == 2**okit.plaintext_bits - 1 < p // 3
    p2 = p * p
    assert pow(okit.H, t, p2) == 1 and okit.H % p2 != 1  # H mod p² has order t
    gp = pow(okit.G, t, p2)
    assert gp != 1 and pow(gp, p, p2) == 1  # G^t lies in the order-p subgroup
    assert okit.cipher_width == 128 and okit.public_kit().cipher_width == 128


def test_ou_textbook_oracle(okit):
    """Ciphertexts built by hand from the scheme's formulas decrypt; hefl's follow them."""
    n, G, H, p, t = okit.n, okit.G, okit.H, okit._p, okit._t
    ms = [0, 1, 42, -42, 2**200, -(2**okit.plaintext_bits - 1)]
    cs = []
    for m in ms:
        r = int.from_bytes(np.random.default_rng(abs(m) % 97).bytes(20), "little")
        gm = pow(G, m, n) if m >= 0 else pow(int(gmpy2.invert(G, n)), -m, n)
        cs.append(gm * pow(H, r, n) % n)
    got = okit.decrypt(okit.from_raw(cs, frac_bits=0))
    assert [int(v) for v in got] == ms
    # and hefl's own ciphertexts decrypt with the textbook formula
    p2 = p * p
    gp_inv = int(gmpy2.invert((pow(G, t, p2) - 1) // p, p))
    for m, c in zip(ms, okit.encrypt(np.array(ms, dtype=object)).raw()):
        v = (pow(c, t, p2) - 1) // p * gp_inv % p
        assert (v if v <= p // 2 else v - p) == m


def test_ou_plaintext_bound_and_negative_exponents(okit):
    pb = okit.plaintext_bits
    ok = [2**pb - 1, okit.n - (2**pb - 1)]
    assert limbs_to_ints(okit.decrypt_raw(okit.encrypt_encoded(np.array(ok, dtype=object)))) == ok
    for badv in (2**pb, okit.n - 2**pb, okit.n // 2):
        with pytest.raises(EncodingOverflowError):
            okit.encrypt_encoded(np.array([badv], dtype=object))
    with pytest.raises(EncodingOverflowError):
        okit.encrypt(np.array([1]), frac_bits=0) + np.array([2**pb], dtype=object)


def test_ou_fresh_randomness_reaches_both_crt_parts(okit):
    """Equal plaintexts must give ciphertexts that differ mod p² and mod q (else gcd leaks)."""
    p2, q = okit._p ** 2, okit._q
    c = okit.encrypt(np.zeros(20)).raw() + okit.public_kit().encrypt(np.zeros(20)).raw()
    assert len(set(c)) == len(c)
    assert len({v % p2 for v in c}) == len(c) and len({v % q for v in c}) == len(c)
    for a, b in itertools.pairwise(c):
        assert gmpy2.gcd(a - b, okit.n) == 1


def test_ou_from_bytes_validation(okit):
    doc = json.loads(okit.public_kit().to_bytes())

    def load(**changes):
        d = dict(doc, **changes)
        return ou.OUPublicKit.from_bytes(json.dumps(d).encode(), allow_insecure=True, backend="cpu")

    assert load().fingerprint() == okit.fingerprint()
    n = okit.n
    for bad in (
        {"scheme": "paillier"}, {"G": "1"}, {"H": format(okit._p * 5, "x")}, {"G": format(n, "x")},
        {"r_bits": 100}, {"r_bits": 2000}, {"p_bits": 300}, {"p_bits": "342"}, {"n": format(n + 1, "x")},
        {"n": "zz"},
    ):
        with pytest.raises(InvalidCiphertextError):
            load(**bad)
    with pytest.raises(InvalidCiphertextError):
        ou.OUPublicKit.from_bytes(b"not json", allow_insecure=True)
    d = dict(doc)
    del d["H"]
    with pytest.raises(InvalidCiphertextError):
        ou.OUPublicKit.from_bytes(json.dumps(d).encode(), allow_insecure=True)


def test_ou_keygen_dispatch_and_backends():
    kit = he_keygen("ou", key_size=1024, allow_insecure=True, backend="cpu", n_jobs=1)
    assert isinstance(kit, ou.OUSecretKit) and kit.scheme == "ou"
    np.testing.assert_allclose(kit.decrypt(kit.encrypt(np.array([0.5, -0.25]))), [0.5, -0.25])
    with pytest.raises(BackendUnavailableError):
        ou.keygen(1024, allow_insecure=True, backend="gpu")
    with pytest.raises(Exception, match="1024"):
        ou.keygen(768, allow_insecure=True, backend="cpu")


def test_level_tables():
    mod = int(gmpy2.next_prime(2**300 + 12345)) * int(gmpy2.next_prime(2**200))
    base = 987654321
    lev = level_spec(150, [(40, 6), (None, 4)])
    assert lev[0] == (0, 6) and sum(w for _, w in lev) == 150 and lev[-1][0] + lev[-1][1] == 150
    tab = LevelTable(base, mod, lev)
    for off, w, first in tab.levels.tolist():
        for d in (0, 1, (1 << w) - 1):
            assert limbs_to_ints(tab.table[first + d : first + d + 1])[0] == pow(base, d << off, mod)


def test_ou_native_matches_gmpy_fallback(okit):
    if not ou_native_available():
        pytest.skip("OU kernels not built: the gmpy2 path is the one in use and is tested everywhere")
    for prm in (okit.params, OUParams(n=okit.n, G=okit.G, H=okit.H, p_bits=okit.p_bits, r_bits=okit.r_bits)):
        fast = CpuOUBackend(prm, n_jobs=1)
        slow = CpuOUBackend(prm, n_jobs=1)
        slow.ou = _GmpyOUOps()
        slow._tables = fast.tables()
        res = okit.encoder.encode_limbs(np.array([0, 3, -3, 2**70, -(2**300), 7]), 0, okit.Ln)
        mag_f, neg_f = fast.signed(res)
        mag_s, neg_s = slow.signed(res)
        assert np.array_equal(mag_f, mag_s) and np.array_equal(neg_f, neg_s)
        obf = fast.obfuscators(6)
        c_f, c_s = fast.encrypt(res, obf), slow.encrypt(res, obf)
        assert np.array_equal(c_f, c_s)
        assert np.array_equal(fast.add_plain(c_f, res), slow.add_plain(c_f, res))
        assert np.array_equal(fast.add(c_f, c_f[::-1].copy()), slow.add(c_f, c_f[::-1].copy()))
        ids = np.array([[0, 1], [1, -1], [0, 2], [2, 2], [-1, 0], [1, 1]], dtype=np.int32)
        hist = fast.bucket_sum(c_f, ids, 3)
        cs = limbs_to_ints(c_f)
        for f in range(2):
            for b in range(3):
                want = 1
                for i in range(6):
                    if ids[i, f] == b:
                        want = want * cs[i] % prm.n
                assert limbs_to_ints(hist[f, b : b + 1])[0] == want
        if prm.has_private:
            assert np.array_equal(fast.decrypt(c_f), slow.decrypt(c_f))
            assert np.array_equal(fast.decrypt(c_f), res)
        with pytest.raises(ValueError):  # an exponent beyond the H table is refused, not truncated
            big_r = ints_to_limbs([1 << prm.r_bits], fast.Lr)
            fast._product(1, None, big_r, None, None)


@pytest.mark.slow
def test_real_2048_bit_end_to_end():
    kit = ou.keygen(2048, backend="cpu")
    assert kit.n.bit_length() == 2048 and kit.cipher_width == 256
    assert kit.p_bits == 683 and kit.plaintext_bits == 681 and kit.r_bits == 224 and kit._t.bit_length() == 224
    pub = load_public_kit(public_kit_to_wire(kit), backend="cpu")
    x = np.random.default_rng(0).uniform(-100, 100, 1000)
    assert np.max(np.abs(kit.decrypt(kit.encrypt(x) + pub.encrypt(x)) - 2 * x)) <= 1e-6
    ids = np.arange(64) % 4
    h = kit.decrypt(pub.bucket_sum(pub.encrypt(x[:64]) * 2 + 1.0, ids, 4))
    np.testing.assert_allclose(h, [np.sum(2 * x[:64][ids == b] + 1) for b in range(4)], atol=1e-6)


def test_ou_gmpy_fallback_end_to_end(okit, monkeypatch):
    """Without the C extension the backend runs on gmpy2 alone, with the same results."""
    import hefl.he._cpu as cpu_mod
    import hefl.he._ou_cpu as ou_cpu

    monkeypatch.setattr(cpu_mod, "_NATIVE", None)
    monkeypatch.setattr(ou_cpu, "_NATIVE", None)
    monkeypatch.setattr(ou_cpu, "_MONT", None)
    be = CpuOUBackend(okit.params, n_jobs=2, h_window=5, g_windows=((20, 5), (None, 3)))
    assert isinstance(be.ou, _GmpyOUOps)
    vals = np.array([0, 5, -5, 2**100, -(2**okit.plaintext_bits - 1)], dtype=object)
    res = okit.encoder.encode_limbs(vals, 0, okit.Ln)
    c = be.encrypt(res)
    assert np.array_equal(be.decrypt(c), res)
    assert np.array_equal(okit.backend.decrypt(c), res)  # the native kit reads them too
    s = be.add_plain(be.add(c, c), res)  # 3 · vals; the last two leave the range
    assert list(okit.encoder.decode_limbs(be.decrypt(s[:3]), 0)) == [0, 15, -15]
    assert limbs_to_ints(be.decrypt(s[3:4])) == [3 * 2**100]
    h = be.bucket_sum(c[:3], np.array([0, 1, 0]), 2)
    assert list(okit.encoder.decode_limbs(be.decrypt(h.reshape(2, -1)), 0)) == [-5, 5]
