"""The HE engines: exact radix products, masks that cancel, CKKS precision and mask range."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hefl.errors import EncodingOverflowError, ProtocolError
from hefl.he import ckks, mock, paillier
from hefl.models.hetero_lr._engine import (
    CKKS_MASK_BITS,
    FRAC_D,
    LOSS_EXP,
    AdditiveEngine,
    direct_matvec,
    make_engine,
    negated_sum,
    open_for_peer,
    quantise,
    radix_matvec,
)


@pytest.fixture(scope="module")
def pkit():
    return paillier.keygen(1024, allow_insecure=True, backend="cpu", n_jobs=2)


@pytest.fixture(scope="module")
def mkit():
    return mock.keygen(1024)


@pytest.fixture(scope="module")
def ckit():
    return ckks.keygen()


def _ints(kit, ca):
    vals = [int.from_bytes(r.tobytes(), "little") for r in np.asarray(kit.decrypt_raw(ca), dtype="<u8")]
    return [v - kit.n if v > kit.n // 2 else v for v in vals]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), f=st.integers(1, 5), bits=st.integers(1, 20), window=st.integers(1, 9),
       seed=st.integers(0, 2**32 - 1))
def test_radix_product_is_exact(mkit, n, f, bits, window, seed):
    rng = np.random.default_rng(seed)
    d = rng.integers(-(2**30), 2**30, size=n)
    Q = rng.integers(-(2**bits) + 1, 2**bits, size=(n, f))
    enc = mkit.encrypt(d)
    expect = [int(v) for v in (Q.astype(object).T @ d.astype(object))]
    assert _ints(mkit, radix_matvec(enc, Q, window=window)) == expect
    assert _ints(mkit, radix_matvec(enc, Q)) == expect
    assert _ints(mkit, direct_matvec(enc, Q)) == expect


def test_radix_product_under_paillier_equals_mock(pkit, mkit):
    rng = np.random.default_rng(0)
    d = rng.normal(size=300)
    Q = rng.integers(-(2**15), 2**15, size=(300, 6))
    Q[:, 2] = 0  # an all-zero column
    got = _ints(pkit, radix_matvec(pkit.encrypt(d, frac_bits=20), Q))
    assert got == _ints(mkit, radix_matvec(mkit.encrypt(d, frac_bits=20), Q))


@pytest.mark.parametrize("which", ["mock", "paillier"])
def test_masked_product_round_trip(which, pkit, mkit):
    kit = pkit if which == "paillier" else mkit
    eng = make_engine(kit.public_kit())
    rng = np.random.default_rng(1)
    d, M = rng.normal(size=200), rng.normal(size=(200, 5)) * 4
    prod = eng.matvec([(eng.encrypt(d, FRAC_D), M)], fixed={4: LOSS_EXP})
    masked, state = eng.mask(prod, 4, extra=[3.5])
    back, rest = open_for_peer(make_engine(kit), kit, masked, 4)
    # what the key holder sees of the masked entries is uniform in Z_n
    ratios = [int.from_bytes(r.tobytes(), "little") / kit.n for r in back]
    assert all(1e-6 < x < 1 - 1e-6 for x in ratios)
    np.testing.assert_allclose(eng.unmask(back, state), (M.T @ d)[:4], atol=1e-2)  # 13-bit columns
    loss = eng.decode_sum(rest, masked.frac_bits + LOSS_EXP)
    assert abs(loss - (M[:, 4] @ d + 3.5)) < 2e-2
    with pytest.raises(ProtocolError):
        eng.unmask(back[:3], state)


def test_loss_masks_cancel_exactly(mkit):
    eng = AdditiveEngine(mkit.public_kit())
    rhos = [eng.loss_mask() for _ in range(3)]
    neg = negated_sum(eng, rhos)
    assert eng.decode_sum(rhos + [neg], 0) == 0.0


def test_divergence_is_reported_not_wrapped(mkit):
    eng = AdditiveEngine(mkit.public_kit())
    with pytest.raises(EncodingOverflowError, match="diverged"):
        quantise(np.array([[1e300]]), np.array([10]))
    with pytest.raises(EncodingOverflowError, match="diverged"):
        eng.scale(eng.encrypt(np.ones(2)), np.array([np.inf, 1.0]))


@pytest.mark.parametrize("width", [4, 16, 64])
def test_ckks_block_product_and_masks(ckit, width):
    pub = ckit.public_kit()
    eng = make_engine(pub, width=width)
    rng = np.random.default_rng(width)
    n = 700  # not a multiple of the samples per ciphertext
    a, b = rng.normal(size=n), rng.uniform(0, 0.25, size=n)
    M1, M2 = rng.normal(size=(n, width - 1)) * 3, rng.normal(size=(n, width - 1)) * 3
    prod = eng.matvec([(eng.encrypt(a), M1), (eng.encrypt(b), M2)])
    masked, state = eng.mask(prod, width - 2, extra=[7.0])
    back, rest = open_for_peer(make_engine(ckit, width=width), ckit, masked, width - 2)
    assert np.all(np.abs(back) > 1.0)  # masked: uniform in ±2^26
    assert np.max(np.abs(back)) <= 2.0**CKKS_MASK_BITS + 1e4
    exact = M1.T @ a + M2.T @ b
    np.testing.assert_allclose(eng.unmask(back, state), exact[:-1], atol=2e-2)
    assert abs(eng.decode_sum(rest) - (exact[-1] + 7.0)) < 2e-3


def test_ckks_refuses_values_outside_its_range(ckit):
    eng = make_engine(ckit.public_kit(), width=4)
    with pytest.raises(EncodingOverflowError, match="standardise"):
        eng.encrypt(np.array([1.0, 1e6]))


def test_ciphertexts_under_an_unexpected_key_are_a_protocol_error(pkit, mkit):
    from hefl.models.hetero_lr._roles import _cipher

    ca = mkit.encrypt(np.ones(3))
    assert _cipher(ca, mkit.public_kit(), "host", "u") is ca
    with pytest.raises(ProtocolError, match="expected ciphertexts"):
        _cipher(ca, pkit, "host", "u")
    with pytest.raises(ProtocolError):
        _cipher(np.ones(3), pkit, "host", "u")
