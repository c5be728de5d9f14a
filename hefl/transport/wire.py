"""The hefl wire format: what travels between parties, and how it is checked.

Nothing received from a peer is ever unpickled, ``eval``-ed or otherwise turned into
code: a message is a small JSON header plus raw binary frames, and the receiver only
builds the payload kinds listed below, after checking every size.

Message layout
--------------
One ZeroMQ multipart message per ``send`` (the in-memory channel uses the same bytes)::

    frame 0      header: UTF-8 JSON object (at most ``MAX_HEADER_BYTES``)
    frame 1..k   raw payload frames (numpy buffers, fixed-width ciphertext bytes,
                 UTF-8 text, JSON text, serialised public kits)

(On the receiving ROUTER socket ZeroMQ prepends the sender's routing id, which must
equal ``header["src"]``; with CurveZMQ it must also equal the ZAP user id, i.e. the
party the sender's public key belongs to.)

Header keys:

``v``      protocol version, ``1``
``src``    the sender's party name
``kind``   ``"msg"`` (a payload for one tag) or a control kind: ``"hello"`` (first
           message on a connection), ``"ping"`` / ``"pong"`` (heartbeats), ``"bye"``
           (the sender closed its channel; nothing more will come)
``tag``    ``msg`` only: the full, namespaced tag (``tree-3/level-2/hist``)
``body``   ``msg`` only: the payload descriptor (below)
``sizes``  ``msg`` only: the byte length of every following frame; a message whose
           frames do not match exactly (truncated, extra, longer) is rejected
``max``    ``hello`` / ``ping`` / ``pong``, optional: the largest message (bytes) the
           sender accepts, so that its peers refuse to send a larger one (one frame
           over the limit would otherwise be dropped by ZeroMQ, unseen by both sides)

Payload descriptors
-------------------
A descriptor is a JSON object whose ``"k"`` names the kind; ``"f"`` is a frame index
(each frame is referenced exactly once)::

    {"k": "bytes", "f": i}                      bytes / bytearray / memoryview -> bytes
    {"k": "str",   "f": i}                      str, UTF-8
    {"k": "json",  "f": i}                      a JSON document: dicts with str keys,
                                                lists, str, int, float, bool, None
    {"k": "nd", "f": i, "dtype": "<f8", "shape": [2, 3], "order": "C", "scalar": false}
                                                numpy array (numeric dtypes only: b i u f c);
                                                byte length must equal prod(shape)*itemsize
    {"k": "cipher", "f": [i, ...], "meta": {...}}
                                                CipherArray via hefl.he.wire
                                                (meta has scheme, fingerprint, shape, width)
    {"k": "kit", "f": i}                        PublicKit via hefl.he.wire (a SecretKit
                                                sends its public part only)
    {"k": "list",  "items": [desc, ...]}        containers holding non-JSON values
    {"k": "tuple", "items": [desc, ...]}
    {"k": "dict",  "keys": [key, ...], "items": [desc, ...]}   keys: str/int/float/bool/None
    {"k": "val",   "v": x}                      a JSON primitive inside such a container

Array frames are views of the array's own memory (the ZeroMQ channel sends those of
128 KiB and more zero-copy, see :mod:`hefl.transport.zmq_channel`) and received arrays
are views of the received frame (zero-copy, writable; copied only if misaligned). TenSEAL (CKKS)
objects travel inside CKKS ``CipherArray`` s through the same ``hefl.he.wire`` hooks.

Receiving a ``CipherArray`` requires its public-key fingerprint to be registered with
the receiving channel (``register_kit``); public kits received as payloads are
registered automatically. Anything else -- an unknown kind, a bad dtype, a size that
does not add up, a frame nobody references, a header that is not JSON, an oversized
message -- raises :class:`hefl.errors.ProtocolError` naming the peer and the tag.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from hefl.errors import HEError, ProtocolError

__all__ = [
    "CONTROL_KINDS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MAX_HEADER_BYTES",
    "PROTOCOL_VERSION",
    "BadMessage",
    "announced_limit",
    "build_message",
    "check_frames",
    "check_sizes",
    "control_header",
    "decode_payload",
    "encode_payload",
    "is_cipher_array",
    "is_public_kit",
    "parse_header",
    "parse_nd_header",
    "validate_name",
    "validate_segment",
    "validate_tag",
]

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
#: Largest accepted header (the JSON frame); payload bytes go in frames, not here.
MAX_HEADER_BYTES = 4 * 1024 * 1024
#: Default limit on a whole message (header + frames); configurable per channel.
DEFAULT_MAX_MESSAGE_BYTES = 2 * 1024**3
#: Most frames one message may have.
MAX_FRAMES = 100_000
#: Deepest nesting of containers / JSON documents accepted.
MAX_DEPTH = 64
CONTROL_KINDS = frozenset({"hello", "ping", "pong", "bye"})

_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")
# a segment is not "." or ".." (or all dots): tags may end up in file names and logs
_SEGMENT = r"(?!\.+(?:/|\Z))[A-Za-z0-9_.:=+,@#\-]+"
_TAG_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*\Z")
_SEGMENT_RE = re.compile(rf"{_SEGMENT}\Z")
MAX_TAG_LENGTH = 512
_DTYPE_RE = re.compile(r"[<>|]([biufc])([0-9]{1,2})\Z")
# one encoder each, made once (json.dumps with options builds a new one per call)
_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=True)
_HEADER_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=True, check_circular=False)
_MAX_NDIM = 32


# --------------------------------------------------------------------------- names


def validate_name(name: object, what: str = "party name") -> str:
    """Return ``name`` if it is a valid party name (``[A-Za-z0-9_.-]{1,64}``), else raise."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid {what} {name!r}: use 1-64 characters of A-Z a-z 0-9 _ . -")
    return name


def validate_tag(tag: object) -> str:
    """Return ``tag`` if it is a valid full tag (``seg/seg/...``), else raise ``ValueError``."""
    if not isinstance(tag, str) or len(tag) > MAX_TAG_LENGTH or not _TAG_RE.match(tag):
        raise ValueError(
            f"invalid tag {tag!r}: use '/'-separated segments of A-Z a-z 0-9 _ . : = + , @ # -"
            f" (at most {MAX_TAG_LENGTH} characters)"
        )
    return tag


def validate_segment(name: object) -> str:
    """Return ``name`` if it is one tag segment (no ``/``), else raise ``ValueError``."""
    if not isinstance(name, str) or not _SEGMENT_RE.match(name):
        raise ValueError(
            f"invalid namespace {name!r}: use one segment of A-Z a-z 0-9 _ . : = + , @ # -"
        )
    return name


# --------------------------------------------------------------------------- kind detection


def is_cipher_array(obj: object) -> bool:
    """Duck-type test for ``hefl.he`` ``CipherArray`` (has ``kit`` and ``to_bytes``)."""
    return not isinstance(obj, (bytes, bytearray, memoryview, np.ndarray)) and (
        hasattr(obj, "kit") and hasattr(obj, "to_bytes")
    )


def _he_base() -> Any:
    try:
        from hefl.he import base  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - hefl.he not built (yet) or broken: duck-type instead
        return None
    return base


def is_public_kit(obj: object) -> bool:
    """``isinstance(obj, hefl.he.base.PublicKit)`` when that exists, else a duck-type test."""
    base = _he_base()
    cls = getattr(base, "PublicKit", None) if base is not None else None
    if isinstance(cls, type) and isinstance(obj, cls):
        return True
    return (
        not isinstance(obj, (bytes, bytearray, memoryview, np.ndarray, str))
        and hasattr(obj, "fingerprint")
        and hasattr(obj, "to_bytes")
    )


# --------------------------------------------------------------------------- encoding


def _is_json(obj: object, depth: int = 0) -> bool:
    """True when ``obj`` survives a JSON round trip unchanged (no tuples, str keys only)."""
    if depth > MAX_DEPTH:
        return False
    if obj is None or isinstance(obj, (bool, int, str)):
        return True
    if isinstance(obj, float):
        return True
    if type(obj) is list:
        return all(_is_json(x, depth + 1) for x in obj)
    if type(obj) is dict:
        return all(isinstance(k, str) and _is_json(v, depth + 1) for k, v in obj.items())
    return False


def _array_frame(arr: np.ndarray) -> tuple[dict, memoryview]:
    dt = arr.dtype
    if dt.kind not in "biufc" or dt.fields is not None or dt.subdtype is not None:
        raise TypeError(f"numpy arrays of dtype {dt} cannot be sent (numeric dtypes only)")
    order = "C"
    if arr.flags.c_contiguous:
        flat = arr
    elif arr.flags.f_contiguous:
        order, flat = "F", arr.T  # a C-contiguous view of the same memory
    else:
        flat = np.ascontiguousarray(arr)
    raw = flat.reshape(-1).view(np.uint8)
    desc = {"k": "nd", "dtype": dt.str, "shape": [int(s) for s in arr.shape], "order": order}
    return desc, raw.data


class _Encoder:
    def __init__(self, on_kit: Callable[[Any], None] | None = None) -> None:
        self.frames: list[Any] = []
        self.borrowed = False  # some frame is a view of the caller's memory
        self.on_kit = on_kit

    def add(self, buf: Any, borrowed: bool) -> int:
        self.frames.append(buf)
        self.borrowed = self.borrowed or borrowed
        return len(self.frames) - 1

    def encode(self, obj: Any, depth: int = 0) -> dict:
        if depth > MAX_DEPTH:
            raise ValueError(f"payload nested deeper than {MAX_DEPTH} levels")
        if isinstance(obj, bytes):
            return {"k": "bytes", "f": self.add(obj, False)}
        if isinstance(obj, (bytearray, memoryview)):
            mv = memoryview(obj)
            if not mv.c_contiguous:  # F-ordered too: the bytes are sent in tobytes() order
                mv = memoryview(mv.tobytes())
            if mv.ndim != 1 or mv.format != "B":
                mv = mv.cast("B")
            return {"k": "bytes", "f": self.add(mv, True)}
        if isinstance(obj, str) and depth == 0:
            return {"k": "str", "f": self.add(obj.encode("utf-8"), False)}
        if isinstance(obj, np.ndarray):
            desc, mv = _array_frame(obj)
            desc["f"] = self.add(mv, True)
            return desc
        if isinstance(obj, np.generic):
            desc, mv = _array_frame(np.asarray(obj))
            desc["scalar"] = True
            desc["f"] = self.add(bytes(mv), False)
            return desc
        if depth == 0 and _is_json(obj):
            text = _JSON.encode(obj)
            return {"k": "json", "f": self.add(text.encode("utf-8"), False)}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            if isinstance(obj, int) and not isinstance(obj, bool):
                obj = int(obj)
            elif isinstance(obj, float):
                obj = float(obj)
            return {"k": "val", "v": obj}
        if isinstance(obj, (list, tuple)):
            if isinstance(obj, list) and _is_json(obj, depth):
                text = _JSON.encode(obj)
                return {"k": "json", "f": self.add(text.encode("utf-8"), False)}
            items = [self.encode(x, depth + 1) for x in obj]
            return {"k": "tuple" if isinstance(obj, tuple) else "list", "items": items}
        if isinstance(obj, dict):
            if _is_json(obj, depth):
                text = _JSON.encode(obj)
                return {"k": "json", "f": self.add(text.encode("utf-8"), False)}
            keys = []
            for k in obj:
                if not (k is None or isinstance(k, (str, int, float, bool))):
                    raise TypeError(f"dict key {k!r} of type {type(k).__name__} cannot be sent")
                keys.append(k if isinstance(k, (str, bool)) or k is None else
                            (int(k) if isinstance(k, int) else float(k)))
            items = [self.encode(v, depth + 1) for v in obj.values()]
            return {"k": "dict", "keys": keys, "items": items}
        if is_cipher_array(obj):
            from hefl.he.wire import cipher_to_wire  # lazy: hefl.he is an optional layer here

            meta, bufs = cipher_to_wire(obj)
            if self.on_kit is not None:
                self.on_kit(obj.kit)
            idx = [self.add(b, not isinstance(b, bytes)) for b in bufs]
            return {"k": "cipher", "meta": meta, "f": idx}
        if is_public_kit(obj):
            # public_kit_to_wire serialises kit.public_kit(): a SecretKit sends only its
            # public part, and the receiver gets a PublicKit.
            from hefl.he.wire import public_kit_to_wire

            data = bytes(public_kit_to_wire(obj))
            if self.on_kit is not None:
                self.on_kit(obj)
            return {"k": "kit", "f": self.add(data, False)}
        raise TypeError(
            f"objects of type {type(obj).__module__}.{type(obj).__qualname__} cannot be sent"
            " (bytes, str, JSON-able values, numpy arrays, CipherArray, public kits,"
            " and lists/tuples/dicts of these)"
        )


def encode_payload(obj: Any, on_kit: Callable[[Any], None] | None = None
                   ) -> tuple[dict, list[Any], bool]:
    """Split ``obj`` into a JSON-able descriptor and raw frames.

    ``on_kit`` is called with the kit of every ``CipherArray`` and every kit sent (the
    channel registers them, so ciphertexts under them can come back).

    Returns
    -------
    body : dict
        The payload descriptor (see the module docstring).
    frames : list of buffer
        Raw frames (``bytes`` or ``memoryview``), in descriptor order.
    borrowed : bool
        Whether some frame is a view of the caller's memory (a numpy array, a
        bytearray): such a frame must not be modified until it has been sent.

    Raises
    ------
    TypeError
        For an object of a kind that cannot be sent.
    """
    enc = _Encoder(on_kit)
    body = enc.encode(obj)
    return body, enc.frames, enc.borrowed


def _nd_message(src: str, tag: str, arr: np.ndarray, checked: bool
                ) -> tuple[bytes, list[Any], bool] | None:
    """``build_message`` for one C-contiguous numeric array (the bulk of the traffic), or
    ``None`` for anything else. The same bytes as the general path, without its JSON
    encoder and descriptor walk: ``src`` and ``tag`` must match ``_NAME_RE`` and
    ``_TAG_RE``, whose characters need no JSON escaping (checked here unless ``checked``)."""
    dt = arr.dtype
    if (
        not arr.flags.c_contiguous
        or dt.kind not in _ND_KINDS
        or dt.fields is not None
        or dt.subdtype is not None
    ):
        return None
    if not checked and (
        not _NAME_RE.match(src) or len(tag) > MAX_TAG_LENGTH or not _TAG_RE.match(tag)
    ):
        return None
    raw = arr.reshape(-1).view(np.uint8).data
    shape = ",".join(map(str, arr.shape))
    header = (f'{{"v":{PROTOCOL_VERSION},"src":"{src}","kind":"msg","tag":"{tag}","body":'
              f'{{"k":"nd","dtype":"{dt.str}","shape":[{shape}],"order":"C","f":0}},'
              f'"sizes":[{raw.nbytes}]}}')
    return header.encode("ascii"), [raw], True


_ND_KINDS = frozenset("biufc")


def build_message(src: str, tag: str, obj: Any, on_kit: Callable[[Any], None] | None = None,
                  *, checked: bool = False) -> tuple[bytes, list[Any], bool]:
    """Encode ``obj`` as a message for ``tag``: (header bytes, frames, borrowed).

    ``checked``: the caller has already validated ``src`` (:func:`validate_name`) and
    ``tag`` (:func:`validate_tag`), as a channel does before every send.
    """
    if type(obj) is np.ndarray and type(src) is str and type(tag) is str:
        fast = _nd_message(src, tag, obj, checked)
        if fast is not None:
            return fast
    body, frames, borrowed = encode_payload(obj, on_kit)
    sizes = [memoryview(f).nbytes for f in frames]
    header = {"v": PROTOCOL_VERSION, "src": src, "kind": "msg", "tag": tag, "body": body,
              "sizes": sizes}
    return _HEADER_JSON.encode(header).encode("utf-8"), frames, borrowed


def control_header(src: str, kind: str, max_bytes: int | None = None) -> bytes:
    """Header bytes of a control message (``hello``, ``ping``, ``pong``, ``bye``);
    ``max_bytes``: the sender's message size limit, announced to the peer."""
    assert kind in CONTROL_KINDS
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "src": src, "kind": kind}
    if max_bytes is not None:
        header["max"] = int(max_bytes)
    return json.dumps(header).encode("utf-8")


def announced_limit(header: dict) -> int | None:
    """The size limit a control header announces (``max``), or ``None`` if absent or
    invalid (a positive int; anything else is ignored, never trusted)."""
    limit = header.get("max")
    return limit if type(limit) is int and limit > 0 else None


# --------------------------------------------------------------------------- decoding


class BadMessage(ProtocolError):
    """A malformed message (a :class:`~hefl.errors.ProtocolError`, so a caller of
    :func:`parse_header` / :func:`check_frames` sees only the documented error); the
    channel re-raises it naming the peer and the tag."""


def parse_header(data: Any, max_bytes: int = MAX_HEADER_BYTES) -> dict:
    """Parse and check a header frame; raise :class:`BadMessage` when malformed.

    Returns the header dict with ``src`` and ``kind`` checked; for ``msg`` also ``tag``
    (a valid tag), ``body`` (a dict) and ``sizes`` (a list of non-negative ints).
    """
    mv = memoryview(data)
    if mv.nbytes > max_bytes:
        raise BadMessage(f"header of {mv.nbytes} bytes exceeds the limit of {max_bytes}")
    try:
        header = _json_loads(str(mv, "utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadMessage(f"header is not valid UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise BadMessage(f"header is a JSON {type(header).__name__}, not an object")
    if header.get("v") != PROTOCOL_VERSION:
        raise BadMessage(f"unsupported protocol version {header.get('v')!r} (expected 1)")
    src, kind = header.get("src"), header.get("kind")
    if not isinstance(src, str) or not _NAME_RE.match(src):
        raise BadMessage(f"invalid sender name {str(src)[:80]!r} in header")
    if not isinstance(kind, str):  # e.g. a list: not hashable, would escape as TypeError
        raise BadMessage(f"message kind {str(kind)[:80]!r} is not a string")
    if kind in CONTROL_KINDS:
        return header
    if kind != "msg":
        raise BadMessage(f"unknown message kind {str(kind)[:80]!r}")
    tag = header.get("tag")
    if not isinstance(tag, str) or len(tag) > MAX_TAG_LENGTH or not _TAG_RE.match(tag):
        raise BadMessage(f"invalid tag {str(tag)[:80]!r} in header")
    if not isinstance(header.get("body"), dict):
        raise BadMessage("header has no payload descriptor")
    sizes = header.get("sizes")
    if not isinstance(sizes, list) or len(sizes) > MAX_FRAMES:
        raise BadMessage("header has no valid list of frame sizes")
    for size in sizes:
        if type(size) is not int or size < 0:
            raise BadMessage("header has no valid list of frame sizes")
    return header


_SCAN = json.decoder.JSONDecoder().scan_once  # the C scanner when there is one
_WS = json.decoder.WHITESPACE.match


def _json_loads(text: str) -> Any:
    """``json.loads(text)`` (same result, same errors) without its Python layers: the
    header of every message goes through it."""
    start = _WS(text, 0).end() if text[:1] in _WS_CHARS else 0
    try:
        obj, end = _SCAN(text, start)
    except StopIteration as exc:
        raise json.JSONDecodeError("Expecting value", text, exc.value) from None
    if end != len(text):
        end = _WS(text, end).end()
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
    return obj


_WS_CHARS = frozenset(" \t\n\r")


# The header _nd_message writes for one C-ordered array, byte for byte. For bytes it
# matches, parse_header's result is fixed by the five captures: none of the characters
# the classes admit needs JSON escaping (no '"', no '\'), the numbers are plain JSON
# integers below 10**18, src, tag and dtype satisfy _NAME_RE, _TAG_RE ('"' ending the
# tag where _TAG_RE has \Z) and _DTYPE_RE, and at most _MAX_NDIM dimensions.
_ND_SEG = rb'(?!\.+[/"])[A-Za-z0-9_.:=+,@#\-]+'
_ND_INT = rb"(?:0|[1-9][0-9]{0,17})"
_ND_HEADER = re.compile(
    rb'\{"v":%d,"src":"([A-Za-z0-9_.\-]{1,64})","kind":"msg","tag":"(' % PROTOCOL_VERSION
    + _ND_SEG
    + rb"(?:/" + _ND_SEG + rb')*)","body":\{"k":"nd","dtype":"([<>|][biufc][0-9]{1,2})",'
    + rb'"shape":\[(' + _ND_INT + rb"(?:," + _ND_INT + rb"){0,%d})?\]," % (_MAX_NDIM - 1)
    + rb'"order":"C","f":0\},"sizes":\[(' + _ND_INT + rb")\]\}"
)


def parse_nd_header(data: Any) -> tuple[str, str, str, list[int], int] | None:
    """``(src, tag, dtype, shape, size)`` when ``data`` is, byte for byte, the header that
    :func:`build_message` writes for one C-ordered numeric array (the bulk of the
    traffic); else ``None``: use :func:`parse_header`, which accepts the same header
    too (a dict of the same values), only slower."""
    if type(data) is not bytes or len(data) > 1024:
        return None
    m = _ND_HEADER.fullmatch(data)
    if m is None:
        return None
    src, tag, dtype, shape, size = m.groups()
    if len(tag) > MAX_TAG_LENGTH:
        return None
    return (src.decode("ascii"), tag.decode("ascii"), dtype.decode("ascii"),
            [int(x) for x in shape.split(b",")] if shape else [], int(size))


def check_frames(header: dict, frames: list[Any], max_message_bytes: int) -> int:
    """Check that ``frames`` match ``header["sizes"]`` exactly; return the payload bytes."""
    return check_sizes(header["sizes"], frames, max_message_bytes)


def check_sizes(sizes: list[int], frames: list[Any], max_message_bytes: int) -> int:
    """Check that ``frames`` have exactly the byte ``sizes`` announced; return their sum."""
    if len(frames) != len(sizes):
        raise BadMessage(f"message has {len(frames)} payload frames, header announces {len(sizes)}"
                   " (truncated or padded)")
    total = 0
    for i, (frame, size) in enumerate(zip(frames, sizes)):
        n = memoryview(frame).nbytes
        if n != size:
            raise BadMessage(f"frame {i} has {n} bytes, header announces {size} (truncated or padded)")
        total += n
    if total > max_message_bytes:
        raise BadMessage(f"message of {total} bytes exceeds the limit of {max_message_bytes}")
    return total


#: dtype strings already found plain and numeric (there are only a few dozen of them)
_DTYPES: dict[str, np.dtype] = {}


def _plain_dtype(dtype_s: object) -> np.dtype:
    """The numpy dtype of a received dtype string, which must be plain and numeric."""
    if not isinstance(dtype_s, str) or not _DTYPE_RE.match(dtype_s):
        raise BadMessage(f"array dtype {str(dtype_s)[:40]!r} is not a plain numeric dtype")
    try:
        dt = np.dtype(dtype_s)
    except TypeError:
        raise BadMessage(f"array dtype {dtype_s!r} is not known to numpy") from None
    if dt.kind not in "biufc" or dt.str != dtype_s:
        raise BadMessage(f"array dtype {dtype_s!r} is not a plain numeric dtype")
    if len(_DTYPES) < 256:  # _DTYPE_RE admits 3 * 5 * 100 strings at most anyway
        _DTYPES[dtype_s] = dt
    return dt


_HE_WIRE: dict[str, Any] = {}


def _he_wire_function(name: str) -> Any:
    """``hefl.he.wire.<name>`` (imported once; ``None`` where hefl.he cannot be imported)."""
    fn = _HE_WIRE.get(name)
    if fn is None:
        try:
            from hefl.he import wire as he_wire
        except ImportError:
            return None
        fn = _HE_WIRE[name] = getattr(he_wire, name)
    return fn


class _Decoder:
    def __init__(self, frames: list[Any], kits: Any, on_kit: Callable[[Any], None] | None):
        self.frames = frames
        self.used = [False] * len(frames)
        self.kits = kits
        self.on_kit = on_kit

    def frame(self, idx: object) -> memoryview:
        if type(idx) is not int or not 0 <= idx < len(self.frames):
            raise BadMessage(f"descriptor refers to frame {str(idx)[:40]!r}, which does not exist")
        if self.used[idx]:
            raise BadMessage(f"frame {idx} is referenced twice")
        self.used[idx] = True
        return memoryview(self.frames[idx])

    def decode(self, desc: object, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise BadMessage(f"payload nested deeper than {MAX_DEPTH} levels")
        if not isinstance(desc, dict) or not isinstance(desc.get("k"), str):
            raise BadMessage("payload descriptor is not an object with a kind")
        k = desc["k"]
        if k == "nd":  # the common case first
            return self.array(desc)
        if k == "bytes":
            return self.frame(desc.get("f")).tobytes()
        if k == "str":
            try:
                return str(self.frame(desc.get("f")), "utf-8")
            except UnicodeDecodeError:
                raise BadMessage("str payload is not valid UTF-8") from None
        if k == "json":
            mv = self.frame(desc.get("f"))
            try:
                return json.loads(str(mv, "utf-8"))
            except (ValueError, RecursionError) as exc:
                raise BadMessage(f"json payload is not valid UTF-8 JSON ({type(exc).__name__})") from None
        if k == "val":
            v = desc.get("v", ...)
            if not (v is None or isinstance(v, (bool, int, float, str))):
                raise BadMessage("container value is not a JSON primitive")
            return v
        if k in ("list", "tuple"):
            items = desc.get("items")
            if not isinstance(items, list):
                raise BadMessage(f"{k} descriptor has no item list")
            out = [self.decode(x, depth + 1) for x in items]
            return out if k == "list" else tuple(out)
        if k == "dict":
            keys, items = desc.get("keys"), desc.get("items")
            if not isinstance(keys, list) or not isinstance(items, list) or len(keys) != len(items):
                raise BadMessage("dict descriptor needs key and item lists of equal length")
            if not all(x is None or isinstance(x, (bool, int, float, str)) for x in keys):
                raise BadMessage("dict keys must be JSON primitives")
            # decode values in order: a kit inside the dict registers before later ciphertexts
            values = [self.decode(x, depth + 1) for x in items]
            return dict(zip(keys, values))
        if k == "cipher":
            return self.cipher(desc)
        if k == "kit":
            return self.kit(desc)
        raise BadMessage(f"unknown payload kind {k[:40]!r}")

    def array(self, desc: dict) -> Any:
        dtype_s, shape, order = desc.get("dtype"), desc.get("shape"), desc.get("order", "C")
        dt = _DTYPES.get(dtype_s) if type(dtype_s) is str else None
        if dt is None:
            dt = _plain_dtype(dtype_s)
        if not isinstance(shape, list) or len(shape) > _MAX_NDIM:
            raise BadMessage("array shape is not a list of non-negative ints")
        for s in shape:
            if type(s) is not int or s < 0:
                raise BadMessage("array shape is not a list of non-negative ints")
        if order not in ("C", "F"):
            raise BadMessage(f"array order {str(order)[:10]!r} is not 'C' or 'F'")
        flat = _flat_array(dt, dtype_s, shape, self.frame(desc.get("f")))
        arr = flat.reshape(shape[::-1]).T if order == "F" else flat.reshape(shape)
        if desc.get("scalar") is True:
            if shape:
                raise BadMessage("scalar array with a non-empty shape")
            return arr[()]
        return arr

    def cipher(self, desc: dict) -> Any:
        meta, idx = desc.get("meta"), desc.get("f")
        if not isinstance(meta, dict) or not isinstance(idx, list):
            raise BadMessage("cipher descriptor needs meta and a frame list")
        fp = meta.get("fingerprint")
        if not isinstance(fp, str):
            raise BadMessage("cipher metadata has no public-key fingerprint")
        kit = self.kits.get(fp) if self.kits is not None else None
        if kit is None:
            raise BadMessage(
                f"ciphertexts under public key {fp[:16]}…, which is not registered here"
                " (register_kit it, or have its owner send the public kit first)"
            )
        bufs = [self.frame(i) for i in idx]
        cipher_from_wire = _he_wire_function("cipher_from_wire")
        if cipher_from_wire is None:
            raise BadMessage("cannot decode ciphertexts: hefl.he.wire is not available")
        try:
            # the frames are this message's own (the channel hands each out once)
            return cipher_from_wire(meta, bufs, kit, adopt=True)
        except ProtocolError as exc:
            raise BadMessage(f"invalid ciphertext payload: {exc}") from exc
        except (HEError, ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            raise BadMessage(f"invalid ciphertext payload: {type(exc).__name__}: {exc}") from exc

    def kit(self, desc: dict) -> Any:
        data = self.frame(desc.get("f")).tobytes()
        try:
            from hefl.he.wire import load_public_kit
        except ImportError:
            raise BadMessage("cannot decode a public kit: hefl.he.wire is not available") from None
        try:
            kit = load_public_kit(data)
        except ProtocolError as exc:
            raise BadMessage(f"invalid public kit: {exc}") from exc
        except (HEError, ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            raise BadMessage(f"invalid public kit: {type(exc).__name__}: {exc}") from exc
        if self.on_kit is not None:
            self.on_kit(kit)
        return kit


def _flat_array(dt: np.dtype, dtype_s: str, shape: list[int], mv: memoryview) -> np.ndarray:
    """The flat array of ``dt`` over ``mv``, which must hold exactly ``shape`` (a list of
    non-negative ints); writable and aligned (a copy where the buffer is neither)."""
    expected = span = dt.itemsize
    for s in shape:
        expected *= s
        span *= s or 1
    if span >= 2**62:
        # numpy cannot even describe it (an empty array of shape [0, 2**62, 2**62])
        raise BadMessage(f"array shape {str(shape)[:80]} is too large")
    if mv.nbytes != expected:
        raise BadMessage(
            f"array of shape {tuple(shape)} and dtype {dtype_s} needs {expected} bytes,"
            f" frame has {mv.nbytes}"
        )
    flat = np.frombuffer(mv, dtype=dt) if expected else np.empty(0, dtype=dt)
    flags = flat.flags
    if not flags.writeable or not flags.aligned:
        flat = flat.copy()
    return flat


def _decode_nd(body: tuple[str, list[int]], frames: list[Any]) -> np.ndarray:
    """The array of a message whose header :func:`parse_nd_header` read: ``body`` is its
    ``(dtype, shape)``, ``frames`` its one frame (size-checked)."""
    dtype_s, shape = body
    dt = _DTYPES.get(dtype_s)
    if dt is None:
        dt = _plain_dtype(dtype_s)
    return _flat_array(dt, dtype_s, shape, memoryview(frames[0])).reshape(shape)


def decode_payload(
    body: dict | tuple[str, list[int]],
    frames: list[Any],
    *,
    kits: Mapping[str, Any] | None = None,
    on_kit: Callable[[Any], None] | None = None,
    peer: str | None = None,
    tag: str | None = None,
) -> Any:
    """Rebuild a payload from its descriptor and frames.

    Parameters
    ----------
    body : dict or tuple
        The payload descriptor from the header; or ``(dtype, shape)`` for a header that
        :func:`parse_nd_header` read (one C-ordered array in one frame).
    frames : list of buffer
        The received payload frames (already size-checked by :func:`check_frames`).
    kits : mapping, optional
        Public-key fingerprint -> kit, for ``CipherArray`` payloads.
    on_kit : callable, optional
        Called with every public kit decoded (the channel registers it).
    peer, tag : str, optional
        Named in the error.

    Raises
    ------
    ProtocolError
        For any malformed, inconsistent or unknown content, naming ``peer`` and ``tag``.
    """
    try:
        if type(body) is tuple:
            return _decode_nd(body, frames)
        dec = _Decoder(frames, kits, on_kit)
        obj = dec.decode(body)
        if not all(dec.used):
            unused = [i for i, u in enumerate(dec.used) if not u]
            raise BadMessage(f"frames {unused[:5]} are not referenced by the payload descriptor")
    except BadMessage as exc:
        raise ProtocolError(f"rejected message: {exc}", peer=peer, tag=tag) from exc.__cause__
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError("rejected message: payload nested too deeply", peer=peer,
                            tag=tag) from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
            MemoryError) as exc:
        # Malformed content that slipped past the checks above is still the peer's doing:
        # the receiver gets a ProtocolError naming peer and tag, never numpy's own error.
        log.warning("unexpected %s while decoding a message from %r (tag %r): %s",
                    type(exc).__name__, peer, tag, exc)
        raise ProtocolError(f"rejected message: unexpected {type(exc).__name__} while decoding:"
                            f" {str(exc)[:200]}", peer=peer, tag=tag) from exc
    return obj

