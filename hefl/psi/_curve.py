"""X25519 primitives for ECDH-PSI: hash-to-point, blinding, re-blinding, point checks.

Everything here works on *u-coordinates* of Curve25519 (32 bytes, little-endian), the
only form the ``cryptography`` package exposes: ``X25519(k, u)`` is
``X25519PrivateKey.from_private_bytes(k).exchange(X25519PublicKey.from_public_bytes(u))``.

Algebra. X25519 clamps the scalar (clears the 3 low bits, sets bit 254), so every key is
a multiple of 8 and the ladder computes ``u([k]P)`` for the point ``P`` (on the curve or
on its quadratic twist) with that u-coordinate. Scalar multiplication commutes, so
``X25519(a, X25519(b, u)) == X25519(b, X25519(a, u))``; the first multiplication clears
the cofactor (8 on the curve, 4 on the twist), so every blinded value lies in a subgroup
of prime order ~2**252 (curve) or ~2**253 (twist), where DDH is believed hard: blinded
values look random to anyone without the key. ``tests/psi/test_curve.py`` checks the
commutation on random inputs.

Hash-to-point: ``H(id) = SHA-256(DOMAIN || utf8(id))`` used as a u-coordinate (every
32-byte string is a valid X25519 input; X25519 ignores the top bit, RFC 7748 §5). SHA-256
rather than SHA-512/256: it is always in :mod:`hashlib` (SHA-512/256 depends on the
OpenSSL build, and every party must hash identically) and half the cost per short ID.

This module imports nothing from numpy or hefl so that worker processes start fast.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

__all__ = [
    "DOMAIN",
    "HASH_NAME",
    "POINT_BYTES",
    "LowOrderPoint",
    "blind_ids",
    "hash_to_point",
    "mult_points",
    "new_key",
]

#: Domain-separation prefix of the ID hash (changing it changes every blinded value).
DOMAIN = b"hefl/psi/ecdh/x25519/sha256/v1\x00"
#: Name of the hash-to-point method; parties refuse to talk to a peer using another.
HASH_NAME = "x25519-sha256-v1"
#: Bytes in one u-coordinate.
POINT_BYTES = 32


class LowOrderPoint(ValueError):
    """X25519 gave the all-zero output: the input was a low-order point (``index`` in its batch)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index

    def __str__(self) -> str:
        return f"low-order point at index {self.index} of its batch"


def new_key() -> bytes:
    """Return a fresh secret X25519 scalar (32 raw bytes) from the OS CSPRNG.

    Returns
    -------
    bytes
        Raw private key; it stays inside this party (and its local worker processes).
    """
    from cryptography.hazmat.primitives import serialization

    return X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


@lru_cache(maxsize=8)
def _exchange(key: bytes) -> Callable[[X25519PublicKey], bytes]:
    # Cached so that worker processes build the key object once, not per batch.
    return X25519PrivateKey.from_private_bytes(key).exchange


def hash_to_point(id_bytes: bytes) -> bytes:
    """Hash one encoded ID to a 32-byte u-coordinate.

    Parameters
    ----------
    id_bytes : bytes
        The ID, UTF-8 encoded.

    Returns
    -------
    bytes
        ``SHA-256(DOMAIN || id_bytes)``.
    """
    return hashlib.sha256(DOMAIN + id_bytes).digest()


def blind_ids(key: bytes, ids: list[bytes]) -> bytes:
    """Hash IDs to points and multiply each by ``key``.

    Parameters
    ----------
    key : bytes
        32-byte secret scalar.
    ids : list of bytes
        UTF-8 encoded IDs.

    Returns
    -------
    bytes
        ``len(ids) * 32`` bytes: ``X25519(key, H(id))`` for each ID, in order.

    Raises
    ------
    LowOrderPoint
        If an ID hashes to a low-order point (probability about 2**-250).
    """
    ex = _exchange(key)
    fpb = X25519PublicKey.from_public_bytes
    sha = hashlib.sha256
    dom = DOMAIN
    try:
        # One tight comprehension: the X25519 call dominates; everything else is ~10%.
        return b"".join([ex(fpb(sha(dom + x).digest())) for x in ids])
    except ValueError:
        pass
    for i, x in enumerate(ids):
        try:
            ex(fpb(sha(dom + x).digest()))
        except ValueError:
            raise LowOrderPoint(i) from None
    raise AssertionError("unreachable")  # pragma: no cover


def mult_points(key: bytes, points: bytes) -> bytes:
    """Multiply a batch of u-coordinates by ``key``.

    Parameters
    ----------
    key : bytes
        32-byte secret scalar.
    points : bytes
        Concatenated 32-byte u-coordinates.

    Returns
    -------
    bytes
        ``X25519(key, u)`` for each input, concatenated in order.

    Raises
    ------
    LowOrderPoint
        If an input is a low-order point (X25519 output all zero); ``index`` says which.
    """
    if len(points) % POINT_BYTES:
        raise ValueError(f"point buffer of {len(points)} bytes is not a multiple of 32")
    ex = _exchange(key)
    fpb = X25519PublicKey.from_public_bytes
    n = len(points)
    try:
        return b"".join([ex(fpb(points[i : i + 32])) for i in range(0, n, 32)])
    except ValueError:
        pass
    for i in range(0, n, 32):
        try:
            ex(fpb(points[i : i + 32]))
        except ValueError:
            raise LowOrderPoint(i // 32) from None
    raise AssertionError("unreachable")  # pragma: no cover
