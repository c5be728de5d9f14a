"""Gradient packing for SecureBoost: [g | h] of a sample in one plaintext.

The active party quantises every sample's gradients to a fixed-point grid and packs
them into as few plaintexts as the kit's plaintext space allows (one, unless many
classes' g/h do not fit).  Each chunk of outputs gets its own :class:`Packer`, with a
count slot so that the offsets of negative gradients can be removed after summing.

Bounds are rounded out to powers of two, so the layout a passive party sees (total slot
bits per chunk) reveals only the order of magnitude of the gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hefl.errors import EncodingOverflowError
from hefl.he import Packer

__all__ = ["GHCodec", "DEFAULT_GH_FRAC_BITS"]

#: fractional bits of the packed gradients (XGBoost keeps g and h as float32: 24 bits)
DEFAULT_GH_FRAC_BITS = 26


def _pow2_ceil(v: float) -> float:
    if v <= 0:
        return 0.0
    return float(2.0 ** math.ceil(math.log2(v)))


@dataclass
class _Chunk:
    outputs: list[int]
    packer: Packer
    per: int  # values per compressed ciphertext (at most packer.per_plaintext())

    @property
    def columns(self) -> list[int]:
        """Columns of the [g | h] layout this chunk packs (g of its outputs, then h)."""
        return self.outputs + [self._k + o for o in self.outputs]

    _k: int = 1


class GHCodec:
    """Quantise and pack per-sample ``[g_1..g_K | h_1..h_K]`` for one tree.

    Parameters
    ----------
    gh : ndarray of shape (n_rows, 2K)
        Gradients of the rows of the tree.
    plaintext_bits : int
        The kit's usable plaintext bits.
    frac_bits : int
        Fixed-point resolution of g and h.
    """

    def __init__(self, gh: np.ndarray, plaintext_bits: int, frac_bits: int = DEFAULT_GH_FRAC_BITS):
        gh = np.asarray(gh, dtype=np.float64)
        if not np.all(np.isfinite(gh)):
            raise EncodingOverflowError("gradients contain NaN or infinity")
        self.k = gh.shape[1] // 2
        self.frac_bits = int(frac_bits)
        n = max(1, gh.shape[0])
        bounds = []
        for j in range(gh.shape[1]):
            col = gh[:, j] if gh.shape[0] else np.zeros(1)
            lo = -_pow2_ceil(-float(col.min())) if col.min() < 0 else 0.0
            hi = _pow2_ceil(float(col.max())) if col.max() > 0 else 0.0
            if hi == lo:
                hi = lo + 1.0
            bounds.append((lo, hi))
        self.bounds = bounds
        self.chunks: list[_Chunk] = []
        outputs = list(range(self.k))
        while outputs:
            # as many outputs per plaintext as fit
            take = len(outputs)
            while take:
                cols = outputs[:take] + [self.k + o for o in outputs[:take]]
                try:
                    packer = Packer([bounds[c] for c in cols], frac_bits=self.frac_bits, max_summands=n,
                                    plaintext_bits=plaintext_bits)
                    break
                except EncodingOverflowError:
                    take -= 1
            if take == 0:
                raise EncodingOverflowError(
                    f"one output's g/h ({self.frac_bits} fractional bits, {n} rows) does not fit "
                    f"a {plaintext_bits}-bit plaintext"
                )
            chunk = _Chunk(outputs[:take], packer, packer.per_plaintext())
            chunk._k = self.k
            self.chunks.append(chunk)
            outputs = outputs[take:]

    def quantize(self, gh: np.ndarray) -> np.ndarray:
        """The values the packed plaintexts represent exactly (used for every party's sums)."""
        gh = np.asarray(gh, dtype=np.float64)
        out = np.empty_like(gh)
        scale = 2.0**self.frac_bits
        for j, (lo, _) in enumerate(self.bounds):
            out[:, j] = lo + np.rint((gh[:, j] - lo) * scale) / scale
        return out

    def pack(self, gh: np.ndarray, n_limbs: int) -> list[np.ndarray]:
        """One (n_rows, n_limbs) plaintext array per chunk."""
        return [c.packer.pack_limbs(gh[:, c.columns], n_limbs) for c in self.chunks]

    def limit_slots(self, slots_for: Callable[[int, int], int]) -> None:
        """Compress fewer values per ciphertext than fit: ``slots_for(width_bits, most)``
        gives each chunk's count (clamped to ``1..most``). Where decryption is cheap and
        each compression step is slow (a GPU), fewer values per ciphertext finish sooner."""
        for c in self.chunks:
            most = c.packer.per_plaintext()
            c.per = max(1, min(most, int(slots_for(c.packer.bits, most))))

    def layout(self) -> list[dict]:
        """What a passive party needs for cipher compression: bits and values per plaintext."""
        return [{"bits": c.packer.bits, "per": c.per} for c in self.chunks]

    def compressed_count(self, count: int) -> list[int]:
        """Compressed ciphertexts per chunk for ``count`` histogram cells."""
        return [-(-count // c.per) for c in self.chunks]

    def unpack(self, limbs_per_chunk: list[np.ndarray], count: int) -> np.ndarray:
        """Decrypted compressed plaintexts → (count, 2K) sums in [g | h] layout."""
        out = np.zeros((count, 2 * self.k))
        for c, limbs in zip(self.chunks, limbs_per_chunk):
            sums, _ = c.packer.unpack_compressed(limbs, c.per)
            out[:, c.columns] = sums[:count]
        return out
