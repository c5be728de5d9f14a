"""The TEE aggregator's tamper-evident audit log: hash-chained, signed JSON lines.

One JSON object per line::

    {"seq": 3, "time": "2026-11-26T21:58:01.123456Z", "who": "host", "op": "lr.open_gradient",
     "dir": "in", "outcome": "ok", "inputs": {"train/p0/e0/b0/g": "sha256:…"}, "outputs": {},
     "note": "", "prev": "<hash of entry 2>", "hash": "<sha256 of this entry>", "sig": "<ed25519>"}

* ``hash`` = sha256 of the canonical JSON of the entry without ``hash`` and ``sig``;
  ``prev`` is the previous entry's ``hash`` (64 zeros for entry 0), ``seq`` counts from 0.
* ``sig`` is an Ed25519 signature over ``hash`` by the aggregator's log key; the log key
  is bound in the attestation quote, and entry 0 (``op: "audit.open"``) records it, the
  measurement and the quote, so the whole file can be checked on its own: anyone can
  recompute hashes, but only the aggregator can sign them.
* The last entry of a finished run is ``op: "audit.close"``; a log that stops before it
  was truncated (or the run died). The parties also receive the head (``seq``, ``hash``)
  after every round and can check that those heads are in the file
  (``hefl audit verify LOG --heads OUTPUT/<party>/tee_heads.json``).

Editing an entry breaks its hash (or its signature); removing or reordering entries
breaks ``seq`` / ``prev``. :func:`verify_log` reports the first broken entry.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .attestation import canonical_json

__all__ = ["GENESIS", "AuditLog", "AuditVerification", "digest", "verify_log"]

GENESIS = "0" * 64
_KEYS = {"seq", "time", "who", "op", "dir", "outcome", "inputs", "outputs", "note", "prev", "hash", "sig"}


def digest(obj: Any) -> str:
    """``"sha256:<hex>"`` of a payload: array buffers, bytes, text, or canonical JSON.

    Cipher arrays are hashed through their wire bytes; containers element by element.
    """
    h = hashlib.sha256()
    _feed(h, obj)
    return "sha256:" + h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    import numpy as np

    if isinstance(obj, (bytes, bytearray, memoryview)):
        h.update(b"b" + bytes(obj))
    elif isinstance(obj, str):
        h.update(b"s" + obj.encode())
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        h.update(b"n" + a.dtype.str.encode() + repr(a.shape).encode() + a.tobytes())
    elif isinstance(obj, dict):
        h.update(b"d%d" % len(obj))
        for k in sorted(obj, key=repr):
            _feed(h, repr(k))
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(b"l%d" % len(obj))
        for x in obj:
            _feed(h, x)
    elif obj is None or isinstance(obj, (bool, int, float)):
        h.update(b"j" + json.dumps(obj).encode())
    else:
        to_bytes = getattr(obj, "to_bytes", None)
        if callable(to_bytes):
            try:
                h.update(b"c" + bytes(to_bytes()))
                return
            except Exception:  # noqa: BLE001, S110 - fall back to the wire encoding
                pass
        from hefl.transport import wire

        header, frames, _ = wire.build_message("x", "x", obj)
        h.update(b"w" + header)
        for f in frames:
            h.update(bytes(memoryview(f)))


def _entry_hash(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k not in ("hash", "sig")}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditLog:
    """Append-only, hash-chained, signed log written as JSON lines to ``path``.

    Parameters
    ----------
    path : path
        The file (created). One log per run: an existing non-empty one (a run that is being
        resumed) is kept, renamed ``<stem>.1<suffix>`` (or the next free number).
    signing_key : bytes, optional
        32-byte Ed25519 private key of the log (fresh when ``None``); its public key is
        :attr:`public_key` and should be bound in the aggregator's quote.
    """

    def __init__(self, path: str | os.PathLike, *, signing_key: bytes | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._key = (Ed25519PrivateKey.from_private_bytes(signing_key) if signing_key is not None
                     else Ed25519PrivateKey.generate())
        self._lock = threading.Lock()
        self._seq = 0
        self._head = GENESIS
        self.previous: Path | None = None  # where an earlier run's log at ``path`` was moved
        if self.path.exists() and self.path.stat().st_size:
            k = 1
            while (old := self.path.with_name(f"{self.path.stem}.{k}{self.path.suffix}")).exists():
                k += 1
            os.replace(self.path, old)
            self.previous = old
        self._f = open(self.path, "x", encoding="ascii")  # noqa: SIM115 - kept open for appends

    @property
    def public_key(self) -> str:
        """The log key (hex of the raw Ed25519 public key)."""
        return self._key.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw).hex()

    @property
    def head(self) -> dict:
        """``{"seq": n, "hash": h}``: entries so far and the last entry's hash."""
        with self._lock:
            return {"seq": self._seq, "hash": self._head}

    def append(self, *, who: str, op: str, direction: str = "", outcome: str = "ok",
               inputs: dict[str, str] | None = None, outputs: dict[str, str] | None = None,
               note: str = "") -> dict:
        """Append one entry; returns it (with ``hash`` and ``sig``)."""
        with self._lock:
            entry: dict[str, Any] = {
                "seq": self._seq, "time": _now(), "who": who, "op": op, "dir": direction,
                "outcome": outcome, "inputs": dict(inputs or {}), "outputs": dict(outputs or {}),
                "note": note, "prev": self._head,
            }
            entry["hash"] = _entry_hash(entry)
            entry["sig"] = base64.b64encode(self._key.sign(bytes.fromhex(entry["hash"]))).decode()
            self._f.write(json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n")
            self._f.flush()
            self._seq += 1
            self._head = entry["hash"]
            return entry

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()

    def __enter__(self) -> AuditLog:  # noqa: PYI034 - final class in practice
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class AuditVerification:
    """The result of :func:`verify_log`."""

    entries: list[dict] = field(default_factory=list)
    ok: bool = True
    error: str | None = None
    broken_seq: int | None = None  # index (line number - 1) of the first broken entry
    closed: bool = False
    log_key: str | None = None

    @property
    def head(self) -> dict:
        return {"seq": len(self.entries), "hash": self.entries[-1]["hash"] if self.entries else GENESIS}


def verify_log(path: str | os.PathLike, *, heads: list[dict] | None = None,
               require_close: bool = True, log_key: str | None = None) -> AuditVerification:
    """Check an audit log's chain, signatures and (optionally) heads parties received.

    Parameters
    ----------
    path : path
    heads : list of dict, optional
        ``{"seq": n, "hash": h}`` heads a party received; each must match the file.
    require_close : bool
        A log without its final ``audit.close`` entry fails (truncation).
    log_key : str, optional
        The log key the aggregator's quote attested (hex; a party's ``tee_heads.json`` has
        it as ``claims.log_key``). Without it the signatures only show that the log agrees
        with the key its first entry names: whoever rewrites a log can sign it anew.

    Returns
    -------
    AuditVerification
        ``ok`` with the parsed entries, or ``error`` naming the first broken entry.
    """
    res = AuditVerification()

    def fail(i: int, msg: str) -> AuditVerification:
        res.ok = False
        res.broken_seq = i
        res.error = f"entry {i} (line {i + 1}): {msg}"
        return res

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        res.ok, res.error = False, f"cannot read {path}: {exc}"
        return res
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    prev = GENESIS
    pub: Ed25519PublicKey | None = None
    for i, line in enumerate(lines):
        try:
            e = json.loads(line.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            return fail(i, f"not a JSON object ({exc})")
        if not isinstance(e, dict):
            return fail(i, f"a JSON {type(e).__name__}, not an object (edited)")
        if set(e) != _KEYS:
            extra, missing = sorted(set(e) - _KEYS), sorted(_KEYS - set(e))
            return fail(i, "edited: " + "; ".join(
                ([f"unexpected key(s) {extra}"] if extra else []) + ([f"missing key(s) {missing}"] if missing else [])))
        if e["seq"] != i:
            return fail(i, f"sequence number {e['seq']!r} where {i} was expected (entry removed, "
                           "inserted or reordered)")
        if e["prev"] != prev:
            return fail(i, "does not chain to the previous entry (entry removed or reordered)")
        if _entry_hash(e) != e["hash"]:
            return fail(i, "hash does not match the entry's content (edited)")
        if i == 0:
            if e["op"] != "audit.open" or not isinstance(e["outputs"].get("log_key"), str):
                return fail(i, "the first entry must be 'audit.open' recording the log key")
            try:
                pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(e["outputs"]["log_key"]))
            except ValueError:
                return fail(i, "malformed log key")
            res.log_key = e["outputs"]["log_key"]
            if log_key is not None and res.log_key != log_key:
                return fail(i, "the log key is not the one the aggregator's quote attested "
                               "(the log was re-signed)")
        try:
            assert pub is not None
            sig = base64.b64decode(e["sig"], validate=True)
            if base64.b64encode(sig).decode() != e["sig"]:  # unused trailing bits changed
                raise ValueError("non-canonical base64")
            pub.verify(sig, bytes.fromhex(e["hash"]))
        except (InvalidSignature, ValueError, TypeError):
            return fail(i, "signature does not verify under the log key (edited or forged)")
        prev = e["hash"]
        res.entries.append(e)
    if not res.entries:
        res.ok, res.error = False, "the log is empty"
        return res
    res.closed = res.entries[-1]["op"] == "audit.close"
    for hd in heads or []:
        if not isinstance(hd, dict):
            return fail(len(res.entries), f"a received head is not a {{seq, hash}} object: {str(hd)[:60]}")
        n, hsh = hd.get("seq"), hd.get("hash")
        if not isinstance(n, int) or n < 1 or n > len(res.entries):
            return fail(len(res.entries), f"a received head names {n!r} entries, the log has "
                                          f"{len(res.entries)} (entries removed)")
        if res.entries[n - 1]["hash"] != hsh:
            return fail(n - 1, "differs from the head a party received after that round")
    if require_close and not res.closed:
        return fail(len(res.entries), "the log ends without its 'audit.close' entry (truncated)")
    return res
