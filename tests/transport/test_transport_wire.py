"""The wire format: every payload kind round-trips; malformed messages are rejected."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hefl.errors import ProtocolError
from hefl.transport import wire


def roundtrip(obj, kits=None):
    header, frames, _ = wire.build_message("alice", "t/x", obj)
    h = wire.parse_header(header)
    # what arrives over the wire is plain bytes
    frames = [bytearray(memoryview(f).tobytes()) for f in frames]
    wire.check_frames(h, frames, 2**32)
    return wire.decode_payload(h["body"], frames, kits=kits, peer="alice", tag="t/x")


def same(a, b):
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, np.generic):
        return type(a) is type(b) and (a == b or bool(np.isnan(a) and np.isnan(b)))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return (type(b) is dict and list(a) == list(b)
                and all(same(a[k], b[k]) for k in a))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("obj", [
    b"", b"\x00\xff" * 1000, "", "héllo wörld ✓", None, True, 0, -7, 2**200, 1.5,
    float("inf"), {"a": [1, 2.5, None, "x"], "b": {"c": True}}, [1, [2, [3]]],
    (1, "two", b"three"), {"arr": np.arange(5), "n": 3, 7: "int key"},
    [np.zeros((2, 3), dtype=np.float32), (b"x", None)], np.float64(2.5), np.int8(-3),
    np.bool_(True), np.complex64(1 + 2j), {"nested": {"deep": [np.uint16(9), (1,)]}},
])
def test_kinds_roundtrip(obj):
    assert same(obj, roundtrip(obj))


def test_bytearray_and_memoryview_arrive_as_bytes():
    assert roundtrip(bytearray(b"abc")) == b"abc"
    assert roundtrip(memoryview(b"abcdef")[1:4]) == b"bcd"


def test_nan_json():
    out = roundtrip({"x": float("nan")})
    assert math.isnan(out["x"])


_dtypes = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?", sizes=(16, 32, 64)),
    hnp.complex_number_dtypes(endianness="?"),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(_dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)),
       st.sampled_from(["C", "F", "slice"]))
def test_arrays_roundtrip(arr, layout):
    if layout == "F":
        arr = np.asfortranarray(arr)
    elif layout == "slice" and arr.ndim:
        arr = arr[::2]
    out = roundtrip(arr)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    assert np.array_equal(out, arr, equal_nan=arr.dtype.kind in "fc")
    assert out.flags.writeable


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids,
                                                               max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(_json)
def test_json_roundtrip(value):
    assert same(value, roundtrip(value))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=50), st.text(max_size=10), st.integers(),
                          hnp.arrays(np.int32, st.integers(0, 5))), max_size=5).map(tuple))
def test_mixed_tuple_roundtrip(value):
    assert same(value, roundtrip(value))


def test_unsupported_types():
    class Thing:
        pass

    for bad in (Thing(), {1, 2}, np.array(["a"]), np.array([object()]),
                np.zeros(2, dtype="M8[s]"), {(1, 2): 3}):
        with pytest.raises(TypeError):
            wire.build_message("alice", "t", bad)


def test_tag_and_name_validation():
    for ok in ("a", "tree-3/level-2/hist", "x.y:z=1"):
        assert wire.validate_tag(ok) == ok
    for bad in ("", "/a", "a/", "a//b", "a b", "ä", 3, "x" * 600):
        with pytest.raises(ValueError):
            wire.validate_tag(bad)
    with pytest.raises(ValueError):
        wire.validate_name("bad name")


# ----------------------------------------------------------------------------- malformed

EXECUTED = []


def _boom(*args):  # what a malicious pickle would run
    EXECUTED.append(args)
    return "pwned"


class _Evil:
    def __reduce__(self):
        return (_boom, ("ran",))


EVIL = pickle.dumps(_Evil())


def _msg(body, frames, **extra):
    h = {"v": 1, "src": "alice", "kind": "msg", "tag": "t", "body": body,
         "sizes": [len(f) for f in frames]}
    h.update(extra)
    return json.dumps(h).encode(), frames


def _reject(header: bytes, frames):
    try:
        h = wire.parse_header(header)
        wire.check_frames(h, frames, 2**32)
        wire.decode_payload(h["body"], frames, kits={}, peer="alice", tag="t")
    except wire.BadMessage as exc:
        return exc
    except ProtocolError as exc:
        assert exc.peer == "alice" and exc.tag == "t"
        return exc
    raise AssertionError("accepted a malformed message")


@pytest.mark.parametrize("case", [
    "pickle_header", "not_json", "json_list", "bad_version", "unknown_kind", "bad_tag",
    "truncated", "padded", "missing_frame", "extra_frame", "unknown_payload_kind",
    "pickle_kind", "object_dtype", "structured_dtype", "void_dtype", "shape_mismatch",
    "negative_shape", "frame_twice", "frame_unreferenced", "frame_out_of_range",
    "bad_utf8", "bad_json_payload", "deep_nesting", "huge_header", "cipher_unknown_key",
    "scalar_with_shape", "dict_lengths",
])
def test_malformed_rejected_nothing_executed(case):
    EXECUTED.clear()
    arr = np.arange(4, dtype="<f8").tobytes()
    nd = {"k": "nd", "f": 0, "dtype": "<f8", "shape": [4], "order": "C"}
    if case == "pickle_header":
        header, frames = EVIL, []
    elif case == "not_json":
        header, frames = b"{not json", []
    elif case == "json_list":
        header, frames = b"[1,2]", []
    elif case == "bad_version":
        header, frames = _msg(nd, [arr], v=2)
    elif case == "unknown_kind":
        header, frames = _msg(nd, [arr], kind="exec")
    elif case == "bad_tag":
        header, frames = _msg(nd, [arr], tag="../../etc")
    elif case == "truncated":
        header, _ = _msg(nd, [arr])
        frames = [arr[:-3]]
    elif case == "padded":
        header, _ = _msg(nd, [arr])
        frames = [arr + b"\0"]
    elif case == "missing_frame":
        header, _ = _msg(nd, [arr])
        frames = []
    elif case == "extra_frame":
        header, _ = _msg(nd, [arr])
        frames = [arr, EVIL]
    elif case == "unknown_payload_kind":
        header, frames = _msg({"k": "python", "f": 0}, [EVIL])
    elif case == "pickle_kind":
        header, frames = _msg({"k": "pickle", "f": 0}, [EVIL])
    elif case == "object_dtype":
        header, frames = _msg(dict(nd, dtype="|O8"), [arr])
    elif case == "structured_dtype":
        header, frames = _msg(dict(nd, dtype="[('a','O')]"), [arr])
    elif case == "void_dtype":
        header, frames = _msg(dict(nd, dtype="|V8"), [arr])
    elif case == "shape_mismatch":
        header, frames = _msg(dict(nd, shape=[5]), [arr])
    elif case == "negative_shape":
        header, frames = _msg(dict(nd, shape=[-4]), [arr])
    elif case == "frame_twice":
        header, frames = _msg({"k": "list", "items": [nd, nd]}, [arr])
    elif case == "frame_unreferenced":
        header, frames = _msg(nd, [arr, EVIL])
    elif case == "frame_out_of_range":
        header, frames = _msg(dict(nd, f=3), [arr])
    elif case == "bad_utf8":
        header, frames = _msg({"k": "str", "f": 0}, [b"\xff\xfe"])
    elif case == "bad_json_payload":
        header, frames = _msg({"k": "json", "f": 0}, [EVIL])
    elif case == "deep_nesting":
        body: dict = {"k": "val", "v": 1}
        for _ in range(200):
            body = {"k": "list", "items": [body]}
        header, frames = _msg(body, [])
    elif case == "huge_header":
        header, frames = _msg(nd, [arr], pad="x" * (wire.MAX_HEADER_BYTES + 1))
    elif case == "cipher_unknown_key":
        header, frames = _msg({"k": "cipher", "f": [0], "meta": {"fingerprint": "ab" * 16,
                                                                  "scheme": "paillier"}}, [arr])
    elif case == "scalar_with_shape":
        header, frames = _msg(dict(nd, scalar=True), [arr])
    elif case == "dict_lengths":
        header, frames = _msg({"k": "dict", "keys": ["a", "b"], "items": [nd]}, [arr])
    exc = _reject(header, frames)
    assert str(exc)
    assert EXECUTED == []


def test_unregistered_cipher_key_message():
    header, frames = _msg({"k": "cipher", "f": [0], "meta": {"fingerprint": "ab" * 16}},
                          [b"x" * 512])
    with pytest.raises(ProtocolError, match="not registered") as ei:
        h = wire.parse_header(header)
        wire.decode_payload(h["body"], frames, kits={}, peer="bob", tag="t")
    assert ei.value.peer == "bob"


def test_pickle_bytes_payload_stays_bytes():
    # A pickle sent as an ordinary bytes payload arrives as bytes, never unpickled.
    EXECUTED.clear()
    assert roundtrip(EVIL) == EVIL
    assert EXECUTED == []


def test_announced_limit_is_a_positive_int_or_nothing():
    assert wire.announced_limit(wire.parse_header(wire.control_header("a", "ping", 4096))) == 4096
    assert wire.announced_limit(wire.parse_header(wire.control_header("a", "ping"))) is None
    for junk in (0, -5, True, 1.5, "100", None, [1]):
        assert wire.announced_limit({"max": junk}) is None


def _general_message(src, tag, obj):
    """build_message's general path (descriptor walk + JSON encoder), for comparison."""
    body, frames, borrowed = wire.encode_payload(obj)
    header = {"v": wire.PROTOCOL_VERSION, "src": src, "kind": "msg", "tag": tag, "body": body,
              "sizes": [memoryview(f).nbytes for f in frames]}
    return wire._HEADER_JSON.encode(header).encode(), frames, borrowed


@pytest.mark.parametrize("dtype", ["<f8", ">f8", "<f4", "|b1", "<c16", ">c8", "<i8", "|u1",
                                   "<u2", "<f2", "<m8", "|V4", "<U3"])
@pytest.mark.parametrize("shape", [(), (0,), (5,), (3, 4), (2, 0, 3)])
@pytest.mark.parametrize("tag", ["m1", "tree-3/level-2/hist", "x" * 600, "a/../b", 'a"b'])
def test_array_fast_path_builds_the_same_message(dtype, shape, tag):
    arr = np.arange(int(np.prod(shape)) or 0).astype(dtype).reshape(shape) if dtype[1] in "fiucb" \
        else np.zeros(shape, dtype)
    for a in (arr, np.asfortranarray(arr), arr[..., ::2] if arr.ndim else arr):
        try:
            want = _general_message("alice", tag, a)
        except TypeError:
            with pytest.raises(TypeError):
                wire.build_message("alice", tag, a)
            continue
        got = wire.build_message("alice", tag, a)
        assert got[0] == want[0] and got[2] == want[2]
        assert [bytes(f) for f in got[1]] == [bytes(f) for f in want[1]]
        h = wire.parse_header(got[0]) if wire._TAG_RE.match(tag) and len(tag) <= 512 else None
        if h is not None:
            assert np.array_equal(wire.decode_payload(h["body"], list(got[1])), a)


@pytest.mark.parametrize("text", [
    '{"a":1}', ' {"a": [1, 2.5, "x\\u00e9", null, true]} \n', "", " ", "{", '{"a":1} x', "[1,2]",
    '"s"', "NaN", "1e400", '{"a":1}{"b":2}', '{"a":1,"a":2}', "\t[]\r\n", '{"a":"\\ud800"}',
    '{"a":"\x01"}', "-", '{"a":1', "[1,]", "\n\n", "\x0b{}", "{}\x0c", "[" * 3000 + "]" * 3000,
])
def test_header_json_parser_is_json_loads(text):
    def outcome(f):
        try:
            return "ok", f(text)
        except RecursionError:
            return ("deep",)
        except ValueError as exc:
            return type(exc).__name__, str(exc)

    assert outcome(wire._json_loads) == outcome(json.loads)


def _nd_header_agrees(header: bytes) -> None:
    """parse_nd_header accepts only what parse_header accepts, and reads the same."""
    fast = wire.parse_nd_header(header)
    if fast is None:
        return
    h = wire.parse_header(header)  # raises if the fast path took what the general refuses
    assert h["kind"] == "msg" and set(h) == {"v", "src", "kind", "tag", "body", "sizes"}
    assert h["body"] == {"k": "nd", "dtype": fast[2], "shape": fast[3], "order": "C", "f": 0}
    assert (h["src"], h["tag"], h["sizes"]) == (fast[0], fast[1], [fast[4]])


@pytest.mark.parametrize("dtype", ["<f8", ">f8", "<f4", "|b1", "<c16", ">c8", "<i8", "|u1",
                                   "<u2", "<f2"])
@pytest.mark.parametrize("shape", [(), (0,), (5,), (3, 4), (2, 0, 3), (1,) * 32])
@pytest.mark.parametrize("tag", ["m1", "tree-3/level-2/hist", "a.b/..c/x..", "x" * 512])
def test_nd_header_fast_path_reads_what_build_message_writes(dtype, shape, tag):
    arr = np.arange(int(np.prod(shape))).astype(dtype).reshape(shape)
    header, frames, _ = wire.build_message("alice", tag, arr)
    fast = wire.parse_nd_header(header)
    assert fast == ("alice", tag, np.dtype(dtype).str, list(shape), arr.nbytes)
    _nd_header_agrees(header)
    got = wire.decode_payload(fast[2:4], [bytearray(f) for f in frames], peer="alice", tag=tag)
    assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr)
    assert got.flags.writeable


def test_nd_header_fast_path_leaves_everything_else_to_the_general_parser():
    canonical = wire.build_message("alice", "t", np.arange(3.0))[0]
    assert wire.parse_nd_header(canonical) is not None
    others = [
        canonical.replace(b":", b": "),  # same JSON, other spelling
        canonical.replace(b'"f":0', b'"f":0,"scalar":true'),
        canonical.replace(b'"order":"C"', b'"order":"F"'),
        canonical.replace(b'"t"', b'"\\u0074"'),  # an escape
        canonical.replace(b"[24]", b"[024]"),  # not JSON
        canonical.replace(b"[3]", b"[1" + b"0" * 18 + b"]"),  # beyond the fast path's ints
        canonical.replace(b'"v":1', b'"v":2'),
        canonical.replace(b'"t"', b'"a/../b"'),  # a dots-only segment: an invalid tag
        canonical.replace(b'"t"', b'"' + b"x" * 513 + b'"'),  # too long
        canonical.replace(b"[3]", b"[" + b",".join([b"1"] * 33) + b"]"),  # too many dims
        canonical + b" ",
        bytearray(canonical),  # only bytes take the fast path
    ]
    for other in others:
        assert wire.parse_nd_header(other) is None, other


def test_nd_header_fast_path_never_takes_a_mutated_header_the_general_path_refuses():
    base = wire.build_message("alice", "tree-1/n.2", np.arange(6, dtype="<i4").reshape(2, 3))[0]
    alphabet = b'"\\/.,:{}[]01289 aAzZ-_<>|fbc\x00\xff'
    for i in range(len(base)):
        for c in alphabet:
            mutated = base[:i] + bytes([c]) + base[i + 1:]
            try:
                _nd_header_agrees(mutated)
            except wire.BadMessage as exc:
                raise AssertionError(f"fast path took {mutated!r}, general path: {exc}") from None
        _nd_header_agrees(base[:i] + base[i + 1:])  # a byte dropped


@pytest.mark.parametrize("case", ["wrong_size", "two_frames", "no_frame", "bad_dtype"])
def test_nd_fast_path_rejects_what_does_not_fit_its_header(case):
    header = wire.build_message("alice", "t", np.arange(3.0))[0]
    header = header.replace(b"<f8", b"<f3") if case == "bad_dtype" else header
    frames = {"wrong_size": [bytearray(16)], "two_frames": [bytearray(24), bytearray(1)],
              "no_frame": [], "bad_dtype": [bytearray(24)]}[case]
    fast = wire.parse_nd_header(header)
    assert fast is not None
    with pytest.raises(ProtocolError, match="rejected message|frame") as ei:
        wire.check_sizes([fast[4]], frames, 2**32)
        wire.decode_payload(fast[2:4], frames, peer="alice", tag="t")
    if case == "bad_dtype":
        assert ei.value.peer == "alice" and ei.value.tag == "t"
