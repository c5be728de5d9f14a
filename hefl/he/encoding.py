"""Fixed-point encoders and the slot packer.

Algebra (Paillier-family plaintext space Z_n)::

    encode(x) = round(x · 2^f)            if x ≥ 0
              = n − round(|x| · 2^f)      if x < 0
    decode(r) = r / 2^f                   if r ≤ max_int
              = (r − n) / 2^f             if r ≥ n − max_int
              → EncodingOverflowError     otherwise (a sum or product left the range)

with ``max_int = n // 3`` (as in ``phe``), so sums and products of encodings decode
correctly as long as their true value stays within ±max_int / 2^f.  One ``f`` (the
number of fractional bits) serves a whole array, so ciphertexts add without any
exponent alignment: adding arrays adds values, multiplying by a plain encoded with
``f'`` bits gives a result with ``f + f'`` bits.

Packing (:class:`Packer`) puts several bounded columns into one plaintext::

    slot_j(x) = round((x_j − lo_j) · 2^f) ∈ [0, (hi_j − lo_j) · 2^f]
    P(x)      = Σ_j slot_j(x) · 2^(offset_j)

Each slot is ``width_j = bitlen(max_summands · (hi_j − lo_j) · 2^f)`` bits wide, so
the sum of up to ``max_summands`` packed plaintexts never carries into a neighbour.
A count slot (1 per row) lets the offsets be removed after summing:
``Σ x_j = slot_sum_j / 2^f + count · lo_j``.
"""

from __future__ import annotations

import math

import numpy as np

from hefl.errors import EncodingOverflowError

from ._backend import ints_to_limbs, limbs_to_ints

__all__ = ["FixedPointEncoder", "Packer", "DEFAULT_FRAC_BITS", "extract_bits"]

#: fractional bits used for float arrays unless the caller says otherwise (≈ 1e-12 resolution)
DEFAULT_FRAC_BITS = 40


class FixedPointEncoder:
    """Signed fixed-point numbers with one scale ``2^frac_bits`` per array, modulo ``n``.

    Parameters
    ----------
    n : int
        The plaintext modulus.
    """

    def __init__(self, n: int):
        self.n = int(n)
        self.max_int = self.n // 3

    @staticmethod
    def default_frac_bits(x: np.ndarray) -> int:
        """0 for integer and boolean arrays, :data:`DEFAULT_FRAC_BITS` for floats."""
        x = np.asarray(x)
        if x.dtype.kind in "biu":
            return 0
        if x.dtype == object and all(isinstance(v, (int, np.integer)) for v in x.ravel().tolist()):
            return 0
        return DEFAULT_FRAC_BITS

    def encode_signed(self, x: np.ndarray, frac_bits: int) -> list[int]:
        """Values → signed Python ints ``round(x · 2^f)``, range-checked (flattened)."""
        x = np.asarray(x)
        if x.dtype.kind in "biu":
            vals = [int(v) << frac_bits for v in x.ravel().tolist()]
        elif x.dtype.kind == "f":
            if not np.all(np.isfinite(x)):
                raise EncodingOverflowError("cannot encode NaN or infinity")
            scaled = np.ravel(x.astype(np.float64)) * float(2**frac_bits) if frac_bits < 1000 else None
            if scaled is None or not np.all(np.isfinite(scaled)):
                vals = [round(v * 2**frac_bits) for v in map(float, x.ravel().tolist())]
            elif scaled.size and np.max(np.abs(scaled)) < 2.0**62:
                vals = np.rint(scaled).astype(np.int64).tolist()
            else:
                vals = [int(v) for v in np.rint(scaled).tolist()]
        elif x.dtype == object:
            vals = []
            for v in x.ravel().tolist():
                if isinstance(v, int):
                    vals.append(v << frac_bits)
                else:
                    fv = float(v)
                    if not math.isfinite(fv):
                        raise EncodingOverflowError("cannot encode NaN or infinity")
                    vals.append(round(fv * 2**frac_bits))
        else:
            raise TypeError(f"cannot encode arrays of dtype {x.dtype}")
        if vals:
            big = max(vals, key=abs)
            if abs(big) > self.max_int:
                raise EncodingOverflowError(
                    f"value {big / 2**frac_bits!r} does not fit the encoding "
                    f"(|x| must be ≤ {self.max_int / 2**frac_bits:.4g} with {frac_bits} fractional bits)"
                )
        return vals

    def encode_limbs(self, x: np.ndarray, frac_bits: int, n_limbs: int) -> np.ndarray:
        """Encode to residues mod n as an (N, n_limbs) uint64 array (vectorised for small values)."""
        x = np.asarray(x)
        if x.dtype.kind == "f" and x.size and np.all(np.isfinite(x)) and frac_bits <= 60:
            scaled = np.rint(np.ravel(x).astype(np.float64) * float(2**frac_bits))
            if np.max(np.abs(scaled)) < 2.0**63 and 2**63 <= self.max_int:
                return self._small_to_limbs(scaled.astype(np.int64), n_limbs)
        if x.dtype.kind in "iu" and x.size and frac_bits == 0 and 2**63 <= self.max_int:
            if x.dtype.kind == "i" or np.max(x) < 2**63:
                return self._small_to_limbs(np.ravel(x).astype(np.int64), n_limbs)
        vals = self.encode_signed(x, frac_bits)
        return ints_to_limbs([v % self.n for v in vals], n_limbs)

    def _small_to_limbs(self, v: np.ndarray, n_limbs: int) -> np.ndarray:
        """int64 values → residues mod n; negatives as n − |v| with a vectorised borrow."""
        out = np.zeros((v.size, n_limbs), dtype=np.uint64)
        pos = v >= 0
        out[pos, 0] = v[pos].astype(np.uint64)
        neg = np.flatnonzero(~pos)
        if neg.size:
            n_l = ints_to_limbs([self.n], n_limbs)[0]
            block = np.tile(n_l, (neg.size, 1))
            mag = (-(v[neg].astype(np.int64) + 1)).astype(np.uint64) + np.uint64(1)  # |v| without overflow
            low = block[:, 0]
            new = low - mag
            borrow = new > low
            block[:, 0] = new
            j = 1
            while borrow.any() and j < n_limbs:
                rows = np.flatnonzero(borrow)
                before = block[rows, j]
                block[rows, j] = before - np.uint64(1)
                borrow = np.zeros_like(borrow)
                borrow[rows] = before == 0
                j += 1
            out[neg] = block
        return out

    def decode_ints(self, residues: list[int], frac_bits: int) -> np.ndarray:
        """Residues mod n → float64 (or int64/object for ``frac_bits == 0``) values."""
        n, max_int = self.n, self.max_int
        signed = []
        for r in residues:
            if r <= max_int:
                signed.append(r)
            elif r >= n - max_int:
                signed.append(r - n)
            else:
                raise EncodingOverflowError(
                    "decrypted value outside the encodable range: an addition or "
                    "multiplication overflowed the fixed-point encoding"
                )
        if frac_bits == 0:
            if all(-(2**63) <= s < 2**63 for s in signed):
                return np.array(signed, dtype=np.int64)
            return np.array(signed, dtype=object)
        if signed and max(abs(s) for s in signed) < 2**53:  # exact in float64: scale by 2^-f
            return np.ldexp(np.array(signed, dtype=np.float64), -int(frac_bits))
        scale = 2**frac_bits
        return np.array([s / scale for s in signed], dtype=np.float64)  # correctly rounded

    def decode_limbs(self, limbs: np.ndarray, frac_bits: int) -> np.ndarray:
        return self.decode_ints(limbs_to_ints(limbs), frac_bits)


def extract_bits(limbs: np.ndarray, offset: int, width: int) -> np.ndarray:
    """Bits [offset, offset+width) of each row of an (N, L) uint64 array, width ≤ 64."""
    if not 0 < width <= 64:
        raise ValueError("width must be in (0, 64]")
    li, sh = divmod(offset, 64)
    L = limbs.shape[1]
    lo = limbs[:, li] >> np.uint64(sh) if li < L else np.zeros(limbs.shape[0], np.uint64)
    if sh and li + 1 < L and sh + width > 64:
        lo = lo | (limbs[:, li + 1] << np.uint64(64 - sh))
    if width < 64:
        lo = lo & np.uint64((1 << width) - 1)
    return lo


class Packer:
    """Pack several bounded fixed-point columns into one plaintext integer.

    Parameters
    ----------
    bounds : sequence of (lo, hi)
        Value range of each column; values outside raise :class:`EncodingOverflowError`.
    frac_bits : int
        Fractional bits of every slot.
    max_summands : int
        Most packed plaintexts that will ever be added together (e.g. the number of rows).
    plaintext_bits : int
        Usable bits of the scheme's plaintext space (``kit.plaintext_bits``).
    count_slot : bool
        Add a slot that counts summands, so offsets can be removed after summing.

    Notes
    -----
    The layout (see the module docstring) is: column slots in order, then the count slot,
    each ``width_j`` bits.  :attr:`bits` is the total width of one packed value, and
    :meth:`per_plaintext` tells how many packed values fit into one plaintext for
    cipher compression (shift-and-pack).
    """

    def __init__(self, bounds, *, frac_bits: int, max_summands: int, plaintext_bits: int, count_slot: bool = True):
        self.bounds = [(float(lo), float(hi)) for lo, hi in bounds]
        if any(not hi >= lo for lo, hi in self.bounds):
            raise ValueError(f"invalid bounds {self.bounds}: need lo <= hi")
        self.frac_bits = int(frac_bits)
        self.max_summands = int(max_summands)
        if self.max_summands < 1:
            raise ValueError("max_summands must be ≥ 1")
        self.count_slot = count_slot
        self.widths = []
        for lo, hi in self.bounds:
            top = math.ceil((hi - lo) * 2**self.frac_bits) * self.max_summands
            self.widths.append(max(1, top.bit_length()))
        if count_slot:
            self.widths.append(max(1, self.max_summands.bit_length()))
        self.offsets = [sum(self.widths[:j]) for j in range(len(self.widths))]
        self.bits = sum(self.widths)
        self.plaintext_bits = int(plaintext_bits)
        if self.bits > self.plaintext_bits:
            raise EncodingOverflowError(
                f"{len(self.widths)} slots need {self.bits} bits, the plaintext space has {self.plaintext_bits}"
            )

    def per_plaintext(self) -> int:
        """How many packed values fit side by side in one plaintext (cipher compression)."""
        return max(1, self.plaintext_bits // self.bits)

    def pack_limbs(self, X: np.ndarray, n_limbs: int) -> np.ndarray:
        """Rows of ``X`` (N, n_cols) → packed plaintexts as (N, n_limbs) uint64."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        ncols = len(self.bounds)
        if X.shape[1] != ncols:
            raise ValueError(f"expected {ncols} columns, got {X.shape[1]}")
        if not np.all(np.isfinite(X)):
            raise EncodingOverflowError("cannot pack NaN or infinity")
        out = np.zeros((X.shape[0], n_limbs), dtype=np.uint64)
        slots = []
        for j, (lo, hi) in enumerate(self.bounds):
            col = X[:, j]
            if col.size and (col.min() < lo or col.max() > hi):
                bad = col[(col < lo) | (col > hi)][0]
                raise EncodingOverflowError(f"value {bad!r} outside the packed slot's bounds [{lo}, {hi}]")
            slots.append(np.rint((col - lo) * 2.0**self.frac_bits))
        if self.count_slot:
            slots.append(np.ones(X.shape[0]))
        if max(self.widths) > 63 or self.bits > 64 * n_limbs:
            ints = [0] * X.shape[0]
            for s, off in zip(slots, self.offsets):
                for i, v in enumerate(s.tolist()):
                    ints[i] |= int(v) << off
            return ints_to_limbs(ints, n_limbs)
        for s, off in zip(slots, self.offsets):
            v = s.astype(np.uint64)
            li, sh = divmod(off, 64)
            out[:, li] |= v << np.uint64(sh)
            if sh and li + 1 < n_limbs:
                out[:, li + 1] |= v >> np.uint64(64 - sh)
        return out

    def unpack_limbs(self, P: np.ndarray, base_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Packed sums (N, L) → (column sums (N, n_cols) float64, counts (N,) int64).

        ``base_offset`` selects the packed value at that bit offset (cipher compression).
        """
        if not self.count_slot:
            raise ValueError("unpacking sums needs the count slot")
        if max(self.widths) > 64:
            raise EncodingOverflowError("slots wider than 64 bits cannot be unpacked vectorised")
        cnt = extract_bits(P, base_offset + self.offsets[-1], self.widths[-1]).astype(np.int64)
        cols = np.empty((P.shape[0], len(self.bounds)))
        for j, (lo, _) in enumerate(self.bounds):
            s = extract_bits(P, base_offset + self.offsets[j], self.widths[j]).astype(np.float64)
            cols[:, j] = s / 2.0**self.frac_bits + cnt * lo
        return cols, cnt

    def unpack_compressed(self, P: np.ndarray, per_plaintext: int) -> tuple[np.ndarray, np.ndarray]:
        """Undo shift-and-pack: (M, L) plaintexts → (M·per_plaintext, n_cols) sums and counts.

        Value ``k`` of a compressed plaintext sits at bit offset ``k · bits`` (Horner order).
        """
        parts = [self.unpack_limbs(P, k * self.bits) for k in range(per_plaintext)]
        cols = np.stack([p[0] for p in parts], axis=1).reshape(-1, len(self.bounds))
        cnts = np.stack([p[1] for p in parts], axis=1).reshape(-1)
        return cols, cnts
