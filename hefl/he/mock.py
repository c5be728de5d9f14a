"""Mock kit: the Paillier kit's exact interface and plaintext algebra, with no encryption.

A "ciphertext" is the encoded residue itself (mod a random odd ``key_size``-bit n), so
sums, scales, packing, overflow and decoding behave exactly as with Paillier and the
same operations decrypt to the same results — but in microseconds.  For algorithm
tests only: it protects nothing, and says so in the log when a kit is made.
"""

from __future__ import annotations

import json
import logging
import secrets

import numpy as np

from hefl.errors import InvalidCiphertextError

from .base import AdditiveKit, CipherArray, SecretKit

__all__ = ["keygen", "MockPublicKit", "MockSecretKit"]

log = logging.getLogger(__name__)


class MockPublicKit(AdditiveKit):
    """Plaintext stand-in for a Paillier public kit (object arrays of residues)."""

    scheme = "mock"
    item_shape = ()

    def __init__(self, n: int):
        self.n = int(n)
        self.cipher_width = (self.n.bit_length() + 7) // 8
        self.plaintext_bits = self.n.bit_length() - 1
        super().__init__()

    def to_bytes(self) -> bytes:
        return json.dumps({"scheme": "mock", "n": format(self.n, "x")}).encode()

    @classmethod
    def from_bytes(cls, data: bytes, **_ignored) -> MockPublicKit:
        try:
            doc = json.loads(bytes(data).decode())
            if doc.get("scheme") != "mock":
                raise ValueError(f"scheme {doc.get('scheme')!r}")
            n = int(doc["n"], 16)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise InvalidCiphertextError(f"not a mock public kit: {exc}") from None
        if n < 3:
            raise InvalidCiphertextError("invalid mock modulus")
        return cls(n)

    def precompute(self, count: int, *, background: bool = False, low_priority: bool = False) -> None:
        """Nothing to precompute (interface parity with Paillier)."""

    def wait_pool(self) -> None:
        """Nothing to wait for (interface parity with Paillier)."""

    def cancel_precompute(self) -> None:
        """Nothing to cancel (interface parity with Paillier)."""

    # engine on object arrays of Python ints ------------------------------------------
    def _encode_residues(self, x, frac_bits):
        vals = self.encoder.encode_signed(np.asarray(x), frac_bits)
        return np.array([v % self.n for v in vals] or [], dtype=object)

    def _residues_from(self, residues):
        if isinstance(residues, np.ndarray) and residues.dtype == np.uint64 and residues.ndim == 2:
            from ._backend import limbs_to_ints

            vals = limbs_to_ints(residues)
        else:
            vals = [int(v) for v in np.asarray(residues, dtype=object).ravel()]
        if any(not 0 <= v < self.n for v in vals):
            raise ValueError("encoded plaintexts must be in [0, n)")
        return np.array(vals, dtype=object)

    def _encrypt_residues(self, res):
        return np.asarray(res, dtype=object).ravel().copy()

    def _encrypt_zero_trivial(self, count):
        return np.zeros(count, dtype=object) * 0

    def _add(self, a, b):
        return (a + b) % self.n

    def _add_plain(self, a, res):
        return (a + np.asarray(res, dtype=object).ravel()) % self.n

    def _neg(self, a):
        return (-a) % self.n

    def _mul_ints(self, a, k):
        return (a * np.asarray(k, dtype=object).ravel()) % self.n

    def _sum(self, a):
        return sum(a.tolist(), 0) % self.n

    def _bucket_sum(self, a, ids, n_buckets):
        F = ids.shape[1]
        out = np.zeros(F * n_buckets, dtype=object) * 0
        rows, feats = np.nonzero(ids >= 0)
        keys = feats * n_buckets + ids[rows, feats]
        np.add.at(out, keys, a[rows])
        return out % self.n

    def _to_bytes(self, a) -> bytes:
        w = self.cipher_width
        return b"".join(int(v).to_bytes(w, "little") for v in a)

    def _from_bytes(self, data: bytes, count: int, adopt: bool = False):
        w = self.cipher_width
        vals = [int.from_bytes(data[i * w : (i + 1) * w], "little") for i in range(count)]
        return self._from_ints(vals)

    def _from_ints(self, values):
        if any(not 0 <= int(v) < self.n for v in values):
            raise InvalidCiphertextError("mock ciphertext outside [0, n)")
        return np.array([int(v) for v in values], dtype=object)

    def _raw(self, a) -> list[int]:
        return [int(v) for v in a]


class MockSecretKit(MockPublicKit, SecretKit):
    """Mock kit that "decrypts" (decodes the residues)."""

    def public_kit(self) -> MockPublicKit:
        pub = getattr(self, "_public", None)
        if pub is None:
            pub = self._public = MockPublicKit(self.n)
        return pub

    def decrypt_raw(self, ca: CipherArray) -> np.ndarray:
        """Encoded residues as (size, Ln) uint64 limbs, as Paillier's ``decrypt_raw``."""
        from ._backend import ints_to_limbs, limbs_for

        self.check_same(ca.kit)
        return ints_to_limbs([int(v) for v in ca._flat()], limbs_for(self.n))

    def decrypt(self, ca: CipherArray) -> np.ndarray:
        self.check_same(ca.kit)
        return self.encoder.decode_ints([int(v) for v in ca._flat()], ca.frac_bits).reshape(ca.shape)


def keygen(key_size: int = 2048, **_ignored) -> MockSecretKit:
    """A mock kit with a random odd ``key_size``-bit modulus (same plaintext space as Paillier)."""
    n = secrets.randbits(int(key_size)) | (1 << (int(key_size) - 1)) | 1
    log.warning("mock HE kit in use: values travel in the clear (tests and algorithm development only)")
    return MockSecretKit(n)
