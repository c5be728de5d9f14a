"""Paillier with g = n + 1, DJN obfuscators, CRT decryption — batched.

Scalar layer (phe-compatible)::

    encrypt(m)  = (1 + m·n) · r' mod n²        r' = hs^α, hs = h^n mod n², α ≥ n_bits/2 random bits
    decrypt(c)  = CRT( L_p(c^(p-1) mod p²)·h_p mod p,  L_q(c^(q-1) mod q²)·h_q mod q )
    add         = c1 · c2 mod n²
    mul by k    = c^k mod n²   (c^-1 then |k| for negative k)

A hefl ciphertext is a valid ``phe`` raw ciphertext for the same key and vice versa
(``kit.to_phe()``, ``CipherArray.raw()``, ``kit.from_raw()``).

``textbook=True`` uses r^n mod n² with a fresh r < n instead of the DJN obfuscator.
"""

from __future__ import annotations

import json
import logging
import secrets

import gmpy2
import numpy as np

from hefl.errors import ConfigError, InsecureKeyError, InvalidCiphertextError

from ._backend import PaillierBackend, PaillierParams, ints_to_limbs, limbs_to_ints
from ._limbkit import LimbKit
from ._pool import ObfuscatorPool
from ._select import default_n_jobs, resolve_backend
from .base import MAX_KEY_BITS, CipherArray, SecretKit, read_key_doc

__all__ = ["keygen", "PaillierPublicKit", "PaillierSecretKit", "MIN_SECURE_BITS"]

log = logging.getLogger(__name__)

MIN_SECURE_BITS = 2048


def _random_prime(bits: int) -> int:
    while True:
        cand = secrets.randbits(bits) | (3 << (bits - 2)) | 1  # top two bits set: p·q has 2·bits bits
        p = gmpy2.next_prime(cand)
        if p.bit_length() == bits:
            return int(p)


def _make_backend(params: PaillierParams, backend: str, n_jobs: int | None) -> PaillierBackend:
    choice = resolve_backend(backend)
    jobs = default_n_jobs() if n_jobs is None else int(n_jobs)
    if choice == "gpu":
        from hefl.gpu.backend import GpuPaillierBackend

        gpu = GpuPaillierBackend(params, n_jobs=jobs)
        gpu.warm_up()  # every kernel loads with the kit, none inside its first operation
        return gpu
    from ._cpu import CpuPaillierBackend

    return CpuPaillierBackend(params, n_jobs=jobs)


class PaillierPublicKit(LimbKit):
    """Encrypt and evaluate under a Paillier public key (n, hs)."""

    scheme = "paillier"

    def __init__(self, n: int, hs: int, *, alpha_bits: int | None = None, backend: str = "auto",
                 n_jobs: int | None = None, textbook: bool = False, _params: PaillierParams | None = None):
        self.n = int(n)
        self.nsquare = self.n * self.n
        self.hs = int(hs)
        self.alpha_bits = int(alpha_bits or (self.n.bit_length() + 1) // 2)
        self.textbook = bool(textbook)
        self.params = _params or PaillierParams(n=self.n, hs=self.hs, alpha_bits=self.alpha_bits)
        self.backend_name = backend
        self._n_jobs = n_jobs
        self.backend = _make_backend(self.params, backend, n_jobs)
        self.Ln = self.params.limbs_n
        self.Lc = self.params.limbs_c
        self.item_shape = (self.Lc,)
        self.cipher_width = 8 * self.Lc
        self.plaintext_bits = self.n.bit_length() - 1
        self._pool = ObfuscatorPool(self._fresh_obfuscators)
        super().__init__()

    @property
    def key_size(self) -> int:
        return self.n.bit_length()

    # -- serialisation -----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        doc = {"scheme": "paillier", "n": format(self.n, "x"), "hs": format(self.hs, "x"),
               "alpha_bits": self.alpha_bits}
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, allow_insecure: bool = False, backend: str = "auto",
                   n_jobs: int | None = None) -> PaillierPublicKit:
        """Load a public kit sent by a peer; checks the key size and the DJN base."""
        f = read_key_doc(data, "paillier", "Paillier", ("n", "hs"), ("alpha_bits",))
        n, hs, ab = f["n"], f["hs"], f["alpha_bits"]
        bits = n.bit_length()
        if bits > MAX_KEY_BITS:
            raise InvalidCiphertextError(f"Paillier public key of {bits} bits exceeds the limit of {MAX_KEY_BITS}")
        if bits < MIN_SECURE_BITS and not allow_insecure:
            raise InsecureKeyError(f"public key of {bits} bits; at least {MIN_SECURE_BITS} required")
        if n < 3 or n % 2 == 0:
            raise InvalidCiphertextError("invalid Paillier public key: n must be odd and ≥ 3, got "
                                         + (f"n = {n}" if n < 3 else f"an even n of {bits} bits"))
        if not 1 <= hs < n * n:
            raise InvalidCiphertextError("invalid Paillier public key: hs is outside [1, n²)")
        if gmpy2.gcd(hs, n) != 1:
            raise InvalidCiphertextError("invalid Paillier public key: hs shares a factor with n (not in Z*_{n²})")
        # α of about n/2 bits is what DJN needs; more only grows the receiver's tables
        if not bits // 2 <= ab <= (bits + 1) // 2 + 64:
            raise InvalidCiphertextError(f"invalid Paillier public key: alpha_bits {ab} outside "
                                         f"[n_bits/2, n_bits/2 + 64] = [{bits // 2}, {(bits + 1) // 2 + 64}]")
        return cls(n, hs, alpha_bits=ab, backend=backend, n_jobs=n_jobs)

    def to_phe(self):
        """The ``phe.PaillierPublicKey`` of this key."""
        import phe

        return phe.PaillierPublicKey(self.n)

    # -- obfuscators -------------------------------------------------------------------
    def precompute(self, count: int, *, background: bool = False, low_priority: bool = False) -> None:
        """Fill the obfuscator pool with ``count`` fresh obfuscators (each used once).

        With ``background=True``, ``n_jobs`` threads fill it while the caller goes on (the
        native kernels release the GIL); ``low_priority=True`` lowers those threads' CPU
        priority (Linux ``nice`` 10), so the fill only soaks up otherwise idle cores —
        e.g. while a peer builds histograms.
        """
        self._pool.fill(count, background=background, low_priority=low_priority,
                        jobs=getattr(self.backend, "n_jobs", 1))

    def _fresh_obfuscators(self, count: int, serial: bool = False) -> np.ndarray:
        if self.textbook:
            rs = []
            while len(rs) < count:
                r = secrets.randbelow(self.n)
                if r > 1 and gmpy2.gcd(r, self.n) == 1:
                    rs.append(r)
            base = ints_to_limbs(rs, self.Lc)
            e = np.broadcast_to(ints_to_limbs([self.n], self.Ln), (count, self.Ln))
            return self.backend.mul_scalar(base, np.ascontiguousarray(e))
        if serial and hasattr(self.backend, "obfuscators") and self.backend.name == "cpu":
            return self.backend.obfuscators(count, serial=True)
        return self.backend.obfuscators(count)

    def _take_obfuscators(self, count: int) -> np.ndarray:
        pooled = self._pool.take(count)
        have = 0 if pooled is None else pooled.shape[0]
        if have == count:
            return pooled
        fresh = self._fresh_obfuscators(count - have)
        return fresh if pooled is None else np.concatenate([pooled, fresh])

    # -- engine ------------------------------------------------------------------------
    def _encrypt_residues(self, res):
        res = np.ascontiguousarray(res, dtype=np.uint64).reshape(-1, self.Ln)
        if res.shape[0] == 0:
            return np.empty((0, self.Lc), dtype=np.uint64)
        return self.backend.encrypt(res, self._take_obfuscators(res.shape[0]))

    def _add_plain(self, a, res):
        # a · (1 + m·n): the ciphertext's own randomness hides the sum
        if a.shape[0] == 0:
            return a.copy()
        return self.backend.encrypt(np.ascontiguousarray(res).reshape(-1, self.Ln), a)

    def _neg(self, a):
        nsq = gmpy2.mpz(self.nsquare)
        return ints_to_limbs([int(gmpy2.invert(gmpy2.mpz(v), nsq)) for v in limbs_to_ints(a)], self.Lc)

    def _mul_ints(self, a, k):
        k = [int(v) for v in np.asarray(k, dtype=object).ravel()]
        if not k:
            return a.copy()
        neg = np.array([v < 0 for v in k])
        mags = [abs(v) % self.n for v in k]
        base = a
        if neg.any():
            base = a.copy()
            base[neg] = self._neg(np.ascontiguousarray(a[neg]))
        le = max(1, (max(mags).bit_length() + 63) // 64)
        return self.backend.mul_scalar(base, ints_to_limbs(mags, le))

    @property
    def cipher_modulus(self) -> int:
        """Ciphertexts live in [1, nsquare)."""
        return self.nsquare

    def _checker(self):
        from ._cpu import CpuPaillierBackend

        return self.backend if isinstance(self.backend, CpuPaillierBackend) else self._cpu_checker()

    def _cpu_checker(self):
        from ._cpu import CpuPaillierBackend

        # not "_checker": an instance attribute of that name would shadow the method
        if getattr(self, "_cpu_check_backend", None) is None:
            self._cpu_check_backend = CpuPaillierBackend(
                PaillierParams(n=self.n, hs=self.hs, alpha_bits=self.alpha_bits),
                n_jobs=default_n_jobs() if self._n_jobs is None else self._n_jobs)
        return self._cpu_check_backend

    def _from_ints(self, values):
        if any(not 0 < int(v) < self.nsquare for v in values):
            raise InvalidCiphertextError("ciphertext outside [1, n²)")
        return self._check(ints_to_limbs(values, self.Lc))


class PaillierSecretKit(PaillierPublicKit, SecretKit):
    """A Paillier kit holding p and q: decrypts (CRT) and encrypts with CRT obfuscators."""

    def __init__(self, p: int, q: int, hs: int, *, backend: str = "auto", n_jobs: int | None = None,
                 textbook: bool = False):
        n = int(p) * int(q)
        alpha_bits = (n.bit_length() + 1) // 2
        params = PaillierParams(n=n, hs=int(hs), alpha_bits=alpha_bits, p=int(p), q=int(q))
        super().__init__(n, hs, alpha_bits=alpha_bits, backend=backend, n_jobs=n_jobs, textbook=textbook,
                         _params=params)
        self._p, self._q = int(p), int(q)

    def public_kit(self) -> PaillierPublicKit:
        """The public part (n, hs) as its own kit, e.g. to send to passive parties."""
        pub = getattr(self, "_public", None)
        if pub is None:
            pub = PaillierPublicKit(self.n, self.hs, alpha_bits=self.alpha_bits, backend=self.backend_name,
                                    n_jobs=self._n_jobs, textbook=self.textbook)
            self._public = pub
        return pub

    def to_phe(self):
        """``(phe.PaillierPublicKey, phe.PaillierPrivateKey)`` of this key."""
        import phe

        pk = phe.PaillierPublicKey(self.n)
        return pk, phe.PaillierPrivateKey(pk, self._p, self._q)

    def decrypt_raw(self, ca: CipherArray) -> np.ndarray:
        """Decrypt to encoded residues mod n, as (size, Ln) uint64 limbs (for packed data)."""
        self.check_same(ca.kit)
        flat = ca._flat()
        if flat.shape[0] == 0:
            return np.empty((0, self.Ln), dtype=np.uint64)
        self._check(flat)  # the full check (units) before the secret key touches peer data
        return self.backend.decrypt(flat)

    def decrypt(self, ca: CipherArray) -> np.ndarray:
        return self.encoder.decode_limbs(self.decrypt_raw(ca), ca.frac_bits).reshape(ca.shape)


def keygen(key_size: int = 2048, *, backend: str = "auto", allow_insecure: bool = False,
           n_jobs: int | None = None, textbook: bool = False) -> PaillierSecretKit:
    """Generate a Paillier key pair and return its :class:`PaillierSecretKit`.

    Parameters
    ----------
    key_size : int
        Bits of n (2048 by default; 3072 supported).  Below 2048 raises
        :class:`~hefl.errors.InsecureKeyError` unless ``allow_insecure=True`` (tests only).
    backend : {"auto", "cpu", "gpu"}
        Where the batched arithmetic runs; ``"auto"`` picks a GPU when one is visible.
    n_jobs : int, optional
        CPU threads for batches (default: all cores this process may use).
    textbook : bool
        Use r^n obfuscators instead of DJN (slower; for comparison).
    """
    key_size = int(key_size)
    if key_size < MIN_SECURE_BITS and not allow_insecure:
        raise InsecureKeyError(
            f"key_size={key_size} is below {MIN_SECURE_BITS} bits; pass allow_insecure=True for tests only"
        )
    if key_size < 256 or key_size % 2:
        raise ConfigError(f"key_size must be an even number ≥ 256, got {key_size}")
    half = key_size // 2
    while True:
        p, q = _random_prime(half), _random_prime(half)
        if p != q and (p * q).bit_length() == key_size:
            break
    n = p * q
    # DJN: h = -x² mod n generates the squares' coset; hs = h^n mod n²
    x = secrets.randbelow(n - 2) + 2
    h = (-x * x) % n
    hs = int(gmpy2.powmod(h, n, n * n))
    return PaillierSecretKit(p, q, hs, backend=backend, n_jobs=n_jobs, textbook=textbook)
