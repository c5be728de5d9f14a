"""Wire hooks of the HE layer, used by :mod:`hefl.transport`.

Cipher arrays travel as a JSON-able *meta* dict plus raw frames — never pickled:

* additive schemes (paillier, ou, mock): one frame of fixed-width little-endian
  ciphertexts; meta ``{"scheme", "fingerprint", "shape", "frac_bits", "width"}``;
  on receipt every ciphertext is range-checked (Paillier ``[1, n²)``, OU ``[1, n)``,
  coprime to n).
* ckks: one frame per SIMD chunk (TenSEAL serialisation); meta
  ``{"scheme": "ckks", "fingerprint", "shape", "chunks"}``.

Public kits travel as their ``to_bytes()`` (JSON for Paillier/mock, the TenSEAL context
without its secret key for CKKS); :func:`load_public_kit` refuses anything carrying a
secret key.
"""

from __future__ import annotations

import json
import math

import numpy as np

from hefl.errors import InvalidCiphertextError, KeyMismatchError, ProtocolError

from ._backend import LIMB_DTYPE
from .base import CipherArray, PublicKit, SecretKit

__all__ = ["cipher_to_wire", "cipher_from_wire", "public_kit_to_wire", "load_public_kit", "MAX_DIMS",
           "MAX_CIPHERTEXTS"]

MAX_DIMS = 8


def cipher_to_wire(ca) -> tuple[dict, list]:
    """(meta, frames) for a :class:`CipherArray` or CKKS array."""
    fp = ca.kit.fingerprint()
    if type(ca) is not CipherArray and _is_ckks(ca):
        return {"scheme": "ckks", "fingerprint": fp, "shape": list(ca.shape), "chunks": len(ca.chunks)}, ca.frames()
    if not isinstance(ca, CipherArray):
        raise TypeError(f"not a cipher array: {type(ca).__name__}")
    meta = {"scheme": ca.kit.scheme, "fingerprint": fp, "shape": list(ca.shape), "frac_bits": ca.frac_bits,
            "width": ca.kit.cipher_width}
    if ca.kit.scheme == "mock":
        return meta, [ca.to_bytes()]
    flat = np.ascontiguousarray(ca._flat(), dtype=LIMB_DTYPE)
    return meta, [memoryview(flat).cast("B")]


def _is_ckks(ca) -> bool:
    from .ckks import CKKSArray  # lazy: TenSEAL is imported only where CKKS is used

    return isinstance(ca, CKKSArray)


#: Most ciphertexts one array may announce (a frame is checked against it before any allocation).
MAX_CIPHERTEXTS = 2**40


def _shape(meta: dict) -> tuple[int, ...]:
    shape = meta.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise ProtocolError(f"invalid cipher array shape {str(shape)[:80]}")
    for s in shape:
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < 2**40:
            raise ProtocolError(f"invalid cipher array shape {str(shape)[:80]}")
    # exact (Python int) product: numpy's int64 one wraps around, and [2**39]*8 "holds" 0
    if math.prod(shape) > MAX_CIPHERTEXTS:
        raise ProtocolError(f"cipher array shape {shape} holds more than {MAX_CIPHERTEXTS} ciphertexts")
    return tuple(shape)


def cipher_from_wire(meta: dict, frames: list, kit: PublicKit, *, adopt: bool = False):
    """Rebuild a cipher array under ``kit``; sizes, fingerprint and ranges are checked.

    ``adopt=True``: the frames are handed over (a transport's received frames, which nobody
    else holds), so a writable one is used in place rather than copied."""
    if not isinstance(meta, dict):
        raise ProtocolError("cipher array meta must be an object")
    scheme = meta.get("scheme")
    if scheme != kit.scheme:
        raise KeyMismatchError(f"cipher array of scheme {scheme!r} for a {kit.scheme} kit")
    if meta.get("fingerprint") != kit.fingerprint():
        raise KeyMismatchError(
            f"ciphertexts under public key {str(meta.get('fingerprint'))[:12]}, expected {kit.fingerprint()[:12]}"
        )
    shape = _shape(meta)
    if scheme == "ckks":
        if meta.get("chunks") != len(frames):
            raise ProtocolError(f"{len(frames)} frames for {meta.get('chunks')!r} CKKS chunks")
        return kit.cipher_from_frames(frames, shape)
    if len(frames) != 1:
        raise ProtocolError(f"cipher array needs exactly one frame, got {len(frames)}")
    fb = meta.get("frac_bits")
    if not isinstance(fb, int) or isinstance(fb, bool) or not 0 <= fb <= 4096:
        raise ProtocolError(f"invalid frac_bits {fb!r}")
    if meta.get("width") != kit.cipher_width:
        raise ProtocolError(f"ciphertext width {meta.get('width')!r}, expected {kit.cipher_width}")
    data = frames[0]
    count = math.prod(shape)
    nbytes = memoryview(data).nbytes
    if nbytes != count * kit.cipher_width:
        raise ProtocolError(f"frame of {nbytes} bytes for {count} ciphertexts of {kit.cipher_width} bytes")
    try:
        if kit.scheme == "mock":
            return kit.cipher_from_bytes(bytes(data), shape, fb)
        return kit.cipher_from_bytes(data, shape, fb, adopt=adopt)
    except InvalidCiphertextError:
        raise
    except ValueError as exc:
        raise ProtocolError(f"invalid ciphertext frame: {exc}") from None


def public_kit_to_wire(kit: PublicKit) -> bytes:
    """The public part of a kit as bytes (a secret kit sends only its public part)."""
    return kit.public_kit().to_bytes()


def load_public_kit(data: bytes, *, allow_insecure: bool = False, backend: str = "auto") -> PublicKit:
    """Load a public kit of any scheme from :func:`public_kit_to_wire` bytes."""
    raw = bytes(data)
    if raw[:1] == b"{":
        try:
            scheme = json.loads(raw.decode()).get("scheme")
        except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
            raise ProtocolError("public kit is not valid JSON") from None
        if scheme == "paillier":
            from .paillier import PaillierPublicKit

            kit: PublicKit = PaillierPublicKit.from_bytes(raw, allow_insecure=allow_insecure, backend=backend)
        elif scheme == "mock":
            from .mock import MockPublicKit

            kit = MockPublicKit.from_bytes(raw)
        elif scheme == "ou":
            from .ou import OUPublicKit

            kit = OUPublicKit.from_bytes(raw, allow_insecure=allow_insecure, backend=backend)
        else:
            raise ProtocolError(f"unknown public kit scheme {scheme!r}")
    else:
        from .ckks import CKKSPublicKit

        kit = CKKSPublicKit.from_bytes(raw)
    if isinstance(kit, SecretKit):  # pragma: no cover - from_bytes never builds one
        raise ProtocolError("refusing a kit that holds a secret key")
    return kit
