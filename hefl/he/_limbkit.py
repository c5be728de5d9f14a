"""The shared engine of kits whose ciphertexts are limb rows handled by a backend.

Paillier and OU store a batch of ciphertexts as one ``(N, Lc)`` uint64 array and leave
the arithmetic to a backend (GMP kernels on the CPU, CUDA on the GPU); everything that
only moves limb rows around is written once here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hefl.errors import InvalidCiphertextError

from ._backend import LIMB_DTYPE, ints_to_limbs, limbs_to_ints
from .base import AdditiveKit, CipherArray

try:  # pragma: no cover - depends on the build
    from hefl import _native

    # the C range check (None with an older build of the extension: numpy checks then)
    _NATIVE_FIRST_OUTSIDE = getattr(_native, "first_outside", None)
except ImportError:  # pragma: no cover
    _NATIVE_FIRST_OUTSIDE = None

__all__ = ["HeldCiphers", "LimbKit"]


@dataclass(frozen=True)
class HeldCiphers:
    """What :meth:`LimbKit.hold` returns where the backend keeps ciphertexts itself (the
    GPU backend: ``data`` is its device copy of ``size`` ciphertexts)."""

    kit: LimbKit
    data: Any
    size: int
    frac_bits: int


class LimbKit(AdditiveKit):
    """Engine hooks common to the limb-array kits (Paillier, OU).

    Subclasses set ``n``, ``Ln``, ``Lc``, ``backend``, the ciphertext modulus
    ``cipher_modulus`` and an ``ObfuscatorPool`` in ``_pool``, and implement the
    scheme-specific hooks (encryption, negation, multiplication by plaintexts, the full
    validation ``_check``).

    Validation is split by cost. Ciphertexts that arrive from a peer (``_from_bytes``) get
    the vectorised range check ``[1, modulus)`` (about 0.1 µs a ciphertext, so the wire
    keeps its speed); whether a ciphertext is a unit (coprime to n) needs a modular
    product per ciphertext and is checked by the key owner right before it decrypts,
    where it costs well under 1 % of the decryption. A non-unit is harmless to a party
    that only computes on it (making one means knowing a factor of n), and the key owner
    refuses it.
    """

    _mod_limbs: np.ndarray | None = None

    def warm_up(self) -> dict[str, float]:
        warm = getattr(self.backend, "warm_up", None)
        return warm() if warm is not None else {}

    def _add(self, a, b):
        if a.shape[0] == 0:
            return a.copy()
        return self.backend.add(a, b)

    def _bucket_sum(self, a, ids, n_buckets):
        return self.backend.bucket_sum(a, ids, n_buckets)

    def hold(self, ca: CipherArray):
        ca = super().hold(ca)
        keep = getattr(self.backend, "hold", None)  # the GPU backend's device copy
        return ca if keep is None else HeldCiphers(self, keep(ca._flat()), ca.shape[0], ca.frac_bits)

    def bucket_sum_held(self, held, rows, bucket_ids, n_buckets: int) -> CipherArray:
        if not isinstance(held, HeldCiphers):
            return super().bucket_sum_held(held, rows, bucket_ids, n_buckets)
        self.check_same(held.kit)
        rows = self._held_rows(rows, held.size)
        ids2 = self._bucket_ids(bucket_ids, rows.shape[0], n_buckets)
        # the backend that holds them computes (another kit of the same key may have held them)
        out = held.kit.backend.bucket_sum_held(held.data, rows, ids2, int(n_buckets))
        return self._histogram(out, np.ndim(bucket_ids) == 1, ids2.shape[1], n_buckets, held.frac_bits)

    def _encode_residues(self, x, frac_bits):
        return self.encoder.encode_limbs(np.asarray(x), frac_bits, self.Ln)

    def _encrypt_zero_trivial(self, count):
        out = np.zeros((count, self.Lc), dtype=np.uint64)
        out[:, 0] = 1
        return out

    def _from_bytes(self, data: bytes, count: int, adopt: bool = False):
        arr = np.frombuffer(data, dtype=LIMB_DTYPE).reshape(count, self.Lc)
        flags = arr.flags
        if not (adopt and flags.writeable and flags.aligned) or arr.dtype != np.uint64:
            arr = arr.astype(np.uint64)  # our own memory: the caller keeps its buffer
        return self._check_range(arr)

    def _check_range(self, data: np.ndarray) -> np.ndarray:
        """``data`` if every row is in [1, ``cipher_modulus``), else InvalidCiphertextError."""
        if self._mod_limbs is None:
            self._mod_limbs = ints_to_limbs([self.cipher_modulus], self.Lc)[0]
        flags = data.flags
        if (
            _NATIVE_FIRST_OUTSIDE is not None
            and data.dtype == np.uint64
            and data.ndim == 2
            and flags.c_contiguous
            and flags.aligned
        ):
            bad = _NATIVE_FIRST_OUTSIDE(data, self.Lc, self._mod_limbs)
        else:
            bad = first_outside(data, self._mod_limbs)
        self._refuse(bad, "")
        return data

    def _check(self, data: np.ndarray) -> np.ndarray:
        """``data`` if every row is in [1, ``cipher_modulus``) and coprime to n (the full check)."""
        if data.shape[0]:
            self._refuse(self._checker().check(data), " or not coprime to n")
        return data

    def _checker(self):
        """The backend that runs the full check (a kit may use a CPU one beside a GPU backend)."""
        return self.backend

    def _refuse(self, bad: int, also: str) -> None:
        if bad >= 0:
            what = "n²" if self.cipher_modulus != self.n else "n"
            raise InvalidCiphertextError(
                f"ciphertext {bad} is outside [1, {what}){also} (public key {self.fingerprint()[:12]})")

    def _raw(self, a) -> list[int]:
        return limbs_to_ints(a)

    def _residues_from(self, residues):
        if isinstance(residues, np.ndarray) and residues.dtype == np.uint64 and residues.ndim == 2:
            if residues.shape[1] != self.Ln:
                raise ValueError(f"residue limbs must have {self.Ln} columns, got {residues.shape[1]}")
            return np.ascontiguousarray(residues)
        vals = [int(v) for v in np.asarray(residues, dtype=object).ravel()]
        if any(not 0 <= v < self.n for v in vals):
            raise ValueError("encoded plaintexts must be in [0, n)")
        return ints_to_limbs(vals, self.Ln)

    def _sum(self, a):
        return self.backend.sum(a) if a.shape[0] else self._encrypt_zero_trivial(1)[0]

    def _to_bytes(self, a) -> bytes:
        return np.ascontiguousarray(a, dtype="<u8").tobytes()

    def cancel_precompute(self) -> None:
        """Stop background pool fills after their current chunk and drop the pool."""
        self._pool.cancel()

    def wait_pool(self) -> None:
        """Wait for background pool fills to finish."""
        self._pool.wait()

    @property
    def pool_size(self) -> int:
        """Obfuscators ready in the pool."""
        return self._pool.size


def first_outside(a: np.ndarray, m: np.ndarray) -> int:
    """Index of the first row of ``a`` (N, L little-endian uint64 limbs) that is 0 or >= ``m``
    (L limbs), else -1: a vectorised comparison from the top limb down."""
    n_rows, n_limbs = a.shape
    if n_rows == 0:
        return -1
    below = np.zeros(n_rows, dtype=bool)
    tied = np.ones(n_rows, dtype=bool)
    for i in range(n_limbs - 1, -1, -1):
        col, mi = a[:, i], m[i]
        below |= tied & (col < mi)
        tied &= col == mi
        if not tied.any():
            break
    bad = ~below
    top_zero = np.flatnonzero(a[:, -1] == 0)
    if top_zero.size:
        bad[top_zero[~a[top_zero].any(axis=1)]] = True
    idx = np.flatnonzero(bad)
    return int(idx[0]) if idx.size else -1
