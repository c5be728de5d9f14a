"""X25519 primitives: commutation, hash-to-point, low-order points, the worker pool."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hefl.errors import ConfigError
from hefl.psi._curve import (
    DOMAIN,
    LowOrderPoint,
    blind_ids,
    hash_to_point,
    mult_points,
    new_key,
)
from hefl.psi._ecdh import _noncanonical, random_permutation
from hefl.psi._engine import Engine, JobFailed, resolve_n_jobs

b32 = st.binary(min_size=32, max_size=32)


def x25519(k: bytes, u: bytes) -> bytes:
    return mult_points(k, u)


@settings(max_examples=60, deadline=None)
@given(a=b32, b=b32, u=b32)
def test_blinding_commutes(a: bytes, b: bytes, u: bytes) -> None:
    # Clamped scalars commute on u-coordinates, on the curve and on its twist alike.
    try:
        ab = x25519(a, x25519(b, u))
        ba = x25519(b, x25519(a, u))
    except LowOrderPoint:
        assume(False)
    assert ab == ba


@settings(max_examples=20, deadline=None)
@given(keys=st.lists(b32, min_size=3, max_size=5), u=b32)
def test_blinding_commutes_for_many_keys(keys: list[bytes], u: bytes) -> None:
    try:
        fwd = u
        for k in keys:
            fwd = x25519(k, fwd)
        rev = u
        for k in reversed(keys):
            rev = x25519(k, rev)
    except LowOrderPoint:
        assume(False)
    assert fwd == rev


def test_hash_to_point_is_domain_separated_sha256() -> None:
    import hashlib

    h = hash_to_point(b"alice")
    assert len(h) == 32 and h == hashlib.sha256(DOMAIN + b"alice").digest()
    assert hash_to_point(b"alice") == h and hash_to_point(b"alice ") != h


def test_blind_ids_is_hash_then_multiply() -> None:
    k = new_key()
    ids = [b"a", "\u00e9\u4e2d".encode(), b"x" * 500]
    assert blind_ids(k, ids) == mult_points(k, b"".join(hash_to_point(x) for x in ids))
    assert blind_ids(k, []) == b""


def test_fresh_keys_differ() -> None:
    assert new_key() != new_key()


def test_low_order_point_is_reported_with_its_index() -> None:
    k = new_key()
    pts = hash_to_point(b"1") + hash_to_point(b"2") + bytes(32) + hash_to_point(b"3")
    with pytest.raises(LowOrderPoint) as info:
        mult_points(k, pts)
    assert info.value.index == 2
    one = (1).to_bytes(32, "little")  # u = 1 has order 4 on the twist
    with pytest.raises(LowOrderPoint):
        mult_points(k, one)


def test_noncanonical_points_are_flagged() -> None:
    p = 2**255 - 19
    rows = [
        (p - 1).to_bytes(32, "little"),  # largest canonical value
        p.to_bytes(32, "little"),  # == 0 mod p, not canonical
        (p + 5).to_bytes(32, "little"),
        b"\xff" * 32,  # top bit set
        bytes(32),
    ]
    a = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, 32)
    assert _noncanonical(a).tolist() == [False, True, True, True, False]


def test_random_permutation() -> None:
    for n in (0, 1, 7, 1000):
        perm = random_permutation(n)
        assert perm.dtype == np.int64 and sorted(perm.tolist()) == list(range(n))
    assert random_permutation(1000).tolist() != random_permutation(1000).tolist()


def test_resolve_n_jobs() -> None:
    assert resolve_n_jobs(None) == 1 and resolve_n_jobs(3) == 3
    assert resolve_n_jobs(-1) == (os.cpu_count() or 1)
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ConfigError):
            resolve_n_jobs(bad)  # type: ignore[arg-type]


def test_engine_pool_matches_inline_and_reports_bad_rows() -> None:
    k = new_key()
    ids = [f"id-{i}".encode() for i in range(700)]
    pts = b"".join(hash_to_point(x) for x in ids[:600])
    jobs = [("blind", ids), ("mult", pts)]
    with Engine(k, 1) as inline, Engine(k, 2) as pool:
        assert pool.n_jobs == 2
        assert pool.run(jobs) == inline.run(jobs)  # type: ignore[arg-type]
        bad = pts[: 32 * 400] + bytes(32) + pts[32 * 401 :]
        for eng in (inline, pool):
            with pytest.raises(JobFailed) as info:
                eng.run([("blind", ids[:3]), ("mult", bad)])
            assert (info.value.job, info.value.row) == (1, 400)


def test_rfc7748_vector() -> None:
    # RFC 7748 §5.2: every party's X25519 must agree bit for bit (incl. top-bit masking).
    k = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    out = "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
    assert mult_points(k, u).hex() == out
    assert mult_points(k, u[:31] + bytes([u[31] | 0x80])).hex() == out
