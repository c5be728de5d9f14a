"""The exception tree of hefl.

Every error hefl raises on purpose derives from :class:`HeflError`::

    HeflError
    ├── ConfigError                 bad job/estimator configuration (names the key / file)
    ├── DataError                   bad user data (NaN labels, non-numeric features, duplicates …)
    ├── HEError                     homomorphic-encryption layer
    │   ├── KeyMismatchError        ciphertexts / kits under different public keys
    │   ├── EncodingOverflowError   a value does not fit the fixed-point encoding or a packed slot
    │   ├── InvalidCiphertextError  a ciphertext out of range ([1, n²) Paillier, [1, n) OU) or not coprime to n
    │   └── InsecureKeyError        a key below the secure size without ``allow_insecure=True``
    ├── TransportError              anything between parties
    │   ├── ProtocolError           a malformed / unexpected message (names peer and tag)
    │   ├── PeerLostError           a peer stopped answering (names peer and tag)
    │   └── TimeoutError            a receive waited longer than its timeout (names peer and tag)
    ├── PolicyError                 the TEE aggregator refused an operation
    └── BackendUnavailableError     ``backend="gpu"`` without a device or CuPy

Messages say what was wrong and with which value, e.g.
``KeyMismatchError("ciphertexts under different public keys (a1b2… vs c3d4…)")``.
"""

from __future__ import annotations

import builtins

__all__ = [
    "HeflError",
    "ConfigError",
    "DataError",
    "HEError",
    "KeyMismatchError",
    "EncodingOverflowError",
    "InvalidCiphertextError",
    "InsecureKeyError",
    "TransportError",
    "ProtocolError",
    "PeerLostError",
    "TimeoutError",
    "PolicyError",
    "BackendUnavailableError",
]


class HeflError(Exception):
    """Base class of every error hefl raises on purpose."""


class ConfigError(HeflError, ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


class DataError(HeflError, ValueError):
    """User data cannot be used as given (NaN labels, non-numeric features, duplicate IDs …)."""


class HEError(HeflError):
    """Base class of the homomorphic-encryption layer's errors."""


class KeyMismatchError(HEError, ValueError):
    """Operands were produced under different public keys (or different schemes)."""


class EncodingOverflowError(HEError, OverflowError):
    """A value does not fit the fixed-point encoding or its packed slot; nothing wrapped."""


class InvalidCiphertextError(HEError, ValueError):
    """A ciphertext is out of range ([1, n²) for Paillier, [1, n) for OU) or shares a factor with n."""


class InsecureKeyError(HEError, ValueError):
    """A key smaller than the secure minimum was requested without ``allow_insecure=True``."""


class TransportError(HeflError):
    """Base class of errors between parties."""

    def __init__(self, message: str, *, peer: str | None = None, tag: str | None = None):
        self.peer = peer
        self.tag = tag
        where = []
        if peer is not None:
            where.append(f"peer {peer!r}")
        if tag is not None:
            where.append(f"tag {tag!r}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


class ProtocolError(TransportError, ValueError):
    """A message was malformed, of an unknown kind, too large, or not expected."""


class PeerLostError(TransportError):
    """A peer stopped answering (heartbeats lost or its process died)."""


class TimeoutError(TransportError, builtins.TimeoutError):  # noqa: A001 - deliberate name
    """A receive waited longer than its timeout."""


class PolicyError(HeflError, PermissionError):
    """The TEE aggregator refused an operation under a party's data-use policy."""


class BackendUnavailableError(HeflError, RuntimeError):
    """The requested compute backend (e.g. ``"gpu"``) is not available here."""
