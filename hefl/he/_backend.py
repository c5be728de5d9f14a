"""The compute-backend interface of the Paillier-family kits.

A backend does the big-integer work for one key, on whole batches, so that kits and
models never loop over ciphertexts in Python.  Numbers travel as C-contiguous
``uint64`` limb arrays of shape ``(N, L)``, little-endian (limb 0 is the least
significant 64 bits).  Viewed as ``uint32`` the same memory is the ``(N, 2L)``
little-endian 32-bit limb layout the GPU kernels use, so no conversion is needed.

``Lc = limbs(n²)`` for ciphertexts, ``Ln = limbs(n)`` for plaintexts and scalars.

Backends:

* ``hefl.he._cpu.CpuPaillierBackend`` — GMP through a small C extension
  (``hefl._native``) when it is built, gmpy2 otherwise; batches split over threads
  (the native kernels release the GIL).
* ``hefl.gpu.backend.GpuPaillierBackend`` — CuPy kernels (issue: GPU backend).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

__all__ = ["PaillierParams", "PaillierBackend", "limbs_for", "ints_to_limbs", "limbs_to_ints"]


def limbs_for(value: int) -> int:
    """Number of 64-bit limbs needed for numbers below ``value``."""
    return max(1, (int(value).bit_length() + 63) // 64)


#: The dtype of limb arrays: little-endian uint64, one row per number.
LIMB_DTYPE = np.dtype("<u8")


def ints_to_limbs(values, n_limbs: int) -> np.ndarray:
    """Python ints (each in [0, 2**(64*n_limbs))) -> (N, n_limbs) uint64 array."""
    nbytes = 8 * n_limbs
    buf = b"".join(int(v).to_bytes(nbytes, "little") for v in values)
    return np.frombuffer(buf, dtype="<u8").reshape(-1, n_limbs).copy()


def limbs_to_ints(arr: np.ndarray) -> list[int]:
    """(N, L) uint64 array -> list of Python ints."""
    arr = np.ascontiguousarray(arr, dtype="<u8")
    width = arr.shape[-1] * 8
    raw = arr.tobytes()
    return [int.from_bytes(raw[i : i + width], "little") for i in range(0, len(raw), width)]


@dataclass(frozen=True)
class PaillierParams:
    """Public (and optionally private) numbers of one Paillier key with g = n + 1.

    ``hs = h^n mod n²`` is the DJN base: an obfuscator is ``hs^α mod n²`` with α a fresh
    CSPRNG integer of ``alpha_bits`` bits (≥ n_bits / 2).
    """

    n: int
    hs: int
    alpha_bits: int
    p: int | None = None
    q: int | None = None
    nsquare: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nsquare", self.n * self.n)

    @property
    def has_private(self) -> bool:
        return self.p is not None

    @property
    def limbs_n(self) -> int:
        return limbs_for(self.n)

    @property
    def limbs_c(self) -> int:
        return limbs_for(self.nsquare)


class PaillierBackend(ABC):
    """Batched Paillier arithmetic for one key.  All arrays are (N, L) uint64 limbs."""

    name: str = "abstract"

    def __init__(self, params: PaillierParams, n_jobs: int = 1):
        self.params = params
        self.n_jobs = max(1, int(n_jobs))

    @abstractmethod
    def obfuscators(self, count: int) -> np.ndarray:
        """``count`` fresh DJN obfuscators hs^α mod n², each α from the OS CSPRNG. (count, Lc)"""

    @abstractmethod
    def encrypt(self, m: np.ndarray, obf: np.ndarray) -> np.ndarray:
        """(1 + m·n) · obf mod n² for m (N, Ln) in [0, n) and obf (N, Lc)."""

    @abstractmethod
    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Homomorphic addition: a · b mod n², elementwise, (N, Lc)."""

    @abstractmethod
    def mul_scalar(self, a: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Homomorphic multiplication by plaintext: a^k mod n² elementwise; k (N, Ln) in [0, n)."""

    @abstractmethod
    def sum(self, a: np.ndarray) -> np.ndarray:
        """Product of all rows mod n² (the encrypted sum), shape (Lc,); empty -> encryption-free 1."""

    @abstractmethod
    def bucket_sum(self, a: np.ndarray, ids: np.ndarray, n_buckets: int) -> np.ndarray:
        """Histogram primitive.

        ``a`` is (N, Lc); ``ids`` is (N, F) int32 with values in [0, n_buckets) or -1 (skip).
        Returns (F, n_buckets, Lc): for feature f and bucket b, the product mod n² of the
        rows i with ids[i, f] == b (1, i.e. a trivial encryption of 0, where none).
        """

    @abstractmethod
    def decrypt(self, c: np.ndarray) -> np.ndarray:
        """CRT decryption (needs p, q): (N, Lc) ciphertexts -> (N, Ln) plaintexts in [0, n)."""
