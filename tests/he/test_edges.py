"""Edge cases of the kits' arithmetic and of what a peer may send (found in review)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hefl.errors import (
    EncodingOverflowError,
    InvalidCiphertextError,
    KeyMismatchError,
    ProtocolError,
)
from hefl.he import concatenate, wire


@pytest.fixture(params=["paillier", "ou", "mock"])
def kit(request, pkit, okit, mkit):
    return {"paillier": pkit, "ou": okit, "mock": mkit}[request.param]


def test_subtracting_unsigned_bool_and_extreme_integers_is_exact(kit):
    a = kit.encrypt(np.array([5, 7]))
    assert kit.decrypt(a - np.array([1, 1], dtype=np.uint8)).tolist() == [4, 6]
    assert kit.decrypt(a - np.array([1, 2], dtype=np.uint64)).tolist() == [4, 5]
    assert kit.decrypt(a - np.array([True, False])).tolist() == [4, 7]
    assert [int(v) for v in kit.decrypt(a - np.array([-(2**63), 0]))] == [5 + 2**63, 7]


def test_integer_multipliers_beyond_the_plaintext_range_are_refused(kit):
    a = kit.encrypt(np.array([5, 7]))
    big = kit.encoder.max_int + 1
    with pytest.raises(EncodingOverflowError, match="integer multiplier exceeds the plaintext range"):
        a * np.array([big, 1], dtype=object)
    assert kit.decrypt(a * np.array([3, -2], dtype=object)).tolist() == [15, -14]


def test_small_float_multipliers_keep_their_digits(kit):
    a = kit.encrypt(np.array([1000.0, 1000.0, 1000.0]))
    got = kit.decrypt(a * np.array([3e-7, 1e-7, 0.123456789]))
    np.testing.assert_allclose(got, [3e-4, 1e-4, 123.456789], rtol=1e-6)
    np.testing.assert_allclose(kit.decrypt(a * 0.0), [0, 0, 0])


def test_bucket_ids_are_integers_in_range_before_any_narrowing(kit):
    a = kit.encrypt(np.array([10, 20, 30]))
    for ids in (np.array([2**32 + 1, 0, 1]), np.array([-(2**32), 0, 1])):
        with pytest.raises(ValueError, match="bucket ids must be in"):
            kit.bucket_sum(a, ids, 2)
    with pytest.raises(ValueError, match="bucket ids must be integers"):
        kit.bucket_sum(a, np.array([1.9, 0, 1]), 2)
    assert kit.decrypt(kit.bucket_sum(a, np.array([1, 0, 1]), 2)).tolist() == [20, 40]


def test_concatenate_joins_cipher_axes_not_limbs(kit):
    a, b = kit.encrypt(np.array([1, 2])), kit.encrypt(np.array([3, 4]))
    assert kit.decrypt(concatenate([a, b], axis=-1)).tolist() == [1, 2, 3, 4]
    with pytest.raises(np.exceptions.AxisError):
        concatenate([a, b], axis=1)
    with pytest.raises(ValueError, match="dimensions"):
        concatenate([a, kit.encrypt(np.ones((1, 2)))])
    with pytest.raises(np.exceptions.AxisError):
        kit.encrypt(np.float64(1.5)).sum(axis=0)


def test_large_fractional_bits_decode(pkit):
    a = pkit.encrypt(np.array([1.5]))
    tiny = pkit.encrypt_encoded(np.array([3 << 10], dtype=object), frac_bits=1100, shape=(1,))
    assert pkit.decrypt(tiny)[0] == pytest.approx(3 * 2.0**-1090)
    assert pkit.decrypt(a)[0] == 1.5


def test_ckks_products_need_the_same_key():
    from hefl.he import ckks

    k1, k2 = ckks.keygen(poly_modulus_degree=8192), ckks.keygen(poly_modulus_degree=8192)
    b, c = k1.encrypt(np.array([1.0, 2.0])), k2.encrypt(np.array([3.0, 4.0]))
    with pytest.raises(KeyMismatchError):
        b * c
    with pytest.raises(ValueError, match="shapes"):
        b * k1.encrypt(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(k1.decrypt(b * k1.encrypt(np.array([3.0, 4.0]))), [3.0, 8.0], atol=1e-3)


@pytest.mark.parametrize("scheme, field, value, says", [
    ("paillier", "alpha_bits", 1024, r"alpha_bits 1024 outside \[n_bits/2, n_bits/2 \+ 64\]"),
    ("ou", "r_bits", 1024, r"r_bits 1024 outside \[160, 224\]"),
])
def test_peer_kits_cannot_ask_for_huge_encryption_tables(pkit, okit, scheme, field, value, says):
    # the exponent length is the peer's to give, and the receiver's tables grow with it
    kit = {"paillier": pkit, "ou": okit}[scheme]
    doc = json.loads(wire.public_kit_to_wire(kit))
    doc[field] = value
    with pytest.raises(InvalidCiphertextError, match=says):
        wire.load_public_kit(json.dumps(doc).encode(), allow_insecure=True, backend="cpu")


def test_a_deeply_nested_kit_document_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="not valid JSON"):
        wire.load_public_kit(b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}")
