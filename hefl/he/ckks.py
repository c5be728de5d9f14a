"""CKKS through TenSEAL, in the kit shape of the other schemes.

CKKS is approximate: each encrypted real carries an error of roughly
``2^-(scale_bits - 20)`` relative to the values' magnitude (about 1e-6 with the default
40-bit scale), which grows with multiplications.  Vectors are split into chunks of
``poly_modulus_degree / 2`` slots (SIMD), so adds and plain multiplies are one operation
per chunk, not per element.

The public kit carries the context *without* the secret key
(``serialize(save_secret_key=False)``), with Galois keys for rotations (sums, dots).
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from hefl.errors import InvalidCiphertextError

from .base import PublicKit, SecretKit

__all__ = ["keygen", "CKKSPublicKit", "CKKSSecretKit", "CKKSArray"]


def _ts():
    import tenseal as ts

    return ts


class CKKSArray:
    """A vector (or array, stored flat) of CKKS-encrypted reals, in SIMD chunks."""

    def __init__(self, kit: CKKSPublicKit, chunks: list, shape: tuple[int, ...]):
        self.kit = kit
        self.chunks = chunks
        self.shape = tuple(shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def _plain_chunks(self, plain) -> list[list[float]]:
        arr = np.broadcast_to(np.asarray(plain, dtype=np.float64), self.shape).ravel()
        s = self.kit.slots
        return [arr[i : i + s].tolist() for i in range(0, arr.size, s)]

    def __add__(self, other) -> CKKSArray:
        if isinstance(other, CKKSArray):
            self.kit.check_same(other.kit)
            if other.shape != self.shape:
                raise ValueError(f"shape mismatch {self.shape} vs {other.shape}")
            return CKKSArray(self.kit, [a + b for a, b in zip(self.chunks, other.chunks)], self.shape)
        return CKKSArray(self.kit, [a + p for a, p in zip(self.chunks, self._plain_chunks(other))], self.shape)

    __radd__ = __add__

    def __neg__(self) -> CKKSArray:
        return CKKSArray(self.kit, [-a for a in self.chunks], self.shape)

    def __sub__(self, other) -> CKKSArray:
        return self + (-other if isinstance(other, CKKSArray) else -np.asarray(other, dtype=np.float64))

    def __mul__(self, other) -> CKKSArray:
        if isinstance(other, CKKSArray):
            self.kit.check_same(other.kit)
            if other.shape != self.shape:
                raise ValueError(f"cannot multiply CKKS arrays of shapes {self.shape} and {other.shape}")
            return CKKSArray(self.kit, [a * b for a, b in zip(self.chunks, other.chunks)], self.shape)
        return CKKSArray(self.kit, [a * p for a, p in zip(self.chunks, self._plain_chunks(other))], self.shape)

    __rmul__ = __mul__

    def sum(self) -> CKKSArray:
        """Encrypted sum of all elements (one-element array)."""
        total = None
        for c in self.chunks:
            s = c.sum()
            total = s if total is None else total + s
        return CKKSArray(self.kit, [total], (1,))

    def dot(self, plain) -> CKKSArray:
        """``self · plain`` for a plain vector (scalar result) or (n, k) matrix (k results)."""
        plain = np.asarray(plain, dtype=np.float64)
        if plain.ndim == 1:
            return (self * plain).sum()
        if plain.shape[0] != self.size:
            raise ValueError(f"cannot dot {self.shape} with {plain.shape}")
        s = self.kit.slots
        total = None
        for i, c in enumerate(self.chunks):
            part = c.mm(plain[i * s : (i + 1) * s].tolist())
            total = part if total is None else total + part
        return CKKSArray(self.kit, [total], (plain.shape[1],))

    matmul = dot

    def to_bytes(self) -> bytes:
        """Length-prefixed serialised chunks."""
        parts = [c.serialize() for c in self.chunks]
        return b"".join(struct.pack("<Q", len(p)) + p for p in parts)

    def frames(self) -> list[bytes]:
        return [c.serialize() for c in self.chunks]


class CKKSPublicKit(PublicKit):
    """Encrypt and evaluate with a TenSEAL CKKS context that holds no secret key."""

    scheme = "ckks"

    def __init__(self, context):
        self.context = context
        self.slots = context.n_slots() if hasattr(context, "n_slots") else None
        if not self.slots:
            self.slots = 4096

    def to_bytes(self) -> bytes:
        return self.context.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=True,
                                      save_relin_keys=True)

    def _fingerprint_material(self) -> bytes:
        # the public key alone identifies the context (Galois keys are large and derived)
        return hashlib.sha256(
            self.context.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False,
                                   save_relin_keys=False)
        ).digest()

    @classmethod
    def from_bytes(cls, data: bytes, **_ignored) -> CKKSPublicKit:
        ts = _ts()
        try:
            ctx = ts.context_from(bytes(data))
        except Exception as exc:  # noqa: BLE001 - TenSEAL raises plain exceptions
            raise InvalidCiphertextError(f"not a CKKS context: {exc}") from None
        if ctx.has_secret_key():
            raise InvalidCiphertextError("refusing a CKKS context that carries a secret key")
        return cls(ctx)

    def encrypt(self, x) -> CKKSArray:
        ts = _ts()
        arr = np.asarray(x, dtype=np.float64)
        flat = arr.ravel()
        s = self.slots
        chunks = [ts.ckks_vector(self.context, flat[i : i + s].tolist()) for i in range(0, max(flat.size, 1), s)]
        return CKKSArray(self, chunks, arr.shape)

    def cipher_from_frames(self, frames, shape) -> CKKSArray:
        """Load serialised chunks (as :meth:`CKKSArray.frames`) under this context."""
        ts = _ts()
        try:
            chunks = [ts.ckks_vector_from(self.context, bytes(f)) for f in frames]
        except Exception as exc:  # noqa: BLE001
            raise InvalidCiphertextError(f"invalid CKKS ciphertext: {exc}") from None
        shape = tuple(int(v) for v in shape)
        need = -(-max(int(np.prod(shape, dtype=np.int64)), 1) // self.slots)
        if len(chunks) != need:
            raise InvalidCiphertextError(f"{len(chunks)} CKKS chunks for shape {shape}, expected {need}")
        return CKKSArray(self, chunks, shape)

    def cipher_from_bytes(self, data: bytes, shape) -> CKKSArray:
        frames, off, data = [], 0, bytes(data)
        while off < len(data):
            if off + 8 > len(data):
                raise InvalidCiphertextError("truncated CKKS ciphertext bytes")
            (ln,) = struct.unpack_from("<Q", data, off)
            off += 8
            if off + ln > len(data):
                raise InvalidCiphertextError("truncated CKKS ciphertext bytes")
            frames.append(data[off : off + ln])
            off += ln
        return self.cipher_from_frames(frames, shape)


class CKKSSecretKit(CKKSPublicKit, SecretKit):
    """CKKS kit holding the secret key."""

    def public_kit(self) -> CKKSPublicKit:
        pub = getattr(self, "_public", None)
        if pub is None:
            pub = self._public = CKKSPublicKit.from_bytes(self.to_bytes())
        return pub

    def decrypt(self, ca: CKKSArray) -> np.ndarray:
        self.check_same(ca.kit)
        vals: list[float] = []
        for c in ca.chunks:
            c.link_context(self.context)
            vals.extend(c.decrypt())
        size = int(np.prod(ca.shape, dtype=np.int64))
        return np.asarray(vals[:size], dtype=np.float64).reshape(ca.shape)


def keygen(poly_modulus_degree: int = 8192, coeff_mod_bit_sizes=(60, 40, 40, 60), scale_bits: int = 40,
           **_ignored) -> CKKSSecretKit:
    """A CKKS kit (TenSEAL) with Galois and relinearisation keys.

    The defaults give 4096 slots per ciphertext, one multiplication depth beyond the
    encoding, 128-bit security (SEAL's standard parameters) and ~1e-6 precision.
    """
    ts = _ts()
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=int(poly_modulus_degree),
                     coeff_mod_bit_sizes=list(coeff_mod_bit_sizes))
    ctx.global_scale = 2.0**scale_bits
    ctx.generate_galois_keys()
    ctx.generate_relin_keys()
    kit = CKKSSecretKit(ctx)
    kit.slots = int(poly_modulus_degree) // 2
    return kit
