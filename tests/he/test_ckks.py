import numpy as np
import pytest

from hefl.errors import InvalidCiphertextError, KeyMismatchError
from hefl.he import ckks, load_public_kit, public_kit_to_wire


@pytest.fixture(scope="module")
def kit():
    return ckks.keygen(poly_modulus_degree=8192)


def test_ckks_within_error_bound(kit):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=5000), rng.normal(size=5000)
    a = kit.encrypt(x)
    np.testing.assert_allclose(kit.decrypt(a), x, atol=1e-5)
    np.testing.assert_allclose(kit.decrypt(a + kit.encrypt(y)), x + y, atol=1e-5)
    np.testing.assert_allclose(kit.decrypt(a * y), x * y, atol=1e-4)
    np.testing.assert_allclose(kit.decrypt(a.sum()), [x.sum()], atol=1e-3)
    M = rng.normal(size=(64, 3))
    np.testing.assert_allclose(kit.decrypt(kit.encrypt(x[:64]).dot(M)), x[:64] @ M, atol=1e-3)


def test_public_context_has_no_secret(kit):
    data = public_kit_to_wire(kit)
    pub = load_public_kit(data)
    assert not pub.context.has_secret_key()
    assert pub.fingerprint() == kit.fingerprint()
    ca = pub.encrypt(np.array([1.0, 2.0]))
    np.testing.assert_allclose(kit.decrypt(kit.cipher_from_bytes(ca.to_bytes(), (2,))), [1, 2], atol=1e-5)
    secret_bytes = kit.context.serialize(save_secret_key=True)
    with pytest.raises(InvalidCiphertextError):
        load_public_kit(secret_bytes)
    other = ckks.keygen(poly_modulus_degree=8192)
    with pytest.raises(KeyMismatchError):
        other.decrypt(ca)
