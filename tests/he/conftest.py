import pytest

from hefl.he import mock, ou, paillier


@pytest.fixture(scope="session")
def pkit():
    """A 1024-bit Paillier kit (explicit insecure opt-in: tests only)."""
    return paillier.keygen(1024, allow_insecure=True, backend="cpu", n_jobs=2)


@pytest.fixture(scope="session")
def mkit():
    return mock.keygen(1024)


@pytest.fixture(scope="session")
def okit():
    """A 1024-bit OU kit (explicit insecure opt-in: tests only)."""
    return ou.keygen(1024, allow_insecure=True, backend="cpu", n_jobs=2)
