"""Kits and cipher arrays: the array layer every model calls.

A *kit* bundles a scheme's keys with batched operations.  :class:`PublicKit` encrypts
and evaluates; :class:`SecretKit` adds decryption.  Only public kits serialise
(``to_bytes``); there is no code path that writes a secret key for a peer.

:class:`CipherArray` is an n-dimensional array of ciphertexts under one public key, with
one fixed-point scale (``frac_bits``) for the whole array.  For the additive schemes
(Paillier, mock, OU) the ciphertexts are stored as one ``(*shape, L)`` uint64 limb array
(or an object array of residues for the mock), so whole batches go to the backend in
one call and serialise as fixed-width bytes without per-element work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from hefl.errors import EncodingOverflowError, InvalidCiphertextError, KeyMismatchError

from .encoding import FixedPointEncoder

__all__ = ["PublicKit", "SecretKit", "CipherArray", "AdditiveKit", "concatenate", "MAX_KEY_BITS",
           "read_key_doc"]

log = logging.getLogger(__name__)

#: Largest public modulus accepted from a peer, in bits (4x the secure minimum): a bigger one
#: buys no security and only makes the receiver do huge arithmetic (its encryption tables
#: grow with the key size times the peer-given exponent length, also bounded).
MAX_KEY_BITS = 8192
_HEX_RE = re.compile(rf"[0-9a-fA-F]{{1,{2 * MAX_KEY_BITS // 4}}}\Z")  # up to a residue mod n²


def read_key_doc(data: bytes, scheme: str, label: str, hex_fields: tuple[str, ...],
                 int_fields: tuple[str, ...] = ()) -> dict[str, int]:
    """Parse a public kit's JSON (``{"scheme": …, "n": "<hex>", …}``) sent by a peer.

    Returns the named fields as ints; every problem raises
    :class:`~hefl.errors.InvalidCiphertextError` naming the field and the value.
    """
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidCiphertextError(f"not a {label} public kit: not UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise InvalidCiphertextError(f"not a {label} public kit: a JSON {type(doc).__name__}, not an object")
    if doc.get("scheme") != scheme:
        raise InvalidCiphertextError(f"not a {label} public kit: scheme {str(doc.get('scheme'))[:40]!r}")
    out: dict[str, int] = {}
    for name in hex_fields:
        v = doc.get(name)
        if v is None:
            raise InvalidCiphertextError(f"{label} public kit has no field {name!r}")
        if not isinstance(v, str) or not _HEX_RE.match(v):
            raise InvalidCiphertextError(
                f"{label} public kit field {name!r} is not a hex number of at most "
                f"{2 * MAX_KEY_BITS} bits: {repr(v)[:40]}")
        out[name] = int(v, 16)
    for name in int_fields:
        v = doc.get(name)
        if v is None:
            raise InvalidCiphertextError(f"{label} public kit has no field {name!r}")
        if type(v) is not int:
            raise InvalidCiphertextError(f"{label} public kit field {name!r} is not an integer: {repr(v)[:40]}")
        out[name] = v
    return out


class PublicKit(ABC):
    """Encrypt and evaluate (no decryption).  Safe to send to peers."""

    scheme: str = "abstract"

    @abstractmethod
    def to_bytes(self) -> bytes:
        """Serialise the public part only."""

    def fingerprint(self) -> str:
        """Stable identifier of the public key (hex, 32 chars)."""
        fp = getattr(self, "_fp", None)
        if fp is None:
            fp = hashlib.sha256(self.scheme.encode() + b"\0" + self._fingerprint_material()).hexdigest()[:32]
            self._fp = fp
        return fp

    def _fingerprint_material(self) -> bytes:
        return self.to_bytes()

    def public_kit(self) -> PublicKit:
        """The public part of this kit (itself, for a public kit)."""
        return self

    def warm_up(self) -> dict[str, float]:
        """Load now what the kit's backend would load on first use (the GPU backend's
        kernels, which a GPU kit loads when it is made: then this costs next to nothing);
        seconds per item (empty where nothing is loaded lazily)."""
        return {}

    def same_key(self, other: PublicKit) -> bool:
        return other is self or (other.scheme == self.scheme and other.fingerprint() == self.fingerprint())

    def check_same(self, other: PublicKit) -> None:
        if not self.same_key(other):
            raise KeyMismatchError(
                f"ciphertexts under different public keys ({self.scheme}:{self.fingerprint()[:12]} "
                f"vs {other.scheme}:{other.fingerprint()[:12]})"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.fingerprint()[:12]})"


class SecretKit(PublicKit):
    """A kit that also holds the secret key and can decrypt.  Never serialised."""

    @abstractmethod
    def decrypt(self, ca: CipherArray) -> np.ndarray:
        """Decrypt and decode to a numpy array of the cipher array's shape."""

    def __reduce__(self):
        # keep secret keys out of pickles (multiprocessing, caches, accidental sends)
        raise TypeError(f"{type(self).__name__} holds a secret key and cannot be pickled")


class CipherArray:
    """An array of ciphertexts under one public key, with one fixed-point scale.

    Supports ``+`` (cipher or plain), ``-``, unary ``-``, ``*`` by plain integers or
    floats (fixed-point), ``sum()``, indexing, ``reshape``, :func:`concatenate`,
    ``to_bytes()`` (fixed width per ciphertext) and ``raw()`` (Python ints).
    """

    __array_priority__ = 100  # make numpy defer to our __radd__ / __rmul__

    def __init__(self, kit: AdditiveKit, data: np.ndarray, shape: tuple[int, ...], frac_bits: int):
        self.kit = kit
        self.data = data  # (*shape, *kit.item_shape)
        self.shape = tuple(map(int, shape))
        self.frac_bits = int(frac_bits)

    # -- array protocol --------------------------------------------------------------
    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d CipherArray")
        return self.shape[0]

    def _flat(self) -> np.ndarray:
        return self.data.reshape((self.size,) + self.kit.item_shape)

    def _new(self, flat: np.ndarray, shape=None, frac_bits=None) -> CipherArray:
        shape = self.shape if shape is None else tuple(shape)
        return CipherArray(
            self.kit,
            np.asarray(flat).reshape(shape + self.kit.item_shape),
            shape,
            self.frac_bits if frac_bits is None else frac_bits,
        )

    def __getitem__(self, idx: Any) -> CipherArray:
        # index an integer-position view, then gather those ciphertexts
        pos = np.arange(self.size).reshape(self.shape)[idx]
        pos = np.asarray(pos)
        return self._new(self._flat()[pos.ravel()], pos.shape)

    def reshape(self, *shape) -> CipherArray:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        new_shape = np.empty(self.shape, dtype=np.int8).reshape(shape).shape
        return self._new(self._flat(), new_shape)

    def ravel(self) -> CipherArray:
        return self.reshape(-1)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def copy(self) -> CipherArray:
        return self._new(self._flat().copy())

    # -- arithmetic ------------------------------------------------------------------
    def _aligned(self, other: CipherArray) -> tuple[CipherArray, CipherArray]:
        self.kit.check_same(other.kit)
        if self.frac_bits == other.frac_bits:
            return self, other
        if self.frac_bits < other.frac_bits:
            return self.rescale(other.frac_bits), other
        return self, other.rescale(self.frac_bits)

    def rescale(self, frac_bits: int) -> CipherArray:
        """Same values with more fractional bits (multiplies by 2^(Δf) homomorphically)."""
        if frac_bits < self.frac_bits:
            raise ValueError("can only increase the number of fractional bits")
        if frac_bits == self.frac_bits:
            return self
        k = np.full(self.size, 1 << (frac_bits - self.frac_bits), dtype=object)
        return self._new(self.kit._mul_ints(self._flat(), k), frac_bits=frac_bits)

    def __add__(self, other) -> CipherArray:
        if isinstance(other, CipherArray):
            a, b = self._aligned(other)
            shape = np.broadcast_shapes(a.shape, b.shape)
            fa = a._broadcast(shape)
            fb = b._broadcast(shape)
            return CipherArray(self.kit, self.kit._add(fa, fb).reshape(shape + self.kit.item_shape), shape, a.frac_bits)
        plain = np.asarray(other)
        if plain.dtype.kind not in "biuf" and plain.dtype != object:
            return NotImplemented
        shape = np.broadcast_shapes(self.shape, plain.shape)
        enc = self.kit._encode_residues(np.broadcast_to(plain, shape), self.frac_bits)
        return CipherArray(
            self.kit,
            self.kit._add_plain(self._broadcast(shape), enc).reshape(shape + self.kit.item_shape),
            shape,
            self.frac_bits,
        )

    __radd__ = __add__

    def _broadcast(self, shape) -> np.ndarray:
        if tuple(shape) == self.shape:
            return self._flat()
        pos = np.broadcast_to(np.arange(self.size).reshape(self.shape), shape).ravel()
        return self._flat()[pos]

    def __neg__(self) -> CipherArray:
        return self._new(self.kit._neg(self._flat()))

    def __sub__(self, other) -> CipherArray:
        if isinstance(other, CipherArray):
            return self + (-other)
        plain = np.asarray(other)
        if plain.dtype.kind in "biu":  # numpy negation wraps unsigned and int64 minimum values
            plain = plain.astype(object)
        return self + (-plain)

    def __rsub__(self, other) -> CipherArray:
        return (-self) + other

    def __mul__(self, other) -> CipherArray:
        if isinstance(other, CipherArray):
            return NotImplemented  # additive HE: cipher × cipher is not defined
        plain = np.asarray(other)
        if plain.dtype.kind in "biu" or (plain.dtype == object and all(isinstance(v, int) for v in plain.ravel())):
            ints = plain.astype(object)
            fb = 0
            big = self.kit.encoder.max_int
            if plain.dtype == object and ints.size and max(abs(int(v)) for v in ints.ravel()) > big:
                # k and k mod (the plaintext modulus) are the same multiplier: refuse, not wrap
                raise EncodingOverflowError(f"an integer multiplier exceeds the plaintext range (|k| ≤ {big:.4g})")
        elif plain.dtype.kind == "f":
            # mul_frac_bits, plus what keeps the smallest non-zero factor's leading digits
            # (a learning rate of 1e-7 would otherwise round to 0)
            nz = np.abs(plain[np.isfinite(plain) & (plain != 0)])
            extra = max(0, -int(np.floor(np.log2(nz.min())))) if nz.size else 0
            fb = self.kit.mul_frac_bits + extra
            ints = np.asarray(FixedPointEncoder(self.kit.n).encode_signed(plain, fb), dtype=object).reshape(plain.shape)
        else:
            return NotImplemented
        shape = np.broadcast_shapes(self.shape, plain.shape)
        k = np.broadcast_to(ints, shape).ravel()
        return CipherArray(
            self.kit,
            self.kit._mul_ints(self._broadcast(shape), k).reshape(shape + self.kit.item_shape),
            shape,
            self.frac_bits + fb,
        )

    __rmul__ = __mul__

    def sum(self, axis: int | None = None) -> CipherArray:
        """Encrypted sum over all elements (``axis=None``) or along one axis."""
        if axis is None:
            total = self.kit._sum(self._flat())
            return self._new(np.asarray([total], dtype=self._flat().dtype), ())
        if not -self.ndim <= axis < self.ndim:
            raise np.exceptions.AxisError(axis, self.ndim)
        axis = axis % self.ndim
        moved = np.moveaxis(np.arange(self.size).reshape(self.shape), axis, -1)
        rest = moved.shape[:-1]
        groups = moved.reshape(-1, moved.shape[-1])
        ids = np.repeat(np.arange(groups.shape[0], dtype=np.int32), groups.shape[1])
        flat = self._flat()[groups.ravel()]
        out = self.kit._bucket_sum(flat, ids[:, None], groups.shape[0])[0]
        return self._new(out, rest)

    def dot(self, plain: np.ndarray) -> CipherArray:
        """``self · plain`` for a 1-d cipher vector and a plain vector or (n, k) matrix."""
        plain = np.asarray(plain)
        if self.ndim != 1 or plain.shape[0] != self.shape[0]:
            raise ValueError(f"cannot dot shapes {self.shape} and {plain.shape}")
        if plain.ndim == 1:
            return (self * plain).sum()
        prod = self.reshape(-1, 1) * plain
        return prod.sum(axis=0)

    # -- serialisation ---------------------------------------------------------------
    @property
    def width(self) -> int:
        """Bytes per ciphertext in :meth:`to_bytes`."""
        return self.kit.cipher_width

    def to_bytes(self) -> bytes:
        """Fixed-width little-endian ciphertexts, row-major; shape and scale travel separately."""
        return self.kit._to_bytes(self._flat())

    def raw(self) -> list[int]:
        """The ciphertexts as Python ints (flattened; for interop with ``phe``)."""
        return self.kit._raw(self._flat())

    def __repr__(self) -> str:
        return f"CipherArray(shape={self.shape}, scheme={self.kit.scheme}, frac_bits={self.frac_bits})"


def concatenate(arrays, axis: int = 0) -> CipherArray:
    """Join cipher arrays under the same key along an existing axis."""
    arrays = list(arrays)
    if not arrays:
        raise ValueError("need at least one CipherArray to concatenate")
    first = arrays[0]
    fb = max(a.frac_bits for a in arrays)
    for a in arrays[1:]:
        first.kit.check_same(a.kit)
        if a.ndim != first.ndim:
            raise ValueError(f"cannot concatenate cipher arrays of {first.ndim} and {a.ndim} dimensions")
    if first.ndim == 0:
        raise ValueError("cannot concatenate 0-d cipher arrays")
    if not -first.ndim <= axis < first.ndim:
        raise np.exceptions.AxisError(axis, first.ndim)
    axis %= first.ndim  # of the cipher arrays: the stored data has the limbs after them
    arrays = [a.rescale(fb) for a in arrays]
    data = np.concatenate([a.data for a in arrays], axis=axis)
    shape = data.shape[: data.ndim - len(first.kit.item_shape)]
    return CipherArray(first.kit, data, shape, fb)


class AdditiveKit(PublicKit):
    """Shared array logic of additively homomorphic schemes over Z_n (Paillier, OU, mock).

    Subclasses provide the element engine: ``item_shape``, ``cipher_width``,
    ``plaintext_bits`` and the ``_``-prefixed batch operations on flat data.
    """

    #: fractional bits used when multiplying by a float plain
    mul_frac_bits: int = 20
    item_shape: tuple[int, ...] = ()
    n: int
    cipher_width: int
    plaintext_bits: int

    def __init__(self):
        self.encoder = FixedPointEncoder(self.n)

    # public API ----------------------------------------------------------------------
    def encrypt(self, x, frac_bits: int | None = None) -> CipherArray:
        """Encrypt a numeric array with one fixed-point scale (0 for ints, 40 bits for floats)."""
        x = np.asarray(x)
        if x.dtype.kind not in "biuf" and x.dtype != object:
            raise TypeError(f"cannot encrypt arrays of dtype {x.dtype}")
        fb = FixedPointEncoder.default_frac_bits(x) if frac_bits is None else int(frac_bits)
        res = self._encode_residues(x, fb)
        return CipherArray(self, self._encrypt_residues(res).reshape(x.shape + self.item_shape), x.shape, fb)

    def encrypt_encoded(self, residues, frac_bits: int = 0, shape=None) -> CipherArray:
        """Encrypt already-encoded plaintexts (residues mod n: Python ints or (N, Ln) limbs)."""
        limbs = self._residues_from(residues)
        shape = (limbs.shape[0],) if shape is None else tuple(shape)
        return CipherArray(self, self._encrypt_residues(limbs).reshape(shape + self.item_shape), shape, frac_bits)

    def from_raw(self, values, frac_bits: int = 0, shape=None) -> CipherArray:
        """Wrap raw ciphertext integers (e.g. from ``phe``'s ``ciphertext(False)``), validated."""
        values = list(values)
        for i, v in enumerate(values):
            if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)):
                raise InvalidCiphertextError(f"ciphertext {i} is not an integer: {type(v).__name__} {str(v)[:40]!r}")
        data = self._from_ints(values)
        shape = (len(values),) if shape is None else tuple(shape)
        return CipherArray(self, data.reshape(shape + self.item_shape), shape, frac_bits)

    def cipher_from_bytes(self, data: bytes, shape, frac_bits: int, *, adopt: bool = False) -> CipherArray:
        """Load fixed-width ciphertext bytes; every ciphertext is range-checked.

        ``adopt=True`` hands the buffer over (nothing else will read or write it, e.g. a
        frame just received): a writable, aligned one then becomes the array's memory
        instead of being copied."""
        shape = tuple(map(int, shape))
        count = math.prod(shape)  # exact: numpy's int64 product wraps around
        if len(data) != count * self.cipher_width:
            raise InvalidCiphertextError(
                f"{len(data)} bytes do not hold {count} ciphertexts of {self.cipher_width} bytes"
            )
        flat = self._from_bytes(data, count, adopt)
        return CipherArray(self, flat.reshape(shape + self.item_shape), shape, frac_bits)

    def bucket_sum(self, ca: CipherArray, bucket_ids, n_buckets: int) -> CipherArray:
        """Histogram primitive: per feature f and bucket b, the encrypted sum of the rows
        ``i`` with ``bucket_ids[i, f] == b`` (``-1`` skips a row).

        ``ca`` has shape (N,); ``bucket_ids`` (N,) or (N, F).  Returns shape (F, n_buckets)
        (or (n_buckets,) for 1-d ids).
        """
        self.check_same(ca.kit)
        if ca.ndim != 1:
            raise ValueError(f"bucket_sum needs a 1-d CipherArray, got shape {ca.shape}")
        ids2 = self._bucket_ids(bucket_ids, ca.shape[0], n_buckets)
        out = self._bucket_sum(ca._flat(), ids2, int(n_buckets))
        return self._histogram(out, np.ndim(bucket_ids) == 1, ids2.shape[1], n_buckets, ca.frac_bits)

    def hold(self, ca: CipherArray) -> Any:
        """Keep the 1-d ``ca`` where this kit's backend computes, for repeated
        :meth:`bucket_sum_held` over subsets of its rows (a SecureBoost tree's gradients,
        level after level): the GPU backend keeps a device copy, so that the rows are not
        gathered and moved again for every histogram; other backends hold ``ca`` itself,
        which is what this returns for them."""
        self.check_same(ca.kit)
        if ca.ndim != 1:
            raise ValueError(f"hold needs a 1-d CipherArray, got shape {ca.shape}")
        return ca

    def bucket_sum_held(self, held: Any, rows, bucket_ids, n_buckets: int) -> CipherArray:
        """``bucket_sum(ca[rows], bucket_ids, n_buckets)`` for ``held = hold(ca)``."""
        if not isinstance(held, CipherArray):
            raise TypeError(f"expected what this kit's hold() returned, got {type(held).__name__}")
        return self.bucket_sum(held[self._held_rows(rows, held.shape[0])], bucket_ids, n_buckets)

    @staticmethod
    def _held_rows(rows, size: int) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
            raise ValueError(f"rows must be a 1-d integer array, got {rows.dtype} of shape {rows.shape}")
        rows = rows.astype(np.int64, copy=False)
        if rows.size and (rows.min() < 0 or rows.max() >= size):
            raise ValueError(f"rows must be in [0, {size}), got [{rows.min()}, {rows.max()}]")
        return rows

    @staticmethod
    def _bucket_ids(bucket_ids, n_rows: int, n_buckets: int) -> np.ndarray:
        """``bucket_ids`` as checked (n_rows, F) int32."""
        ids = np.asarray(bucket_ids)
        if ids.ndim == 0:
            raise ValueError("bucket ids must be an (N,) or (N, F) array")
        if ids.size and ids.dtype.kind not in "iu":
            raise ValueError(f"bucket ids must be integers, got dtype {ids.dtype}")
        ids2 = ids.reshape(ids.shape[0], math.prod(ids.shape[1:]))
        if ids2.shape[0] != n_rows:
            raise ValueError(f"{ids2.shape[0]} bucket ids for {n_rows} ciphertexts")
        # checked before narrowing to int32 (2**32 + 1 would become bucket 1)
        if ids2.size and (int(ids2.max()) >= n_buckets or int(ids2.min()) < -1):
            raise ValueError(f"bucket ids must be in [-1, {n_buckets}), got [{ids2.min()}, {ids2.max()}]")
        return ids2.astype(np.int32)

    def _histogram(self, out, one_d: bool, n_feat: int, n_buckets: int, frac_bits: int) -> CipherArray:
        shape = (n_buckets,) if one_d else (n_feat, n_buckets)
        return CipherArray(self, out.reshape(shape + self.item_shape), shape, frac_bits)

    def compress_slots(self, n_values: int, width_bits: int) -> int:
        """How many values of ``width_bits`` to put into one ciphertext when compressing
        ``n_values`` of them (:meth:`shift_and_pack`) for this kit's owner to decrypt.

        Default: as many as fit. On a CPU compression and decryption are throughput-bound:
        compression's total work hardly depends on the count, decryptions fall with it.
        A backend with its own cost model (the GPU's) is asked instead.
        """
        most = max(1, self.plaintext_bits // max(1, int(width_bits)))
        pick = getattr(getattr(self, "backend", None), "compress_slots", None)
        if pick is None:
            return most
        return max(1, min(most, int(pick(int(n_values), int(width_bits), most))))

    def shift_and_pack(self, ca: CipherArray, width_bits: int, per_plaintext: int) -> CipherArray:
        """Cipher compression: put ``per_plaintext`` consecutive ciphertexts into one.

        Value k of a group ends at bit offset ``k · width_bits`` (Horner:
        C = (…(c_{k-1}·2^w + c_{k-2})·2^w …) + c_0), so one decryption yields the group.
        Each value must be a non-negative packed plaintext below ``2^width_bits``.
        """
        self.check_same(ca.kit)
        if per_plaintext * width_bits > self.plaintext_bits:
            raise EncodingOverflowError(
                f"{per_plaintext} values of {width_bits} bits exceed the {self.plaintext_bits}-bit plaintext"
            )
        if per_plaintext < 1:
            raise ValueError(f"per_plaintext must be at least 1, got {per_plaintext}")
        flat = ca._flat()
        m = flat.shape[0]
        if per_plaintext == 1:  # nothing to pack: the same ciphertexts
            return CipherArray(self, flat, (m,), 0)
        fused = getattr(getattr(self, "backend", None), "shift_pack", None)
        if fused is not None and m:
            # the backend does the whole Horner chain in one call (the GPU keeps it on the device)
            return CipherArray(self, fused(np.ascontiguousarray(flat), int(width_bits), int(per_plaintext)),
                               (-(-m // per_plaintext),), 0)
        groups = -(-m // per_plaintext)
        pad = groups * per_plaintext - m
        if pad:
            flat = np.concatenate([flat, self._encrypt_zero_trivial(pad)])
        cols = flat.reshape((groups, per_plaintext) + self.item_shape)
        acc = np.ascontiguousarray(cols[:, per_plaintext - 1])
        shift = np.full(groups, 1 << width_bits, dtype=object)
        for k in range(per_plaintext - 2, -1, -1):
            acc = self._add(self._mul_ints(acc, shift), np.ascontiguousarray(cols[:, k]))
        return CipherArray(self, acc, (groups,), 0)

    # engine hooks (flat data) ---------------------------------------------------------
    @abstractmethod
    def _encode_residues(self, x: np.ndarray, frac_bits: int):
        """Engine hook."""

    @abstractmethod
    def _residues_from(self, residues):
        """Engine hook."""

    @abstractmethod
    def _encrypt_residues(self, res):
        """Engine hook."""

    @abstractmethod
    def _encrypt_zero_trivial(self, count: int):
        """Engine hook."""

    @abstractmethod
    def _add(self, a, b):
        """Engine hook."""

    @abstractmethod
    def _add_plain(self, a, res):
        """Engine hook."""

    @abstractmethod
    def _neg(self, a):
        """Engine hook."""

    @abstractmethod
    def _mul_ints(self, a, k):
        """Engine hook."""

    @abstractmethod
    def _sum(self, a):
        """Engine hook."""

    @abstractmethod
    def _bucket_sum(self, a, ids, n_buckets):
        """Engine hook."""

    @abstractmethod
    def _to_bytes(self, a) -> bytes:
        """Engine hook."""

    @abstractmethod
    def _from_bytes(self, data: bytes, count: int, adopt: bool = False):
        """Engine hook (``adopt``: see :meth:`cipher_from_bytes`)."""

    @abstractmethod
    def _from_ints(self, values: list[int]):
        """Engine hook."""

    @abstractmethod
    def _raw(self, a) -> list[int]:
        """Engine hook."""
