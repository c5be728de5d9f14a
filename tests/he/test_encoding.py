import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hefl.errors import EncodingOverflowError
from hefl.he import Packer
from hefl.he.encoding import FixedPointEncoder, extract_bits


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=20))
def test_small_limbs_match_python(vals):
    n = (1 << 1023) + 12345
    enc = FixedPointEncoder(n)
    limbs = enc._small_to_limbs(np.array(vals, dtype=np.int64), 16)
    assert enc.decode_limbs(limbs, 0).tolist() == vals


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 500), st.integers(0, 30), st.data())
def test_packing_never_carries(max_summands, frac_bits, data):
    bounds = [(-1.0, 1.0), (0.0, 0.25), (-3.0, 0.0)]
    p = Packer(bounds, frac_bits=frac_bits, max_summands=max_summands, plaintext_bits=1023)
    k = data.draw(st.integers(1, max_summands))
    # every slot at its upper bound: the worst case for carries
    X = np.tile([hi for _, hi in bounds], (k, 1))
    packed = p.pack_limbs(X, 16)
    total = sum(int.from_bytes(r.tobytes(), "little") for r in packed)
    sums, cnt = p.unpack_limbs(np.frombuffer(total.to_bytes(128, "little"), dtype=np.uint64).reshape(1, 16))
    assert cnt[0] == k
    np.testing.assert_allclose(sums[0], X.sum(axis=0), atol=k * 2.0**-frac_bits)
    # and at the lower bounds
    X = np.tile([lo for lo, _ in bounds], (k, 1))
    total = sum(int.from_bytes(r.tobytes(), "little") for r in p.pack_limbs(X, 16))
    sums, cnt = p.unpack_limbs(np.frombuffer(total.to_bytes(128, "little"), dtype=np.uint64).reshape(1, 16))
    np.testing.assert_allclose(sums[0], X.sum(axis=0), atol=k * 2.0**-frac_bits)


def test_packer_bounds_and_budget():
    p = Packer([(-1, 1)], frac_bits=20, max_summands=10, plaintext_bits=100)
    with pytest.raises(EncodingOverflowError):
        p.pack_limbs(np.array([[1.5]]), 2)
    with pytest.raises(EncodingOverflowError):
        Packer([(-1, 1)] * 10, frac_bits=40, max_summands=10**6, plaintext_bits=200)
    assert p.per_plaintext() == 100 // p.bits


def test_extract_bits():
    v = (0xABCDEF << 60) | 0x5
    limbs = np.frombuffer(v.to_bytes(32, "little"), dtype=np.uint64).reshape(1, 4)
    assert int(extract_bits(limbs, 60, 24)[0]) == 0xABCDEF
    assert int(extract_bits(limbs, 0, 4)[0]) == 5


def test_shift_and_pack_round_trip(pkit, mkit):
    rng = np.random.default_rng(5)
    for kit in (pkit, mkit):
        p = Packer([(-1, 1), (0, 0.25)], frac_bits=24, max_summands=64, plaintext_bits=kit.plaintext_bits)
        X = np.column_stack([rng.uniform(-1, 1, 64), rng.uniform(0, 0.25, 64)])
        ca = kit.encrypt_encoded(p.pack_limbs(X, kit.Ln if hasattr(kit, "Ln") else 16))
        ids = rng.integers(0, 10, size=(64, 1))
        hist = kit.bucket_sum(ca, ids, 10).reshape(-1)
        want = np.array([X[ids[:, 0] == b].sum(axis=0) for b in range(10)])
        # the most that fit, fewer (a GPU's choice), and none packed (the same ciphertexts)
        for per in (p.per_plaintext(), 2, 1):
            comp = kit.shift_and_pack(hist, p.bits, per)
            assert comp.shape[0] == -(-10 // per)
            sums, cnt = p.unpack_compressed(kit.decrypt_raw(comp), per)
            np.testing.assert_allclose(sums[:10], want, atol=64 * 2.0**-24)
            assert list(cnt[:10]) == [int((ids[:, 0] == b).sum()) for b in range(10)]
        with pytest.raises(ValueError, match="at least 1"):
            kit.shift_and_pack(hist, p.bits, 0)
        # a CPU (or mock) kit packs as many as fit, whatever the count
        assert kit.compress_slots(10, p.bits) == kit.compress_slots(10**6, p.bits) == p.per_plaintext()
