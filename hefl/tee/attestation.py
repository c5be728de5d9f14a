"""Remote attestation: quotes that bind a code measurement, a channel key and a nonce.

A *quote* is what the TEE aggregator shows a data party before the party sends it
anything: signed evidence that code with a given **measurement** (hash of the
aggregator's code and configuration, :func:`measure`) holds the **channel key** (its
CurveZMQ public key, Z85) and answered the party's fresh **nonce**::

    party                                 aggregator
      nonce (32 random bytes)   ───────▶
                                ◀───────  Quote(body, evidence)
      verify_quote(quote, root=…, allowed=[…], nonce=…, channel_key=<key the party's
                   CURVE link pins for the aggregator>)

``body`` is canonical JSON (sorted keys, no spaces) of
``{"v", "provider", "measurement", "channel_key", "nonce", "issued_at", "log_key"}``;
``evidence`` is whatever the provider produces over ``sha512(body)``.

Adding a hardware provider (SGX DCAP, TDX, SEV-SNP) means subclassing
:class:`AttestationProvider`: ``evidence(report_data)`` asks the hardware for a quote
whose report-data field is the 64-byte ``sha512(body)``, and the class method
``check_evidence(body, evidence, root)`` verifies the vendor certificate chain up to
``root`` (e.g. Intel's SGX root CA), that the report data equals ``sha512(body)``, and
that the hardware-reported measurement (MRENCLAVE / MRTD / MEASUREMENT) equals
``body["measurement"]``. Register it with :func:`register_provider`; callers
(:class:`~hefl.tee.aggregator.TeeAggregator`, :class:`~hefl.tee.aggregator.TeeClient`,
:func:`verify_quote`) do not change.

:class:`SimulatedProvider` signs with a **software** Ed25519 key. It exercises the
protocol and nothing else: whoever runs the aggregator process can read its memory,
change its code, or take the signing key and sign any measurement. It logs a warning
each time it is created.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import logging
import os
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hefl.errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_AGE",
    "MEASURED_PACKAGES",
    "AttestationError",
    "AttestationProvider",
    "Quote",
    "SimulatedProvider",
    "canonical_json",
    "measure",
    "new_nonce",
    "register_provider",
    "verify_quote",
]

log = logging.getLogger(__name__)

QUOTE_VERSION = 1
DEFAULT_MAX_AGE = 300.0
NONCE_BYTES = 32
#: The packages whose code makes up the aggregator's code measurement: all of hefl (the
#: aggregator process loads the job runner, checkpoints, the HE kits' native extensions …).
MEASURED_PACKAGES = ("hefl",)
#: What counts as code in them: Python sources, native extensions (they do the secret-key
#: arithmetic), CUDA sources. Bytecode caches are checked instead (see :func:`measure`).
_CODE_SUFFIXES = (".py", ".cu", ".cuh", *importlib.machinery.EXTENSION_SUFFIXES)


class AttestationError(ProtocolError):
    """A quote was rejected: bad evidence, unknown measurement, stale nonce, wrong key."""


def canonical_json(obj: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no whitespace (what gets hashed and signed)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def measure(config: Mapping[str, Any], *, root: str | os.PathLike | None = None,
            packages: Iterable[str] = MEASURED_PACKAGES) -> str:
    """The code measurement of an aggregator: sha256 over its source files and config.

    Parameters
    ----------
    config : mapping
        The aggregator's configuration as JSON-able data (what it will compute and how).
    root : path, optional
        The directory holding ``hefl/`` (default: this installation's).
    packages : iterable of str
        Package directories (relative to ``root``) whose code files (Python sources, native
        extensions, CUDA sources) are measured.

    Returns
    -------
    str
        64 hex digits. Everyone running the same hefl build with the same config gets the
        same value, so a data party can compute the value to allow from its own reviewed
        copy (``hefl tee measure JOB.yaml``); the native extensions count, so every host
        needs the same build (one wheel).

    Raises
    ------
    AttestationError
        A bytecode cache that Python would load without checking it against its source
        (an unchecked hash-based ``.pyc``): the measured source would not be what runs.
    """
    base = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    h = hashlib.sha256(b"hefl-tee-measurement-v2\0")
    for pkg in sorted(packages):
        files = [f for f in (base / pkg).rglob("*") if f.is_file() and "__pycache__" not in f.parts
                 and f.name.endswith(_CODE_SUFFIXES)]
        for f in sorted(files):
            rel = f.relative_to(base).as_posix()
            h.update(rel.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
        _check_bytecode(base / pkg)
    h.update(b"config\0" + canonical_json(dict(config)))
    return h.hexdigest()


def _check_bytecode(pkg: Path) -> None:
    """Refuse unchecked hash-based bytecode caches under ``pkg`` (PEP 552): Python runs
    them without looking at the source, so a measured source could hide other code.
    (Timestamp caches are checked against the source's time and size, as Python does;
    an aggregator image should hold no bytecode it was not built with.)"""
    for pyc in pkg.rglob("__pycache__/*.pyc"):
        try:
            with open(pyc, "rb") as fh:
                header = fh.read(8)
        except OSError:
            continue
        if len(header) == 8 and int.from_bytes(header[4:8], "little") & 0b11 == 0b01:
            raise AttestationError(f"{pyc} is an unchecked hash-based bytecode cache: Python would run it "
                                   "without its measured source; remove it (or the __pycache__ folder)")


@dataclass(frozen=True)
class Quote:
    """Attestation evidence: canonical-JSON ``body`` plus the provider's ``evidence``."""

    body: bytes
    evidence: bytes

    @property
    def claims(self) -> dict:
        """The parsed body (raises :class:`AttestationError` when malformed)."""
        try:
            c = json.loads(self.body.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise AttestationError(f"quote body is not JSON: {exc}") from None
        need: dict[str, Any] = {"v": int, "provider": str, "measurement": str, "channel_key": str, "nonce": str,
                "issued_at": (int, float), "log_key": str}
        if not isinstance(c, dict) or set(c) != set(need) or not all(
                isinstance(c[k], t) for k, t in need.items()):
            raise AttestationError(f"quote body must have exactly the keys {sorted(need)}")
        return c

    def to_wire(self) -> dict:
        """A payload the transport can carry (``{"body": bytes, "evidence": bytes}``)."""
        return {"body": self.body, "evidence": self.evidence}

    @classmethod
    def from_wire(cls, obj: Any) -> Quote:
        if not (isinstance(obj, dict) and isinstance(obj.get("body"), bytes)
                and isinstance(obj.get("evidence"), bytes) and len(obj) == 2):
            raise AttestationError("a quote must arrive as {'body': bytes, 'evidence': bytes}")
        return cls(obj["body"], obj["evidence"])


class AttestationProvider(ABC):
    """Produces quotes for the aggregator; subclasses wrap one TEE technology.

    Subclasses set ``name`` and implement :meth:`evidence`, :meth:`root` and the class
    method :meth:`check_evidence`; see the module docstring for what a hardware
    provider checks.
    """

    name: ClassVar[str]
    #: Whether this provider's evidence comes from hardware (False: development only).
    hardware: ClassVar[bool] = False

    @abstractmethod
    def evidence(self, report_data: bytes) -> bytes:
        """Evidence over the 64-byte ``report_data`` (``sha512(body)``)."""

    @abstractmethod
    def root(self) -> bytes:
        """The trust anchor verifiers need (public; e.g. a vendor root certificate)."""

    @classmethod
    @abstractmethod
    def check_evidence(cls, body: bytes, evidence: bytes, root: bytes) -> None:
        """Raise :class:`AttestationError` unless ``evidence`` vouches for ``body`` under ``root``."""

    def quote(self, *, measurement: str, channel_key: str, nonce: bytes, log_key: str = "") -> Quote:
        """A quote binding ``measurement``, ``channel_key`` (Z85), ``nonce`` and ``log_key``."""
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
        body = canonical_json({"v": QUOTE_VERSION, "provider": self.name, "measurement": measurement,
                               "channel_key": channel_key, "nonce": nonce.hex(),
                               "issued_at": time.time(), "log_key": log_key})
        return Quote(body, self.evidence(hashlib.sha512(body).digest()))


_PROVIDERS: dict[str, type[AttestationProvider]] = {}


def register_provider(cls: type[AttestationProvider]) -> type[AttestationProvider]:
    """Make quotes of ``cls.name`` verifiable by :func:`verify_quote` (usable as a decorator)."""
    _PROVIDERS[cls.name] = cls
    return cls


@register_provider
class SimulatedProvider(AttestationProvider):
    """A software-only provider: Ed25519 signature over ``sha512(body)``. **Not secure.**

    It offers no hardware protection at all: the signing key lives in ordinary process
    memory (or a file), so the operator of the aggregator host can read the aggregator's
    memory (keys, masked gradients), run modified code, or sign a quote for any
    measurement. Use it for development and tests only.

    Parameters
    ----------
    signing_key : bytes, optional
        32-byte Ed25519 private key (fresh when ``None``); its public key is the root.
    """

    name = "simulated"
    hardware = False

    def __init__(self, signing_key: bytes | None = None) -> None:
        self._key = (Ed25519PrivateKey.from_private_bytes(signing_key) if signing_key is not None
                     else Ed25519PrivateKey.generate())
        log.warning("TEE attestation is SIMULATED (software Ed25519 key, root %s…): no hardware "
                    "protection, development and tests only", self.root().hex()[:16])

    def private_bytes(self) -> bytes:
        from cryptography.hazmat.primitives import serialization as s

        return self._key.private_bytes(s.Encoding.Raw, s.PrivateFormat.Raw, s.NoEncryption())

    def root(self) -> bytes:
        from cryptography.hazmat.primitives import serialization as s

        return self._key.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)

    def evidence(self, report_data: bytes) -> bytes:
        return self._key.sign(report_data)

    @classmethod
    def check_evidence(cls, body: bytes, evidence: bytes, root: bytes) -> None:
        try:
            Ed25519PublicKey.from_public_bytes(root).verify(evidence, hashlib.sha512(body).digest())
        except (InvalidSignature, ValueError):
            raise AttestationError("quote signature does not verify under the trusted root "
                                   f"{root.hex()[:16]}…") from None


def new_nonce() -> bytes:
    """A fresh verifier nonce."""
    return secrets.token_bytes(NONCE_BYTES)


def verify_quote(quote: Quote, *, root: bytes, allowed: Iterable[str], nonce: bytes,
                 channel_key: str | None, max_age: float = DEFAULT_MAX_AGE,
                 providers: Iterable[str] | None = None) -> dict:
    """Check a quote; return its claims.

    Parameters
    ----------
    quote : Quote
    root : bytes
        The trusted root of the quote's provider.
    allowed : iterable of str
        Measurements (hex) this verifier accepts.
    nonce : bytes
        The nonce this verifier sent (a quote for another nonce is a replay).
    channel_key : str or None
        The aggregator's CURVE public key (Z85) the verifier's channel is pinned to; the
        quote must bind exactly this key. ``None`` only where the channel has no key.
    max_age : float
        Seconds a quote stays fresh (clock skew allowed the same way).
    providers : iterable of str, optional
        Provider names accepted (default: every registered one).

    Raises
    ------
    AttestationError
        Naming what did not match.
    """
    claims = quote.claims
    if claims["v"] != QUOTE_VERSION:
        raise AttestationError(f"quote version {claims['v']!r}, expected {QUOTE_VERSION}")
    prov = claims["provider"]
    if providers is not None and prov not in set(providers):
        raise AttestationError(f"quote from provider {prov!r}, accepted: {sorted(set(providers))}")
    cls = _PROVIDERS.get(prov)
    if cls is None:
        raise AttestationError(f"unknown attestation provider {prov!r}")
    cls.check_evidence(quote.body, quote.evidence, root)
    allow = {m.lower() for m in allowed}
    if claims["measurement"].lower() not in allow:
        raise AttestationError(f"measurement {claims['measurement'][:16]}… is not in the allow-list "
                               f"({', '.join(sorted(m[:16] + '…' for m in allow)) or 'empty'})")
    if claims["nonce"] != nonce.hex():
        raise AttestationError("quote answers another nonce (stale or replayed quote)")
    age = time.time() - float(claims["issued_at"])
    if abs(age) > max_age:
        raise AttestationError(f"quote issued {age:.0f} s ago, older than {max_age:.0f} s (stale)")
    if channel_key is not None and claims["channel_key"] != channel_key:
        raise AttestationError(f"quote binds channel key {claims['channel_key'][:10]}…, but the "
                               f"channel to the aggregator uses {channel_key[:10]}…")
    if prov == SimulatedProvider.name:
        log.warning("accepted a SIMULATED attestation quote (no hardware protection)")
    return claims
