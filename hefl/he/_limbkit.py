"""The shared engine of kits whose ciphertexts are limb rows handled by a backend.

Paillier and OU store a batch of ciphertexts as one ``(N, Lc)`` uint64 array and leave
the arithmetic to a backend (GMP kernels on the CPU, CUDA on the GPU); everything that
only moves limb rows around is written once here.
"""

from __future__ import annotations

import numpy as np

from ._backend import ints_to_limbs, limbs_to_ints
from .base import AdditiveKit

__all__ = ["LimbKit"]


class LimbKit(AdditiveKit):
    """Engine hooks common to the limb-array kits (Paillier, OU).

    Subclasses set ``n``, ``Ln``, ``Lc``, ``backend`` and an ``ObfuscatorPool`` in
    ``_pool``, and implement the scheme-specific hooks (encryption, negation,
    multiplication by plaintexts, validation).
    """

    def _add(self, a, b):
        if a.shape[0] == 0:
            return a.copy()
        return self.backend.add(a, b)

    def _bucket_sum(self, a, ids, n_buckets):
        return self.backend.bucket_sum(a, ids, n_buckets)

    def _encode_residues(self, x, frac_bits):
        return self.encoder.encode_limbs(np.asarray(x), frac_bits, self.Ln)

    def _encrypt_zero_trivial(self, count):
        out = np.zeros((count, self.Lc), dtype=np.uint64)
        out[:, 0] = 1
        return out

    def _from_bytes(self, data: bytes, count: int):
        arr = np.frombuffer(data, dtype="<u8").reshape(count, self.Lc).astype(np.uint64, copy=True)
        return self._check(arr)

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
