"""Paillier-only checks; the kit tests shared with OU (round trips, arithmetic, bucket sums …)
run on this kit through the parametrised ``kit`` fixture in test_ou.py."""

import numpy as np
import phe
import pytest

from hefl.errors import (
    EncodingOverflowError,
    InsecureKeyError,
    InvalidCiphertextError,
    KeyMismatchError,
)
from hefl.he import concatenate, load_public_kit, mock, paillier, public_kit_to_wire
from hefl.he._backend import PaillierParams
from hefl.he._cpu import CpuPaillierBackend, _GmpyOps, native_available


def test_extreme_values_and_overflow(pkit):
    big = pkit.n // 3
    ca = pkit.encrypt(np.array([big, -big, 0], dtype=object))
    assert list(pkit.decrypt(ca)) == [big, -big, 0]
    with pytest.raises(EncodingOverflowError):
        pkit.encrypt(np.array([big + 1], dtype=object))
    with pytest.raises(EncodingOverflowError):
        pkit.encrypt(np.array([np.nan]))
    # a sum that leaves the range is detected at decryption, never wrapped silently
    with pytest.raises(EncodingOverflowError):
        pkit.decrypt(ca[:1] + ca[:1])


def test_arithmetic(pkit):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    a, b = pkit.encrypt(x), pkit.encrypt(y)
    np.testing.assert_allclose(pkit.decrypt(a + b), x + y, atol=1e-9)
    np.testing.assert_allclose(pkit.decrypt(a - b), x - y, atol=1e-9)
    np.testing.assert_allclose(pkit.decrypt(a + 2.5), x + 2.5, atol=1e-9)
    np.testing.assert_allclose(pkit.decrypt(-a), -x, atol=1e-9)
    np.testing.assert_allclose(pkit.decrypt(a * 3), x * 3, atol=1e-9)
    np.testing.assert_allclose(pkit.decrypt(a * y), x * y, atol=1e-5)
    np.testing.assert_allclose(pkit.decrypt(a.sum()), x.sum(), atol=1e-8)
    np.testing.assert_allclose(pkit.decrypt(a.sum(axis=0)), x.sum(axis=0), atol=1e-8)
    np.testing.assert_allclose(pkit.decrypt(a.sum(axis=1)), x.sum(axis=1), atol=1e-8)
    np.testing.assert_allclose(pkit.decrypt(a[1:, ::2]), x[1:, ::2], atol=1e-9)
    np.testing.assert_allclose(pkit.decrypt(concatenate([a, b])), np.concatenate([x, y]), atol=1e-9)
    v = pkit.encrypt(x[0])
    np.testing.assert_allclose(pkit.decrypt(v.dot(y[0])), x[0] @ y[0], atol=1e-5)
    np.testing.assert_allclose(pkit.decrypt(v.dot(y.T)), x[0] @ y.T, atol=1e-5)


def test_mock_and_paillier_agree(pkit, mkit):
    rng = np.random.default_rng(2)
    x = rng.normal(size=50)
    ids = rng.integers(0, 4, size=(50, 2))
    for kit in (pkit, mkit):
        a = kit.encrypt(x)
        out = (kit.decrypt(kit.bucket_sum(a * -1.5 + 2.0, ids, 4)), kit.decrypt((a - a[::-1]).sum()))
        if kit is pkit:
            first = out
    np.testing.assert_array_equal(first[0], out[0])
    np.testing.assert_array_equal(first[1], out[1])


def test_phe_interop_both_ways(pkit):
    pk, sk = pkit.to_phe()
    ca = pkit.encrypt(np.array([7, -3, 0]))
    raw = [sk.raw_decrypt(c) for c in ca.raw()]
    assert raw == [7, pk.n - 3, 0]
    # phe -> hefl
    enc = [pk.raw_encrypt(v) for v in (5, 11)]
    back = pkit.from_raw(enc)
    assert list(pkit.decrypt(back)) == [5, 11]
    # a phe EncryptedNumber's ciphertext added under hefl
    e = pk.encrypt(42)
    s = pkit.from_raw([e.ciphertext(False)], frac_bits=0) + pkit.encrypt(np.array([0]))
    assert sk.raw_decrypt(s.raw()[0]) == sk.raw_decrypt(e.ciphertext(False))
    assert isinstance(pk, phe.PaillierPublicKey)


def test_serialisation_and_validation(pkit):
    pub = pkit.public_kit()
    data = public_kit_to_wire(pkit)
    assert b"p" not in data.replace(b"paillier", b"").replace(b"alpha", b"")  # no p or q fields
    assert str(pkit._p) not in data.decode() and format(pkit._p, "x") not in data.decode()
    loaded = load_public_kit(data, allow_insecure=True, backend="cpu")
    assert loaded.fingerprint() == pkit.fingerprint()
    with pytest.raises(InsecureKeyError):
        load_public_kit(data)
    ca = loaded.encrypt(np.arange(6).reshape(2, 3))
    raw = ca.to_bytes()
    assert len(raw) == 6 * pub.cipher_width
    back = pkit.cipher_from_bytes(raw, (2, 3), 0)
    assert np.array_equal(pkit.decrypt(back), np.arange(6).reshape(2, 3))
    bad = bytearray(raw)
    bad[: pub.cipher_width] = b"\0" * pub.cipher_width
    with pytest.raises(InvalidCiphertextError):
        pkit.cipher_from_bytes(bytes(bad), (2, 3), 0)
    with pytest.raises(InvalidCiphertextError):
        pkit.from_raw([pkit.n])  # shares a factor with n
    with pytest.raises(InvalidCiphertextError):
        pkit.from_raw([pkit.n**2])
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(pkit)


def test_key_mismatch(pkit):
    other = paillier.keygen(1024, allow_insecure=True, backend="cpu")
    with pytest.raises(KeyMismatchError):
        pkit.encrypt(np.ones(2)) + other.encrypt(np.ones(2))
    with pytest.raises(KeyMismatchError):
        pkit.decrypt(other.encrypt(np.ones(2)))
    m = mock.keygen(1024)
    with pytest.raises(KeyMismatchError):
        pkit.encrypt(np.ones(1)) + m.encrypt(np.ones(1))


def test_insecure_key_refused():
    with pytest.raises(InsecureKeyError):
        paillier.keygen(1024)


def test_obfuscator_pool(pkit):
    pkit.precompute(40, background=True)
    pkit.wait_pool()
    assert pkit.pool_size >= 40
    x = np.arange(30.0)
    before = pkit.pool_size
    a = pkit.encrypt(x)
    assert pkit.pool_size == before - 30
    b = pkit.encrypt(x)
    assert a.raw() != b.raw()  # fresh obfuscator per ciphertext
    assert len(set(a.raw())) == 30
    np.testing.assert_allclose(pkit.decrypt(a), x)


def test_public_kit_encrypts_and_textbook_mode(pkit):
    pub = pkit.public_kit()
    x = np.array([1.25, -4.0])
    np.testing.assert_allclose(pkit.decrypt(pub.encrypt(x)), x)
    tb = paillier.keygen(1024, allow_insecure=True, backend="cpu", textbook=True)
    np.testing.assert_allclose(tb.decrypt(tb.encrypt(x)), x)


def test_native_matches_gmpy_fallback(pkit):
    if not native_available():
        pytest.skip("C extension not built: the gmpy2 path is the one in use and is tested everywhere")
    be = CpuPaillierBackend(PaillierParams(n=pkit.n, hs=pkit.hs, alpha_bits=pkit.alpha_bits, p=pkit._p, q=pkit._q))
    slow = CpuPaillierBackend(be.params)
    slow.ops = _GmpyOps()
    rng = np.random.default_rng(3)
    m = pkit.encoder.encode_limbs(rng.integers(-1000, 1000, 20), 0, be.Ln)
    obf = be.obfuscators(20)
    c1, c2 = be.encrypt(m, obf), slow.encrypt(m, obf)
    assert np.array_equal(c1, c2)
    assert np.array_equal(be.add(c1, c1[::-1].copy()), slow.add(c1, c1[::-1].copy()))
    k = np.ascontiguousarray(m[:, :1])
    assert np.array_equal(be.mul_scalar(c1, k), slow.mul_scalar(c1, k))
    ids = rng.integers(-1, 5, size=(20, 2)).astype(np.int32)
    assert np.array_equal(be.bucket_sum(c1, ids, 5), slow.bucket_sum(c1, ids, 5))
    assert np.array_equal(be.decrypt(c1), slow.decrypt(c1))
    # the fallback's fixed-base path agrees with the native one
    tp = be._get_tables()[0]
    e = be.random_exponents(3)
    out = np.empty((3, tp.L), dtype=np.uint64)
    _GmpyOps().fb_powmod(tp.table, tp.window, tp.n_windows, e, e.shape[1], tp.m_limbs, out, tp.L)
    assert np.array_equal(out, tp.pow(e))


@pytest.mark.slow
def test_real_2048_bit_end_to_end():
    kit = paillier.keygen(2048, backend="cpu")
    pub = load_public_kit(public_kit_to_wire(kit), backend="cpu")
    x = np.random.default_rng(4).normal(size=64)
    ids = np.arange(64) % 4
    enc = pub.encrypt(x)
    h = kit.decrypt(pub.bucket_sum(enc * 2 + 1.0, ids, 4))
    np.testing.assert_allclose(h, [np.sum(2 * x[ids == b] + 1) for b in range(4)], atol=1e-6)


@pytest.mark.parametrize("portable", [False, True])
def test_montgomery_kernels_match_gmpy2(pkit, portable):
    try:
        from hefl import _mont
    except ImportError:
        pytest.skip("Montgomery extension not built: the gmpy2 path is in use")
    import gmpy2

    _mont.use_portable_redc(portable)
    try:
        be = CpuPaillierBackend(PaillierParams(n=pkit.n, hs=pkit.hs, alpha_bits=pkit.alpha_bits,
                                               p=pkit._p, q=pkit._q))
        tp = be._get_tables()[0]
        e = be.random_exponents(5)
        e[0] = 0
        got = tp.pow(e)
        ints = [int.from_bytes(r.tobytes(), "little") for r in e]
        base = int.from_bytes(tp.table[0, 1].tobytes(), "little")
        want = [int(gmpy2.powmod(base, k, tp.modulus)) for k in ints]
        assert [int.from_bytes(r.tobytes(), "little") for r in got] == want
        c = pkit.encrypt(np.arange(40) - 20.0)
        ids = np.random.default_rng(9).integers(-1, 6, size=(40, 3))
        h = be.bucket_sum(c._flat(), ids, 6)
        nsq = pkit.nsquare
        raw = c.raw()
        for f in range(3):
            for b in range(6):
                prod = 1
                for i in np.flatnonzero(ids[:, f] == b):
                    prod = prod * raw[i] % nsq
                assert int.from_bytes(h[f, b].tobytes(), "little") == prod
    finally:
        _mont.use_portable_redc(False)


@pytest.mark.parametrize("which", ["pkit", "mkit", "okit"])
def test_hold_on_the_cpu_is_the_array_itself(which, request):
    kit = request.getfixturevalue(which)
    x = np.arange(12, dtype=float) - 4
    ca = kit.encrypt(x)
    held = kit.hold(ca)
    assert held is ca
    rows = np.array([1, 5, 6, 11])
    ids = np.array([[0, 2], [1, 2], [0, -1], [1, 0]])
    got = kit.decrypt(kit.bucket_sum_held(held, rows, ids, 3))
    assert np.allclose(got, kit.decrypt(kit.bucket_sum(ca[rows], ids, 3)))
    assert np.allclose(got, [[x[1] + x[6], x[5] + x[11], 0], [x[11], 0, x[1] + x[5]]])
    with pytest.raises(ValueError, match="rows must be in"):
        kit.bucket_sum_held(held, np.array([-1]), np.zeros((1, 1)), 2)
    with pytest.raises(TypeError, match="hold"):
        kit.bucket_sum_held(x, rows, ids, 3)
    with pytest.raises(ValueError, match="1-d"):
        kit.hold(ca.reshape(3, 4))


@pytest.mark.parametrize("native", [True, False], ids=["native", "numpy"])
def test_received_bytes_range_checked_by_either_engine(pkit, monkeypatch, native):
    """Zero and >= n^2 rows are refused wherever they are, by the C pass and numpy alike."""
    from hefl.he import _limbkit

    if native and _limbkit._NATIVE_FIRST_OUTSIDE is None:
        pytest.skip("hefl._native is not built here")
    if not native:
        monkeypatch.setattr(_limbkit, "_NATIVE_FIRST_OUTSIDE", None)
    w = pkit.cipher_width
    good = bytearray(pkit.encrypt(np.arange(5)).to_bytes())
    nsq = (pkit.n**2).to_bytes(w, "little")
    for row in range(5):
        for bad in (b"\0" * w, nsq, (pkit.n**2 + 1).to_bytes(w, "little"), b"\xff" * w):
            data = bytearray(good)
            data[row * w:(row + 1) * w] = bad
            with pytest.raises(InvalidCiphertextError, match=f"ciphertext {row} is outside"):
                pkit.cipher_from_bytes(bytes(data), (5,), 0)
    below = (pkit.n**2 - 1).to_bytes(w, "little") + (1).to_bytes(w, "little")
    assert pkit.cipher_from_bytes(below, (2,), 0).shape == (2,)


def test_native_first_outside_matches_numpy():
    from hefl.he import _limbkit

    first_outside = _limbkit._NATIVE_FIRST_OUTSIDE
    if first_outside is None:
        pytest.skip("hefl._native is not built here")
    rng = np.random.default_rng(7)
    for L in (1, 2, 5):
        for _ in range(400):
            top = rng.integers(0, 3, size=L, dtype=np.uint64)
            rows = rng.integers(0, 3, size=(int(rng.integers(0, 5)), L), dtype=np.uint64)
            if rows.shape[0] and rng.random() < 0.3:
                rows[int(rng.integers(rows.shape[0]))] = top
            assert first_outside(rows, L, top) == _limbkit.first_outside(rows, top)
    with pytest.raises(ValueError, match="L limbs"):
        first_outside(np.zeros((2, 3), np.uint64), 2, np.zeros(3, np.uint64))
    with pytest.raises(ValueError, match="L limbs"):  # 8 * L would wrap around
        first_outside(np.ones(4, np.uint64), 2**61, b"")
