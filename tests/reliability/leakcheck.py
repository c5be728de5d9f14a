"""Leak checks: record every message each party receives, then look for secrets in it.

:class:`Recorder` patches the :class:`hefl.transport.base.Channel` base class, so it sees
every message of every channel type (in-memory for ``run_threads``, ZeroMQ for
``run_local`` and the job runner) whatever the role code does with it:

* ``Channel._ingest`` — the raw wire bytes (JSON header + payload frames, after CurveZMQ
  decryption) of every message a party's channel takes in, control messages included,
  recorded *before* anything is decoded;
* ``Channel.recv_many`` (``recv`` and ``gather`` go through it) — the decoded object the
  role code got back, attached to its raw message (in-process only).

Each raw message also gets a *plaintext view*: the payload decoded from the raw bytes by
the wire format's own descriptor walker, with ciphertexts left opaque (:class:`Opaque`)
and public kits as their bytes (:class:`KitBytes`).  The checks walk these views.

Party processes forked by ``run_local`` (the job runner) inherit the patch; there each
message (and everything instrumented code :meth:`Recorder.keep` s) is appended to a spool
file, which the launching process reads back.

The ``instrument_*`` helpers monkeypatch the models so that the secrets the checks look
for are recorded where they arise (labels, gradients and hessians of every round, their
quantised and packed integer forms, residual terms, weights, HE secret keys, PSI
secret scalars).

Every ``check_*`` function returns a list of findings (text); empty means clean.
"""

from __future__ import annotations

import base64
import io
import json
import math
import multiprocessing
import os
import shutil
import struct
import tempfile
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hefl.transport import wire
from hefl.transport.base import Channel

__all__ = [
    "KitBytes", "Message", "Opaque", "Recorder",
    "check_arrays", "check_ckks_contexts", "check_float_lengths", "check_key_material",
    "check_no_plain_floats", "check_residues", "check_rows", "check_values",
    "ckks_contexts", "current_party", "instrument_hetero_lr", "instrument_psi", "instrument_secureboost",
    "key_material", "key_patterns", "leaves", "lr_secrets", "row_sets",
]

PARTY_PREFIX = "hefl-party-"  # run_threads' thread names and run_local's process names
_MISSING = object()


def current_party() -> str | None:
    """The party whose code runs here (thread of ``run_threads``, process of ``run_local``)."""
    for name in (threading.current_thread().name, multiprocessing.current_process().name):
        if name.startswith(PARTY_PREFIX):
            return name[len(PARTY_PREFIX):]
    return None


# ============================================================================ recording


class Opaque:
    """A ciphertext payload: the harness does not open it (it cannot, and need not)."""

    def __init__(self, meta: Any, nbytes: int):
        self.meta, self.nbytes = meta, nbytes

    def __repr__(self) -> str:
        scheme = self.meta.get("scheme") if isinstance(self.meta, dict) else "?"
        return f"<Opaque {scheme} ciphertexts, {self.nbytes} bytes>"


class KitBytes(bytes):
    """A public kit as it travelled (its ``public_kit_to_wire`` bytes)."""


class _ViewDecoder(wire._Decoder):
    """The wire format's decoder, with ciphertexts opaque and kits left as bytes."""

    def cipher(self, desc: dict) -> Any:
        idx = desc.get("f")
        if not isinstance(idx, list):
            raise wire.BadMessage("cipher descriptor without frames")
        return Opaque(desc.get("meta"), sum(self.frame(i).nbytes for i in idx))

    def kit(self, desc: dict) -> Any:
        return KitBytes(self.frame(desc.get("f")).tobytes())


@dataclass
class Message:
    """One message as the receiving party's channel took it in."""

    receiver: str
    sender: str
    header: bytes
    frames: list[bytes]
    obj: Any = _MISSING  # what recv()/gather() handed to the role code (in-process runs)

    def __post_init__(self) -> None:
        try:
            head = json.loads(self.header.decode("utf-8"))
        except ValueError:
            head = None
        self.head = head if isinstance(head, dict) else {}
        self.kind = self.head.get("kind")
        self.tag = self.head.get("tag") if self.kind == "msg" else None
        self._view: Any = _MISSING

    @property
    def consumed(self) -> bool:
        return self.obj is not _MISSING

    @property
    def view(self) -> Any:
        """The payload with ciphertexts opaque (None for control messages)."""
        if self._view is _MISSING:
            self._view = None
            if self.kind == "msg" and isinstance(self.head.get("body"), dict):
                dec = _ViewDecoder(self.frames, None, None)
                self._view = dec.decode(self.head["body"])
        return self._view

    def raw(self) -> Iterator[bytes]:
        yield self.header
        yield from self.frames

    def __repr__(self) -> str:
        return f"<Message {self.sender}->{self.receiver} {self.kind} {self.tag!r}>"


class Recorder:
    """Records every message every party receives while it is active (a context manager).

    Parameters
    ----------
    spool : path, optional
        Where party processes forked while recording (``run_local``, the job runner) write
        what they receive and keep; default: a temporary directory removed with the recorder.
    """

    _active: Recorder | None = None

    def __init__(self, spool: str | os.PathLike | None = None):
        if spool is None:
            spool = tempfile.mkdtemp(prefix="hefl-leak-")
            weakref.finalize(self, shutil.rmtree, spool, ignore_errors=True)
        self.spool = Path(spool)
        self.spool.mkdir(parents=True, exist_ok=True)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._messages: list[Message] = []
        self._decoded: dict[tuple[str, str, str], Any] = {}
        self._kept: list[tuple[str | None, str, Any]] = []
        self._loaded: tuple[list[Message], list] | None = None
        self._saved: dict[str, Any] = {}

    # -- patching ------------------------------------------------------------------
    def __enter__(self) -> Recorder:  # noqa: PYI034
        if Recorder._active is not None:
            raise RuntimeError("a leak Recorder is already active")
        Recorder._active = self
        rec = self
        ingest, recv_many = Channel._ingest, Channel.recv_many
        self._saved = {"_ingest": ingest, "recv_many": recv_many}

        def _ingest(ch, peer, header_buf, frames):
            rec._record_raw(ch.self_name, peer, header_buf, frames)
            return ingest(ch, peer, header_buf, frames)

        def _recv_many(ch, peers, tag, timeout=None):
            out = recv_many(ch, peers, tag, timeout)
            if os.getpid() == rec._pid:
                with rec._lock:
                    for p, obj in out.items():
                        rec._decoded[(ch.self_name, p, tag)] = obj
            return out

        Channel._ingest = _ingest  # type: ignore[method-assign]
        Channel.recv_many = _recv_many  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        for name, fn in self._saved.items():
            setattr(Channel, name, fn)
        Recorder._active = None

    # -- recording (any thread, any forked process) ----------------------------------
    def _record_raw(self, receiver: str, sender: str, header_buf: Any, frames: list[Any]) -> None:
        header = memoryview(header_buf).tobytes()
        blobs = [memoryview(f).tobytes() for f in frames]
        if os.getpid() == self._pid:
            with self._lock:
                self._messages.append(Message(receiver, sender, header, blobs))
            return
        meta = json.dumps({"receiver": receiver, "sender": sender,
                           "sizes": [len(header)] + [len(b) for b in blobs]}).encode()
        record = struct.pack("<Q", len(meta)) + meta + header + b"".join(blobs)
        self._append(f"msgs-{os.getpid()}.bin", struct.pack("<Q", len(record)) + record)

    def _append(self, name: str, data: bytes) -> None:
        fd = os.open(self.spool / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def keep(self, name: str, value: Any, *, party: str | None = None, local_only: bool = False) -> None:
        """Note a secret (or fact) of ``party`` (default: the party running this code).

        Values: numpy arrays, ints, floats, str, bytes, and lists / dicts of these; from a
        forked party process they go to the spool. ``local_only`` values (kit objects)
        are kept in-process only.
        """
        party = party if party is not None else current_party()
        if os.getpid() == self._pid:
            with self._lock:
                self._kept.append((party, name, value))
        elif not local_only:
            line = json.dumps({"party": party, "name": name, "value": _pack(value)}) + "\n"
            self._append(f"kept-{os.getpid()}.jsonl", line.encode())

    # -- reading ---------------------------------------------------------------------
    def _spooled(self) -> tuple[list[Message], list]:
        if self._loaded is None:
            msgs: list[Message] = []
            kept: list = []
            for path in sorted(self.spool.glob("msgs-*.bin")):
                data, off = path.read_bytes(), 0
                while off < len(data):
                    (size,) = struct.unpack_from("<Q", data, off)
                    rec, off = data[off + 8: off + 8 + size], off + 8 + size
                    (mlen,) = struct.unpack_from("<Q", rec, 0)
                    meta = json.loads(rec[8: 8 + mlen])
                    pos, parts = 8 + mlen, []
                    for s in meta["sizes"]:
                        parts.append(rec[pos: pos + s])
                        pos += s
                    msgs.append(Message(meta["receiver"], meta["sender"], parts[0], parts[1:]))
            for path in sorted(self.spool.glob("kept-*.jsonl")):
                for line in path.read_text().splitlines():
                    d = json.loads(line)
                    kept.append((d["party"], d["name"], _unpack(d["value"])))
            self._loaded = (msgs, kept)
        return self._loaded

    @property
    def messages(self) -> list[Message]:
        """Every message recorded (in-process ones with what the role code received)."""
        with self._lock:
            local = list(self._messages)
            decoded = dict(self._decoded)
        for m in local:
            if m.tag is not None and m.obj is _MISSING:
                m.obj = decoded.get((m.receiver, m.sender, m.tag), _MISSING)
        return local + self._spooled()[0]

    def received_by(self, party: str, *, data_only: bool = True) -> list[Message]:
        return [m for m in self.messages if m.receiver == party and (m.kind == "msg" or not data_only)]

    @property
    def parties(self) -> set[str]:
        return {m.receiver for m in self.messages}

    def kept(self, name: str, party: str | None = None) -> list[Any]:
        """Values kept under ``name`` (by ``party``, or by anybody), in the order kept."""
        with self._lock:
            local = list(self._kept)
        return [v for p, n, v in local + self._spooled()[1] if n == name and (party is None or p == party)]

    def kept_by(self, name: str) -> dict[str, list[Any]]:
        with self._lock:
            local = list(self._kept)
        out: dict[str, list[Any]] = {}
        for p, n, v in local + self._spooled()[1]:
            if n == name:
                out.setdefault(p, []).append(v)
        return out


def _pack(v: Any) -> Any:
    if isinstance(v, (np.ndarray, np.generic)):
        buf = io.BytesIO()
        np.save(buf, np.asarray(v), allow_pickle=False)
        return {"nd": base64.b64encode(buf.getvalue()).decode()}
    if isinstance(v, (bytes, bytearray)):
        return {"b64": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, bool) or v is None or isinstance(v, (float, str)):
        return v
    if isinstance(v, int):
        return {"int": str(v)}
    if isinstance(v, (list, tuple)):
        return [_pack(x) for x in v]
    if isinstance(v, dict):
        return {"dict": {str(k): _pack(x) for k, x in v.items()}}
    raise TypeError(f"cannot keep a {type(v).__name__} from a party process")


def _unpack(v: Any) -> Any:
    if isinstance(v, list):
        return [_unpack(x) for x in v]
    if isinstance(v, dict):
        if "nd" in v:
            return np.load(io.BytesIO(base64.b64decode(v["nd"])), allow_pickle=False)
        if "b64" in v:
            return base64.b64decode(v["b64"])
        if "int" in v:
            return int(v["int"])
        return {k: _unpack(x) for k, x in v["dict"].items()}
    return v


# ============================================================================ walking


def leaves(view: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, leaf)`` of everything in a plaintext view; homogeneous numeric lists (JSON)
    become arrays, so a JSON list of floats is checked like a numpy array."""
    if isinstance(view, dict):
        for k, v in view.items():
            yield from leaves(v, f"{path}[{k!r}]")
        return
    if isinstance(view, (list, tuple)):
        nums = [x for x in view if isinstance(x, (int, float)) and not isinstance(x, bool)]
        if view and len(nums) == len(view) and all(isinstance(x, float) or abs(x) < 2**63 for x in nums):
            floats = any(isinstance(x, float) for x in nums)
            yield path, np.asarray(view, dtype=np.float64 if floats else np.int64)
            return
        for i, v in enumerate(view):
            yield from leaves(v, f"{path}[{i}]")
        return
    yield path, view


def _plain(rec_or_msgs: Recorder | Iterable[Message], receiver: str | None
           ) -> Iterator[tuple[Message, str, Any]]:
    msgs = rec_or_msgs.messages if isinstance(rec_or_msgs, Recorder) else rec_or_msgs
    for m in msgs:
        if m.kind != "msg" or (receiver is not None and m.receiver != receiver):
            continue
        for path, leaf in leaves(m.view):
            yield m, path, leaf


def _numeric(leaf: Any) -> np.ndarray | None:
    """A numeric array leaf (numpy arrays and scalars, JSON number lists), else None
    (ciphertexts, bytes, text, single Python numbers)."""
    if isinstance(leaf, (np.ndarray, np.generic)):
        arr = np.asarray(leaf)
        return arr if arr.dtype.kind in "biufc" else None
    return None


def _floats(leaf: Any) -> np.ndarray | None:
    """The float values of a leaf that travels as floats (float arrays, JSON floats)."""
    if isinstance(leaf, float):
        return np.asarray([leaf])
    if isinstance(leaf, (np.ndarray, np.generic)):
        arr = np.asarray(leaf)
        if arr.dtype.kind == "f":
            return arr.ravel().astype(np.float64)
        if arr.dtype.kind == "c":
            return np.concatenate([arr.real.ravel(), arr.imag.ravel()]).astype(np.float64)
    return None


def _where(m: Message, path: str) -> str:
    return f"{m.sender}->{m.receiver} {m.tag}{path}"


def _as_list(v: Any) -> list[np.ndarray]:
    if isinstance(v, (list, tuple)):
        return [np.asarray(x, dtype=np.float64).ravel() for x in v]
    return [np.asarray(v, dtype=np.float64).ravel()]


# ============================================================================ checks


def check_arrays(rec: Recorder | Iterable[Message], receiver: str, secrets: Mapping[str, Any], *,
                 min_len: int = 8, permuted: bool = True) -> list[str]:
    """No received numeric array (nor a row / column of a 2-d one) equals a secret array,
    a reordering of it (secrets with at least 3 distinct values) or, for 0/1 secrets such
    as labels, its complement.  ``np.allclose`` (rtol 1e-6) with NaN == NaN, whatever the
    dtype the array travelled in (bool, int, float32 ...).

    ``secrets``: name -> array or list of arrays (flattened).
    """
    by_size: dict[int, list[tuple[str, np.ndarray, np.ndarray | None, bool]]] = {}
    for name, value in secrets.items():
        for s in _as_list(value):
            if s.size < min_len:
                continue
            distinct = np.unique(s[~np.isnan(s)])
            srt = np.sort(s) if permuted and distinct.size >= 3 else None
            binary = bool(distinct.size <= 2 and np.all(np.isin(distinct, (0.0, 1.0))))
            by_size.setdefault(s.size, []).append((name, s, srt, binary))
    out: list[str] = []
    for m, path, leaf in _plain(rec, receiver):
        arr = _numeric(leaf)
        if arr is None or arr.size < min_len:
            continue
        arr = arr.real if arr.dtype.kind == "c" else arr
        arr = arr.astype(np.float64)
        cands = [("", arr.ravel())]
        if arr.ndim == 2:
            cands += [(f"[:, {j}]", arr[:, j]) for j in range(min(arr.shape[1], 64))]
            cands += [(f"[{i}]", arr[i]) for i in range(min(arr.shape[0], 64))]
        for sub, c in cands:
            for name, s, srt, binary in by_size.get(c.size, ()):
                how = None
                if np.allclose(c, s, rtol=1e-6, atol=1e-9, equal_nan=True):
                    how = "equals"
                elif binary and np.allclose(c, 1.0 - s, rtol=0, atol=1e-9):
                    how = "is the complement of"
                elif srt is not None and np.allclose(np.sort(c), srt, rtol=1e-6, atol=1e-9, equal_nan=True):
                    how = "is a reordering of"
                if how:
                    out.append(f"{_where(m, path)}{sub} {how} {name}")
    return out


def _informative(values: np.ndarray) -> np.ndarray:
    """Values worth looking for one by one: finite, not tiny, not integers or short dyadic
    fractions (0.5, 0.25 ... which also arise from public constants)."""
    v = values[np.isfinite(values)]
    v = v[np.abs(v) > 1e-6]
    return np.unique(v[(v * 16.0) != np.round(v * 16.0)])


def check_values(rec: Recorder | Iterable[Message], receiver: str, secrets: Mapping[str, Any], *,
                 rtol: float = 1e-9) -> list[str]:
    """No float that travelled as a float (float arrays, JSON floats) equals, up to
    ``rtol``, any informative value of a secret: this catches a secret sent whole, in any
    order, or any subset of it (e.g. a feature column at the rows of one node)."""
    keys = {}
    for name, value in secrets.items():
        vals = _informative(np.concatenate([s for s in _as_list(value)] or [np.zeros(0)]))
        if vals.size:
            keys[name] = vals
    out: list[str] = []
    for m, path, leaf in _plain(rec, receiver):
        f = _floats(leaf)
        if f is None:
            continue
        f = f[np.isfinite(f) & (np.abs(f) > 1e-6)]
        if not f.size:
            continue
        for name, k in keys.items():
            i = np.clip(np.searchsorted(k, f), 1, max(1, k.size - 1))
            near = np.minimum(np.abs(k[i - 1] - f), np.abs(k[np.minimum(i, k.size - 1)] - f))
            hit = near <= rtol * np.abs(f)
            if hit.any():
                out.append(f"{_where(m, path)}: {int(hit.sum())} value(s) of {name}, e.g. {f[hit][:3].tolist()}")
    return out


def check_rows(rec: Recorder | Iterable[Message], receiver: str, secrets: Mapping[str, Any]) -> list[str]:
    """No received integer array holds a row of a secret integer matrix (e.g. the packed
    fixed-point plaintexts of g/h, as uint64 limbs), whatever its dtype or shape."""
    sets: dict[str, tuple[int, set[bytes]]] = {}
    for name, value in secrets.items():
        for s in (value if isinstance(value, (list, tuple)) else [value]):
            s = np.asarray(s)
            if s.ndim != 2 or s.dtype.kind not in "iu":
                continue
            rows = np.ascontiguousarray(s.astype("<u8"))
            width, keep = rows.shape[1], rows[np.any(rows != 0, axis=1)]
            old = sets.get(name, (width, set()))[1]
            sets[name] = (width, old | {r.tobytes() for r in keep})
    out: list[str] = []
    for m, path, leaf in _plain(rec, receiver):
        arr = _numeric(leaf)
        if arr is None or arr.dtype.kind not in "iu" or arr.size == 0:
            continue
        for name, (width, rows) in sets.items():
            if arr.size % width:
                continue
            got = np.ascontiguousarray(arr.reshape(-1, width).astype("<u8"))
            hits = sum(r.tobytes() in rows for r in got)
            if hits:
                out.append(f"{_where(m, path)}: {hits} row(s) of {name}")
    return out


def check_no_plain_floats(rec: Recorder | Iterable[Message], receiver: str, *,
                          allow: tuple[str, ...] = ()) -> list[str]:
    """Nothing the receiver got travels as a plaintext float (tags matching ``allow``
    substrings excepted)."""
    out = []
    for m, path, leaf in _plain(rec, receiver):
        f = _floats(leaf)
        if f is not None and f.size and not any(a in (m.tag or "") for a in allow):
            out.append(f"{_where(m, path)}: {f.size} plaintext float(s), e.g. {f[:3].tolist()}")
    return out


def check_float_lengths(rec: Recorder | Iterable[Message], receiver: str, lengths: Iterable[int], *,
                        allow: tuple[str, ...] = ()) -> list[str]:
    """No float array with an axis of a per-row length (n_rows, a tree's or a batch's
    rows) reaches the receiver unless its tag contains one of ``allow``."""
    wanted = {int(n) for n in lengths if int(n) > 1}
    out = []
    for m, path, leaf in _plain(rec, receiver):
        arr = _numeric(leaf)
        if arr is None or arr.dtype.kind not in "fc":
            continue
        if set(arr.shape) & wanted and not any(a in (m.tag or "") for a in allow):
            out.append(f"{_where(m, path)}: float array of shape {arr.shape}")
    return out


def check_residues(rec: Recorder | Iterable[Message], receiver: str, moduli: Iterable[int]) -> list[str]:
    """Every plaintext residue (rows of uint64 limbs, as opened Paillier values travel)
    looks uniform: none is a small positive or negative number mod any of ``moduli`` —
    which is what a fixed-point value opened without its mask would be."""
    mods = [int(n) for n in moduli]
    out = []
    for m, path, leaf in _plain(rec, receiver):
        arr = _numeric(leaf)
        if arr is None or arr.dtype != np.uint64 or arr.ndim != 2:
            continue
        raw = np.ascontiguousarray(arr, dtype="<u8")
        for i, row in enumerate(raw):
            v = int.from_bytes(row.tobytes(), "little")
            for n in mods:
                if (n.bit_length() + 63) // 64 == arr.shape[1] and v < n and min(v, n - v) < (n >> 30):
                    out.append(f"{_where(m, path)}[{i}]: residue {v:.3e} mod an n of {n.bit_length()} bits "
                               "is a small number, not a masked value")
                    break
    return out


# ---------------------------------------------------------------------------- keys


def key_material(kit: Any) -> dict[str, Any]:
    """What must never travel: a secret kit's private values (ints) / CKKS secret key bytes."""
    scheme = getattr(kit, "scheme", None)
    if scheme == "paillier":
        p, q = int(kit._p), int(kit._q)
        lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
        n = p * q
        return {"scheme": scheme, "p": p, "q": q, "lambda": lam, "phi": (p - 1) * (q - 1),
                "mu": pow(lam, -1, n), "p^2": p * p, "q^2": q * q}
    if scheme == "ou":
        p, q, t = int(kit._p), int(kit._q), int(kit._t)
        return {"scheme": scheme, "p": p, "q": q, "t": t, "p^2": p * p, "p*q": p * q}
    if scheme == "ckks":
        with tempfile.TemporaryDirectory() as d:
            kit.context.secret_key().data.save(os.path.join(d, "sk"))
            sk = Path(d, "sk").read_bytes()
        return {"scheme": scheme, "secret_key": sk}
    return {"scheme": scheme}


def key_patterns(material: Mapping[str, Any]) -> dict[str, bytes]:
    """Byte strings to scan for: each secret int as big- and little-endian bytes, decimal
    and hex text; short secret bytes (PSI scalars) whole and as hex; a CKKS secret key as
    windows of its SEAL serialisation (which a context saved with its secret key contains
    verbatim)."""
    out: dict[str, bytes] = {}
    for name, v in material.items():
        if isinstance(v, bool) or name == "scheme":
            continue
        if isinstance(v, int):
            nb = (v.bit_length() + 7) // 8
            out[f"{name} (big-endian)"] = v.to_bytes(nb, "big")
            out[f"{name} (little-endian)"] = v.to_bytes(nb, "little")
            out[f"{name} (decimal)"] = str(v).encode()
            out[f"{name} (hex)"] = format(v, "x").encode()
            out[f"{name} (HEX)"] = format(v, "X").encode()
        elif isinstance(v, (bytes, bytearray)) and len(v) <= 64:  # e.g. a PSI scalar
            out[f"{name} (bytes)"] = bytes(v)
            out[f"{name} (hex)"] = bytes(v).hex().encode()
        elif isinstance(v, (bytes, bytearray)):
            v = bytes(v)
            for k in range(1, 5):
                off = k * len(v) // 5
                out[f"{name} (bytes {off}..{off + 48})"] = v[off: off + 48]
    return out


def check_key_material(rec: Recorder | Iterable[Message], patterns: Mapping[str, bytes], *,
                       receiver: str | None = None) -> list[str]:
    """No raw received bytes (JSON header, payload frames, control messages) contain any
    of ``patterns``."""
    msgs = rec.messages if isinstance(rec, Recorder) else list(rec)
    out = []
    for m in msgs:
        if receiver is not None and m.receiver != receiver:
            continue
        for i, blob in enumerate(m.raw()):
            for name, pat in patterns.items():
                if pat and pat in blob:
                    out.append(f"{m.sender}->{m.receiver} {m.tag or m.kind} frame {i} carries the secret {name}")
    return out


def ckks_contexts(rec: Recorder | Iterable[Message]) -> Iterator[tuple[Message, str, Any]]:
    """Every received bytes payload that loads as a TenSEAL context (a CKKS public kit)."""
    try:
        import tenseal as ts
    except ImportError:  # pragma: no cover
        return
    for m, path, leaf in _plain(rec, None):
        if isinstance(leaf, bytes) and len(leaf) > 4096 and leaf[:1] != b"{":
            try:
                ctx = ts.context_from(leaf)
            except Exception:  # noqa: BLE001, S112 - not a context
                continue
            yield m, path, ctx


def check_ckks_contexts(rec: Recorder | Iterable[Message]) -> tuple[list[str], int]:
    """(findings, contexts seen): no TenSEAL context that travelled holds a secret key."""
    out, seen = [], 0
    for m, path, ctx in ckks_contexts(rec):
        seen += 1
        if ctx.has_secret_key() or ctx.is_private():
            out.append(f"{_where(m, path)}: a TenSEAL context carrying its secret key")
    return out, seen


# ============================================================================ secrets


def row_sets(rec: Recorder | Iterable[Message], receiver: str, n_rows: int, *, min_len: int = 8
             ) -> list[np.ndarray]:
    """Row index sets the receiver was told (sorted, unique, in-range int arrays): labels
    or gradients at exactly these rows would be a leak too."""
    out, seen = [], set()
    for _m, _path, leaf in _plain(rec, receiver):
        arr = _numeric(leaf)
        if arr is None or arr.dtype.kind not in "iu" or arr.ndim != 1 or arr.size < min_len:
            continue
        if arr.min() >= 0 and arr.max() < n_rows and np.all(np.diff(arr) > 0):
            key = arr.tobytes()
            if key not in seen:
                seen.add(key)
                out.append(arr.astype(np.int64))
    return out


def instrument_secureboost(rec: Recorder, monkeypatch: Any) -> None:
    """Keep, on the active party, every round's labels and ``[g | h]`` (objective ``gh()``),
    their quantised values and packed integer plaintexts (``GHCodec``), and the key
    material of the kit the job runner / estimator makes (``make_kit``)."""
    from hefl.models.secureboost import _federated, estimator

    real_get, real_codec, real_make = _federated.get_objective, _federated.GHCodec, estimator.make_kit

    def get_objective(*a, **k):
        obj = real_get(*a, **k)
        real_gh = obj.gh

        def gh(y, margin, *args, **kw):
            out = real_gh(y, margin, *args, **kw)
            rec.keep("labels", np.asarray(y, dtype=np.float64))
            rec.keep("gh", np.asarray(out, dtype=np.float64))
            return out

        obj.gh = gh
        return obj

    class Codec(real_codec):  # type: ignore[misc, valid-type]
        def quantize(self, gh):
            out = super().quantize(gh)
            rec.keep("gh_quantised", np.asarray(out, dtype=np.float64))
            return out

        def pack(self, gh, n_limbs):
            out = super().pack(gh, n_limbs)
            for plain in out:
                rec.keep("gh_packed", np.asarray(plain, dtype=np.uint64))
            return out

    def make_kit(*a, **k):
        kit = real_make(*a, **k)
        rec.keep("key_material", key_material(kit))
        rec.keep("kit", kit, local_only=True)
        return kit

    monkeypatch.setattr(_federated, "get_objective", get_objective)
    monkeypatch.setattr(_federated, "GHCodec", Codec)
    monkeypatch.setattr(estimator, "make_kit", make_kit)


def instrument_psi(rec: Recorder, monkeypatch: Any) -> None:
    """Keep every party's ECDH-PSI secret scalar (as ``key_material``)."""
    from hefl.psi import _ecdh

    real_key = _ecdh._key

    def key() -> bytes:
        k = real_key()
        rec.keep("key_material", {"scheme": "psi", "scalar": bytes(k)})
        return k

    monkeypatch.setattr(_ecdh, "_key", key)


def instrument_hetero_lr(rec: Recorder, monkeypatch: Any) -> None:
    """Keep, per party: its feature matrix, every batch's rows, the active party's labels
    and residual terms ``(s, h)`` per batch (``expand_loss``), every party's weights and
    gradient per batch (``Optimizer.step``), and the key material of every kit made."""
    from hefl.models.hetero_lr import _core, _roles

    real_keygen, real_expand, real_batches = _roles.keygen, _roles.expand_loss, _roles.batch_slices
    real_matrix, real_step = _roles._as_matrix, _core.Optimizer.step

    def keygen(*a, **k):
        kit = real_keygen(*a, **k)
        rec.keep("key_material", key_material(kit))
        rec.keep("kit", kit, local_only=True)
        return kit

    def expand_loss(task, u_a, y, *a, **k):
        l0, s, h = real_expand(task, u_a, y, *a, **k)
        rec.keep("batch_terms", {"y": np.asarray(y, dtype=np.float64), "s": np.asarray(s), "h": np.asarray(h)})
        return l0, s, h

    def batch_slices(*a, **k):
        out = real_batches(*a, **k)
        rec.keep("batches", [np.asarray(b, dtype=np.int64) for b in out])
        return out

    def as_matrix(X, name):
        out = real_matrix(X, name)
        rec.keep("X", out)
        return out

    def step(self, w, grad):
        rec.keep("step", {"w": np.array(w, dtype=np.float64), "grad": np.array(grad, dtype=np.float64)})
        return real_step(self, w, grad)

    monkeypatch.setattr(_roles, "keygen", keygen)
    monkeypatch.setattr(_roles, "expand_loss", expand_loss)
    monkeypatch.setattr(_roles, "batch_slices", batch_slices)
    monkeypatch.setattr(_roles, "_as_matrix", as_matrix)
    monkeypatch.setattr(_core.Optimizer, "step", step)


def lr_secrets(rec: Recorder, active: str, passives: list[str]) -> dict[str, dict[str, list[np.ndarray]]]:
    """Per party, the secrets of a recorded hetero-LR run (one problem):

    * every data party: its features (``X``), its weights and gradients of every batch
      (the gradient also times the batch size: the unaveraged ``Xᵀd``), its scores
      ``u_k = X_k[batch] w_k``;
    * the active party: labels (all, and per batch), the residual terms ``s`` and ``h``
      and the residual ``d = s + h·Σ_k u_k`` of every batch.
    """
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    batches = [b for epoch in rec.kept("batches", active) for b in epoch]
    sizes = sorted({b.size for b in batches})
    for party in [active, *passives]:
        X = rec.kept("X", party)[0]
        steps = rec.kept("step", party)
        grads = [s["grad"] for s in steps]
        sec = {"features": [X.ravel()] + [X[:, j] for j in range(X.shape[1])],
               "weights": [s["w"] for s in steps],
               "gradients": grads + [g * nb for g in grads for nb in sizes],
               "scores": [X[b] @ s["w"][: X.shape[1]] for b, s in zip(batches, steps)]}
        out[party] = sec
    terms = rec.kept("batch_terms", active)
    U = [sum(out[p]["scores"][i] for p in passives) for i in range(len(terms))]
    out[active]["labels"] = [t["y"] for t in terms]
    out[active]["residual_terms"] = [t["s"] for t in terms] + [t["h"] for t in terms]
    out[active]["residuals"] = [t["s"] + t["h"] * u for t, u in zip(terms, U)]
    return out
