"""HE engines of hetero LR: the encrypted building blocks the roles are written with.

An engine wraps one kit (a peer's public kit, or a party's own secret kit) and offers
the five operations the protocols need, with the same call shape for every scheme:

``encrypt(v)``
    a per-sample vector, in the engine's layout;
``matvec(pairs)``
    ``Σ_pairs Mᵀ·[[v]]`` for plaintext matrices ``M`` (n_samples, F): the ``Xᵀ·[[d]]``
    products of gradient descent;
``mask(product, n_random, extra)``
    add random masks (first ``n_random`` entries) and known extra values (loss pieces),
    with fresh encryption randomness, so that the key holder who opens it learns nothing
    about the masked entries (Paillier: nothing about how the ciphertext was computed);
``open(secret_kit, ct)``
    what the key holder does: decrypt the masked product;
``unmask(opened, state)``
    what the computing party does with the masked plaintexts it gets back.

Paillier / mock (:class:`AdditiveEngine`)
-----------------------------------------
Fixed point with exact integer algebra mod n: masks are uniform in Z_n (perfect hiding)
and cancel exactly, so a mock run and a Paillier run give bit-identical weights.
Encrypted scores and curvatures carry :data:`FRAC_ENC` fractional bits, plaintext
per-sample scalars :data:`FRAC_SCALAR`, residuals :data:`FRAC_D` = their sum.  Matrix
columns are quantised per column to :data:`COL_BITS` magnitude bits (a power-of-two scale
per column, private to the party that owns the matrix).

``Mᵀ·[[d]]`` for Paillier is a radix-2^w multi-exponentiation (Pippenger's bucket method)
instead of n·F modular exponentiations: for each w-bit digit position, the ciphertexts are
summed per digit value with one batched ``bucket_sum`` (one modular multiplication per
row and column), the buckets are combined with running sums (2·2^w multiplications per
column), and positions are joined by Horner's rule.  For the 14-bit (offset) columns and a
batch of 1,024 that is two 7-bit digits, ≈ 2,600 multiplications mod n² per column instead
of ≈ 20,000 for 1,024 14-bit exponentiations.

CKKS (:class:`CKKSEngine`)
--------------------------
TenSEAL vectors in a *sample-major replicated* layout: with ``W`` columns (a power of
two) each sample's value occupies ``W`` consecutive slots, so ``C = slots / W`` samples fit
in one ciphertext.  ``Mᵀ·[[v]]`` is then one plaintext multiplication per ciphertext by
the row-major matrix block, ciphertext additions across blocks, and a single strided
rotate-and-sum (``conv2d_im2col`` with a kernel of ones, log2(C) rotations) for all
columns at once.  Depth: two rescales, which the default parameters (8192, [60, 40, 40,
60], scale 2^40) provide.  Measured error on such sums: ≈ 1e-6 relative (2e-4 absolute on
values of a few hundred).  Masks are uniform in ±2^:data:`CKKS_MASK_BITS` — *statistical*
hiding (a gradient sum of magnitude G is hidden up to ≈ G / 2^26), and decryptions sent
back to the computing party get Gaussian noise of σ = 2^-:data:`CKKS_FLOOD_BITS` (noise
flooding against key-recovery from shared CKKS decryptions, Li & Micciancio 2021; it is a
mitigation, not a proof).  The noise of a CKKS ciphertext also depends on how it was
computed (no circuit privacy); that is documented, not hidden.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hefl.errors import ConfigError, EncodingOverflowError, ProtocolError
from hefl.he.base import CipherArray, PublicKit, SecretKit

__all__ = [
    "CKKS_FLOOD_BITS",
    "CKKS_MASK_BITS",
    "CKKS_MAX_BITS",
    "COL_BITS",
    "FRAC_D",
    "FRAC_ENC",
    "FRAC_SCALAR",
    "LOSS_EXP",
    "AdditiveEngine",
    "CKKSEngine",
    "direct_matvec",
    "keygen",
    "load_public_kit",
    "make_engine",
    "negated_sum",
    "next_pow2",
    "open_for_peer",
    "radix_matvec",
]

#: fractional bits of encrypted scores ``u`` and curvatures ``h``
FRAC_ENC = 24
#: fractional bits of plaintext per-sample scalars multiplied into ciphertexts
FRAC_SCALAR = 16
#: fractional bits of encrypted residuals and of ``s`` (= FRAC_ENC + FRAC_SCALAR)
FRAC_D = FRAC_ENC + FRAC_SCALAR
#: magnitude bits of the per-column quantisation of plaintext matrices
COL_BITS = 13
#: fixed binary exponent of loss columns opened by another party (their scale is public)
LOSS_EXP = 10
#: CKKS masks are uniform in ±2^CKKS_MASK_BITS
CKKS_MASK_BITS = 26
#: CKKS decryptions handed to a peer get N(0, 2^-CKKS_FLOOD_BITS) noise
CKKS_FLOOD_BITS = 10
#: largest magnitude (log2) of a per-sample value encrypted under CKKS (scores, residuals):
#: with |x| ≲ 64 and 1,024 rows the sums stay well inside the ±2^28 the masked results allow
CKKS_MAX_BITS = 12


def next_pow2(v: int) -> int:
    return 1 << max(0, int(v) - 1).bit_length()


# ----------------------------------------------------------------------------- kits


def keygen(he: str, key_size: int, *, backend: str = "auto", allow_insecure: bool = False,
           n_jobs: int | None = None) -> SecretKit:
    """A fresh secret kit for ``he`` ("paillier", "mock" or "ckks")."""
    if he == "paillier":
        from hefl.he import paillier

        return paillier.keygen(key_size, backend=backend, allow_insecure=allow_insecure, n_jobs=n_jobs)
    if he == "mock":
        from hefl.he import mock

        return mock.keygen(key_size)
    if he == "ckks":
        from hefl.he import ckks

        return ckks.keygen()
    raise ConfigError(f"unknown HE scheme {he!r}")


def load_public_kit(he: str, data: bytes, *, backend: str = "auto", allow_insecure: bool = False,
                    n_jobs: int | None = None) -> PublicKit:
    """A peer's public kit from its ``to_bytes()``; refuses other schemes and small keys."""
    data = bytes(data)
    if he == "paillier":
        from hefl.he.paillier import PaillierPublicKit

        return PaillierPublicKit.from_bytes(data, allow_insecure=allow_insecure, backend=backend, n_jobs=n_jobs)
    if he == "mock":
        from hefl.he.mock import MockPublicKit

        return MockPublicKit.from_bytes(data)
    if he == "ckks":
        from hefl.he.ckks import CKKSPublicKit

        return CKKSPublicKit.from_bytes(data)
    raise ConfigError(f"unknown HE scheme {he!r}")


def make_engine(kit: Any, *, width: int = 16) -> AdditiveEngine | CKKSEngine:
    """The engine for ``kit`` (``width`` is the CKKS layout's column count W)."""
    if kit.scheme == "ckks":
        return CKKSEngine(kit, width)
    return AdditiveEngine(kit)


# ----------------------------------------------------------------------------- helpers


def _limbs_to_ints(arr: np.ndarray) -> list[int]:
    arr = np.ascontiguousarray(arr, dtype="<u8")
    width = arr.shape[-1] * 8
    raw = arr.tobytes()
    return [int.from_bytes(raw[i : i + width], "little") for i in range(0, len(raw), width)]


def _ints_to_limbs(values: list[int], n_limbs: int) -> np.ndarray:
    buf = b"".join(int(v).to_bytes(8 * n_limbs, "little") for v in values)
    return np.frombuffer(buf, dtype="<u8").reshape(-1, n_limbs).astype(np.uint64)


def column_exponents(mats: list[np.ndarray], fixed: dict[int, int] | None = None) -> np.ndarray:
    """Per-column power-of-two scales so that ``|M·2^e| < 2^COL_BITS`` in every matrix."""
    F = mats[0].shape[1]
    e = np.full(F, 60, dtype=np.int64)
    for M in mats:
        amax = np.abs(M).max(axis=0) if M.shape[0] else np.zeros(F)
        with np.errstate(divide="ignore"):
            ej = np.where(amax > 0, np.floor(np.log2((2.0**COL_BITS - 1) / np.where(amax > 0, amax, 1.0))), 60)
        e = np.minimum(e, ej.astype(np.int64))
    e = np.clip(e, -1000, 60)
    for j, v in (fixed or {}).items():
        e[j] = int(v)
    return e


def quantise(M: np.ndarray, exps: np.ndarray) -> np.ndarray:
    """``round(M · 2^e)`` per column, as int64 (overflow raises)."""
    scaled = np.asarray(M, dtype=np.float64) * np.exp2(exps.astype(np.float64))
    if scaled.size and not np.all(np.isfinite(scaled)):
        raise EncodingOverflowError("cannot quantise NaN or infinite values")
    if scaled.size and np.max(np.abs(scaled)) >= 2.0**62:
        raise EncodingOverflowError(
            f"value {np.max(np.abs(M)):.4g} does not fit the fixed-point encoding: training diverged "
            "(lower learning_rate, or standardise the features)"
        )
    return np.rint(scaled).astype(np.int64)


def _choose_window(bits: int, n_rows: int) -> int:
    """Digit width minimising (positions · rows) + (positions · 2 · 2^w) per column."""
    best, best_w = None, 1
    for w in range(1, 13):
        k = -(-bits // w)
        cost = k * n_rows + k * 2 * (1 << w)
        if best is None or cost < best:
            best, best_w = cost, w
    return best_w


def radix_matvec(enc: CipherArray, Q: np.ndarray, window: int | None = None) -> CipherArray:
    """Exact ``Σ_i Q[i, j]·[[c_i]]`` for an integer matrix ``Q`` (n, F) — Pippenger buckets.

    Columns are shifted to be non-negative (``P = Q + off_j``), split into w-bit digits;
    one ``bucket_sum`` gathers, for every (position, column, digit value), the sum of the
    ciphertexts with that digit (zero digits are skipped); running sums turn the buckets
    into ``Σ_v v·B_v``; Horner joins positions; ``off_j·Σ_i c_i`` is subtracted at the end.
    Columns of different bit lengths are processed in groups so short columns stay cheap.
    """
    kit = enc.kit
    n, F = Q.shape
    if F == 0:
        return CipherArray(kit, np.empty((0,) + kit.item_shape, dtype=enc.data.dtype), (0,), enc.frac_bits)
    off = np.maximum(-Q.min(axis=0), 0) if n else np.zeros(F, dtype=np.int64)
    P = Q + off
    col_bits = np.array([max(1, int(v).bit_length()) for v in (P.max(axis=0) if n else np.zeros(F, np.int64))])
    w = int(window) if window else _choose_window(min(int(col_bits.max()), COL_BITS + 1), max(n, 1))
    out: list[CipherArray | None] = [None] * F
    groups: dict[int, list[int]] = {}
    for j, b in enumerate(col_bits):
        groups.setdefault(-(-int(b) // w), []).append(j)
    nb = 1 << w
    mask = nb - 1
    for K, cols in sorted(groups.items()):
        Pg = P[:, cols]
        ids = np.concatenate([((Pg >> (k * w)) & mask) for k in range(K)], axis=1).astype(np.int32)
        ids[ids == 0] = -1  # digit 0 contributes nothing
        B = kit.bucket_sum(enc, ids, nb)  # (K*G, nb)
        run = B[:, nb - 1]
        tot = run
        for v in range(nb - 2, 0, -1):
            run = run + B[:, v]
            tot = tot + run
        G = len(cols)
        tot = tot.reshape(K, G)
        acc = tot[K - 1]
        for k in range(K - 2, -1, -1):
            acc = acc * (1 << w) + tot[k]
        for g, j in enumerate(cols):
            out[j] = acc[g : g + 1]
    from hefl.he.base import concatenate

    res = concatenate([o for o in out if o is not None])
    if np.any(off):
        res = res - enc.sum() * off
    return res


def direct_matvec(enc: CipherArray, Q: np.ndarray) -> CipherArray:
    """``Σ_i Q[i, j]·[[c_i]]`` by n·F scalar products (exact; what the mock kit uses)."""
    n, F = Q.shape
    if F == 0 or n == 0:
        return radix_matvec(enc, Q)
    prod = (enc.reshape(-1, 1) * Q).reshape(-1)
    return enc.kit.bucket_sum(prod, np.tile(np.arange(F, dtype=np.int32), n), F)


# ----------------------------------------------------------------------------- additive


@dataclass
class MaskState:
    """What the computing party keeps to remove its masks."""

    masks: list = field(default_factory=list)
    exps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    frac_bits: int = 0
    n_random: int = 0


class AdditiveEngine:
    """Protocol operations over a Paillier or mock kit (exact fixed point, masks in Z_n)."""

    scheme = "additive"

    def __init__(self, kit: Any, method: str = "auto"):
        self.kit = kit
        self.n = int(kit.n)
        self.n_limbs = max(1, (self.n.bit_length() + 63) // 64)
        # mock: the direct product is exact and faster on object arrays; Paillier: radix
        self.method = ("direct" if kit.scheme == "mock" else "radix") if method == "auto" else method

    # encryption ---------------------------------------------------------------------
    def encrypt(self, v: np.ndarray, frac_bits: int = FRAC_ENC) -> CipherArray:
        return self.kit.encrypt(np.asarray(v, dtype=np.float64), frac_bits=frac_bits)

    def encrypt_zero(self, count: int, frac_bits: int) -> CipherArray:
        """Fresh encryptions of 0 (to re-randomise ciphertexts derived from a peer's)."""
        return self.kit.encrypt_encoded(np.zeros(count, dtype=object), frac_bits=frac_bits, shape=(count,))

    def precompute(self, count: int) -> None:
        """Start computing ``count`` obfuscators in the background (Paillier only)."""
        pre = getattr(self.kit, "precompute", None)
        if pre is not None and count > 0:
            pre(int(count), background=True)

    # arithmetic ---------------------------------------------------------------------
    def scale(self, enc: CipherArray, v: np.ndarray) -> CipherArray:
        """Elementwise ``[[x]] ⊙ v`` with ``v`` quantised to FRAC_SCALAR bits."""
        scaled = np.rint(np.asarray(v, dtype=np.float64) * 2.0**FRAC_SCALAR)
        if scaled.size and not (np.all(np.isfinite(scaled)) and np.max(np.abs(scaled)) < 2.0**62):
            raise EncodingOverflowError(
                "score does not fit the fixed-point encoding: training diverged "
                "(lower learning_rate, or standardise the features)"
            )
        prod = enc * scaled.astype(np.int64)
        return CipherArray(prod.kit, prod.data, prod.shape, prod.frac_bits + FRAC_SCALAR)

    def matvec(self, pairs: list[tuple[CipherArray, np.ndarray]], fixed: dict[int, int] | None = None
               ) -> tuple[CipherArray, np.ndarray]:
        """``Σ Mᵀ·[[v]]`` over ``pairs``; returns the (F,) product and its column exponents."""
        mats = [np.asarray(M, dtype=np.float64) for _, M in pairs]
        exps = column_exponents(mats, fixed)
        frac = {enc.frac_bits for enc, _ in pairs}
        if len(frac) != 1:
            raise ValueError(f"matvec operands with different scales {sorted(frac)}")
        total = None
        for (enc, _), M in zip(pairs, mats):
            Q = quantise(M, exps)
            if self.method == "direct":
                part = direct_matvec(enc, Q)
            else:
                part = radix_matvec(enc, Q)
            total = part if total is None else total + part
        assert total is not None
        return total, exps

    # masking ------------------------------------------------------------------------
    def loss_mask(self) -> np.ndarray:
        """A uniform residue mod n (as limbs) hiding a loss piece from the arbiter."""
        return _ints_to_limbs([secrets.randbelow(self.n)], self.n_limbs)

    def mask(self, product: tuple[CipherArray, np.ndarray], n_random: int, extra=(), offsets=()
             ) -> tuple[CipherArray, MaskState]:
        """Add a fresh encryption of ``[r_0 … r_{n_random-1}, extra…]``.

        ``r`` are uniform in Z_n; ``extra`` are real values encoded at each column's scale
        (the loss pieces another party will read); ``offsets`` (limb rows, one per extra)
        are residues added on top (other parties' loss masks, already negated as needed).
        """
        ca, exps = product
        F = ca.shape[0]
        extra = list(extra)
        if n_random + len(extra) != F:
            raise ValueError(f"{n_random} masks + {len(extra)} extras for {F} columns")
        masks = [secrets.randbelow(self.n) for _ in range(n_random)]
        res = list(masks)
        offs = [0] * len(extra)
        for j, o in enumerate(offsets):
            offs[j] = sum(_limbs_to_ints(np.atleast_2d(o)))
        for j, x in enumerate(extra):
            e = int(exps[n_random + j]) + ca.frac_bits
            val = round(float(x) * 2.0**e)
            res.append((val + offs[j]) % self.n)
        enc_mask = self.kit.encrypt_encoded(np.array(res, dtype=object), frac_bits=ca.frac_bits, shape=(F,))
        return ca + enc_mask, MaskState(masks, np.asarray(exps), ca.frac_bits, n_random)

    # key holder ---------------------------------------------------------------------
    def open(self, secret_kit: Any, ca: CipherArray) -> np.ndarray:
        """Decrypt to raw residues (F, limbs) uint64: masked values stay masked."""
        if not isinstance(ca, CipherArray):
            raise ProtocolError(f"expected a CipherArray, got {type(ca).__name__}")
        return np.ascontiguousarray(secret_kit.decrypt_raw(ca), dtype=np.uint64)

    def decode_sum(self, rows: list[np.ndarray], frac_bits: int) -> float:
        """Sum residue rows mod n and decode the signed fixed-point value (loss pieces)."""
        total = sum(sum(_limbs_to_ints(np.atleast_2d(r))) for r in rows) % self.n
        if total > self.n // 2:
            total -= self.n
        return total / 2**frac_bits

    # computing party ----------------------------------------------------------------
    def unmask(self, opened: Any, state: MaskState) -> np.ndarray:
        arr = np.asarray(opened)
        if arr.dtype != np.uint64 or arr.shape != (state.n_random, self.n_limbs):
            raise ProtocolError(
                f"masked plaintexts of shape {arr.shape} / {arr.dtype}, expected ({state.n_random}, {self.n_limbs}) uint64"
            )
        vals = _limbs_to_ints(arr)
        out = np.empty(state.n_random)
        half = self.n // 2
        for j, (m, r) in enumerate(zip(vals, state.masks)):
            v = (m - r) % self.n
            if v > half:
                v -= self.n
            out[j] = v / 2 ** (state.frac_bits + int(state.exps[j]))
        return out


# ----------------------------------------------------------------------------- CKKS


class CKKSEngine:
    """Protocol operations over a CKKS kit in the sample-major replicated layout.

    No ``scale`` or ``encrypt_zero``: the CKKS protocols never call them (they use two
    products instead of an elementwise scale, which a following product would need one
    more level for than the context has, and CKKS needs no encryptions of zero).
    """

    scheme = "ckks"

    def __init__(self, kit: Any, width: int):
        self.kit = kit
        slots = int(getattr(kit, "slots", 4096))
        self.W = next_pow2(max(1, int(width)))
        if self.W > slots:
            raise ConfigError(f"{self.W} columns do not fit the CKKS layout ({slots} slots)")
        self.C = slots // self.W  # samples per ciphertext (a power of two)
        self._rng = np.random.default_rng(np.frombuffer(secrets.token_bytes(32), dtype=np.uint64))

    def _padded(self, n: int) -> int:
        return -(-max(n, 1) // self.C) * self.C

    def encrypt(self, v: np.ndarray, frac_bits: int | None = None):
        v = np.asarray(v, dtype=np.float64)
        if v.size and not (np.all(np.isfinite(v)) and np.max(np.abs(v)) <= 2.0**CKKS_MAX_BITS):
            raise EncodingOverflowError(
                f"CKKS operands must stay within ±2^{CKKS_MAX_BITS} (got {np.max(np.abs(v)):.4g}): "
                "standardise the features and targets, lower learning_rate, or use he='paillier'"
            )
        pad = np.zeros(self._padded(v.shape[0]))
        pad[: v.shape[0]] = v
        return self.kit.encrypt(np.repeat(pad, self.W))

    def precompute(self, count: int) -> None:
        """Nothing to precompute for CKKS."""

    def matvec(self, pairs, fixed: dict[int, int] | None = None):
        from hefl.he.ckks import CKKSArray

        acc = None
        F = None
        for enc, M in pairs:
            M = np.asarray(M, dtype=np.float64)
            F = M.shape[1]
            if F > self.W:
                raise ValueError(f"{F} columns for a CKKS layout of width {self.W}")
            rows = len(enc.chunks) * self.C
            Mp = np.zeros((rows, self.W))
            Mp[: M.shape[0], :F] = M
            for k, chunk in enumerate(enc.chunks):
                p = chunk * Mp[k * self.C : (k + 1) * self.C].ravel().tolist()
                if acc is None:
                    acc = p
                else:
                    acc += p
        assert acc is not None and F is not None
        out = acc.conv2d_im2col([[1.0]] * self.C, self.W)
        return CKKSArray(self.kit, [out], (self.W,)), F

    def loss_mask(self) -> np.ndarray:
        return np.array([self._rng.uniform(-(2.0**CKKS_MASK_BITS), 2.0**CKKS_MASK_BITS)])

    def mask(self, product, n_random: int, extra=(), offsets=()):
        from hefl.he.ckks import CKKSArray

        ca, F = product
        extra = list(extra)
        if n_random + len(extra) != F:
            raise ValueError(f"{n_random} masks + {len(extra)} extras for {F} columns")
        r = self._rng.uniform(-(2.0**CKKS_MASK_BITS), 2.0**CKKS_MASK_BITS, size=n_random)
        vec = np.zeros(self.W)
        vec[:n_random] = r
        for j, x in enumerate(extra):
            vec[n_random + j] = float(x)
        for j, o in enumerate(offsets):
            vec[n_random + j] += float(np.asarray(o).ravel()[0])
        # plaintext masks, then a fresh encryption of zero to re-randomise (a fresh
        # encryption of the masks themselves would be mod-switched down without room)
        masked = ca.chunks[0] + vec.tolist()
        masked += self.kit.encrypt(np.zeros(self.W)).chunks[0]
        return CKKSArray(self.kit, [masked], (self.W,)), MaskState(list(r), np.zeros(0, dtype=np.int64), 0, n_random)

    def open(self, secret_kit: Any, ca) -> np.ndarray:
        from hefl.he.ckks import CKKSArray

        if not isinstance(ca, CKKSArray) or ca.shape != (self.W,):
            raise ProtocolError(f"expected a CKKS array of shape ({self.W},)")
        return np.asarray(secret_kit.decrypt(ca), dtype=np.float64)

    def flood(self, values: np.ndarray) -> np.ndarray:
        """Noise flooding of decryptions handed to a peer."""
        return values + self._rng.normal(0.0, 2.0**-CKKS_FLOOD_BITS, size=values.shape)

    def decode_sum(self, rows: list[np.ndarray], frac_bits: int = 0) -> float:
        return float(sum(float(np.asarray(r).ravel()[0]) for r in rows))

    def unmask(self, opened: Any, state: MaskState) -> np.ndarray:
        arr = np.asarray(opened, dtype=np.float64)
        if arr.shape != (state.n_random,):
            raise ProtocolError(f"masked values of shape {arr.shape}, expected ({state.n_random},)")
        return arr - np.asarray(state.masks)


def open_for_peer(engine, secret_kit: SecretKit, ca, n_random: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Key holder: decrypt a masked product.  The first ``n_random`` entries go back to the
    computing party (CKKS: noise-flooded); the remaining rows are loss pieces to keep."""
    opened = engine.open(secret_kit, ca)
    back = opened[:n_random]
    if isinstance(engine, CKKSEngine):
        back = engine.flood(back)
    rest = [opened[j : j + 1] for j in range(n_random, opened.shape[0])]
    return np.ascontiguousarray(back), rest


def negated_sum(engine, offsets: list[np.ndarray]) -> np.ndarray:
    """``−Σ offsets`` in the engine's plaintext unit (residue limbs mod n, or floats)."""
    if isinstance(engine, CKKSEngine):
        return np.array([-sum(float(np.asarray(o).ravel()[0]) for o in offsets)])
    total = sum(sum(_limbs_to_ints(np.atleast_2d(o))) for o in offsets)
    return _ints_to_limbs([(-total) % engine.n], engine.n_limbs)
