"""Okamoto–Uchiyama (OU) in the accelerated form of Coron, Naccache and Paillier — batched.

Scalar layer::

    key         n = p²q,  p − 1 = t·u with t a prime of 2λ bits,  |p| = ⌈k/3⌉,  |q| = k − 2|p|
                G = g^u mod n   with g^(p−1) mod p² of order p
                H = g'^(n·u) mod n                                   (H mod p² has order t)
    encrypt(m)  = G^m · H^r mod n        r: fresh CSPRNG integer of r_bits = 2λ bits
                  (m < 0: (G⁻¹)^|m| · H^r, so short values keep short exponents)
    decrypt(c)  = L(c^t mod p²) · L(G^t mod p²)⁻¹ mod p,   L(x) = (x − 1) / p
                  (c^t kills H^r: H^t ≡ 1 mod p²; G^t = g^(p−1) lies in the order-p subgroup)
    add         = c1 · c2 mod n
    mul by k    = c^k mod n   (c⁻¹ then |k| for negative k)

The plaintext space is Z_p with p secret, so the public side cannot reduce mod p: plaintexts
travel as *signed residues mod n* (n − |m| for m < 0, exactly what
:class:`~hefl.he.encoding.FixedPointEncoder` writes) with |m| < 2^(|p| − 2) ≤ p/3; the
encryption kernel turns n − |m| into the exponent |m| on the ``G⁻¹`` table, and
decryption maps m mod p back to the same signed residue.  Sums and products that leave
±p/3 by less than the gap to the other side are caught at decoding (as with Paillier's
n/3); integer multipliers above the bound are refused; a result that overshoots by more
wraps unseen, so keep results well inside the range.

Parameters (HEU / SecretFlow's choice, security level λ by key size k): k = 2048 → λ = 112,
|t| = 224, |p| = 683, |q| = 682, |r| = 224; k = 3072 → λ = 128, |t| = |r| = 256;
k < 2048 (tests only) → λ = 80, |t| = |r| = 160.  p has its top two bits set (so the
public bound 2^(|p| − 2) is below p/3) and n has exactly k bits: 256-byte ciphertexts at
k = 2048.  HEU draws r with about λ bits (110 for 2048); hefl draws 2λ bits, since a
baby-step/giant-step search over r costs 2^(|r|/2) and would distinguish ciphertexts
with about 2^55 work at |r| = 110.  Every ciphertext gets a fresh r (no reuse of earlier
randomness); pooled obfuscators ``H^r`` are each used once.

Security: semantic security rests on the p-subgroup assumption (and, for this variant,
on short exponents in the order-t subgroup), one-wayness on factoring n = p²q.  OU is not
secure against chosen-ciphertext attacks: decrypting ``G^x`` for some x ≥ p yields
x mod p and so factors n.  hefl's security model is semi-honest; never hand a peer the
decryption of a ciphertext it chose without checking the value against a tight bound.
"""

from __future__ import annotations

import json
import logging
import secrets

import gmpy2
import numpy as np

from hefl.errors import (
    BackendUnavailableError,
    ConfigError,
    InsecureKeyError,
    InvalidCiphertextError,
)

from ._backend import ints_to_limbs
from ._limbkit import LimbKit
from ._ou_cpu import CpuOUBackend, OUParams
from ._pool import ObfuscatorPool
from ._select import default_n_jobs, resolve_backend
from .base import MAX_KEY_BITS, CipherArray, SecretKit, read_key_doc
from .encoding import FixedPointEncoder

__all__ = ["MIN_SECURE_BITS", "OUEncoder", "OUPublicKit", "OUSecretKit", "keygen", "security_bits"]

log = logging.getLogger(__name__)

MIN_SECURE_BITS = 2048


def security_bits(key_size: int) -> int:
    """λ of an OU key: 80 below 2048 bits (tests only), 112 up to 3071, 128 from 3072."""
    if key_size >= 3072:
        return 128
    if key_size >= 2048:
        return 112
    return 80


class OUEncoder(FixedPointEncoder):
    """Fixed-point encoder of the OU kit: signed residues mod the public n, bounded by p/3.

    Algebra (f fractional bits, B = 2^(|p| − 2) − 1 ≤ p/3)::

        encode(x) = round(x · 2^f)          if x ≥ 0
                  = n − round(|x| · 2^f)    if x < 0        (|round(x · 2^f)| ≤ B)
        decode(r) = r / 2^f  if r ≤ B,  (r − n) / 2^f  if r ≥ n − B,  else overflow

    ``n`` is the public modulus; the decryptor writes m mod p into the same form (m > p/2
    as n − (p − m)), so a result whose true value left ±p/3 decodes as an overflow.
    """

    def __init__(self, n: int, plaintext_bits: int):
        super().__init__(n)
        self.max_int = (1 << int(plaintext_bits)) - 1


def _make_backend(params: OUParams, backend: str, n_jobs: int | None) -> CpuOUBackend:
    choice = resolve_backend(backend)
    jobs = default_n_jobs() if n_jobs is None else int(n_jobs)
    if choice == "gpu":
        if backend == "gpu":
            raise BackendUnavailableError(
                "the OU kit has no GPU kernels yet; use backend='cpu' (or 'auto', which runs OU on the CPU)"
            )
        log.info("backend='auto': OU runs on the CPU (no OU GPU kernels yet)")
    return CpuOUBackend(params, n_jobs=jobs)


class OUPublicKit(LimbKit):
    """Encrypt and evaluate under an OU public key ``(n, G, H)``."""

    scheme = "ou"

    def __init__(self, n: int, G: int, H: int, *, p_bits: int, r_bits: int, backend: str = "auto",
                 n_jobs: int | None = None, _params: OUParams | None = None):
        self.n = int(n)
        self.G, self.H = int(G), int(H)
        self.p_bits, self.r_bits = int(p_bits), int(r_bits)
        self.params = _params or OUParams(n=self.n, G=self.G, H=self.H, p_bits=self.p_bits, r_bits=self.r_bits)
        self.backend_name = backend
        self._n_jobs = n_jobs
        self.backend = _make_backend(self.params, backend, n_jobs)
        self.Ln = self.Lc = self.params.limbs
        self.item_shape = (self.Lc,)
        self.cipher_width = 8 * self.Lc
        #: usable plaintext bits: every |m| < 2^plaintext_bits decrypts exactly (Packer budget)
        self.plaintext_bits = self.params.plaintext_bits
        self._pool = ObfuscatorPool(lambda k, serial: self.backend.obfuscators(k, serial=serial), "hefl-ou-pool")
        super().__init__()
        self.encoder = OUEncoder(self.n, self.plaintext_bits)

    @property
    def key_size(self) -> int:
        return self.n.bit_length()

    # -- serialisation -----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        doc = {"scheme": "ou", "n": format(self.n, "x"), "G": format(self.G, "x"), "H": format(self.H, "x"),
               "p_bits": self.p_bits, "r_bits": self.r_bits}
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, allow_insecure: bool = False, backend: str = "auto",
                   n_jobs: int | None = None) -> OUPublicKit:
        """Load a public kit sent by a peer; checks the key size, bases and parameters."""
        f = read_key_doc(data, "ou", "OU", ("n", "G", "H"), ("p_bits", "r_bits"))
        n, G, H, p_bits, r_bits = f["n"], f["G"], f["H"], f["p_bits"], f["r_bits"]
        bits = n.bit_length()
        if bits > MAX_KEY_BITS:
            raise InvalidCiphertextError(f"OU public key of {bits} bits exceeds the limit of {MAX_KEY_BITS}")
        if bits < MIN_SECURE_BITS and not allow_insecure:
            raise InsecureKeyError(f"public key of {bits} bits; at least {MIN_SECURE_BITS} required")
        if n < 3 or n % 2 == 0:
            raise InvalidCiphertextError("invalid OU public key: n must be odd and ≥ 3, got "
                                         + (f"n = {n}" if n < 3 else f"an even n of {bits} bits"))
        for name, v in (("G", G), ("H", H)):
            if not 1 < v < n or gmpy2.gcd(v, n) != 1:
                raise InvalidCiphertextError(f"invalid OU public key: {name} must be in Z*_n and not 1")
        if abs(3 * p_bits - bits) > 6:
            raise InvalidCiphertextError(f"invalid OU public key: p_bits {p_bits} does not fit a {bits}-bit n = p²q")
        # r of 2λ bits is what the scheme needs; more only grows the receiver's tables
        lo = 2 * security_bits(bits)
        if not lo <= r_bits <= lo + 64:
            raise InvalidCiphertextError(f"r_bits {r_bits} outside [{lo}, {lo + 64}] for a {bits}-bit key")
        return cls(n, G, H, p_bits=p_bits, r_bits=r_bits, backend=backend, n_jobs=n_jobs)

    # -- obfuscators (H^r) -------------------------------------------------------------
    def precompute(self, count: int, *, background: bool = False, low_priority: bool = False) -> None:
        """Fill the pool with ``count`` fresh obfuscators ``H^r`` (each used once).

        With ``background=True``, ``n_jobs`` threads fill it while the caller goes on (the
        kernels release the GIL); ``low_priority=True`` lowers those threads' priority
        (Linux ``nice`` 10).  Encryption then costs one short ``G^m`` product.
        """
        self._pool.fill(count, background=background, low_priority=low_priority, jobs=self.backend.n_jobs)

    # -- engine ------------------------------------------------------------------------
    def _encrypt_residues(self, res):
        res = np.ascontiguousarray(res, dtype=np.uint64).reshape(-1, self.Ln)
        if res.shape[0] == 0:
            return np.empty((0, self.Lc), dtype=np.uint64)
        pooled = self._pool.take(res.shape[0])
        if pooled is None:
            return self.backend.encrypt(res)
        k = pooled.shape[0]
        if k == res.shape[0]:
            return self.backend.encrypt(res, pooled)
        # the pool ran short: pooled H^r for the first rows, fresh r for the rest
        return np.concatenate([self.backend.encrypt(res[:k], pooled), self.backend.encrypt(res[k:])])

    def _add_plain(self, a, res):
        if a.shape[0] == 0:
            return a.copy()
        return self.backend.add_plain(a, np.ascontiguousarray(res).reshape(-1, self.Ln))

    def _neg(self, a):
        return self.backend.invert(a)

    def _mul_ints(self, a, k):
        # no reduction of k: the order of G is secret; negative k via c⁻¹
        k = [int(v) for v in np.asarray(k, dtype=object).ravel()]
        if not k:
            return a.copy()
        neg = np.array([v < 0 for v in k])
        mags = [abs(v) for v in k]
        base = a
        if neg.any():
            base = a.copy()
            base[neg] = self._neg(np.ascontiguousarray(a[neg]))
        le = max(1, (max(mags).bit_length() + 63) // 64)
        return self.backend.mul_scalar(base, ints_to_limbs(mags, le))

    @property
    def cipher_modulus(self) -> int:
        """Ciphertexts live in [1, n)."""
        return self.n

    def _from_ints(self, values):
        if any(not 0 < int(v) < self.n for v in values):
            raise InvalidCiphertextError("ciphertext outside [1, n)")
        return self._check(ints_to_limbs(values, self.Lc))


class OUSecretKit(OUPublicKit, SecretKit):
    """An OU kit holding p, q and t: decrypts, and encrypts mod p² and q joined by CRT."""

    def __init__(self, p: int, q: int, t: int, G: int, H: int, *, r_bits: int, backend: str = "auto",
                 n_jobs: int | None = None):
        p, q, t = int(p), int(q), int(t)
        n = p * p * q
        params = OUParams(n=n, G=int(G), H=int(H), p_bits=p.bit_length(), r_bits=int(r_bits), p=p, q=q, t=t)
        super().__init__(n, G, H, p_bits=p.bit_length(), r_bits=r_bits, backend=backend, n_jobs=n_jobs,
                         _params=params)
        self._p, self._q, self._t = p, q, t

    def public_kit(self) -> OUPublicKit:
        """The public part (n, G, H) as its own kit, e.g. to send to passive parties."""
        pub = getattr(self, "_public", None)
        if pub is None:
            pub = OUPublicKit(self.n, self.G, self.H, p_bits=self.p_bits, r_bits=self.r_bits,
                              backend=self.backend_name, n_jobs=self._n_jobs)
            self._public = pub
        return pub

    def decrypt_raw(self, ca: CipherArray) -> np.ndarray:
        """Decrypt to signed residues mod n, as (size, Ln) uint64 limbs (for packed data).

        A plaintext m ∈ [0, p) comes back as m when m ≤ p/2 and as n − (p − m) otherwise,
        i.e. in the form :meth:`encrypt_encoded` takes; packed values (< 2^plaintext_bits)
        come back unchanged.
        """
        self.check_same(ca.kit)
        flat = ca._flat()
        if flat.shape[0] == 0:
            return np.empty((0, self.Ln), dtype=np.uint64)
        self._check(flat)  # the full check (units) before the secret key touches peer data
        return self.backend.decrypt(flat)

    def decrypt(self, ca: CipherArray) -> np.ndarray:
        return self.encoder.decode_limbs(self.decrypt_raw(ca), ca.frac_bits).reshape(ca.shape)


def _prime_with_top_bits(bits: int) -> int:
    """A random prime of exactly ``bits`` bits with the top two bits set."""
    while True:
        p = int(gmpy2.next_prime(secrets.randbits(bits) | (3 << (bits - 2)) | 1))
        if p.bit_length() == bits:
            return p


def _subgroup_prime(p_bits: int, t: int) -> tuple[int, int]:
    """A prime p = t·u + 1 of ``p_bits`` bits with the top two bits set (p > 3·2^(p_bits−2))."""
    u_lo = -(-(3 << (p_bits - 2)) // t)
    u_hi = ((1 << p_bits) - 2) // t
    while True:
        u = (u_lo + secrets.randbelow(u_hi - u_lo + 1)) & ~1  # even u: t·u + 1 is odd
        p = t * u + 1
        if u > u_lo and u % t and gmpy2.is_prime(p, 40):
            return p, u


def keygen(key_size: int = 2048, *, backend: str = "auto", allow_insecure: bool = False,
           n_jobs: int | None = None) -> OUSecretKit:
    """Generate an OU key pair and return its :class:`OUSecretKit`.

    Parameters
    ----------
    key_size : int
        Bits of n = p²q (2048 by default; 3072 supported).  Below 2048 raises
        :class:`~hefl.errors.InsecureKeyError` unless ``allow_insecure=True`` (tests only).
    backend : {"auto", "cpu"}
        OU runs on the CPU; ``"gpu"`` raises :class:`~hefl.errors.BackendUnavailableError`.
    n_jobs : int, optional
        CPU threads for batches (default: all cores this process may use).

    Notes
    -----
    |p| = ⌈k/3⌉ (as HEU), |q| = k − 2|p|, |t| = 2λ, r of 2λ bits (see the module docstring);
    the plaintext space holds |m| < 2^(|p| − 2), e.g. 681 bits for k = 2048.
    """
    key_size = int(key_size)
    if key_size < MIN_SECURE_BITS and not allow_insecure:
        raise InsecureKeyError(
            f"key_size={key_size} is below {MIN_SECURE_BITS} bits; pass allow_insecure=True for tests only"
        )
    lam = security_bits(key_size)
    p_bits = -(-key_size // 3)
    q_bits = key_size - 2 * p_bits
    if key_size < 1024:
        raise ConfigError(f"an OU key needs at least 1024 bits, got key_size={key_size}")
    t = _prime_with_top_bits(2 * lam)
    p, u = _subgroup_prime(p_bits, t)
    p2 = p * p
    while True:
        q = _prime_with_top_bits(q_bits)
        if q != p and (p2 * q).bit_length() == key_size:
            break
    n = p2 * q

    def unit() -> int:
        while True:
            x = secrets.randbelow(n - 3) + 2
            if gmpy2.gcd(x, n) == 1:
                return x

    while True:  # g^(p-1) mod p² must generate the order-p subgroup: L(g^(p-1)) ≠ 0 mod p
        g = unit()
        if (gmpy2.powmod(g, p - 1, p2) - 1) // p % p:
            break
    G = int(gmpy2.powmod(g, u, n))
    while True:  # H must not vanish mod p² or q: the randomness has to reach both parts
        H = int(gmpy2.powmod(unit(), n * u, n))
        if H % p2 != 1 and H % q != 1:
            break
    return OUSecretKit(p, q, t, G, H, r_bits=2 * lam, backend=backend, n_jobs=n_jobs)
